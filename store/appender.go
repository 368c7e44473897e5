package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// journalLockKey is the session-level advisory lock the one appender of a
// journal holds for its whole life ("cjournl"). Advisory locks are scoped
// to a database, and so is the journal.
const journalLockKey int64 = 0x63_6a6f_7572_6e6c

// Defaults of AppenderConfig.
const (
	DefaultMaxGroupChanges = 10_000
	DefaultInlineMax       = 10_000
)

// appenderAppName is the application_name of the appender's connection, so
// operators (and tests) can find it in pg_stat_activity.
const appenderAppName = "changecast journal appender"

// ErrJournalLocked is returned (wrapped) by NewAppender when another
// appender, normally another changecast process, holds the journal of the
// database. A journal has one writer: that is what makes its sequence order
// equal to commit order.
var ErrJournalLocked = errors.New("journal is locked by another appender")

// AppenderConfig configures an Appender.
type AppenderConfig struct {
	// Slot names the offsets row (changecast.offsets) that the appender
	// moves in the same transaction as the journal rows it covers.
	// Required.
	Slot string
	// MaxGroupChanges bounds group commit: after a transaction, more
	// already-queued small transactions join the same journal transaction
	// while the group holds at most this many changes. A transaction
	// larger than this on its own still goes in one piece.
	// Default: 10,000 (when zero or negative).
	MaxGroupChanges int
	// InlineMax is the largest number of changes a commit hands to
	// OnCommit in Committed.Changes; a larger commit passes nil and
	// readers catch up from the journal. It is also what the appender may
	// hold of a chunked source transaction to hand it inline.
	// Default: 10,000 (when zero or negative).
	InlineMax int
	// OnCommit, if set, is called on the appender goroutine after each
	// journal commit, in commit order, and for each source transaction
	// skipped as already journaled. It must return quickly: it delays the
	// next journal write.
	OnCommit func(Committed)
	// Logger receives the appender's logs. Default: slog.Default().
	Logger *slog.Logger
	// SanitizeEvent strips secrets from a system event before
	// PersistEvent stores it (cmd/changecast passes sanitize.Event).
	// Required by PersistEvent, which refuses without it.
	SanitizeEvent func(entities.Event) (entities.Event, error)
	// Sanitize strips secrets from a change completed from the journal
	// (states.go): the filled values were stored under the rules of their
	// time. Without it, changes are journaled as PostgreSQL sent them.
	Sanitize func(entities.Change) (entities.Change, error)
}

// Committed reports one journal commit to AppenderConfig.OnCommit (see
// pipeline.Committed).
type Committed = pipeline.Committed

// Appender is the journal's single writer. It assigns seq itself (dense,
// from head+1, in the order transactions arrive, which is commit order),
// and moves the slot's offset in the same database transaction, so after
// a crash the journal and the offset agree. It holds a session advisory
// lock on its own connection: a second Appender on the same database gets
// ErrJournalLocked.
//
// Run is its one goroutine. Head, Offset and HighWater are safe to call
// from any goroutine; Close must not be called while Run is running.
type Appender struct {
	cfg  AppenderConfig
	log  *slog.Logger
	conn *pgx.Conn
	url  string

	head      atomic.Int64
	offset    atomic.Uint64
	highWater atomic.Int64
	// copied counts groups journaled by COPY in a transaction rather than
	// by commitOneShot's single statement (see oneShotMaxChanges).
	copied atomic.Int64

	running atomic.Bool
	writes  chan write    // Submit → Run
	runDone chan struct{} // closed when Run returns
	// tracked lists the entity types whose states the journal follows
	// (states.go); read and written on the Run goroutine (and by
	// RecordGap, which never runs beside it).
	tracked map[string]bool
	// broken is set, on the Run goroutine, when a journal transaction
	// failed or its commit is in doubt: the Appender must be replaced.
	broken error
	// cols is commitOneShot's reusable column buffer (Run goroutine).
	cols oneShotColumns

	closeOnce sync.Once
	closeErr  error
}

