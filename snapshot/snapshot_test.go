package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func TestParseSnapshot(t *testing.T) {
	xmin, xmax, xip, err := parseSnapshot("12884901988:12884901998:12884901988,12884901993")
	if err != nil || xmin != 12884901988 || xmax != 12884901998 || len(xip) != 2 || xip[1] != 12884901993 {
		t.Errorf("got %d %d %v %v", xmin, xmax, xip, err)
	}
	if _, _, _, err := parseSnapshot("1:2"); err == nil {
		t.Error("a malformed snapshot parsed")
	}
	if l, err := parseLSN("16/B374D848"); err != nil || l != 0x16_B374D848 {
		t.Errorf("parseLSN = %v, %v", l, err)
	}
}

type env struct {
	url string
	sql *pgx.Conn
	src *Source
}

func newEnv(t *testing.T, wait time.Duration) *env {
	t.Helper()
	e := newEnvTB(t)
	src, err := New(Config{URL: e.url, Registry: e.src.cfg.Registry, Slot: "s", PageRows: 2, Wait: wait})
	if err != nil {
		t.Fatal(err)
	}
	e.src = src
	return e
}

// newEnvTB is a fresh database with the items table, migrated, and a
// Source with default pages.
func newEnvTB(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := storetest.NewDatabase(t)
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "item", Table: "items", Schema: "public", KeyColumns: []string{"a", "b"}, Secrets: []string{"code"}}); err != nil {
		t.Fatal(err)
	}
	sql, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sql.Close(context.Background()) })
	if _, err := sql.Exec(ctx, `CREATE TABLE items (a int, b text, code text, api_token text, n numeric, at timestamptz,
		twice int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (a, b))`); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, reg); err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{URL: url, Registry: reg, Slot: "s"})
	if err != nil {
		t.Fatal(err)
	}
	return &env{url: url, sql: sql, src: src}
}

