package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults for Config fields left zero.
const (
	DefaultSlot           = "changecast"
	DefaultPublication    = "changecast"
	DefaultStatusInterval = 10 * time.Second
	DefaultChunkSize      = 1000
)

// receiveTimeout bounds one wait for a server message, and so how late an
// Ack or a due status update can be reported.
const receiveTimeout = 500 * time.Millisecond

// Config configures a Watcher.
type Config struct {
	// URL is an ordinary PostgreSQL URL or keyword/value DSN. The watcher
	// adds replication=database for its replication connection.
	URL string
	// Slot is the logical replication slot's name: lower-case letters,
	// digits and underscores, at most 63. Run creates it (permanent,
	// pgoutput) when missing. Default: "changecast".
	Slot string
	// Publication is the publication to stream, created by store before
	// the watcher starts; the watcher only checks that it exists. Same
	// naming rule as Slot. Default: "changecast".
	Publication string
	// Registry maps a relation's table name to its entity type. Changes
	// to tables it does not hold are ignored. The relation's schema is
	// not consulted. Required.
	Registry *entities.Registry
	// Omit, when set, names columns that never leave changecast (a
	// sanitizer strips them for a reason fixed by configuration): the
	// watcher does not decode them, so they cost no work and no copy.
	// It is a saving, not the guard: the sanitizer still checks every
	// row. It must not omit a key column. Every change lists the omitted
	// columns of its table in Change.Withheld.
	Omit func(et entities.EntityType, column string) bool
	// StartLSN is the durably stored position: the EndLSN of the last
	// transaction the caller handled (its Final chunk's EndLSN), 0 when
	// none. Replication starts there and every transaction whose commit
	// LSN is below it is skipped (one whose commit LSN equals it is the
	// next transaction, not a handled one).
	StartLSN entities.LSN
	// ChunkSize is the most changes the watcher holds for one
	// transaction: a larger transaction is sent as several Transactions
	// of ChunkSize changes, the last one Final (see Transaction). With the capacity of Run's channel it bounds what the
	// watcher and that channel hold: (cap(out)+1) × ChunkSize changes.
	// Default: 1000. Negative is an error.
	ChunkSize int
	// StatusInterval is the longest time between two standby status
	// updates. It must stay well below the server's wal_sender_timeout
	// (60 s by default). Default: 10 s.
	StatusInterval time.Duration
	// Logger receives the watcher's logs. Default: slog.Default().
	Logger *slog.Logger

	// ExpectSlot says the caller has handled changes before (its journal
	// is not empty) even if StartLSN is 0. The slot may be created only
	// on a first start: when StartLSN is not 0 or ExpectSlot is set, a
	// missing slot is a *SlotLostError, never silently replaced.
	ExpectSlot bool
	// SavePosition, if set, durably stores a position before the watcher
	// confirms it to the server when no Ack covers it (WAL that touched
	// no registered table, idle keepalives, a newly created slot's start).
	// A position is confirmed only if SavePosition returned nil for it (or
	// it was Acked). Then every position the server holds as confirmed is
	// one the caller stored, so a slot whose confirmed position is beyond
	// StartLSN was moved by someone else, and Run reports it as a
	// *SlotLostError (SlotMoved). Without SavePosition that check is off.
	// It is called on Run's goroutine and should return within seconds.
	SavePosition func(ctx context.Context, lsn entities.LSN) error
	// Started, if set, is called on Run's goroutine once replication has
	// started, with the position it started from: the moment the
	// watcher is really streaming again.
	Started func(start entities.LSN)
}

// Transaction is one committed source transaction, or one chunk of a large
// one (see entities.Transaction).
//
// Pgoutput protocol 1 sends a transaction whole at its commit, however
// large; the watcher holds at most Config.ChunkSize of its changes. When
// it holds ChunkSize and another change arrives, it sends them as a
// Transaction with Final false (Xid, CommitLSN and CommitTime set, EndLSN
// 0) and lets them go. At the Commit it sends the rest (1 to ChunkSize
// changes) with Final true and EndLSN set; that Final has no changes only
// when a Run resumed a transaction whose every change an earlier Run had
// sent (see partialTx). A transaction of at most ChunkSize changes is a
// single Final Transaction. A Change's EndLSN
// equals its chunk's: 0 except in the Final chunk. Chunks of different
// transactions never interleave. Only a Final chunk's EndLSN may be passed
// to Ack: the consumer journals the chunks and acknowledges when the Final
// is durable.
type Transaction = entities.Transaction