// NewAppender opens the appender's own connection, takes the journal lock
// (ErrJournalLocked, wrapped with who holds it, when another process has
// it), and loads the journal head and the stored offset of cfg.Slot. Run
// Migrate first.
func (db *DB) NewAppender(ctx context.Context, cfg AppenderConfig) (*Appender, error) {
	if cfg.Slot == "" {
		return nil, errors.New("new appender: empty slot name")
	}
	if cfg.MaxGroupChanges <= 0 {
		cfg.MaxGroupChanges = DefaultMaxGroupChanges
	}
	if cfg.InlineMax <= 0 {
		cfg.InlineMax = DefaultInlineMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	connCfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		return nil, redactErr(fmt.Errorf("new appender: %w", err), db.url)
	}
	connCfg.RuntimeParams["application_name"] = appenderAppName
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return nil, redactErr(fmt.Errorf("new appender: connect to %s: %w", RedactURL(db.url), err), db.url)
	}
	a := &Appender{cfg: cfg, log: cfg.Logger.With("slot", cfg.Slot), conn: conn, url: db.url,
		writes: make(chan write), runDone: make(chan struct{})}
	if err := a.init(ctx); err != nil {
		conn.Close(context.Background())
		return nil, redactErr(fmt.Errorf("new appender: %w", err), db.url)
	}
	return a, nil
}

func (a *Appender) init(ctx context.Context) error {
	var locked bool
	if err := a.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", journalLockKey).Scan(&locked); err != nil {
		return fmt.Errorf("lock journal: %w", err)
	}
	if !locked {
		return fmt.Errorf("%w (%s); one changecast watcher writes a journal: stop the other process, or point this one at another database", ErrJournalLocked, a.lockHolder(ctx))
	}
	head, err := loadHead(ctx, a.conn)
	if err != nil {
		return err
	}
	lsn, err := loadOffset(ctx, a.conn, a.cfg.Slot)
	if err != nil {
		return err
	}
	if a.tracked, err = loadTracked(ctx, a.conn); err != nil {
		return err
	}
	a.head.Store(head)
	a.offset.Store(uint64(lsn))
	return nil
}

// lockHolder describes the backend holding the journal lock, best effort.
func (a *Appender) lockHolder(ctx context.Context) string {
	var (
		pid     int32
		app     string
		client  string
		started time.Time
	)
	err := a.conn.QueryRow(ctx, `SELECT l.pid, coalesce(s.application_name, ''),
			coalesce(host(s.client_addr), 'local socket'), s.backend_start
		FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
			AND l.classid::bigint = $1 AND l.objid::bigint = $2
			AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		LIMIT 1`, journalLockKey>>32, journalLockKey&0xFFFF_FFFF).Scan(&pid, &app, &client, &started)
	if err != nil {
		return "holder unknown"
	}
	return fmt.Sprintf("held by backend pid %d, application %q, client %s, connected since %s", pid, app, client, started.UTC().Format(time.RFC3339))
}

// querier is what loadHead needs: a *pgx.Conn, a pgx.Tx or a pool.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadHead returns the journal's highest seq, counting rows retention
// removed (the horizon), so seq never restarts after an emptying prune.
func loadHead(ctx context.Context, q querier) (int64, error) {
	var head int64
	err := q.QueryRow(ctx, `SELECT GREATEST(
			coalesce((SELECT max(seq) FROM changecast.journal), 0),
			coalesce((SELECT max(horizon) FROM changecast.journal_meta), 0))`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("load journal head: %w", hintMigrate(err))
	}
	return head, nil
}

// Head returns the highest seq committed to the journal.
func (a *Appender) Head() int64 { return a.head.Load() }

// Offset returns the stored offset of the slot: the EndLSN of the last
// journaled source transaction (0 if none).
func (a *Appender) Offset() entities.LSN { return entities.LSN(a.offset.Load()) }

// HighWater returns the largest number of changes the appender has held in
// memory at once. It is bounded by about max(MaxGroupChanges, InlineMax)
// plus one chunk or one source transaction, whatever the size of a chunked
// source transaction.
func (a *Appender) HighWater() int { return int(a.highWater.Load()) }

// hold records that the appender now holds n changes.
// Only the Run goroutine writes highWater, so a load and a store suffice.
func (a *Appender) hold(n int) {
	if int64(n) > a.highWater.Load() {
		a.highWater.Store(int64(n))
	}
}

// Close releases the journal lock and closes the connection. Call it after
// Run has returned. It is safe to call more than once.
func (a *Appender) Close() error {
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Release the lock explicitly: closing the session releases it
		// too, but only once the server's backend has exited, which
		// can lag behind Close under load, and the next appender (a
		// rebuilt pipeline, a standby) would find the journal locked.
		if !a.conn.IsClosed() {
			_, _ = a.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", journalLockKey)
		}
		a.closeErr = a.conn.Close(ctx)
	})
	return a.closeErr
}