func (e *env) exec(t testing.TB, q string) {
	t.Helper()
	if _, err := e.sql.Exec(context.Background(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// readPages reads a snapshot of the item type from src, page by page.
func readPages(t *testing.T, src *Source) [][]entities.Change {
	t.Helper()
	ctx := context.Background()
	sn, err := src.Begin(ctx, []string{"item"})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	var pages [][]entities.Change
	for {
		rows, err := sn.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rows == nil {
			return pages
		}
		pages = append(pages, rows)
	}
}

// Rows come in key order (composite), page by page, sanitized, without
// generated or secret columns.
func TestSnapshot_RowsInKeyOrder(t *testing.T) {
	e := newEnv(t, time.Second)
	e.exec(t, `INSERT INTO items (a, b, code, api_token, n, at) VALUES
		(2, 'a', 'CANARY', 'CANARY', 1.50, '2026-11-23 11:00:00+01'), (1, 'b', 'CANARY', 'CANARY', 2, NULL),
		(1, 'a', 'CANARY', 'CANARY', NULL, NULL), (1, 'c', NULL, NULL, 3, NULL), (3, 'z', NULL, NULL, 4, NULL)`)
	var got []string
	pages := readPages(t, e.src)
	for _, rows := range pages {
		for _, r := range rows {
			if r.Operation != entities.OpSnapshot || r.EntityType != "item" {
				t.Errorf("row %+v", r)
			}
			b, _ := json.Marshal(r.Payload)
			got = append(got, string(b))
		}
	}
	want := []string{
		`{"a":1,"at":null,"b":"a","n":null}`,
		`{"a":1,"at":null,"b":"b","n":2}`,
		`{"a":1,"at":null,"b":"c","n":3}`,
		`{"a":2,"at":"2026-11-23T10:00:00Z","b":"a","n":1.50}`,
		`{"a":3,"at":null,"b":"z","n":4}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(pages) != 3 {
		t.Errorf("rows in %d pages:\n%s\nwant in 3:\n%s", len(pages), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A snapshot taken while a transaction older than every mark runs waits
// for it (bounded, with a clear error); once a mark precedes the running
// transactions, a snapshot proceeds at once and sees them as invisible.
func TestSnapshot_WaitsOnlyWithoutAMark(t *testing.T) {
	e := newEnv(t, 500*time.Millisecond)
	ctx := context.Background()
	other, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO items (a, b) VALUES (9, 'x')`); err != nil {
		t.Fatal(err)
	}
	_, err = e.src.Begin(ctx, []string{"item"})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "idle-in-transaction") {
		t.Fatalf("Begin with an older transaction running and no mark: %v, want ErrTimeout saying what to end", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sn, err := e.src.Begin(ctx, []string{"item"}) // records a mark below later transactions
	if err != nil {
		t.Fatal(err)
	}
	sn.Close()

	tx, err = other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO items (a, b) VALUES (10, 'x')`); err != nil {
		t.Fatal(err)
	}
	var full int64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&full); err != nil {
		t.Fatal(err)
	}
	xid := uint32(full)
	start := time.Now()
	sn, err = e.src.Begin(ctx, []string{"item"})
	if err != nil {
		t.Fatalf("Begin with a mark below the running transaction: %v", err)
	}
	defer sn.Close()
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("Begin took %s: it waited although a mark covers the running transaction", d)
	}
	if sn.Visible(xid) {
		t.Errorf("transaction %d, running when the snapshot was taken, is visible", xid)
	}
	if !sn.Visible(xid - 1) {
		t.Errorf("transaction %d, committed before, is not visible", xid-1)
	}
}

// A page of Next ends once its rows reach PageBytes, with at least one row
// per page, and the next page goes on from the last row: every row, once,
// in key order.
func TestSnapshot_PagesBoundedByBytes(t *testing.T) {
	e := newEnvTB(t)
	src, err := New(Config{URL: e.url, Registry: e.src.cfg.Registry, Slot: "s", PageBytes: 150, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO items (a, b, n) SELECT g, repeat('x', 100), g FROM generate_series(1, 7) g`)
	var sizes []int
	var got []string
	for _, rows := range readPages(t, src) {
		sizes = append(sizes, len(rows))
		for _, r := range rows {
			a, _ := r.Payload.Text("a")
			got = append(got, a)
		}
	}
	// Each row is about 140 bytes: two rows per page reach 150.
	if want := "1 2 3 4 5 6 7"; strings.Join(got, " ") != want || !slices.Equal(sizes, []int{2, 2, 2, 1}) {
		t.Errorf("rows %q in pages of %v, want %q in pages of [2 2 2 1]", got, sizes, want)
	}
}

// The rows come from one read-only, repeatable-read transaction that holds
// only ACCESS SHARE locks: while it is open between pages, writers of the
// table commit without waiting (lock_timeout 1s), and its later pages
// still read the rows as they were when it began.
func TestSnapshot_ReadOnlyRepeatableReadWritersNeverWait(t *testing.T) {
	e := newEnv(t, time.Second) // pages of 2 rows
	e.exec(t, `INSERT INTO items (a, b) SELECT g, 'x' FROM generate_series(1, 10) g`)
	ctx := context.Background()
	sn, err := e.src.Begin(ctx, []string{"item"})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	first, err := sn.Next(ctx)
	if err != nil || len(first) != 2 {
		t.Fatalf("first page: %d rows, %v", len(first), err)
	}
	row, err := sn.query1(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'), pg_backend_pid()::text`)
	if err != nil {
		t.Fatal(err)
	}
	if row[0] != "repeatable read" || row[1] != "on" {
		t.Fatalf("snapshot transaction: isolation %q, read only %q; want repeatable read, on", row[0], row[1])
	}
	locks, err := e.sql.Query(ctx, `SELECT locktype, mode, coalesce(relation::regclass::text, '') FROM pg_locks WHERE pid = $1::int`, row[2])
	if err != nil {
		t.Fatal(err)
	}
	for locks.Next() {
		var typ, mode, rel string
		if err := locks.Scan(&typ, &mode, &rel); err != nil {
			t.Fatal(err)
		}
		// Its own virtual transaction id is the one other lock a
		// transaction holds; no write waits for it.
		if !(typ == "relation" && mode == "AccessShareLock") && typ != "virtualxid" {
			t.Errorf("the snapshot holds %s %s %s", typ, mode, rel)
		}
	}
	if err := locks.Err(); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `SET lock_timeout = '1s'`)
	e.exec(t, `UPDATE items SET n = 1 WHERE a = 5; DELETE FROM items WHERE a = 9; INSERT INTO items (a, b) VALUES (11, 'x')`)
	var got []string
	for {
		rows, err := sn.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rows == nil {
			break
		}
		for _, r := range rows {
			b, _ := json.Marshal(r.Payload)
			got = append(got, string(b))
		}
	}
	if len(got) != 8 || !strings.Contains(got[2], `"a":5,`) || !strings.Contains(got[2], `"n":null`) || !strings.Contains(got[6], `"a":9,`) {
		t.Errorf("later pages after writes committed:\n%s\nwant rows 3 to 10 as they were", strings.Join(got, "\n"))
	}
}
