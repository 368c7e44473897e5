package watcher

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pgx/v5"
)

// waitStatus waits until the watcher has sent n more standby status
// updates than it had when before was read.
func waitStatus(t testing.TB, w *Watcher, before int64, n int64) {
	t.Helper()
	waitFor(t, "standby status updates", func() (bool, error) { return w.statusSent.Load() >= before+n, nil })
}

// chunks reads the chunks of one transaction, up to and including its
// Final, checking that they agree with each other and that Index runs on.
func (r *running) chunks(t testing.TB) []Transaction {
	t.Helper()
	var txs []Transaction
	for {
		tx := r.next(t)
		if len(txs) > 0 {
			first := txs[0]
			if tx.Xid != first.Xid || tx.CommitLSN != first.CommitLSN || !tx.CommitTime.Equal(first.CommitTime) {
				t.Fatalf("chunk %d: xid %d commit %s time %s, first chunk had %d %s %s",
					len(txs), tx.Xid, tx.CommitLSN, tx.CommitTime, first.Xid, first.CommitLSN, first.CommitTime)
			}
		}
		txs = append(txs, tx)
		if tx.Final {
			return txs
		}
		if tx.EndLSN != 0 {
			t.Fatalf("chunk %d is not Final but has EndLSN %s", len(txs)-1, tx.EndLSN)
		}
	}
}

func TestRun_ChunksLargeTransaction(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	cfg.ChunkSize = 1000
	cfg.StatusInterval = 200 * time.Millisecond
	w := newWatcher(t, cfg)
	// Unbuffered: while the test holds a chunk, Run waits with the rest
	// of the transaction pending.
	r := start(t, w, 0)

	e.exec(t, `INSERT INTO notes VALUES (0, 'before')`)
	before := r.next(t)
	w.Ack(before.EndLSN)
	waitFor(t, "first ack confirmed", func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= before.EndLSN, nil
	})

	e.exec(t, `INSERT INTO notes SELECT g, 't' || g FROM generate_series(1, 2500) g`)
	first := r.next(t)
	// From the Begin of the chunked transaction until its Final is
	// acknowledged nothing later may be confirmed.
	held := w.Confirmed()
	if held >= first.CommitLSN || held < before.EndLSN {
		t.Fatalf("Confirmed() = %s with a chunk in flight, want from %s (the last ack) to below %s (its commit)", held, before.EndLSN, first.CommitLSN)
	}
	checkHeld := func(when string) {
		t.Helper()
		waitStatus(t, w, w.statusSent.Load(), 2)
		if got := w.Confirmed(); got != held {
			t.Errorf("%s: Confirmed() = %s, want still %s", when, got, held)
		}
		if got := readSlot(t, e.conn, cfg.Slot).confirmedFlush; got > held {
			t.Errorf("%s: confirmed_flush_lsn = %s, want at most %s", when, got, held)
		}
	}
	checkHeld("after chunk 1")
	txs := append([]Transaction{first}, r.chunks(t)...)
	// The Final was sent, not acknowledged.
	checkHeld("after the Final chunk")

	var sizes []int
	index := 0
	for i, tx := range txs {
		sizes = append(sizes, len(tx.Changes))
		if i > 0 && (tx.Xid != first.Xid || tx.CommitLSN != first.CommitLSN || !tx.CommitTime.Equal(first.CommitTime)) {
			t.Errorf("chunk %d header differs from chunk 0", i)
		}
		if (tx.EndLSN != 0) != tx.Final || tx.Final != (i == len(txs)-1) {
			t.Errorf("chunk %d: final %v end %s; want EndLSN exactly on the last, Final", i, tx.Final, tx.EndLSN)
		}
		for _, c := range tx.Changes {
			if c.Index != index || c.Xid != tx.Xid || c.CommitLSN != tx.CommitLSN || c.EndLSN != tx.EndLSN || !c.CommitTime.Equal(tx.CommitTime) {
				t.Fatalf("change %d: index %d xid %d commit %s end %s; want index %d and its chunk's positions", index, c.Index, c.Xid, c.CommitLSN, c.EndLSN, index)
			}
			index++
		}
	}
	if want := []int{1000, 1000, 500}; !reflect.DeepEqual(sizes, want) {
		t.Fatalf("chunk sizes = %v, want %v", sizes, want)
	}
	final := txs[len(txs)-1]
	if final.EndLSN <= final.CommitLSN {
		t.Errorf("final EndLSN %s, commit %s: want after", final.EndLSN, final.CommitLSN)
	}
	w.Ack(final.EndLSN)
	waitFor(t, "Final acked and confirmed", func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= final.EndLSN && w.Confirmed() >= final.EndLSN, nil
	})

	// An exact multiple of the chunk size ends with a full Final: the last
	// chunk is held until the commit, not followed by an empty one.
	e.exec(t, `INSERT INTO notes SELECT g, 't' FROM generate_series(3001, 5000) g`)
	txs = r.chunks(t)
	sizes = sizes[:0]
	for _, tx := range txs {
		sizes = append(sizes, len(tx.Changes))
	}
	if want := []int{1000, 1000}; !reflect.DeepEqual(sizes, want) {
		t.Fatalf("2,000 rows: chunk sizes = %v, want %v", sizes, want)
	}
	if first, last := txs[0], txs[1]; first.Final || !last.Final || last.EndLSN <= last.CommitLSN {
		t.Errorf("2,000 rows: chunks final %v, %v, last EndLSN %s; want only the second Final, with EndLSN", first.Final, last.Final, last.EndLSN)
	}
	if got := txs[1].Changes[999].Index; got != 1999 {
		t.Errorf("last index = %d, want 1999", got)
	}
}

