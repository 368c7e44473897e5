// Package snapshot reads the current rows of watched tables, and says
// exactly which journaled changes those rows do not contain, so a client can
// start from the rows and continue with the stream with no gap and no
// duplicate (issue 14; docs/guarantees.md, "Snapshots and the seam").
//
// A Snapshot is one read-only, repeatable-read transaction on the watched
// database. Its rows are read a page at a time in key order (keyset
// pagination), decoded with watcher.RowDecoder under watcher.SessionSettings
// (so a row read here encodes to the same bytes as the same row replicated)
// and passed through the sanitizer changes go through. Membership of a
// journaled change in the snapshot is decided by transaction visibility
// (Snapshot.Visible), never by time or WAL position; WAL positions only
// bound how long to wait for the journal and where to start reading it
// (Snapshot.From, Snapshot.Complete).
//
// The transaction takes only ACCESS SHARE locks (plain SELECTs), runs with
// lock_timeout and statement_timeout, and is closed as soon as the last page
// is read (Snapshot.Release). Source bounds nothing by itself: callers cap
// how many snapshots are open at once. A Snapshot is used by one goroutine;
// a Source is safe for concurrent use.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/xidsnap"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/watcher"
)

// Defaults for Config fields left zero.
const (
	DefaultPageRows         = 500
	DefaultPageBytes        = 4 << 20
	DefaultLockTimeout      = 5 * time.Second
	DefaultStatementTimeout = 60 * time.Second
	DefaultWait             = 30 * time.Second
)

// Config configures a Source. Zero values take the documented defaults.
type Config struct {
	// URL is the watched database. Required.
	URL string
	// JournalURL is the database holding the journal (changecast.journal
	// and changecast.offsets) when it is not URL (serve --journal-url).
	// Default: URL.
	JournalURL string
	// Registry holds the entity types that can be read. Required.
	Registry *entities.Registry
	// Sanitize strips what never leaves changecast, as for changes. A
	// server whose rules can change (reload) passes the sanitizer in
	// force (pipeline.Pipeline.Sanitize), so a snapshot never applies
	// older rules than the stream. Default: sanitize.New(Registry).Change.
	Sanitize func(entities.Change) (entities.Change, error)
	// Slot names the stored replication offset (changecast.offsets) that
	// says how far the journal has got. Required.
	Slot string
	// Publication finds the schema of a type registered without one.
	// Default: "changecast".
	Publication string
	// PageRows is how many rows one page reads. Default: 500.
	PageRows int
	// PageBytes bounds a page of Next by size as well: a page ends at
	// the first row that brings its sanitized rows to PageBytes or more
	// (so wide rows make short pages, and one row always fits).
	// Default: 4 MiB.
	PageBytes int
	// LockTimeout is the snapshot transaction's lock_timeout: how long a
	// read waits for a lock (only DDL such as ALTER TABLE holds one a
	// SELECT waits for). Default: 5s.
	LockTimeout time.Duration
	// StatementTimeout bounds each statement of a snapshot, and the time
	// the transaction may stay idle between pages. Default: 60s.
	StatementTimeout time.Duration
	// Wait bounds the two waits of a snapshot: for transactions older
	// than it to end when no earlier mark covers them (Begin), and for
	// the journal to reach the snapshot's WAL position (Complete).
	// Default: 30s.
	Wait time.Duration
	// Logger receives one line per failed snapshot. Default: discard.
	Logger *slog.Logger
	// Journal, when set, reads the journal's head and stored offset for
	// a journal that is not in PostgreSQL (NATS JetStream); JournalURL
	// is then unused. Default: nil, the SQL on changecast.journal and
	// changecast.offsets.
	Journal JournalPosition
}

// JournalPosition reads where a journal kept outside PostgreSQL is.
type JournalPosition interface {
	// Head returns the journal head: the highest cursor ever written,
	// even when retention emptied the journal.
	Head(ctx context.Context) (int64, error)
	// Position returns the stored replication offset of slot, then the
	// journal head read after it (so it covers every change up to the
	// offset) and readable by the reader the seam uses.
	Position(ctx context.Context, slot string) (offset entities.LSN, head int64, err error)
}

// Source opens snapshots. It remembers a few marks (see mark) so that a
// snapshot rarely has to wait for older transactions to end.
type Source struct {
	cfg Config
	mu  struct {
		sync.Mutex
		marks []mark // ascending by xid
	}
}

