package store_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

// TestAppender_OneStatementValues journals, through the one-statement
// commit (no back-filled type), rows that stress its column arrays: a
// missing payload and previous row (NULL), unchanged lists whose names
// need quoting in an array literal, an empty one, and a system event. Each
// reads back exactly as sent, with the offset moved.
func TestAppender_OneStatementValues(t *testing.T) {
	t.Parallel()
	journalValues(t, false)
}

// TestAppender_CopyValues journals the same rows through the binary COPY
// of a chunked transaction (copy_binary.go): each reads back exactly as
// sent.
func TestAppender_CopyValues(t *testing.T) {
	t.Parallel()
	journalValues(t, true)
}

// journalValues journals rows that stress the journal's columns, as one
// transaction or as two chunks of it, and reads them back.
func journalValues(t *testing.T, chunked bool) {
	db := migrated(t)
	a, rec := newAppender(t, db, store.AppenderConfig{})
	tx := small(1, 4)
	tx.Changes[0].Previous = entities.RowOf(map[string]any{"id": "1-0", "note": `quote " backslash \ brace { comma ,`})
	tx.Changes[1].Operation, tx.Changes[1].Payload = entities.OpTruncate, nil
	tx.Changes[2].Unchanged = []string{`a"b`, `c\d`, "e,f", "{g}", "NULL", ""}
	tx.Changes[3].Unchanged = []string{}
	tx.Changes = append(tx.Changes, entities.Change{
		EntityType: entities.EventEntityType, Operation: entities.OpCreate, EntityID: "ev-1",
		Payload:   entities.RowOf(map[string]any{"id": "ev-1", "kind": "started"}),
		CommitLSN: tx.CommitLSN, Index: 4, Xid: tx.Xid, CommitTime: tx.CommitTime,
	})
	if chunked {
		first, last := tx, tx
		first.Changes, first.Final, first.EndLSN = tx.Changes[:3], false, 0
		last.Changes = tx.Changes[3:]
		runAll(t, a, queued(first, last, small(2, 1)))
	} else {
		runAll(t, a, queued(tx, small(2, 1)))
	}

	got := readAll(t, db)
	if len(got) != 6 {
		t.Fatalf("journal holds %d changes, want 6", len(got))
	}
	for i, w := range tx.Changes {
		g := got[i]
		if g.Cursor != int64(i+1) || g.EntityType != w.EntityType || g.Operation != w.Operation || g.EntityID != w.EntityID ||
			g.Index != w.Index || g.Xid != w.Xid || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) {
			t.Errorf("journal[%d] = %+v, want %+v", i, g, w)
		}
		if !bytes.Equal(rowBytes(g.Payload), rowBytes(w.Payload)) || !bytes.Equal(rowBytes(g.Previous), rowBytes(w.Previous)) {
			t.Errorf("journal[%d]: payload %s previous %s, want %s and %s", i, rowBytes(g.Payload), rowBytes(g.Previous), rowBytes(w.Payload), rowBytes(w.Previous))
		}
		if !slices.Equal(g.Unchanged, w.Unchanged) || (g.Unchanged == nil) != (w.Unchanged == nil) {
			t.Errorf("journal[%d]: unchanged %q (nil %t), want %q (nil %t)", i, g.Unchanged, g.Unchanged == nil, w.Unchanged, w.Unchanged == nil)
		}
	}
	if off := offsetOf(t, db); off != small(2, 1).EndLSN {
		t.Errorf("stored offset %s, want %s", off, small(2, 1).EndLSN)
	}
	if c := rec.get(); len(c) == 0 || c[len(c)-1].Head != 6 || (!chunked && len(c) != 1) {
		t.Errorf("OnCommit calls %+v, want commits up to head 6 (one, unless chunked)", c)
	}
}

func rowBytes(r *entities.Row) []byte {
	if r == nil {
		return nil
	}
	return r.JSON()
}

// TestAppender_RunBatches checks the batch input the pipeline uses: a
// batch is journaled in order, group commit takes the whole of it (up to
// MaxGroupChanges), and a chunked transaction inside a batch still gets a
// journal transaction of its own.
func TestAppender_RunBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		maxGroup int
		sizes    []int // changes per OnCommit
	}{
		{"default", 0, []int{60, 6, 30}},
		{"max 10", 10, []int{9, 9, 9, 9, 9, 9, 6, 6, 9, 9, 9, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			a, rec := newAppender(t, db, store.AppenderConfig{MaxGroupChanges: tc.maxGroup})
			var first, second []entities.Transaction
			for k := 1; k <= 20; k++ {
				first = append(first, small(k, 3))
			}
			big := txn(0x50000, 0x50100, 50, 0, 6, true)
			c1, c2 := big, big
			c1.Changes, c1.Final, c1.EndLSN = big.Changes[:3], false, 0
			c2.Changes = big.Changes[3:]
			second = append(second, c1, c2)
			for k := 100; k < 110; k++ {
				second = append(second, small(k, 3))
			}
			// RunBatches owns what it receives: hand it copies.
			in := make(chan []entities.Transaction, 2)
			in <- slices.Clone(first)
			in <- slices.Clone(second)
			close(in)
			if err := a.RunBatches(testCtx(t), in); err != nil {
				t.Fatalf("RunBatches: %v", err)
			}
			var sizes []int
			for _, c := range rec.get() {
				sizes = append(sizes, len(c.Changes))
			}
			if !slices.Equal(sizes, tc.sizes) {
				t.Errorf("commit sizes %v, want %v", sizes, tc.sizes)
			}
			want := append(append([]entities.Transaction{}, first...), big)
			want = append(want, second[2:]...)
			checkDense(t, readAll(t, db), want)
			if off := offsetOf(t, db); off != small(109, 3).EndLSN {
				t.Errorf("stored offset %s, want %s", off, small(109, 3).EndLSN)
			}
		})
	}
}

// TestAppender_CopyAboveOneShotMax checks where a group changes path: a
// transaction of oneShotMaxChanges (64) changes is journaled by the one
// statement, one of 65 by COPY, and a group with a back-filled change by
// COPY whatever its size. Either way the journal holds every change once,
// in order. The drain benchmark depends on large groups going by COPY
// (docs/benchmarks.md, step 17); nothing else would notice if they did not.
func TestAppender_CopyAboveOneShotMax(t *testing.T) {
	t.Parallel()
	backfilled := small(1, 1)
	backfilled.Changes[0].Backfill = true
	for _, tc := range []struct {
		name string
		tx   entities.Transaction
		copy bool
	}{
		{"64 changes", small(1, 64), false},
		{"65 changes", small(1, 65), true},
		{"1 back-filled change", backfilled, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			a, _ := newAppender(t, db, store.AppenderConfig{})
			runAll(t, a, queued(tc.tx))
			want := int64(0)
			if tc.copy {
				want = 1
			}
			if got := a.CopiedGroups(); got != want {
				t.Errorf("groups journaled by COPY = %d, want %d", got, want)
			}
			got := readAll(t, db)
			if len(got) != len(tc.tx.Changes) {
				t.Fatalf("journal holds %d changes, want %d", len(got), len(tc.tx.Changes))
			}
			for i, c := range got {
				if c.Cursor != int64(i+1) || c.EntityID != tc.tx.Changes[i].EntityID {
					t.Fatalf("journal row %d = cursor %d id %s, want cursor %d id %s", i, c.Cursor, c.EntityID, i+1, tc.tx.Changes[i].EntityID)
				}
			}
		})
	}
}