func TestRun_HugeTransactionBoundedMemory(t *testing.T) {
	// Issue 3: a 200,000-row transaction is never held whole. The
	// watcher's own high-water mark of assembled changes stays at the
	// chunk size (the default, 1000).
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	if w.cfg.ChunkSize != DefaultChunkSize {
		t.Fatalf("ChunkSize default = %d, want %d", w.cfg.ChunkSize, DefaultChunkSize)
	}
	r := start(t, w, 2)
	const rows = 200000
	e.exec(t, `INSERT INTO notes SELECT g, 'row ' || g FROM generate_series(1, $1) g`, rows)

	n, chunks := 0, 0
	for {
		tx := r.next(t)
		chunks++
		if len(tx.Changes) > DefaultChunkSize {
			t.Fatalf("chunk %d has %d changes, want at most %d", chunks, len(tx.Changes), DefaultChunkSize)
		}
		for _, c := range tx.Changes {
			if c.Index != n {
				t.Fatalf("change %d has Index %d", n, c.Index)
			}
			n++
		}
		if tx.Final {
			break
		}
	}
	if n != rows {
		t.Fatalf("got %d changes, want %d", n, rows)
	}
	if chunks != rows/DefaultChunkSize {
		t.Errorf("got %d chunks, want %d (the last one Final)", chunks, rows/DefaultChunkSize)
	}
	if peak := w.peakBuffered.Load(); peak > DefaultChunkSize || peak == 0 {
		t.Errorf("peak assembled changes = %d, want 1..%d", peak, DefaultChunkSize)
	}
}

