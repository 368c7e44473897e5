package watcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
)

func TestRun_DecodesEveryType(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)

	e.exec(t, `INSERT INTO widgets VALUES (
		1, true, -2, 4, 9223372036854775807, 42,
		1.5, 0.1, 12345678901234567890.000000000000000001,
		'héllo', 'vc', 'ab', 'nm', 'x', 'MiXeD', 'sad',
		'0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d', '2026-11-23 15:30:00.123456+05:30', '2026-11-23 10:00:00.5', '2026-11-23',
		'{"n": 9007199254740993}', '{"n": 9007199254740993, "f": 1.10}', '\x00ff',
		'{a,"b c",NULL}', '{x,y}', '{1,NULL,3}',
		'1 day 02:00:00', '10.0.0.1/8',
		NULL)`)
	e.exec(t, `INSERT INTO widgets (id, f8, num) VALUES (2, 'NaN', 'NaN')`)

	tx := r.next(t)
	if len(tx.Changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(tx.Changes))
	}
	got := tx.Changes[0].Payload
	want := map[string]any{
		"id": int64(1), "b": true, "i2": int64(-2), "i4": int64(4), "i8": int64(9223372036854775807), "o": int64(42),
		"f4": 1.5, "f8": 0.1, "num": json.Number("12345678901234567890.000000000000000001"),
		"t": "héllo", "vc": "vc", "bp": "ab  ", "nm": "nm", "ch": "x", "ci": "MiXeD", "md": "sad",
		"u":    uuid.MustParse("0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d"),
		"tstz": time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC),
		"ts":   time.Date(2026, 11, 23, 10, 0, 0, 500000000, time.UTC),
		"d":    "2026-11-23",
		"j":    json.RawMessage(`{"n": 9007199254740993}`),
		"jb":   json.RawMessage(`{"f": 1.10, "n": 9007199254740993}`),
		"by":   []byte{0, 0xff},
		"ta":   []any{"a", "b c", nil},
		"va":   []string{"x", "y"},
		"ia":   []any{int64(1), nil, int64(3)},
		"iv":   "1 day 02:00:00",
		"ip":   "10.0.0.1/8",
		"big":  nil,
	}
	wantRow := rowOf(want)
	for col := range want {
		g, ok := got.Get(col)
		if !ok {
			t.Errorf("column %s missing", col)
			continue
		}
		if w, _ := wantRow.Get(col); string(g) != string(w) {
			t.Errorf("column %s = %s, want %s (the JSON of %#v)", col, g, w, want[col])
		}
	}
	if got.Len() != len(want) {
		t.Errorf("payload has %d columns, want %d: %v", got.Len(), len(want), got)
	}
	// The payload encodes to JSON with the big integer intact.
	if b, _ := got.Get("jb"); string(b) != `{"f":1.10,"n":9007199254740993}` {
		t.Errorf("jsonb encodes to %s, want the exact number", b)
	}

	nulls := r.next(t).Changes[0].Payload
	if f8, num := rowText(nulls, "f8"), rowText(nulls, "num"); f8 != "NaN" || num != "NaN" {
		t.Errorf("NaN float/numeric = %#v, %#v, want strings", f8, num)
	}
	for _, col := range []string{"b", "i8", "t", "u", "tstz", "jb", "by", "ta"} {
		if !nulls.IsNull(col) {
			t.Errorf("NULL column %s present %v, want null", col, nulls.Has(col))
		}
	}
}

func TestRun_InsertUpdateDelete(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)

	e.exec(t, `INSERT INTO widgets (id, t, i4) VALUES (7, 'one', 1)`)
	e.exec(t, `UPDATE widgets SET t = 'two' WHERE id = 7`)
	e.exec(t, `DELETE FROM widgets WHERE id = 7`)

	c := r.next(t).Changes[0]
	if c.Operation != entities.OpCreate || c.EntityType != "widget" || c.EntityID != "7" || rowText(c.Payload, "t") != "one" || c.Previous != nil {
		t.Fatalf("insert: got %+v", c)
	}
	c = r.next(t).Changes[0]
	if c.Operation != entities.OpUpdate || c.EntityID != "7" || rowText(c.Payload, "t") != "two" || rowText(c.Payload, "i4") != "1" {
		t.Fatalf("update: got %+v", c)
	}
	if c.Previous == nil || rowText(c.Previous, "t") != "one" || rowText(c.Previous, "i4") != "1" {
		t.Fatalf("update: previous = %v, want the old row", c.Previous)
	}
	c = r.next(t).Changes[0]
	if c.Operation != entities.OpDelete || c.EntityID != "7" || rowText(c.Payload, "t") != "two" || c.Previous != nil {
		t.Fatalf("delete: got %+v, want the old row as payload", c)
	}
}