// maxMarks bounds the marks a Source keeps.
const maxMarks = 64

// New validates cfg and returns a Source.
func New(cfg Config) (*Source, error) {
	if cfg.URL == "" || cfg.Registry == nil || cfg.Slot == "" {
		return nil, errors.New("new snapshot source: URL, Registry and Slot are required")
	}
	if cfg.PageRows < 0 || cfg.PageBytes < 0 || cfg.LockTimeout < 0 || cfg.StatementTimeout < 0 || cfg.Wait < 0 {
		return nil, errors.New("new snapshot source: PageRows, PageBytes, LockTimeout, StatementTimeout and Wait must not be negative")
	}
	if _, err := pgconn.ParseConfig(cfg.URL); err != nil {
		return nil, fmt.Errorf("new snapshot source: database URL: %w", err)
	}
	if cfg.Sanitize == nil {
		cfg.Sanitize = sanitize.New(cfg.Registry).Change
	}
	if cfg.Publication == "" {
		cfg.Publication = "changecast"
	}
	if cfg.PageRows == 0 {
		cfg.PageRows = DefaultPageRows
	}
	if cfg.PageBytes == 0 {
		cfg.PageBytes = DefaultPageBytes
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.StatementTimeout == 0 {
		cfg.StatementTimeout = DefaultStatementTimeout
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg}, nil
}

// mark pairs a transaction id with the journal head read before that id
// was assigned: every transaction whose id is above xid committed after
// the head was read, so its changes have cursors above head. A snapshot
// whose xmin is above a mark's xid therefore has every change it does not
// see above that mark's head (docs/guarantees.md explains why the journal
// head read inside the snapshot is not enough).
type mark struct {
	xid  uint64 // a full (epoch-extended) transaction id
	head int64
}

// Errors a caller may branch on.
var (
	// ErrUnknownType: a type the registry does not hold.
	ErrUnknownType = errors.New("unknown entity type")
	// ErrSecretColumnMissing: a declared secret column of the type is
	// gone from its table, so its rows cannot be read safely.
	ErrSecretColumnMissing = errors.New("a secret column is missing")
	// ErrTimeout: a bounded wait (Config.Wait) ran out. It has a
	// Timeout method that returns true.
	ErrTimeout error = timeoutError{}
)

type timeoutError struct{}

func (timeoutError) Error() string { return "snapshot wait timed out" }
func (timeoutError) Timeout() bool { return true }

// Snapshot is one consistent read of some entity types' current rows,
// with what is needed to continue from the journal exactly.
type Snapshot struct {
	src  *Source
	conn *pgconn.PgConn
	// jconn reads the journal when it lives in another database; nil
	// when it is beside the data (conn reads it).
	jconn *pgconn.PgConn
	dec   *watcher.RowDecoder
	inTx  bool
	types []entities.EntityType

	vis  xidsnap.Snapshot
	lsn  entities.LSN // pg_current_wal_insert_lsn() after the snapshot was taken
	from int64

	// Reading: the type being read, its table, columns and the key of
	// the last row read.
	cur      int
	table    *table
	lastKey  [][]byte
	nudged   bool
	tables   map[string]*table // Rows' tables, by type
	released bool
}

// table is one type's table as the snapshot reads it.
type table struct {
	et      entities.EntityType
	ident   string   // quoted schema.table
	cols    []string // selected columns, in table order
	keyIdx  []int    // positions of the key columns in cols
	keySQL  string   // (k1, k2)
	keyCast []string // the key columns' types, for the keyset parameters
}

// Begin opens a snapshot of types (registered entity type names; system
// events have no table and are refused). It connects to the database,
// records a mark, takes the snapshot and finds where the journal must be
// read from (From). When no mark is older than every transaction the
// snapshot sees as running, it waits (at most Config.Wait) for those
// transactions to end and takes the snapshot again. The caller must
// Close the Snapshot.
func (s *Source) Begin(ctx context.Context, types []string) (*Snapshot, error) {
	var ets []entities.EntityType
	for _, name := range types {
		et, err := s.cfg.Registry.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w %q", ErrUnknownType, name)
		}
		ets = append(ets, et)
	}
	pc, err := pgconn.ParseConfig(s.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("snapshot: database URL: %w", err)
	}
	for k, v := range watcher.SessionSettings {
		pc.RuntimeParams[k] = v
	}
	pc.RuntimeParams["application_name"] = "changecast-snapshot"
	pc.RuntimeParams["lock_timeout"] = strconv.FormatInt(s.cfg.LockTimeout.Milliseconds(), 10)
	pc.RuntimeParams["statement_timeout"] = strconv.FormatInt(s.cfg.StatementTimeout.Milliseconds(), 10)
	pc.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(s.cfg.StatementTimeout.Milliseconds(), 10)
	pc.RuntimeParams["default_transaction_read_only"] = "on"
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("snapshot: connect: %w", err)
	}
	sn := &Snapshot{src: s, conn: conn, types: ets}
	if s.cfg.JournalURL != "" && s.cfg.JournalURL != s.cfg.URL {
		jc, err := pgconn.ParseConfig(s.cfg.JournalURL)
		if err != nil {
			sn.Close()
			return nil, fmt.Errorf("snapshot: journal database URL: %w", err)
		}
		jc.RuntimeParams["application_name"] = "changecast-snapshot"
		jc.RuntimeParams["statement_timeout"] = strconv.FormatInt(s.cfg.StatementTimeout.Milliseconds(), 10)
		if sn.jconn, err = pgconn.ConnectConfig(ctx, jc); err != nil {
			sn.Close()
			return nil, fmt.Errorf("snapshot: connect to the journal database: %w", err)
		}
	}
	if err := sn.begin(ctx); err != nil {
		sn.Close()
		s.cfg.Logger.Warn("snapshot failed", "err", err)
		return nil, err
	}
	return sn, nil
}