// Run journals the transactions from in until in is closed or ctx ends
// (both return nil), or a database error (returned). Transactions must
// arrive in commit order; Run takes ownership of their Changes and sets
// each one's Cursor.
//
// A transaction whose CommitLSN is below the stored offset (all its chunks)
// is already journaled and is skipped; one whose CommitLSN equals the
// offset is not (the offset is the previous transaction's EndLSN, where
// the next commit record may start: docs/replication.md rule 1).
//
// A chunked transaction is written chunk by chunk into one open journal
// transaction, committed at its Final chunk with the offset. Small Final
// transactions already queued join one journal transaction (group commit).
// Nothing after the last OnCommit is durable when Run returns: an open
// journal transaction is rolled back. After Run returns an error, Close the
// Appender and make a new one (which reloads the head and offset: a
// failed COMMIT may or may not have committed).
func (a *Appender) Run(ctx context.Context, in <-chan entities.Transaction) error {
	return a.runFrom(ctx, &txSource{one: in})
}

// runFrom is Run (and RunBatches) on either kind of input.
func (a *Appender) runFrom(ctx context.Context, in *txSource) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("append journal: Run is already running")
	}
	defer a.running.Store(false)
	defer a.closeRunDone()
	if a.broken != nil {
		return fmt.Errorf("append journal: appender failed earlier (%v); close it and create a new one", a.broken)
	}
	err := a.run(ctx, in)
	if ctx.Err() != nil {
		// Cancellation may have interrupted a statement, which closes
		// the connection: only a later Run would notice.
		if a.conn.IsClosed() {
			a.broken = ctx.Err()
		}
		return nil
	}
	if err != nil {
		a.broken = redactErr(err, a.url) // printed again by later calls
		return redactErr(fmt.Errorf("append journal: %w", err), a.url)
	}
	return nil
}

// closeRunDone ends every Submit waiting to be taken: Run has returned.
func (a *Appender) closeRunDone() {
	select {
	case <-a.runDone:
	default:
		close(a.runDone)
	}
}

func (a *Appender) run(ctx context.Context, in *txSource) error {
	var next *entities.Transaction
	for {
		var t entities.Transaction
		if next != nil {
			t, next = *next, nil
		} else if b, ok := in.pop(); ok {
			t = b
		} else {
			var ok bool
			select {
			case <-ctx.Done():
				return nil
			case w := <-a.writes:
				// System writes go between source transactions,
				// never inside a chunked one's open transaction.
				if err := a.applyWrite(ctx, w); err != nil {
					return err
				}
				continue
			case t, ok = <-in.one:
				if !ok {
					return nil
				}
			case b, open := <-in.many:
				if t, ok = in.take(b, open); !open {
					return nil
				} else if len(b) == 0 {
					continue
				}
			case <-in.ready:
				if !in.takeQueued() {
					return nil
				}
				if t, ok = in.pop(); !ok {
					continue // nothing after all
				}
			}
		}
		a.hold(len(t.Changes))
		var (
			closed bool
			err    error
		)
		switch {
		case t.CommitLSN < a.Offset():
			a.skipped(t)
			continue
		case t.Final:
			next, closed, err = a.appendGroup(ctx, in, t)
		default:
			next, closed, err = a.appendChunked(ctx, in, t)
		}
		if err != nil || closed {
			return err
		}
	}
}

// skipped reports a transaction already in the journal, so the watcher can
// confirm it. Its EndLSN is at most the stored offset, hence durable.
func (a *Appender) skipped(t entities.Transaction) {
	if !t.Final {
		return
	}
	a.log.Debug("skipping transaction already journaled", "xid", t.Xid, "commit_lsn", t.CommitLSN, "offset", a.Offset())
	if a.cfg.OnCommit != nil {
		a.cfg.OnCommit(Committed{Head: a.Head(), Changes: []entities.Change{}, EndLSN: t.EndLSN})
	}
}