func TestRun_KeyOnlyOldTuple(t *testing.T) {
	// notes has REPLICA IDENTITY DEFAULT: changing the key sends a 'K'
	// tuple whose non-key columns are "not sent", not NULL; a delete
	// sends only the key.
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)
	e.exec(t, `INSERT INTO notes VALUES (1, 'title', 'body')`)
	e.exec(t, `UPDATE notes SET id = 2 WHERE id = 1`)
	e.exec(t, `UPDATE notes SET title = 'new' WHERE id = 2`)
	e.exec(t, `DELETE FROM notes WHERE id = 2`)

	r.next(t)
	c := r.next(t).Changes[0]
	if want := rowOf(map[string]any{"id": int64(1)}); !c.Previous.Equal(want) {
		t.Errorf("key change: previous = %v, want %v", c.Previous, want)
	}
	if c.EntityID != "2" || rowText(c.Payload, "title") != "title" {
		t.Errorf("key change: got %+v", c)
	}
	c = r.next(t).Changes[0]
	if c.Previous != nil {
		t.Errorf("update without key change: previous = %v, want nil (not sent)", c.Previous)
	}
	c = r.next(t).Changes[0]
	if want := rowOf(map[string]any{"id": int64(2)}); c.Operation != entities.OpDelete || !c.Payload.Equal(want) || c.EntityID != "2" {
		t.Errorf("delete: got %+v, want payload %v", c, want)
	}
}

func TestRun_TransactionArrivesWholeAfterCommit(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)

	ctx := context.Background()
	tx, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO widgets (id, t) VALUES (1, 'a')`,
		`INSERT INTO gadgets VALUES (1, 'ignored: not registered')`,
		`INSERT INTO widgets (id, t) VALUES (2, 'b')`,
		`UPDATE widgets SET t = 'c' WHERE id = 1`,
		`DELETE FROM widgets WHERE id = 2`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var xid uint32
	if err := tx.QueryRow(ctx, `SELECT txid_current()::bigint::int8 % 4294967296`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-r.ch:
		t.Fatalf("transaction %d sent before commit", got.Xid)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	got := r.next(t)
	ops := []entities.Operation{entities.OpCreate, entities.OpCreate, entities.OpUpdate, entities.OpDelete}
	ids := []string{"1", "2", "1", "2"}
	if len(got.Changes) != len(ops) {
		t.Fatalf("got %d changes, want %d: %+v", len(got.Changes), len(ops), got.Changes)
	}
	if !got.Final || got.Xid != xid || got.CommitLSN == 0 || got.EndLSN <= got.CommitLSN || time.Since(got.CommitTime) > time.Minute {
		t.Errorf("transaction header = final %v xid %d commit %s end %s time %s; want one Final chunk, xid %d, end after commit, recent", got.Final, got.Xid, got.CommitLSN, got.EndLSN, got.CommitTime, xid)
	}
	for i, c := range got.Changes {
		if c.Index != i || c.Operation != ops[i] || c.EntityID != ids[i] {
			t.Errorf("change %d: index %d op %s id %s, want %d %s %s", i, c.Index, c.Operation, c.EntityID, i, ops[i], ids[i])
		}
		if c.Xid != got.Xid || c.CommitLSN != got.CommitLSN || c.EndLSN != got.EndLSN || !c.CommitTime.Equal(got.CommitTime) {
			t.Errorf("change %d: position fields %d %s %s %s differ from the transaction's", i, c.Xid, c.CommitLSN, c.EndLSN, c.CommitTime)
		}
	}
}

func TestRun_RolledBackAndUnregisteredProduceNothing(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)

	ctx := context.Background()
	tx, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO widgets (id, t) VALUES (1, 'rolled back')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO gadgets VALUES (1, 'unregistered')`)
	e.exec(t, `INSERT INTO widgets (id, t) VALUES (2, 'marker')`)

	got := r.next(t)
	if len(got.Changes) != 1 || got.Changes[0].EntityID != "2" {
		t.Fatalf("first transaction = %+v, want only the marker", got.Changes)
	}
}