func (sn *Snapshot) begin(ctx context.Context) error {
	s := sn.src
	dec, err := watcher.NewRowDecoder(ctx, sn.conn)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	sn.dec = dec
	fresh, err := sn.mark(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.cfg.Wait)
	for {
		if err := sn.take(ctx); err != nil {
			return err
		}
		if m, ok := s.markBelow(sn.vis.Xmin); ok {
			sn.from = m.head
			return nil
		}
		// Every mark is at or above the oldest transaction the
		// snapshot sees running: its changes could be anywhere after
		// the journal head of the oldest mark. Wait for the
		// transactions older than the fresh mark to end, then take
		// the snapshot again: its xmin is then above that mark.
		if err := sn.exec(ctx, "ROLLBACK"); err != nil {
			return err
		}
		sn.inTx = false
		if err := sn.waitXmin(ctx, fresh, deadline); err != nil {
			return err
		}
	}
}

// mark records a mark: the journal head, read in the statement's snapshot,
// then a fresh transaction id (assigned while the statement runs, so after
// the head was read). It costs one transaction id.
func (sn *Snapshot) mark(ctx context.Context) (uint64, error) {
	var row []string
	var err error
	if j := sn.src.cfg.Journal; j != nil {
		// The journal outside PostgreSQL: as with a journal database
		// apart, the head first, then the id.
		var head int64
		if head, err = j.Head(ctx); err == nil {
			var xid []string
			if xid, err = sn.query1(ctx, `SELECT pg_current_xact_id()::text`); err == nil {
				row = []string{strconv.FormatInt(head, 10), xid[0]}
			}
		}
	} else if sn.jconn != nil {
		// The journal apart: its head first, then the id, so the id is
		// still assigned after the head was read.
		var head []string
		if head, err = query1(ctx, sn.jconn, journalHeadSQL); err == nil {
			var xid []string
			if xid, err = sn.query1(ctx, `SELECT pg_current_xact_id()::text`); err == nil {
				row = []string{head[0], xid[0]}
			}
		}
	} else {
		row, err = sn.query1(ctx, `SELECT `+journalHeadSQL[len("SELECT "):]+`, pg_current_xact_id()::text`)
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot: journal mark: %w", err)
	}
	head, err1 := strconv.ParseInt(row[0], 10, 64)
	xid, err2 := strconv.ParseUint(row[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("snapshot: journal mark: unexpected values %q", row)
	}
	sn.src.addMark(mark{xid: xid, head: head})
	return xid, nil
}

// journalHeadSQL reads the journal head: the highest cursor ever written,
// even when retention emptied the journal.
const journalHeadSQL = `SELECT GREATEST(
			coalesce((SELECT max(seq) FROM changecast.journal), 0),
			coalesce((SELECT max(horizon) FROM changecast.journal_meta), 0))::text`

func (s *Source) addMark(m mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.mu.marks, m.xid, func(a mark, x uint64) int { return cmpU64(a.xid, x) })
	s.mu.marks = slices.Insert(s.mu.marks, i, m)
	if len(s.mu.marks) > maxMarks {
		// Keep the oldest (it covers the longest transactions) and
		// the newest; drop the second oldest.
		s.mu.marks = slices.Delete(s.mu.marks, 1, 2)
	}
}