// appendGroup journals first, a Final transaction, with the Final
// transactions already queued behind it, in one journal transaction. It
// returns the transaction it received but could not take (a chunk, or one
// that would overflow the group), and whether in was closed.
func (a *Appender) appendGroup(ctx context.Context, in *txSource, first entities.Transaction) (next *entities.Transaction, closed bool, err error) {
	group := [][]entities.Change{first.Changes}
	n := len(first.Changes)
	end := first.EndLSN
	offset := max(a.Offset(), end)
collect:
	for n < a.cfg.MaxGroupChanges {
		t, got, isClosed := in.tryNext()
		switch {
		case isClosed:
			closed = true
			break collect
		case !got:
			break collect
		}
		a.hold(n + len(t.Changes))
		switch {
		case t.CommitLSN < offset:
			// A replay of a transaction in this group or
			// already journaled (the watcher reconnected).
			if t.Final {
				end = max(end, t.EndLSN)
			}
		case !t.Final || n+len(t.Changes) > a.cfg.MaxGroupChanges:
			next = &t
			break collect
		default:
			group = append(group, t.Changes)
			n += len(t.Changes)
			end = max(end, t.EndLSN)
			offset = max(offset, t.EndLSN)
		}
	}

	head := a.Head()
	if n <= oneShotMaxChanges && a.oneShot(group) {
		err = a.commitOneShot(ctx, head, group, end)
	} else {
		a.copied.Add(1)
		err = a.inTx(ctx, func(tx pgx.Tx) error {
			if err := a.copyChanges(ctx, tx, head, group); err != nil {
				return err
			}
			return a.saveOffset(ctx, tx, end)
		})
	}
	if err != nil {
		return nil, false, err
	}
	a.committed(head+int64(n), end)

	var changes []entities.Change
	switch {
	case n > a.cfg.InlineMax:
	case len(group) == 1 && group[0] != nil:
		changes = group[0]
	default:
		changes = make([]entities.Change, 0, n)
		for _, g := range group {
			changes = append(changes, g...)
		}
	}
	if a.cfg.OnCommit != nil {
		a.cfg.OnCommit(Committed{Head: head + int64(n), Changes: changes, EndLSN: end})
	}
	a.hold(0)
	return next, closed, nil
}

// appendChunked journals a chunked source transaction, first being its
// first chunk: each chunk is copied into one open journal transaction as it
// arrives and released, and the Final chunk commits it with the offset.
// The appender keeps the chunks only while the total stays within
// InlineMax, to hand them to OnCommit.
//
// A chunk that does not continue the open transaction (another CommitLSN
// or Xid, or an Index that goes backwards: the watcher reconnected and
// replays from its confirmed position) rolls the open transaction back and
// is returned as next, to be handled afresh.
func (a *Appender) appendChunked(ctx context.Context, in *txSource, first entities.Transaction) (next *entities.Transaction, closed bool, err error) {
	head := a.Head()
	var (
		inline   []entities.Change
		isInline = true
		n        int
		lastIdx  = -1
		t        = first
	)
	err = a.inTx(ctx, func(tx pgx.Tx) error {
		for {
			if err := a.copyChanges(ctx, tx, head+int64(n), [][]entities.Change{t.Changes}); err != nil {
				return err
			}
			n += len(t.Changes)
			if len(t.Changes) > 0 {
				lastIdx = t.Changes[len(t.Changes)-1].Index
			}
			if isInline && len(inline)+len(t.Changes) <= a.cfg.InlineMax {
				inline = append(inline, t.Changes...)
			} else {
				isInline, inline = false, nil
			}
			t.Changes = nil
			a.hold(len(inline))
			if t.Final {
				return a.saveOffset(ctx, tx, t.EndLSN)
			}

			var ok bool
			var err error
			if t, ok, err = in.next(ctx); err != nil {
				return err
			} else if !ok {
				closed = true
				return errRollback
			}
			a.hold(len(inline) + len(t.Changes))
			if t.CommitLSN != first.CommitLSN || t.Xid != first.Xid || len(t.Changes) > 0 && t.Changes[0].Index <= lastIdx {
				a.log.Warn("source transaction restarted before its final chunk; rolling back its partial journal transaction",
					"xid", first.Xid, "commit_lsn", first.CommitLSN, "next_xid", t.Xid, "next_commit_lsn", t.CommitLSN)
				next = &t
				return errRollback
			}
		}
	})
	switch {
	case errors.Is(err, errRollback):
		a.hold(0)
		return next, closed, nil
	case err != nil:
		return nil, false, err
	}
	a.committed(head+int64(n), t.EndLSN)
	if a.cfg.OnCommit != nil {
		if isInline && inline == nil {
			inline = []entities.Change{}
		}
		a.cfg.OnCommit(Committed{Head: head + int64(n), Changes: inline, EndLSN: t.EndLSN})
	}
	a.hold(0)
	return nil, false, nil
}