func TestRun_InterleavedTransactionsInCommitOrder(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)
	ctx := context.Background()
	other, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)

	a, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, a, `INSERT INTO widgets (id, t) VALUES (1, 'a1')`)
	b, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, b, `INSERT INTO widgets (id, t) VALUES (2, 'b1')`)
	mustExec(t, a, `INSERT INTO widgets (id, t) VALUES (3, 'a2')`)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, a, `INSERT INTO widgets (id, t) VALUES (4, 'a3')`)
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	first, second := r.next(t), r.next(t)
	if ids := entityIDs(first); !reflect.DeepEqual(ids, []string{"2"}) {
		t.Errorf("first transaction = %v, want [2] (B committed first)", ids)
	}
	if ids := entityIDs(second); !reflect.DeepEqual(ids, []string{"1", "3", "4"}) {
		t.Errorf("second transaction = %v, want [1 3 4]", ids)
	}
	if second.EndLSN <= first.EndLSN {
		t.Errorf("end LSNs %s then %s, want increasing", first.EndLSN, second.EndLSN)
	}
}

func mustExec(t testing.TB, tx pgx.Tx, sql string) {
	t.Helper()
	if _, err := tx.Exec(context.Background(), sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func entityIDs(tx Transaction) []string {
	var ids []string
	for _, c := range tx.Changes {
		ids = append(ids, c.EntityID)
	}
	return ids
}

func randomText(t testing.TB, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestRun_UnchangedTOAST(t *testing.T) {
	e := newEnv(t)
	r := start(t, newWatcher(t, e.config(t)), 10)
	big := randomText(t, 10000)

	// REPLICA IDENTITY FULL: the new tuple says 'u', the old one has the
	// value, so the payload keeps it.
	e.exec(t, `INSERT INTO widgets (id, t, big) VALUES (1, 'a', $1)`, big)
	e.exec(t, `UPDATE widgets SET t = 'b' WHERE id = 1`)
	r.next(t)
	c := r.next(t).Changes[0]
	if rowText(c.Payload, "big") != big || rowText(c.Previous, "big") != big || len(c.Unchanged) != 0 {
		t.Errorf("FULL identity: big in payload %v, in previous %v, unchanged %v; want the value in both, nothing unchanged",
			rowText(c.Payload, "big") == big, rowText(c.Previous, "big") == big, c.Unchanged)
	}

	// REPLICA IDENTITY DEFAULT: no old tuple, so the column is omitted
	// and listed as unchanged, never NULL.
	e.exec(t, `INSERT INTO notes VALUES (1, 'title', $1)`, big)
	e.exec(t, `UPDATE notes SET title = 'new' WHERE id = 1`)
	r.next(t)
	c = r.next(t).Changes[0]
	if c.Payload.Has("body") || !reflect.DeepEqual(c.Unchanged, []string{"body"}) || rowText(c.Payload, "title") != "new" {
		t.Errorf("DEFAULT identity: payload %v, unchanged %v; want body omitted and listed", c.Payload, c.Unchanged)
	}
}

func TestRun_CreatesPermanentSlot(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	r := start(t, newWatcher(t, cfg), 10)
	s := readSlot(t, e.conn, cfg.Slot)
	if !s.exists || s.temporary || s.plugin != "pgoutput" || s.slotType != "logical" || !s.active {
		t.Fatalf("slot = %+v, want an active permanent logical pgoutput slot", s)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })
	if s := readSlot(t, e.conn, cfg.Slot); !s.exists {
		t.Fatalf("slot gone after Run returned: a temporary slot loses changes")
	}
}

func TestRun_AckIsWhatTheSlotConfirms(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	r := start(t, w, 10)

	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	tx := r.next(t)
	if got := w.Confirmed(); got >= tx.EndLSN {
		t.Fatalf("Confirmed() = %s before Ack, want below %s: only acknowledged positions are reported", got, tx.EndLSN)
	}
	if got := readSlot(t, e.conn, cfg.Slot).confirmedFlush; got >= tx.EndLSN {
		t.Fatalf("confirmed_flush_lsn = %s before Ack, want below %s", got, tx.EndLSN)
	}
	w.Ack(tx.EndLSN)
	// At least EndLSN, not exactly: once nothing is pending the watcher
	// also confirms WAL written after it that touched no registered table
	// (the background writer's running-transactions record, logged every
	// 15 s after activity; another database's writes), so the position
	// may already be past it.
	waitFor(t, "confirmed_flush_lsn ≥ EndLSN", func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= tx.EndLSN, nil
	})
	if got := w.Confirmed(); got < tx.EndLSN {
		t.Errorf("Confirmed() = %s, want at least %s", got, tx.EndLSN)
	}
}

func TestRun_IdleSlotFollowsOtherWAL(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	start(t, w, 10)

	// Unpublished and unregistered activity: the server sends no
	// transaction for the first and an empty one for the second, but
	// the slot must not pin the WAL they wrote.
	e.exec(t, `INSERT INTO quiet (v) SELECT 'x' FROM generate_series(1, 100)`)
	e.exec(t, `INSERT INTO gadgets VALUES (1, 'unregistered')`)
	var after string
	if err := e.conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	target := parseLSN(t, after)
	waitFor(t, "idle slot to confirm past "+target.String(), func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= target, nil
	})
	if w.Confirmed() < target {
		t.Errorf("Confirmed() = %s, want at least %s", w.Confirmed(), target)
	}

	// Another database in the same cluster writes to the same WAL; the
	// slot decodes past it and must not pin it either.
	other, err := pgx.Connect(context.Background(), storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(context.Background(), `CREATE TABLE elsewhere (v text); INSERT INTO elsewhere SELECT repeat('y', 100) FROM generate_series(1, 1000)`); err != nil {
		t.Fatal(err)
	}
	if err := other.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	target = parseLSN(t, after)
	waitFor(t, "idle slot to confirm past another database's WAL at "+target.String(), func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= target, nil
	})
}