// Stats is a snapshot of the watcher's replication progress.
type Stats struct {
	// Streaming reports whether Run is streaming right now.
	Streaming bool
	// Confirmed is the last position reported to the server as flushed
	// (see Watcher.Confirmed); 0 before the first status update.
	Confirmed entities.LSN
	// ServerWALEnd is the highest position the server has reported
	// (keepalives and XLogData headers); 0 before the first message.
	ServerWALEnd entities.LSN
	// LagBytes is ServerWALEnd - Confirmed, 0 when Confirmed is not
	// behind: roughly the WAL the slot still pins on the watcher's
	// account. It is as fresh as the server's last report (XLogData
	// headers, and keepalives when the server is idle or asks).
	LagBytes uint64
}

// Watcher streams committed row changes from PostgreSQL. Create one with
// New; Run and Ack state its guarantees.
type Watcher struct {
	cfg    Config
	logger *slog.Logger

	running   atomic.Bool
	streaming atomic.Bool
	acked     atomic.Uint64 // highest Ack'd LSN (starts at StartLSN)
	confirmed atomic.Uint64 // last LSN sent to the server as flushed
	walEnd    atomic.Uint64 // highest server WAL end seen

	// For tests: the most changes ever held for one open transaction,
	// and the number of standby status updates sent.
	peakBuffered atomic.Int64
	statusSent   atomic.Int64

	// Owned by the goroutine running Run; Run calls are serialised by
	// running, whose atomic operations order them.
	lastEmitted entities.LSN // EndLSN of the last Final chunk sent on out
	handled     entities.LSN // highest position needing no Ack (empty or skipped transactions, idle keepalives)
	partial     partialTx    // a transaction whose Final chunk is not sent yet
}

// partialTx is a transaction of which some chunks were sent and the Final
// was not, because Run ended in between. The next Run receives it again
// from its start and sends only the changes from Index sent on, so the
// consumer sees each change once.
type partialTx struct {
	commitLSN entities.LSN // 0: none
	sent      int          // changes sent: Index 0..sent-1
}

var namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// New validates cfg, fills its defaults and returns a Watcher. It does not
// connect: call Check for a preflight and Run to stream.
func New(cfg Config) (*Watcher, error) {
	if cfg.URL == "" {
		return nil, errors.New("watcher: database URL is empty")
	}
	if _, err := pgconn.ParseConfig(cfg.URL); err != nil {
		return nil, fmt.Errorf("watcher: database URL: %w", err)
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if !namePattern.MatchString(cfg.Slot) {
		return nil, fmt.Errorf("watcher: slot name %q: use lower-case letters, digits and underscores, at most 63", cfg.Slot)
	}
	if !namePattern.MatchString(cfg.Publication) {
		return nil, fmt.Errorf("watcher: publication name %q: use lower-case letters, digits and underscores, at most 63", cfg.Publication)
	}
	if cfg.Registry == nil {
		return nil, errors.New("watcher: registry is nil")
	}
	if cfg.StatusInterval < 0 {
		return nil, fmt.Errorf("watcher: status interval %s is negative", cfg.StatusInterval)
	}
	if cfg.ChunkSize < 0 {
		return nil, fmt.Errorf("watcher: chunk size %d is negative", cfg.ChunkSize)
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watcher{cfg: cfg, logger: cfg.Logger.With("slot", cfg.Slot)}
	w.acked.Store(uint64(cfg.StartLSN))
	w.handled = cfg.StartLSN
	return w, nil
}

// Ack records that everything up to lsn, the EndLSN of a Final
// Transaction (chunks before the Final have none), is durably handled
// (journaled). The next standby status update reports it to the server,
// which may then recycle the WAL before it. Acks never move the position
// backwards. Safe to call from any goroutine.
//
// The watcher confirms to PostgreSQL only what was acknowledged: write,
// flush and apply positions are all the highest Ack'd EndLSN, never the
// received position. While a transaction is open, chunks of it sent or
// not, nothing past the last Ack is confirmed. When nothing is pending (no
// open transaction, every sent Final acknowledged) it also confirms the
// end of transactions that touched no registered table and the server's
// position from keepalives, so a quiet publication does not pin WAL
// (docs/replication.md rule 4). Positions are reported at least every
// Config.StatusInterval, within about half a second of an Ack, and at once
// when the server asks, including while Run waits for room on its output
// channel. Stats reports the lag: the bytes between the server's WAL end
// and the confirmed position.
func (w *Watcher) Ack(lsn entities.LSN) { storeMax(&w.acked, uint64(lsn)) }

// storeMax raises p to v; it never lowers it, whoever else writes p.
func storeMax(p *atomic.Uint64, v uint64) {
	for {
		cur := p.Load()
		if v <= cur || p.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Streaming reports whether Run is streaming changes right now (for
// /readyz). Safe to call from any goroutine.
func (w *Watcher) Streaming() bool { return w.streaming.Load() }

// Confirmed returns the last position sent to the server as written,
// flushed and applied; 0 before the first status update. Safe to call
// from any goroutine.
func (w *Watcher) Confirmed() entities.LSN { return entities.LSN(w.confirmed.Load()) }

// Stats returns the watcher's replication progress and lag. Safe to call
// from any goroutine.
func (w *Watcher) Stats() Stats {
	st := Stats{
		Streaming:    w.streaming.Load(),
		Confirmed:    w.Confirmed(),
		ServerWALEnd: entities.LSN(w.walEnd.Load()),
	}
	if st.ServerWALEnd > st.Confirmed {
		st.LagBytes = uint64(st.ServerWALEnd - st.Confirmed)
	}
	return st
}

// sawWALEnd records a server WAL end position; it never moves back.
func (w *Watcher) sawWALEnd(lsn entities.LSN) { storeMax(&w.walEnd, uint64(lsn)) }

// redactedURL returns cfg.URL without its password, for logs and errors.
func (w *Watcher) redactedURL() string {
	u, err := url.Parse(w.cfg.URL)
	if err != nil || u.Scheme == "" {
		return "(keyword/value DSN)"
	}
	// url.URL.Redacted masks only user:password@; libpq URLs may also carry
	// the password (or sslpassword) as a query parameter.
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// SessionSettings are the session parameters under which PostgreSQL writes
// values in the text formats the value decoder parses. The replication
// connection sets them; a connection whose rows go through a RowDecoder
// must set them too (pgconn.Config.RuntimeParams).
var SessionSettings = map[string]string{
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"bytea_output":       "hex",
	"extra_float_digits": "1",
}

// replicationConfig returns the connection settings of the replication
// connection: the configured URL plus replication=database and the
// session settings the value decoder relies on.
func (w *Watcher) replicationConfig() (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(w.cfg.URL)
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["replication"] = "database"
	for k, v := range SessionSettings {
		pc.RuntimeParams[k] = v
	}
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "changecast-watcher"
	}
	return pc, nil
}

// EnsureSlot creates the replication slot (permanent, pgoutput) if it does
// not exist yet, without starting replication. From the moment it returns,
// PostgreSQL keeps every change committed to the publication's tables for
// this slot, even before Run first starts; changes committed before the
// slot exists are never streamed. A slot that exists and is in use by
// another process is not an error here: it exists.
//
// Like Run, EnsureSlot creates the slot only on a first start (see
// Config.ExpectSlot) and reports a lost slot as a *SlotLostError.
func (w *Watcher) EnsureSlot(ctx context.Context) error {
	conn, closeConn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	if _, err := w.prepare(ctx, conn); err != nil && !errors.Is(err, ErrSlotInUse) {
		return err
	}
	return nil
}

// RecoverSlot makes the slot usable again after Run or EnsureSlot
// reported lost: an invalidated slot is dropped and created again, a
// missing one is created, and a moved one is kept. It returns the position
// the slot now streams from; transactions that committed between
// lost.From and that position are lost, and the caller is expected to
// have recorded that (or to record it before streaming). RecoverSlot does
// not call Config.SavePosition: recording the loss stores the new
// position. Do not call it while Run is running.
func (w *Watcher) RecoverSlot(ctx context.Context, lost *SlotLostError) (entities.LSN, error) {
	conn, closeConn, err := w.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer closeConn()
	if lost.Kind == SlotMoved {
		return lost.SlotAt, nil
	}
	if lost.Kind == SlotInvalidated {
		err := pglogrepl.DropReplicationSlot(ctx, conn, w.cfg.Slot, pglogrepl.DropReplicationSlotOptions{})
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42704") { // undefined_object: gone already
			return 0, fmt.Errorf("drop invalidated replication slot %q: %w", w.cfg.Slot, err)
		}
		w.logger.Warn("dropped invalidated replication slot")
	}
	start, created, err := w.createSlot(ctx, conn)
	if err != nil {
		return 0, err
	}
	if !created {
		// Created meanwhile by another process: stream from where it is.
		st, err := w.slotState(ctx, conn)
		if err != nil {
			return 0, err
		}
		if !st.found {
			return 0, fmt.Errorf("replication slot %q vanished while being created", w.cfg.Slot)
		}
		if err := slotFits(w.cfg.Slot, st.plugin, st.slotType, st.database, st.temporary, st.currentDB); err != nil {
			return 0, err
		}
		start = st.confirmed
	}
	return start, nil
}