func TestRun_SkipDecidedAtBegin(t *testing.T) {
	// Transaction B inserts before A commits and commits right after it,
	// so on an idle database B's commit record starts where A's ends:
	// CommitLSN(B) == EndLSN(A). After A is sent, a restart that replays
	// A must skip A and still deliver B.
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	r := start(t, w, 10)
	ctx := context.Background()

	other, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close(context.Background()) })
	txB, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, txB, `INSERT INTO widgets (id) VALUES (2)`)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`) // A
	a := r.next(t)
	if got := entityIDs(a); !reflect.DeepEqual(got, []string{"1"}) {
		t.Fatalf("first transaction = %v, want [1]", got)
	}
	// A is sent, not acknowledged: the slot still starts before it.
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// The same watcher: the server replays A (the slot has not
	// confirmed it) and the watcher skips it because it sent it.
	r = start(t, w, 10)
	b := r.next(t)
	if got := entityIDs(b); !reflect.DeepEqual(got, []string{"2"}) {
		t.Fatalf("after restart got %v, want [2] (A skipped, B delivered)", got)
	}
	if b.CommitLSN == a.EndLSN {
		t.Logf("CommitLSN(B) = EndLSN(A) = %s: the equality case occurred and B was kept", a.EndLSN)
	} else {
		t.Logf("CommitLSN(B) = %s, EndLSN(A) = %s: other WAL came between; equality case not exercised this run", b.CommitLSN, a.EndLSN)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })

	// A new watcher whose stored position is EndLSN(A): B again.
	cfg2 := cfg
	cfg2.StartLSN = a.EndLSN
	r2 := start(t, newWatcher(t, cfg2), 10)
	if got := r2.next(t); !reflect.DeepEqual(entityIDs(got), []string{"2"}) || got.CommitLSN != b.CommitLSN {
		t.Fatalf("with StartLSN = EndLSN(A) got %v at %s, want [2] at %s", entityIDs(got), got.CommitLSN, b.CommitLSN)
	}
}

func TestRun_Truncate(t *testing.T) {
	e := newEnv(t)
	// TRUNCATE gadgets CASCADE reaches notes (registered) and
	// gadget_parts (published, not registered).
	e.exec(t, `CREATE TABLE gadget_parts (id int PRIMARY KEY, gadget_id int REFERENCES gadgets (id))`)
	e.exec(t, `ALTER TABLE notes ADD COLUMN gadget_id int REFERENCES gadgets (id)`)
	e.exec(t, `ALTER PUBLICATION `+e.pub+` ADD TABLE gadget_parts`)
	r := start(t, newWatcher(t, e.config(t)), 10)

	type op struct {
		entity string
		op     entities.Operation
		id     string
	}
	trunc := func(entity string) op { return op{entity, entities.OpTruncate, ""} }
	cases := []struct {
		name string
		sql  string
		want []op
	}{
		{"one table", `TRUNCATE widgets`, []op{trunc("widget")}},
		{"two tables", `TRUNCATE widgets, notes`, []op{trunc("widget"), trunc("note")}},
		{"with unregistered and unpublished", `TRUNCATE gadget_parts, widgets, quiet`, []op{trunc("widget")}},
		{"cascade", `TRUNCATE gadgets CASCADE`, []op{trunc("note")}},
		{"unregistered only, then a marker", `TRUNCATE gadget_parts; INSERT INTO widgets (id) VALUES (9)`, []op{{"widget", entities.OpCreate, "9"}}},
		{"in order within a transaction", `BEGIN; INSERT INTO widgets (id) VALUES (1); TRUNCATE widgets; INSERT INTO widgets (id) VALUES (2); COMMIT`,
			[]op{{"widget", entities.OpCreate, "1"}, trunc("widget"), {"widget", entities.OpCreate, "2"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.exec(t, c.sql)
			tx := r.next(t)
			var got []op
			for i, ch := range tx.Changes {
				got = append(got, op{ch.EntityType, ch.Operation, ch.EntityID})
				if ch.Index != i {
					t.Errorf("change %d has Index %d", i, ch.Index)
				}
				if ch.Operation == entities.OpTruncate && (ch.Payload != nil || ch.Previous != nil || ch.CommitLSN != tx.CommitLSN) {
					t.Errorf("truncate change = %+v, want no payload and the transaction's positions", ch)
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestWatcher_Stats(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	cfg.StatusInterval = 200 * time.Millisecond
	w := newWatcher(t, cfg)
	if st := w.Stats(); st.Streaming || st.LagBytes != 0 {
		t.Fatalf("Stats before Run = %+v, want idle", st)
	}
	r := start(t, w, 10)

	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	tx := r.next(t)
	// Not acknowledged: the server's WAL end is past the confirmed
	// position by at least the transaction.
	waitFor(t, "lag while unacknowledged", func() (bool, error) {
		st := w.Stats()
		return st.Streaming && st.ServerWALEnd >= tx.EndLSN && st.LagBytes > 0 &&
			st.LagBytes == uint64(st.ServerWALEnd-st.Confirmed), nil
	})
	t.Logf("unacknowledged: %+v", w.Stats())

	w.Ack(tx.EndLSN)
	waitFor(t, "no lag after Ack on an idle database", func() (bool, error) {
		st := w.Stats()
		return st.Confirmed >= tx.EndLSN && st.LagBytes == 0, nil
	})
	t.Logf("acknowledged and idle: %+v", w.Stats())

	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if w.Stats().Streaming {
		t.Errorf("Stats().Streaming = true after Run returned")
	}
}

func TestRun_RestartMidTransactionContinuesWithNextIndex(t *testing.T) {
	// Run ends after sending some chunks of a transaction: the next Run
	// of the same Watcher receives it again from the server and sends
	// only the changes not sent yet, then the Final.
	e := newEnv(t)
	cfg := e.config(t)
	cfg.ChunkSize = 1000
	w := newWatcher(t, cfg)
	r := start(t, w, 0)
	e.exec(t, `INSERT INTO notes SELECT g, 't' FROM generate_series(0, 2499) g`)
	first := r.next(t)
	if first.Final || len(first.Changes) != 1000 {
		t.Fatalf("first chunk: final %v, %d changes; want 1000, not final", first.Final, len(first.Changes))
	}
	if err := r.stop(t); err != nil { // while Run waits to send chunk 2
		t.Fatalf("Run = %v, want nil", err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })

	r = start(t, w, 0)
	txs := r.chunks(t)
	var sizes []int
	next := 1000
	for _, tx := range txs {
		sizes = append(sizes, len(tx.Changes))
		if tx.CommitLSN != first.CommitLSN || tx.Xid != first.Xid {
			t.Fatalf("chunk of xid %d at %s, want the interrupted %d at %s", tx.Xid, tx.CommitLSN, first.Xid, first.CommitLSN)
		}
		for _, c := range tx.Changes {
			if c.Index != next {
				t.Fatalf("change Index %d, want %d", c.Index, next)
			}
			next++
		}
	}
	if want := []int{1000, 500}; !reflect.DeepEqual(sizes, want) || next != 2500 {
		t.Fatalf("after restart: chunk sizes %v ending at index %d, want %v ending at 2500", sizes, next, want)
	}
}