func TestRun_StartLSNSkipsHandledTransactions(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w1 := newWatcher(t, cfg)
	r1 := start(t, w1, 10)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	e.exec(t, `INSERT INTO widgets (id) VALUES (2)`)
	r1.next(t)
	second := r1.next(t)
	w1.Ack(second.EndLSN)
	waitFor(t, "ack confirmed", func() (bool, error) { return w1.Confirmed() >= second.EndLSN, nil })
	if err := r1.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })

	e.exec(t, `INSERT INTO widgets (id) VALUES (3)`)

	// Restart from the stored position: nothing already handled comes back.
	cfg2 := cfg
	cfg2.StartLSN = second.EndLSN
	r2 := start(t, newWatcher(t, cfg2), 10)
	if got := entityIDs(r2.next(t)); !reflect.DeepEqual(got, []string{"3"}) {
		t.Fatalf("after restart got %v, want [3]", got)
	}
}

func TestRun_StartLSNDedupesWhenTheSlotWentBack(t *testing.T) {
	// docs/replication.md rule 2: after a server restart the slot's
	// confirmed_flush_lsn can be older than what was confirmed. The
	// stored StartLSN still keeps handled transactions out.
	cluster := newClusterEnv(t)
	e := cluster.env
	cfg := e.config(t)
	w1 := newWatcher(t, cfg)
	r1 := start(t, w1, 10)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	first := r1.next(t)
	w1.Ack(first.EndLSN)
	// ≥, not =: with nothing pending, later unrelated WAL is confirmed too.
	waitFor(t, "ack confirmed", func() (bool, error) { return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= first.EndLSN, nil })
	if err := r1.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	e = cluster.restart(t)
	after := readSlot(t, e.conn, cfg.Slot).confirmedFlush
	t.Logf("confirmed_flush_lsn after restart: %s (acknowledged %s)", after, first.EndLSN)

	e.exec(t, `INSERT INTO widgets (id) VALUES (2)`)

	// Without a stored position the watcher replays from where the slot
	// is, which may repeat transaction 1; with StartLSN it never does.
	cfg0 := cfg
	cfg0.StartLSN = 0
	r0 := start(t, newWatcher(t, cfg0), 10)
	replayed := r0.next(t)
	if after < first.EndLSN && !reflect.DeepEqual(entityIDs(replayed), []string{"1"}) {
		t.Errorf("slot went back to %s but StartLSN=0 replay began with %v", after, entityIDs(replayed))
	}
	if err := r0.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })

	cfgN := cfg
	cfgN.StartLSN = first.EndLSN
	rN := start(t, newWatcher(t, cfgN), 10)
	if got := entityIDs(rN.next(t)); !reflect.DeepEqual(got, []string{"2"}) {
		t.Fatalf("with StartLSN=%s got %v, want [2]", first.EndLSN, got)
	}
}

