package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/store"
)

func horizonHead(t testing.TB, db *store.DB) (horizon, head int64) {
	t.Helper()
	horizon, err := db.JournalHorizon(testCtx(t))
	if err != nil {
		t.Fatalf("JournalHorizon: %v", err)
	}
	head, err = db.JournalHead(testCtx(t))
	if err != nil {
		t.Fatalf("JournalHead: %v", err)
	}
	return horizon, head
}

func prune(t testing.TB, db *store.DB, cfg store.RetentionConfig) int64 {
	t.Helper()
	n, err := db.PruneJournal(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("PruneJournal(%+v): %v", cfg, err)
	}
	return n
}

// TestPruneJournal_Count removes all but the newest MaxRows, across
// several batches, and raises the horizon; cursors below it expire.
func TestPruneJournal_Count(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	if h, hd := horizonHead(t, db); h != 0 || hd != 0 {
		t.Fatalf("empty journal: horizon %d, head %d, want 0, 0", h, hd)
	}
	fill(t, db, 1, 25_000)
	if n := prune(t, db, store.RetentionConfig{}); n != 0 {
		t.Errorf("default retention deleted %d fresh rows of 25,000, want 0", n)
	}
	if n := prune(t, db, store.RetentionConfig{MaxRows: 1000, MaxAge: -1}); n != 24_000 {
		t.Errorf("MaxRows 1000 deleted %d of 25,000, want 24,000", n)
	}
	if h, hd := horizonHead(t, db); h != 24_000 || hd != 25_000 {
		t.Errorf("horizon %d, head %d, want 24000, 25000", h, hd)
	}
	if n := journalCount(t, db); n != 1000 {
		t.Errorf("journal holds %d rows, want 1000", n)
	}
	if n := prune(t, db, store.RetentionConfig{MaxRows: 1000, MaxAge: -1}); n != 0 {
		t.Errorf("second pass deleted %d, want 0", n)
	}

	ctx := testCtx(t)
	_, err := db.ReadJournal(ctx, 23_999, 10, nil)
	if !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("ReadJournal below the horizon: %v, want ErrCursorExpired", err)
	}
	if _, err := db.ReadJournal(ctx, 0, 10, []string{"job"}); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("filtered ReadJournal below the horizon: %v, want ErrCursorExpired", err)
	}
	got, err := db.ReadJournal(ctx, 24_000, 10, nil)
	if err != nil || len(got) != 10 || got[0].Cursor != 24_001 {
		t.Errorf("ReadJournal at the horizon: %d changes, %v; want 10 from 24001", len(got), err)
	}
	if n := prune(t, db, store.RetentionConfig{MaxRows: -1, MaxAge: -1}); n != 0 {
		t.Errorf("disabled retention deleted %d", n)
	}
}

// TestPruneJournal_AgeAcrossGaps: the age cut-off is found by bisecting
// seq, which has gaps (rows never written, or removed); wherever the old
// prefix ends, exactly it is removed.
func TestPruneJournal_AgeAcrossGaps(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		oldThrough int   // rows with seq <= this are 2 hours old
		wantHorz   int64 // the newest old row that exists
	}{
		{0, 0}, {1, 1}, {7, 4}, {12, 12}, {17, 12}, {29, 29}, {40, 40},
	} {
		t.Run(fmt.Sprint(c.oldThrough), func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			fill(t, db, 1, 40)
			execSQL(t, db, "DELETE FROM changecast.journal WHERE seq BETWEEN 5 AND 11 OR seq BETWEEN 13 AND 28")
			execSQL(t, db, fmt.Sprintf("UPDATE changecast.journal SET journaled_at = now() - interval '2 hours' WHERE seq <= %d", c.oldThrough))
			var want int64 // rows left at seq 1-4, 12 and 29-40
			for seq := int64(1); seq <= c.wantHorz; seq++ {
				if seq <= 4 || seq == 12 || seq >= 29 {
					want++
				}
			}
			if n := prune(t, db, store.RetentionConfig{MaxAge: time.Hour, MaxRows: -1}); n != want {
				t.Errorf("deleted %d rows, want the %d journaled 2 hours ago", n, want)
			}
			if h, _ := horizonHead(t, db); h != c.wantHorz {
				t.Errorf("horizon %d, want %d", h, c.wantHorz)
			}
		})
	}
}

// TestPruneJournal_Age removes rows journaled before MaxAge; emptying the
// journal keeps the head, and the next appender continues the seq.
func TestPruneJournal_Age(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	fill(t, db, 1, 30)
	execSQL(t, db, "UPDATE changecast.journal SET journaled_at = now() - interval '2 hours' WHERE seq <= 10")
	if n := prune(t, db, store.RetentionConfig{MaxAge: time.Hour, MaxRows: -1}); n != 10 {
		t.Errorf("MaxAge 1h deleted %d, want the 10 rows 2 hours old", n)
	}
	if h, hd := horizonHead(t, db); h != 10 || hd != 30 {
		t.Errorf("horizon %d, head %d, want 10, 30", h, hd)
	}
	execSQL(t, db, "UPDATE changecast.journal SET journaled_at = now() - interval '8 days'")
	if n := prune(t, db, store.RetentionConfig{}); n != 20 {
		t.Errorf("default MaxAge deleted %d rows 8 days old, want 20", n)
	}
	if h, hd := horizonHead(t, db); h != 30 || hd != 30 {
		t.Errorf("emptied journal: horizon %d, head %d, want 30, 30", h, hd)
	}
	if got, err := db.ReadJournal(testCtx(t), 30, 10, nil); err != nil || len(got) != 0 {
		t.Errorf("ReadJournal at the head of an empty journal: %d, %v; want none", len(got), err)
	}
	a, rec := newAppender(t, db, store.AppenderConfig{})
	if a.Head() != 30 {
		t.Errorf("appender head %d after retention emptied the journal, want 30", a.Head())
	}
	runAll(t, a, queued(small(100, 1)))
	if c := rec.get(); len(c) != 1 || c[0].Changes[0].Cursor != 31 {
		t.Errorf("next change: %+v, want cursor 31", c)
	}
}

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer = testutil.SyncBuffer

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunRetention prunes in the background, logs a failure once and its
// recovery, and returns nil when its context ends.
func TestRunRetention(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	fill(t, db, 1, 20)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- db.RunRetention(ctx, store.RetentionConfig{
			MaxRows: 5, Interval: 5 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
	}()
	horizon := func() int64 { h, _ := horizonHead(t, db); return h }
	waitFor(t, "the first pass", func() bool { return horizon() == 15 })
	fill(t, db, 100, 10)
	waitFor(t, "a later pass", func() bool { return horizon() == 25 })

	execSQL(t, db, "ALTER TABLE changecast.journal RENAME TO journal_away")
	waitFor(t, "the failure log", func() bool { return strings.Contains(logs.String(), "journal retention failed") })
	execSQL(t, db, "ALTER TABLE changecast.journal_away RENAME TO journal")
	waitFor(t, "the recovery log", func() bool { return strings.Contains(logs.String(), "journal retention recovered") })
	if n := strings.Count(logs.String(), "journal retention failed"); n != 1 {
		t.Errorf("failure logged %d times, want once per state change:\n%s", n, logs.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunRetention after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunRetention did not return after cancel")
	}
}