// errRollback makes inTx roll back without it being an error of Run.
var errRollback = errors.New("roll back")

// inTx runs fn in a journal transaction and commits it, or rolls it back
// when fn fails. Rolling back must work after ctx ended.
func (a *Appender) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// The tracked types as this transaction changes them (states.go):
	// they become the appender's view only if it commits.
	committedTracked := a.tracked
	a.tracked = maps.Clone(committedTracked)
	if err := fn(tx); err != nil {
		a.tracked = committedTracked
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// In doubt: the appender is replaced, and a new one reads the
		// tracked types back.
		a.tracked = committedTracked
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// committed publishes a successful commit's head and offset.
func (a *Appender) committed(head int64, end entities.LSN) {
	a.head.Store(head)
	storeMaxOffset(&a.offset, end)
}

// storeMaxOffset raises p to lsn, never lowering it: the Run goroutine
// and SavePosition's caller both move the offset.
func storeMaxOffset(p *atomic.Uint64, lsn entities.LSN) {
	for {
		cur := p.Load()
		if uint64(lsn) <= cur || p.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// saveOffset moves the slot's offset to end inside the journal transaction
// (never backwards). end 0 means no source position to store.
func (a *Appender) saveOffset(ctx context.Context, tx pgx.Tx, end entities.LSN) error {
	if end == 0 {
		return nil
	}
	return storeOffset(ctx, tx, a.cfg.Slot, end)
}

// execer runs a statement: a pgx connection, transaction or pool.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// storeOffset stores lsn as slot's replication position; it never moves
// backwards. The appender runs it inside its journal transactions.
func storeOffset(ctx context.Context, e execer, slot string, lsn entities.LSN) error {
	if uint64(lsn) > math.MaxInt64 {
		return fmt.Errorf("save offset of slot %s: LSN %s out of range", slot, lsn)
	}
	_, err := e.Exec(ctx, `INSERT INTO changecast.offsets (slot, lsn, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (slot) DO UPDATE SET lsn = GREATEST(offsets.lsn, EXCLUDED.lsn), updated_at = now()`, slot, int64(lsn))
	if err != nil {
		return fmt.Errorf("save offset of slot %s: %w", slot, hintMigrate(err))
	}
	return nil
}

// loadOffset returns slot's stored replication position, 0 if none.
func loadOffset(ctx context.Context, q querier, slot string) (entities.LSN, error) {
	var lsn int64
	switch err := q.QueryRow(ctx, "SELECT lsn FROM changecast.offsets WHERE slot = $1", slot).Scan(&lsn); {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("load offset of slot %s: %w", slot, hintMigrate(err))
	}
	return entities.LSN(lsn), nil
}

// journalColumns are the columns COPY fills; journaled_at takes its default.
var journalColumns = []string{"seq", "commit_lsn", "tx_index", "xid", "committed_at", "entity_type", "operation", "entity_id", "payload", "previous", "unchanged"}

// eachChange calls fn for each change of groups, in order, with the seq
// it is journaled as (head+1, ...), after checking that every commit LSN
// fits the journal's bigint; nothing is called when one does not.
func eachChange(head int64, groups [][]entities.Change, fn func(seq int64, c *entities.Change)) error {
	seq := head
	for _, g := range groups {
		for i := range g {
			seq++
			if uint64(g[i].CommitLSN) > math.MaxInt64 {
				return fmt.Errorf("change %d: commit LSN %s out of range", seq, g[i].CommitLSN)
			}
		}
	}
	seq = head
	for _, g := range groups {
		for i := range g {
			seq++
			fn(seq, &g[i])
		}
	}
	return nil
}

// copyChanges COPYs the changes of groups, in order, as seq head+1, ...,
// setting each change's Cursor.
func (a *Appender) copyChanges(ctx context.Context, tx pgx.Tx, head int64, groups [][]entities.Change) error {
	some := false
	if err := eachChange(head, groups, func(seq int64, c *entities.Change) { c.Cursor, some = seq, true }); err != nil || !some {
		return err
	}
	states, err := a.backfill(ctx, tx, groups)
	if err != nil {
		return err
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, newJournalCopy(groups), copyJournalSQL); err != nil {
		return fmt.Errorf("copy to journal: %w", hintMigrate(err))
	}
	return a.saveStates(ctx, tx, states)
}