// markBelow returns the newest mark whose xid is below xmin.
func (s *Source) markBelow(xmin uint64) (mark, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.mu.marks) - 1; i >= 0; i-- {
		if s.mu.marks[i].xid < xmin {
			return s.mu.marks[i], true
		}
	}
	return mark{}, false
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// take begins the repeatable-read transaction and reads its snapshot and
// the WAL insert position (read after the snapshot was taken, so every
// commit the snapshot sees ends before it).
func (sn *Snapshot) take(ctx context.Context) error {
	if err := sn.exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("snapshot: begin: %w", err)
	}
	sn.inTx = true
	row, err := sn.query1(ctx, `SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text`)
	if err != nil {
		return fmt.Errorf("snapshot: read snapshot: %w", err)
	}
	xmin, xmax, xip, err := parseSnapshot(row[0])
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	lsn, err := parseLSN(row[1])
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	sn.vis, sn.lsn = xidsnap.Snapshot{Xmin: xmin, Xmax: xmax, Xip: xip}, lsn
	return nil
}

// waitXmin polls until every transaction with an id up to xid has ended.
func (sn *Snapshot) waitXmin(ctx context.Context, xid uint64, deadline time.Time) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		row, err := sn.query1(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`)
		if err != nil {
			return fmt.Errorf("snapshot: wait for older transactions: %w", err)
		}
		xmin, err := strconv.ParseUint(row[0], 10, 64)
		if err != nil {
			return fmt.Errorf("snapshot: unexpected xmin %q", row[0])
		}
		if xmin > xid {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("snapshot: %w: transaction %d (and any older one still running) did not end within %s; a snapshot waits for the transactions running when it starts, the first time; end long-running or idle-in-transaction sessions (pg_stat_activity) and try again", ErrTimeout, xmin, sn.src.cfg.Wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// parseSnapshot parses pg_snapshot's text form "xmin:xmax:xip,xip"; xip is
// returned ascending.
func parseSnapshot(s string) (xmin, xmax uint64, xip []uint64, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	if xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	if xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("unexpected snapshot %q", s)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil || v < xmin || v >= xmax {
				return 0, 0, nil, fmt.Errorf("unexpected snapshot %q", s)
			}
			xip = append(xip, v)
		}
	}
	slices.Sort(xip)
	return xmin, xmax, slices.Compact(xip), nil
}

// parseLSN parses PostgreSQL's "16/B374D848".
func parseLSN(s string) (entities.LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected LSN %q", s)
	}
	return entities.LSN(h<<32 | l), nil
}

// Visible reports whether the transaction xid (32 bits, as journaled) is
// visible in the snapshot, as pg_visible_in_snapshot decides it: it
// committed before the snapshot was taken (xidsnap.Snapshot.Visible).
func (sn *Snapshot) Visible(xid uint32) bool { return sn.vis.Visible(xid) }

// From returns the cursor after which every journaled change the snapshot
// does not see lies: the changes at or before it are all visible.
func (sn *Snapshot) From() int64 { return sn.from }

// Next returns the next page of rows: sanitized, with Operation
// entities.OpSnapshot and EntityType set, in key order within a
// type and types in the order given to Begin. It returns nil once every
// row has been read; the transaction is then closed (Release).
func (sn *Snapshot) Next(ctx context.Context) ([]entities.Change, error) {
	for sn.cur < len(sn.types) {
		if sn.table == nil {
			t, err := sn.loadTable(ctx, sn.types[sn.cur])
			if err != nil {
				return nil, err
			}
			sn.table, sn.lastKey = t, nil
		}
		rows, err := sn.page(ctx)
		if err != nil {
			return nil, err
		}
		if len(rows) > 0 {
			return rows, nil
		}
		sn.cur++
		sn.table = nil
	}
	if err := sn.Release(ctx); err != nil {
		return nil, err
	}
	return nil, nil
}

// loadTable finds et's table and the columns to read: every column but
// the dropped, the generated (pgoutput does not send them) and those the
// sanitizer would strip, which thus never leave PostgreSQL.
func (sn *Snapshot) loadTable(ctx context.Context, et entities.EntityType) (*table, error) {
	schema := et.Schema
	if schema == "" {
		row, err := sn.query1(ctx, `SELECT coalesce((SELECT schemaname::text FROM pg_publication_tables WHERE pubname = $1 AND tablename = $2 LIMIT 1),
			(SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(quote_ident($2))), '')`,
			sn.src.cfg.Publication, et.Table)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: find table %s: %w", et.Name, et.Table, err)
		}
		schema = row[0]
		if schema == "" {
			return nil, fmt.Errorf("snapshot %s: table %s not found", et.Name, et.Table)
		}
	}
	t := &table{et: et, ident: quoteIdent(schema) + "." + quoteIdent(et.Table)}
	rr := sn.conn.ExecParams(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), (a.attgenerated <> '')::text
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, [][]byte{[]byte(t.ident)}, nil, nil, nil)
	types := map[string]string{}
	all := map[string]bool{}
	for rr.NextRow() {
		v := rr.Values()
		col, typ, generated := string(v[0]), string(v[1]), string(v[2]) == "true"
		all[col] = true
		if generated {
			continue // not replicated either
		}
		types[col] = typ
		if !sanitize.Stripped(et, col) {
			t.cols = append(t.cols, col)
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, fmt.Errorf("snapshot %s: columns of %s: %w", et.Name, t.ident, err)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("snapshot %s: table %s not found", et.Name, t.ident)
	}
	// A declared secret column that is gone was dropped or, worse,
	// renamed: under its new name no rule strips it. The stream stops
	// such a type (the pipeline's secret guard); a snapshot refuses it.
	for _, col := range et.Secrets {
		if !all[col] {
			return nil, fmt.Errorf("snapshot %s: %w: its secret column %s is gone from %s (dropped or renamed); declare the column's new name as a secret and reload", et.Name, ErrSecretColumnMissing, col, t.ident)
		}
	}
	keys := et.KeyColumns
	if len(keys) == 0 {
		keys = []string{et.Key}
	}
	var quoted []string
	for _, k := range keys {
		typ, ok := types[k]
		if !ok {
			return nil, fmt.Errorf("snapshot %s: key column %s is not a column of %s", et.Name, k, t.ident)
		}
		i := slices.Index(t.cols, k)
		if i < 0 {
			// A key column is never stripped (the registry refuses
			// secret keys), but read it anyway to page.
			t.cols = append(t.cols, k)
			i = len(t.cols) - 1
		}
		t.keyIdx = append(t.keyIdx, i)
		t.keyCast = append(t.keyCast, typ)
		quoted = append(quoted, quoteIdent(k))
	}
	t.keySQL = "(" + strings.Join(quoted, ", ") + ")"
	return t, nil
}

// page reads the next page of the type being read, after the last key read.
func (sn *Snapshot) page(ctx context.Context) ([]entities.Change, error) {
	out, keys, err := sn.pageAfter(ctx, sn.table, sn.lastKey, sn.src.cfg.PageRows, false)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		sn.lastKey = keys[len(keys)-1]
	}
	return out, nil
}

// pageAfter reads up to limit rows of t whose key is above after (all rows
// when after is nil), in key order, and returns them with their keys (text
// values, copied): every row's when all, else only the last row's. Without
// all, it also ends the page at the first row that brings it to PageBytes
// (the rest of the result is read and dropped by the connection); with
// all, a caller that takes fewer than limit rows as the end needs them all.
func (sn *Snapshot) pageAfter(ctx context.Context, t *table, after [][]byte, limit int, all bool) ([]entities.Change, [][][]byte, error) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range t.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c))
	}
	b.WriteString(" FROM ")
	b.WriteString(t.ident)
	var params [][]byte
	if after != nil {
		b.WriteString(" WHERE ")
		b.WriteString(t.keySQL)
		b.WriteString(" > (")
		for i, typ := range t.keyCast {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d::%s", i+1, typ)
		}
		b.WriteString(")")
		params = after
	}
	b.WriteString(" ORDER BY ")
	b.WriteString(strings.Trim(t.keySQL, "()"))
	fmt.Fprintf(&b, " LIMIT %d", limit)

	rr := sn.conn.ExecParams(ctx, b.String(), params, nil, nil, nil)
	fds := rr.FieldDescriptions()
	cols := make([]watcher.Column, len(fds))
	for i, f := range fds {
		cols[i] = watcher.Column{Name: f.Name, OID: f.DataTypeOID}
	}
	var out []entities.Change
	var keys [][][]byte
	var last [][]byte
	size := 0
	for rr.NextRow() {
		vals := rr.Values()
		row := sn.dec.Decode(cols, vals)
		last = last[:0]
		for _, i := range t.keyIdx {
			last = append(last, vals[i])
		}
		if all {
			keys = append(keys, copyKey(last))
		}
		ch := entities.Change{EntityType: t.et.Name, Operation: entities.OpSnapshot, Payload: row}
		sc, err := sn.src.cfg.Sanitize(ch)
		if err != nil {
			rr.Close()
			return nil, nil, fmt.Errorf("snapshot %s: %w", t.et.Name, err)
		}
		out = append(out, sc)
		if size += len(sc.Payload.JSON()); !all && size >= sn.src.cfg.PageBytes {
			break
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, nil, fmt.Errorf("snapshot %s: read %s: %w", t.et.Name, t.ident, err)
	}
	if !all && len(out) > 0 {
		keys = [][][]byte{copyKey(last)}
	}
	return out, keys, nil
}

// copyKey copies key values, which alias the connection's buffer.
func copyKey(key [][]byte) [][]byte {
	out := make([][]byte, len(key))
	for i, v := range key {
		out[i] = append([]byte(nil), v...)
	}
	return out
}

// Rows reads up to limit rows of typ (one of the types given to Begin)
// whose key is above after, in key order: after is a key Rows returned
// (text values, one per key column), or nil for the first rows. It returns
// the rows, sanitized as Next's, and each row's key. Fewer than limit rows
// means there are no more. Rows and Next are not meant to be mixed on one
// Snapshot; Rows leaves the transaction open (Release ends it). A key that
// is not a value of the key's type is an error from PostgreSQL.
func (sn *Snapshot) Rows(ctx context.Context, typ string, after [][]byte, limit int) ([]entities.Change, [][][]byte, error) {
	if sn.released {
		return nil, nil, errors.New("snapshot: rows read after the transaction ended")
	}
	if limit <= 0 {
		return nil, nil, errors.New("snapshot: limit must be positive")
	}
	i := slices.IndexFunc(sn.types, func(et entities.EntityType) bool { return et.Name == typ })
	if i < 0 {
		return nil, nil, fmt.Errorf("snapshot: %w %q (not in this snapshot)", ErrUnknownType, typ)
	}
	if sn.tables == nil {
		sn.tables = map[string]*table{}
	}
	t := sn.tables[typ]
	if t == nil {
		var err error
		if t, err = sn.loadTable(ctx, sn.types[i]); err != nil {
			return nil, nil, err
		}
		sn.tables[typ] = t
	}
	if after != nil && len(after) != len(t.keyIdx) {
		return nil, nil, fmt.Errorf("snapshot %s: a key of %d values, want %d", typ, len(after), len(t.keyIdx))
	}
	return sn.pageAfter(ctx, t, after, limit, true)
}

// Bounds returns the snapshot as pg_current_snapshot() gave it: xmin, xmax
// and the transactions in progress. With From and Complete's cursor it is
// all a later reader needs to tell which journaled changes the rows
// contain.
func (sn *Snapshot) Bounds() xidsnap.Snapshot {
	v := sn.vis
	v.Xip = slices.Clone(v.Xip)
	return v
}

// Release ends the transaction once the rows are read: its locks and its
// hold on vacuum go, and the caller may give back whatever bounds open
// snapshots. Visible, From and Complete keep working.
func (sn *Snapshot) Release(ctx context.Context) error {
	if sn.released {
		return nil
	}
	sn.released = true
	if sn.inTx {
		sn.inTx = false
		if err := sn.exec(ctx, "COMMIT"); err != nil {
			return fmt.Errorf("snapshot: end transaction: %w", err)
		}
	}
	return nil
}

// Complete waits until the journal holds every change the snapshot sees
// (the stored replication offset has reached the WAL position read after
// the snapshot), at most Config.Wait, and returns the journal head at that
// moment: every journaled change after it is one the snapshot does not
// see. Call it after Release; on success it closes the snapshot's
// connections (Visible and From still answer).
func (sn *Snapshot) Complete(ctx context.Context) (int64, error) {
	deadline := time.Now().Add(sn.src.cfg.Wait)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		const position = `SELECT coalesce((SELECT lsn FROM changecast.offsets WHERE slot = $1), 0)::text,
			GREATEST(coalesce((SELECT max(seq) FROM changecast.journal), 0),
				coalesce((SELECT max(horizon) FROM changecast.journal_meta), 0))::text`
		var row []string
		var err error
		if j := sn.src.cfg.Journal; j != nil {
			var offset entities.LSN
			var head int64
			var flushed []string
			if offset, head, err = j.Position(ctx, sn.src.cfg.Slot); err == nil {
				if flushed, err = sn.query1(ctx, `SELECT pg_current_wal_flush_lsn()::text`); err == nil {
					row = []string{strconv.FormatUint(uint64(offset), 10), strconv.FormatInt(head, 10), flushed[0]}
				}
			}
		} else if sn.jconn != nil {
			var flushed []string
			if row, err = query1(ctx, sn.jconn, position, sn.src.cfg.Slot); err == nil {
				if flushed, err = sn.query1(ctx, `SELECT pg_current_wal_flush_lsn()::text`); err == nil {
					row = append(row, flushed[0])
				}
			}
		} else {
			row, err = sn.query1(ctx, position+`, pg_current_wal_flush_lsn()::text`, sn.src.cfg.Slot)
		}
		if err != nil {
			return 0, fmt.Errorf("snapshot: journal position: %w", err)
		}
		offset, err1 := strconv.ParseInt(row[0], 10, 64)
		head, err2 := strconv.ParseInt(row[1], 10, 64)
		flushed, err3 := parseLSN(row[2])
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, fmt.Errorf("snapshot: journal position: unexpected values %q", row)
		}
		if entities.LSN(offset) >= sn.lsn {
			// Nothing after this needs the database (the seam is
			// decided in memory): its connections go back now, not
			// when the seam has been sent.
			sn.Close()
			return head, nil
		}
		if flushed < sn.lsn && !sn.nudged {
			// The WAL up to the snapshot's position is not flushed
			// yet (asynchronous commits, or a transaction still
			// writing): the walsender sends only flushed WAL. A
			// transaction with an id and no writes of its own
			// commits asynchronously, which makes the WAL writer
			// flush everything before it within wal_writer_delay.
			sn.nudged = true
			if _, err := sn.query1(ctx, `SELECT pg_current_xact_id()::text`); err != nil {
				return 0, fmt.Errorf("snapshot: flush WAL: %w", err)
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("snapshot: %w: the journal did not reach the snapshot's WAL position %s within %s (stored offset %s); is replication lagging?", ErrTimeout, sn.lsn, sn.src.cfg.Wait, entities.LSN(offset))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// Close releases the connection (rolling back an open transaction). It
// may be called more than once.
func (sn *Snapshot) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if sn.jconn != nil {
		_ = sn.jconn.Close(ctx)
		sn.jconn = nil
	}
	if sn.conn == nil {
		return
	}
	_ = sn.conn.Close(ctx)
	sn.conn = nil
}

func (sn *Snapshot) exec(ctx context.Context, sql string) error {
	_, err := sn.conn.Exec(ctx, sql).ReadAll()
	return err
}

// query1 runs sql with text parameters on the snapshot's connection and
// returns its single row as text.
func (sn *Snapshot) query1(ctx context.Context, sql string, args ...string) ([]string, error) {
	return query1(ctx, sn.conn, sql, args...)
}

func query1(ctx context.Context, conn *pgconn.PgConn, sql string, args ...string) ([]string, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := conn.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) != 1 {
		return nil, fmt.Errorf("want one row, got %d", len(res.Rows))
	}
	out := make([]string, len(res.Rows[0]))
	for i, v := range res.Rows[0] {
		out[i] = string(v)
	}
	return out, nil
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