func TestRun_StopCommitStartAgain(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	r := start(t, w, 10)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	first := r.next(t)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if w.Streaming() {
		t.Fatalf("Streaming() = true after Run returned")
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })

	e.exec(t, `INSERT INTO widgets (id) VALUES (2)`)
	e.exec(t, `INSERT INTO widgets (id) VALUES (3)`)

	// The same Watcher again: transaction 1 was sent (not acknowledged)
	// and is not sent twice; what was committed meanwhile arrives.
	r = start(t, w, 10)
	second, third := r.next(t), r.next(t)
	if got := append(entityIDs(second), entityIDs(third)...); !reflect.DeepEqual(got, []string{"2", "3"}) {
		t.Fatalf("after restart got %v, want [2 3]", got)
	}
	if second.EndLSN <= first.EndLSN {
		t.Errorf("EndLSN went from %s to %s", first.EndLSN, second.EndLSN)
	}
}

func TestRun_SlowConsumerKeepsConnection(t *testing.T) {
	// An unbuffered channel nobody reads: Run must keep reporting
	// status (and acks) while it waits to send.
	e := newEnv(t)
	cfg := e.config(t)
	cfg.StatusInterval = 200 * time.Millisecond
	w := newWatcher(t, cfg)
	r := start(t, w, 0)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	e.exec(t, `INSERT INTO widgets (id) VALUES (2)`)
	first := r.next(t)
	// Run is now blocked sending transaction 2; an Ack still reaches the
	// server.
	w.Ack(first.EndLSN)
	waitFor(t, "ack confirmed while blocked", func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush == first.EndLSN, nil
	})
	if got := entityIDs(r.next(t)); !reflect.DeepEqual(got, []string{"2"}) {
		t.Fatalf("got %v, want [2]", got)
	}
}

func TestRun_SecondRunIsRefused(t *testing.T) {
	e := newEnv(t)
	w := newWatcher(t, e.config(t))
	start(t, w, 1)
	if err := w.Run(context.Background(), make(chan Transaction)); err != ErrRunning {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

func TestRun_ConnectionLossIsARetryableError(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	r := start(t, w, 10)
	e.exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot)
	var err error
	select {
	case err = <-r.done:
		r.done <- err
	case <-time.After(waitTimeout):
		t.Fatalf("Run did not return after its backend was terminated")
	}
	if err == nil || !Retryable(err) {
		t.Fatalf("Run = %v, want a retryable error", err)
	}
	t.Logf("Run returned: %v", err)
	if w.Streaming() {
		t.Errorf("Streaming() = true after Run returned")
	}
	// Running again resumes.
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })
	r = start(t, w, 10)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	if got := entityIDs(r.next(t)); !reflect.DeepEqual(got, []string{"1"}) {
		t.Fatalf("after reconnect got %v, want [1]", got)
	}
}

func TestEnsureSlot_KeepsChangesBeforeFirstRun(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	if err := w.EnsureSlot(context.Background()); err != nil {
		t.Fatalf("EnsureSlot: %v", err)
	}
	if err := w.EnsureSlot(context.Background()); err != nil {
		t.Fatalf("EnsureSlot on an existing slot: %v", err)
	}
	if s := readSlot(t, e.conn, cfg.Slot); s.active {
		t.Fatal("EnsureSlot left the slot active: it must not start replication")
	}
	// Committed after the slot exists but before replication starts.
	e.exec(t, `INSERT INTO widgets (id) VALUES (41)`)
	r := start(t, w, 10)
	if got := entityIDs(r.next(t)); !reflect.DeepEqual(got, []string{"41"}) {
		t.Fatalf("got %v, want the change committed between EnsureSlot and Run", got)
	}
	// A slot in use by a running watcher still counts as existing.
	if err := newWatcher(t, cfg).EnsureSlot(context.Background()); err != nil {
		t.Fatalf("EnsureSlot while the slot is in use: %v", err)
	}
}
