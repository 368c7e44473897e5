package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

const testSlot = "changecast"

// txn builds a source transaction (or chunk) of n pool creates with
// indexes from first.
func txn(commit, end entities.LSN, xid uint32, first, n int, final bool) entities.Transaction {
	ct := time.Date(2026, 11, 23, 10, 0, 0, int(xid)*1000, time.UTC)
	t := entities.Transaction{Xid: xid, CommitLSN: commit, CommitTime: ct, Final: final}
	if final {
		t.EndLSN = end
	}
	for i := first; i < first+n; i++ {
		id := fmt.Sprintf("%d-%d", xid, i)
		t.Changes = append(t.Changes, entities.Change{
			EntityType: "pool", Operation: entities.OpCreate, EntityID: id,
			Payload:   entities.RowOf(map[string]any{"id": id, "n": int64(i)}),
			CommitLSN: commit, EndLSN: end, Index: i, Xid: xid, CommitTime: ct,
		})
	}
	return t
}

// small returns the k-th of a series of small Final transactions with n
// changes each, at LSNs 0x1000*k (commit) and 0x1000*k+0x100 (end).
func small(k, n int) entities.Transaction {
	return txn(entities.LSN(0x1000*k), entities.LSN(0x1000*k+0x100), uint32(1000+k), 0, n, true)
}

// commits records OnCommit calls.
type commits struct {
	mu  sync.Mutex
	all []store.Committed
}

func (c *commits) add(x store.Committed) {
	c.mu.Lock()
	c.all = append(c.all, x)
	c.mu.Unlock()
}

func (c *commits) get() []store.Committed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]store.Committed(nil), c.all...)
}

