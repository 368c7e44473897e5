package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store/storetest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// waitTimeout bounds every wait in these tests.
const waitTimeout = 20 * time.Second

// schema is the test database: widgets (a column of every decoded type,
// REPLICA IDENTITY FULL, registered as "widget"), notes (REPLICA IDENTITY
// DEFAULT, registered as "note"), gadgets (published, not registered) and
// quiet (not published).
const schema = `
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE widgets (
	id bigint PRIMARY KEY,
	b bool, i2 int2, i4 int4, i8 int8, o oid,
	f4 float4, f8 float8, num numeric,
	t text, vc varchar(20), bp char(4), nm name, ch "char", ci citext, md mood,
	u uuid, tstz timestamptz, ts timestamp, d date,
	j json, jb jsonb, by bytea,
	ta text[], va varchar[], ia int4[],
	iv interval, ip inet,
	big text
);
ALTER TABLE widgets ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE widgets REPLICA IDENTITY FULL;
CREATE TABLE notes (id int PRIMARY KEY, title text, body text);
ALTER TABLE notes ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE gadgets (id int PRIMARY KEY, name text);
CREATE TABLE quiet (id serial PRIMARY KEY, v text);
`

type env struct {
	url  string
	pub  string
	reg  *entities.Registry
	conn *pgx.Conn
}

var slotCounter atomic.Int64

var nonName = regexp.MustCompile(`[^a-z0-9_]+`)

// uniqueSlot returns a slot name unique in the cluster: slots are
// cluster-wide.
func uniqueSlot(t testing.TB) string {
	n := fmt.Sprintf("w%d_%s", slotCounter.Add(1), nonName.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

func testRegistry(t testing.TB) *entities.Registry {
	t.Helper()
	reg := entities.NewRegistry()
	for _, et := range []entities.EntityType{
		{Name: "widget", Table: "widgets", Key: "id"},
		{Name: "note", Table: "notes", Key: "id"},
	} {
		if err := reg.Register(et); err != nil {
			t.Fatalf("register %s: %v", et.Name, err)
		}
	}
	return reg
}

// newEnv creates a fresh database in the shared cluster with the schema
// and a publication of widgets, notes and gadgets.
func newEnv(t testing.TB) *env {
	t.Helper()
	return setupEnv(t, storetest.NewDatabase(t))
}

func setupEnv(t testing.TB, url string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	pub := "pub_test"
	if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE widgets, notes, gadgets"); err != nil {
		t.Fatalf("create publication: %v", err)
	}
	return &env{url: url, pub: pub, reg: testRegistry(t), conn: conn}
}

func (e *env) config(t testing.TB) Config {
	return Config{
		URL:            e.url,
		Slot:           uniqueSlot(t),
		Publication:    e.pub,
		Registry:       e.reg,
		StatusInterval: time.Second,
		Logger:         testLogger(t),
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// exec runs sql on the env's connection.
func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := e.conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// running is a Watcher whose Run goroutine the test owns.
type running struct {
	w      *Watcher
	ch     chan Transaction
	cancel context.CancelFunc
	done   chan error
}

// start runs w until the test ends (or stop is called) and waits until it
// streams.
func start(t testing.TB, w *Watcher, buf int) *running {
	t.Helper()
	r := startNoWait(t, w, buf)
	waitFor(t, "watcher streaming", func() (bool, error) {
		select {
		case err := <-r.done:
			return false, fmt.Errorf("Run returned %v before streaming", err)
		default:
		}
		return w.Streaming(), nil
	})
	return r
}

func startNoWait(t testing.TB, w *Watcher, buf int) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, ch: make(chan Transaction, buf), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx, r.ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

// stop cancels Run and returns what it returned.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("Run did not return after cancel")
		return nil
	}
}

// next returns the next transaction.
func (r *running) next(t testing.TB) Transaction {
	t.Helper()
	select {
	case tx := <-r.ch:
		return tx
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned %v while waiting for a transaction", err)
	case <-time.After(waitTimeout):
		t.Fatalf("no transaction within %s", waitTimeout)
	}
	return Transaction{}
}

// waitFor polls cond until it is true, fails, or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type slotRow struct {
	exists         bool
	plugin         string
	slotType       string
	temporary      bool
	active         bool
	confirmedFlush entities.LSN
}

func readSlot(t testing.TB, conn *pgx.Conn, slot string) slotRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var s slotRow
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT plugin, slot_type, temporary, active, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s.plugin, &s.slotType, &s.temporary, &s.active, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return s
	}
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	s.exists = true
	if lsn != nil {
		s.confirmedFlush = parseLSN(t, *lsn)
	}
	return s
}

func parseLSN(t testing.TB, s string) entities.LSN {
	t.Helper()
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("parse LSN %q: %v", s, err)
	}
	return entities.LSN(uint64(hi)<<32 | uint64(lo))
}

func newWatcher(t testing.TB, cfg Config) *Watcher {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

// rowOf is entities.RowOf: the row a decoded tuple must equal.
func rowOf(m map[string]any) *entities.Row { return entities.RowOf(m) }

// rowText is Row.Text without its ok: "" when the column is missing or
// not a string or number.
func rowText(r *entities.Row, name string) string {
	s, _ := r.Text(name)
	return s
}

// sameChange compares changes, rows by their JSON.
func sameChange(a, b entities.Change) bool {
	if !a.Payload.Equal(b.Payload) || !a.Previous.Equal(b.Previous) {
		return false
	}
	a.Payload, a.Previous, b.Payload, b.Previous = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}