func newAppender(t testing.TB, db *store.DB, cfg store.AppenderConfig) (*store.Appender, *commits) {
	t.Helper()
	rec := &commits{}
	if cfg.Slot == "" {
		cfg.Slot = testSlot
	}
	if cfg.OnCommit == nil {
		cfg.OnCommit = rec.add
	}
	a, err := db.NewAppender(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("NewAppender: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a, rec
}

// queued returns a closed channel holding txs.
func queued(txs ...entities.Transaction) chan entities.Transaction {
	ch := make(chan entities.Transaction, len(txs))
	for _, t := range txs {
		ch <- t
	}
	close(ch)
	return ch
}

// runAll runs a over in until in is closed and fails the test on error.
func runAll(t testing.TB, a *store.Appender, in <-chan entities.Transaction) {
	t.Helper()
	if err := a.Run(testCtx(t), in); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// readAll returns the whole journal.
func readAll(t testing.TB, db *store.DB) []entities.Change {
	t.Helper()
	var out []entities.Change
	after := int64(0)
	for {
		page, err := db.ReadJournal(testCtx(t), after, 5000, nil)
		if err != nil {
			t.Fatalf("ReadJournal(%d): %v", after, err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Cursor
	}
}

func offsetOf(t testing.TB, db *store.DB) entities.LSN {
	t.Helper()
	lsn, err := db.LoadOffset(testCtx(t), testSlot)
	if err != nil {
		t.Fatalf("LoadOffset: %v", err)
	}
	return lsn
}

func journalCount(t testing.TB, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.Gorm().WithContext(testCtx(t)).Raw("SELECT count(*) FROM changecast.journal").Row().Scan(&n); err != nil {
		t.Fatalf("count journal: %v", err)
	}
	return n
}

// checkDense checks that got is the journal of want's changes: seq 1.. in
// order, each change once.
func checkDense(t testing.TB, got []entities.Change, want []entities.Transaction) {
	t.Helper()
	var flat []entities.Change
	for _, tx := range want {
		flat = append(flat, tx.Changes...)
	}
	if len(got) != len(flat) {
		t.Fatalf("journal holds %d changes, want %d", len(got), len(flat))
	}
	for i, c := range got {
		w := flat[i]
		if c.Cursor != int64(i+1) || c.CommitLSN != w.CommitLSN || c.Index != w.Index || c.EntityID != w.EntityID {
			t.Fatalf("journal[%d] = seq %d %s #%d %s, want seq %d %s #%d %s", i, c.Cursor, c.CommitLSN, c.Index, c.EntityID, i+1, w.CommitLSN, w.Index, w.EntityID)
		}
	}
}

// TestAppender_DenseSeqs feeds many transactions of varied size, some
// chunked, as a watcher would, and checks seqs are dense and in commit
// order, OnCommit reports each commit in order, and the offset follows.
func TestAppender_DenseSeqs(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, rec := newAppender(t, db, store.AppenderConfig{})
	var txs []entities.Transaction
	for k := 1; k <= 300; k++ {
		txs = append(txs, small(k, 1+k%7))
	}
	for _, k := range []int{37, 150, 299} { // chunked: 3 chunks of 40
		c := txs[k-1]
		txs[k-1] = txn(c.CommitLSN, c.EndLSN, c.Xid, 0, 120, true)
	}
	in := make(chan entities.Transaction, 4)
	go func() {
		defer close(in)
		for _, tx := range txs {
			if len(tx.Changes) == 120 {
				for i := 0; i < 3; i++ {
					chunk := tx
					chunk.Changes = tx.Changes[i*40 : (i+1)*40]
					chunk.Final = i == 2
					if !chunk.Final {
						chunk.EndLSN = 0
					}
					in <- chunk
				}
				continue
			}
			in <- tx
		}
	}()
	runAll(t, a, in)

	checkDense(t, readAll(t, db), txs)
	total := int64(0)
	for _, tx := range txs {
		total += int64(len(tx.Changes))
	}
	var prevHead int64
	var prevEnd entities.LSN
	for i, c := range rec.get() {
		if c.Changes == nil {
			t.Fatalf("commit %d: Changes nil, want them inline", i)
		}
		if c.Head-prevHead != int64(len(c.Changes)) || c.EndLSN <= prevEnd {
			t.Fatalf("commit %d: head %d after %d with %d changes, EndLSN %s after %s", i, c.Head, prevHead, len(c.Changes), c.EndLSN, prevEnd)
		}
		for j, ch := range c.Changes {
			if want := prevHead + int64(j) + 1; ch.Cursor != want {
				t.Fatalf("commit %d: change %d cursor %d, want %d", i, j, ch.Cursor, want)
			}
		}
		prevHead, prevEnd = c.Head, c.EndLSN
	}
	if prevHead != total || a.Head() != total {
		t.Errorf("last OnCommit head %d, Head() %d, want %d", prevHead, a.Head(), total)
	}
	last := txs[len(txs)-1].EndLSN
	if prevEnd != last || a.Offset() != last || offsetOf(t, db) != last {
		t.Errorf("EndLSN %s, Offset() %s, stored %s, want %s", prevEnd, a.Offset(), offsetOf(t, db), last)
	}
	if got, err := db.JournalHead(testCtx(t)); err != nil || got != total {
		t.Errorf("JournalHead = %d, %v, want %d", got, err, total)
	}
}

func TestAppender_GroupCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		maxGroup int
		calls    int
	}{
		{"default", 0, 1},
		{"max 10", 10, 17}, // 3 transactions of 3 changes per group
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			a, rec := newAppender(t, db, store.AppenderConfig{MaxGroupChanges: tc.maxGroup})
			var txs []entities.Transaction
			for k := 1; k <= 50; k++ {
				txs = append(txs, small(k, 3))
			}
			runAll(t, a, queued(txs...))

			got := rec.get()
			if len(got) != tc.calls {
				t.Errorf("OnCommit called %d times for 50 queued transactions, want %d", len(got), tc.calls)
			}
			var cursors []int64
			for _, c := range got {
				if tc.maxGroup > 0 && len(c.Changes) > tc.maxGroup {
					t.Errorf("a group of %d changes, want at most %d", len(c.Changes), tc.maxGroup)
				}
				for _, ch := range c.Changes {
					cursors = append(cursors, ch.Cursor)
				}
			}
			for i, c := range cursors {
				if c != int64(i+1) {
					t.Fatalf("OnCommit cursors %v, want 1..150 once each", cursors)
				}
			}
			if len(cursors) != 150 || a.Head() != 150 || got[len(got)-1].Head != 150 {
				t.Errorf("%d changes reported, Head() %d, last head %d, want 150", len(cursors), a.Head(), got[len(got)-1].Head)
			}
			if end := txs[49].EndLSN; got[len(got)-1].EndLSN != end || offsetOf(t, db) != end {
				t.Errorf("EndLSN %s, stored offset %s, want %s", got[len(got)-1].EndLSN, offsetOf(t, db), end)
			}
			checkDense(t, readAll(t, db), txs)
		})
	}
}

// TestAppender_GroupStopsAtChunk checks that a chunked transaction queued
// behind small ones is not started inside their group.
func TestAppender_GroupStopsAtChunk(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, rec := newAppender(t, db, store.AppenderConfig{})
	big := txn(0x5000, 0x5100, 5, 0, 6, true)
	first, second := big, big
	first.Changes, first.Final, first.EndLSN = big.Changes[:3], false, 0
	second.Changes = big.Changes[3:]
	runAll(t, a, queued(small(1, 2), small(2, 2), first, second, small(6, 2)))
	var sizes []int
	for _, c := range rec.get() {
		sizes = append(sizes, len(c.Changes))
	}
	if fmt.Sprint(sizes) != "[4 6 2]" {
		t.Errorf("commit sizes %v, want [4 6 2]", sizes)
	}
	checkDense(t, readAll(t, db), []entities.Transaction{small(1, 2), small(2, 2), big, small(6, 2)})
}

// appenderPID finds the backend of the appender's connection.
func appenderPID(t testing.TB, db *store.DB, state string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pids []int
		err := db.Gorm().WithContext(testCtx(t)).Raw(`SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'changecast journal appender' AND state = ?`, state).Scan(&pids).Error
		if err != nil {
			t.Fatalf("find appender backend: %v", err)
		}
		if len(pids) == 1 {
			return pids[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no appender backend in state %q", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAppender_AtomicOffset kills the appender's backend in the middle of a
// chunked transaction: its final chunk fails, Run returns the error, and
// neither rows nor the offset move. A new appender continues from the
// committed state.
func TestAppender_AtomicOffset(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, rec := newAppender(t, db, store.AppenderConfig{})
	in := make(chan entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- a.Run(testCtx(t), in) }()

	in <- small(1, 2)
	big := txn(0x5000, 0x5100, 5, 0, 6, true)
	first, second := big, big
	first.Changes, first.Final, first.EndLSN = big.Changes[:3], false, 0
	second.Changes = big.Changes[3:]
	in <- first
	pid := appenderPID(t, db, "idle in transaction")
	execSQL(t, db, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid))
	// The backend may be idle in the transaction before the first chunk's
	// COPY: then Run fails on that chunk and never takes the second.
	var err error
	select {
	case in <- second:
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after its backend was terminated")
		}
	case err = <-done:
	}
	if err == nil {
		t.Fatal("Run = nil after its backend was terminated, want an error")
	}
	t.Logf("Run: %v", err)
	if n := journalCount(t, db); n != 2 {
		t.Errorf("journal holds %d rows, want the 2 committed before the failure", n)
	}
	if got, want := offsetOf(t, db), small(1, 2).EndLSN; got != want {
		t.Errorf("stored offset %s, want %s (unmoved)", got, want)
	}
	if len(rec.get()) != 1 || a.Head() != 2 {
		t.Errorf("%d OnCommit calls, Head() %d, want 1 and 2", len(rec.get()), a.Head())
	}
	if err := a.Run(testCtx(t), queued(small(9, 1))); err == nil {
		t.Error("Run on a failed appender = nil, want an error")
	}
	a.Close()

	b, _ := newAppender(t, db, store.AppenderConfig{})
	if b.Head() != 2 || b.Offset() != small(1, 2).EndLSN {
		t.Fatalf("new appender: Head %d, Offset %s, want 2, %s", b.Head(), b.Offset(), small(1, 2).EndLSN)
	}
	runAll(t, b, queued(first, second))
	checkDense(t, readAll(t, db), []entities.Transaction{small(1, 2), big})
}

// TestAppender_AtomicOffsetFailure makes the offset update itself fail: the
// journal rows of the same transaction must not survive.
func TestAppender_AtomicOffsetFailure(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, rec := newAppender(t, db, store.AppenderConfig{})
	execSQL(t, db, `CREATE FUNCTION changecast.no_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'offsets are read-only'; END $$;
		CREATE TRIGGER no_offsets BEFORE INSERT OR UPDATE ON changecast.offsets
		FOR EACH ROW EXECUTE FUNCTION changecast.no_offsets()`)
	err := a.Run(testCtx(t), queued(small(1, 3), small(2, 3)))
	if err == nil || !strings.Contains(err.Error(), "offsets are read-only") {
		t.Fatalf("Run = %v, want the offset update's error", err)
	}
	if n := journalCount(t, db); n != 0 {
		t.Errorf("journal holds %d rows after a failed offset update, want 0", n)
	}
	if len(rec.get()) != 0 || a.Head() != 0 || a.Offset() != 0 {
		t.Errorf("%d OnCommit calls, Head() %d, Offset() %s, want none, 0, 0", len(rec.get()), a.Head(), a.Offset())
	}
}

// TestAppender_Skip: transactions with CommitLSN below the stored offset
// are skipped (every chunk), one with CommitLSN equal to it is not, in a
// separate commit or inside a group.
func TestAppender_Skip(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	const offset = entities.LSN(0x2000)
	if err := db.SaveOffset(testCtx(t), testSlot, offset); err != nil {
		t.Fatal(err)
	}
	a, rec := newAppender(t, db, store.AppenderConfig{})
	if a.Offset() != offset {
		t.Fatalf("Offset() = %s, want %s", a.Offset(), offset)
	}
	old := txn(0x1000, 0x1100, 1, 0, 2, true)
	chunked := txn(0x1F00, offset, 2, 0, 4, true)
	c1, c2 := chunked, chunked
	c1.Changes, c1.Final, c1.EndLSN = chunked.Changes[:2], false, 0
	c2.Changes = chunked.Changes[2:]
	atOffset := txn(offset, 0x2100, 3, 0, 2, true)
	runAll(t, a, queued(old, c1, c2, atOffset))

	// Equal across two commits, then equal inside one group.
	next := txn(0x2100, 0x2200, 4, 0, 1, true)
	runAll(t, a, queued(next))
	g1 := txn(0x2200, 0x2300, 5, 0, 1, true)
	g2 := txn(0x2300, 0x2400, 6, 0, 1, true)
	runAll(t, a, queued(g1, g2, txn(0x2350, 0x2360, 7, 0, 1, true)))

	checkDense(t, readAll(t, db), []entities.Transaction{atOffset, next, g1, g2})
	if got := offsetOf(t, db); got != 0x2400 {
		t.Errorf("stored offset %s, want 0/2400", got)
	}
	got := rec.get()
	want := []store.Committed{
		{Head: 0, EndLSN: 0x1100}, // old, skipped
		{Head: 0, EndLSN: 0x2000}, // chunked, skipped
		{Head: 2, EndLSN: 0x2100},
		{Head: 3, EndLSN: 0x2200},
		{Head: 5, EndLSN: 0x2400}, // g1, g2 and the replayed 0x2350 in one group
	}
	if len(got) != len(want) {
		t.Fatalf("OnCommit calls %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Head != want[i].Head || got[i].EndLSN != want[i].EndLSN || got[i].Changes == nil {
			t.Errorf("OnCommit %d = head %d, EndLSN %s, changes %v; want head %d, EndLSN %s, non-nil changes",
				i, got[i].Head, got[i].EndLSN, got[i].Changes, want[i].Head, want[i].EndLSN)
		}
	}
}

// TestAppender_ReplayedChunks: a chunked transaction whose chunks start
// over (the watcher reconnected before its final chunk) is journaled once.
func TestAppender_ReplayedChunks(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, _ := newAppender(t, db, store.AppenderConfig{})
	big := txn(0x5000, 0x5100, 5, 0, 6, true)
	c1, c2 := big, big
	c1.Changes, c1.Final, c1.EndLSN = big.Changes[:3], false, 0
	c2.Changes = big.Changes[3:]
	runAll(t, a, queued(small(1, 1), c1, small(1, 1), c1, c2))
	checkDense(t, readAll(t, db), []entities.Transaction{small(1, 1), big})
}

// TestAppender_LargeChunked journals a 200,000-change transaction fed in
// chunks of 1,000 and checks the appender never held more than InlineMax
// plus a chunk or two.
func TestAppender_LargeChunked(t *testing.T) {
	t.Parallel()
	const total, chunk = 200_000, 1_000
	for _, tc := range []struct {
		name      string
		inlineMax int
		limit     int
	}{
		{"default InlineMax", 0, store.DefaultInlineMax + 2*chunk},
		{"InlineMax one chunk", chunk, 3 * chunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			a, rec := newAppender(t, db, store.AppenderConfig{InlineMax: tc.inlineMax})
			runAll(t, a, queued(small(1, 5)))
			in := make(chan entities.Transaction)
			go func() {
				defer close(in)
				for i := 0; i < total; i += chunk {
					in <- txn(0x9000, 0x9100, 9, i, chunk, i+chunk == total)
				}
				in <- small(10, 5)
			}()
			runAll(t, a, in)

			t.Logf("HighWater() = %d", a.HighWater())
			if hw := a.HighWater(); hw > tc.limit {
				t.Errorf("HighWater() = %d, want at most %d", hw, tc.limit)
			}
			got := rec.get()
			if len(got) != 3 {
				t.Fatalf("%d OnCommit calls, want 3", len(got))
			}
			if got[1].Changes != nil || got[1].Head != 5+total || got[1].EndLSN != 0x9100 {
				t.Errorf("large commit: %d changes inline, head %d, EndLSN %s; want nil, %d, 0/9100", len(got[1].Changes), got[1].Head, got[1].EndLSN, 5+total)
			}
			if len(got[2].Changes) != 5 || got[2].Changes[0].Cursor != 5+total+1 {
				t.Errorf("commit after the large one: %+v", got[2])
			}
			var n, lo, hi, distinct int64
			err := db.Gorm().WithContext(testCtx(t)).Raw(`SELECT count(*), min(seq), max(seq), count(DISTINCT tx_index)
				FROM changecast.journal WHERE xid = 9`).Row().Scan(&n, &lo, &hi, &distinct)
			if err != nil {
				t.Fatal(err)
			}
			if n != total || lo != 6 || hi != 5+total || distinct != total {
				t.Errorf("large transaction journaled as %d rows, seq %d..%d, %d indexes; want %d, 6..%d", n, lo, hi, distinct, total, 5+total)
			}
		})
	}
}

// TestAppender_Locked: one appender per journal.
func TestAppender_Locked(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, _ := newAppender(t, db, store.AppenderConfig{})
	runAll(t, a, queued(small(1, 3)))

	_, err := db.NewAppender(testCtx(t), store.AppenderConfig{Slot: testSlot})
	if !errors.Is(err, store.ErrJournalLocked) {
		t.Fatalf("second NewAppender = %v, want ErrJournalLocked", err)
	}
	if !strings.Contains(err.Error(), "changecast journal appender") || !strings.Contains(err.Error(), "one changecast watcher") {
		t.Errorf("lock error %q should name the holder and what to do", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b, rec := newAppender(t, db, store.AppenderConfig{})
	if b.Head() != 3 || b.Offset() != small(1, 3).EndLSN {
		t.Fatalf("after Close: Head %d, Offset %s, want 3, %s", b.Head(), b.Offset(), small(1, 3).EndLSN)
	}
	runAll(t, b, queued(small(2, 2)))
	if got := rec.get(); len(got) != 1 || got[0].Head != 5 || got[0].Changes[0].Cursor != 4 {
		t.Errorf("commits after reopening: %+v, want head 5 from cursor 4", got)
	}
}

// TestAppender_StopsOnCancel: Run returns nil when its context ends, and a
// chunked transaction left open is rolled back.
func TestAppender_StopsOnCancel(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	a, _ := newAppender(t, db, store.AppenderConfig{})
	ctx, cancel := context.WithCancel(testCtx(t))
	in := make(chan entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, in) }()
	c := txn(0x5000, 0, 5, 0, 3, false)
	in <- c
	appenderPID(t, db, "idle in transaction")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if n := journalCount(t, db); n != 0 {
		t.Errorf("journal holds %d rows of an unfinished transaction, want 0", n)
	}
}

// TestAppender_Errors covers configuration and migration errors.
func TestAppender_Errors(t *testing.T) {
	t.Parallel()
	if _, err := migrated(t).NewAppender(testCtx(t), store.AppenderConfig{}); err == nil || !strings.Contains(err.Error(), "slot") {
		t.Errorf("NewAppender without a slot = %v, want an error naming the slot", err)
	}
	_, err := openDB(t).NewAppender(testCtx(t), store.AppenderConfig{Slot: testSlot})
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("NewAppender before Migrate = %v, want a hint to migrate", err)
	}
}
