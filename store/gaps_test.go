package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

func TestAppender_RecordGap(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	fill(t, db, 1, 3) // cursors 1..3, offset 0x1100
	a, rec := newAppender(t, db, store.AppenderConfig{SanitizeEvent: stripPassword})
	from := a.Offset()
	marker := entities.NewEvent().WithCategory("replication").WithAction("slot_lost").WithSeverity(entities.Critical).
		WithDescription("lost").WithMetadata(map[string]any{"err": "gone", "password": "CANARY-gap-secret"}).MustBuild()
	gap, err := a.RecordGap(ctx, store.Gap{FromLSN: from, ToLSN: 0x9000, Reason: "replication slot missing"}, marker)
	if err != nil {
		t.Fatalf("RecordGap: %v", err)
	}
	if gap.Seq != 4 || a.Head() != 4 || a.Offset() != 0x9000 || offsetOf(t, db) != 0x9000 || gap.RecordedAt.IsZero() {
		t.Fatalf("gap %+v, head %d, offset %s (stored %s); want the marker at 4 and the offset at the new slot's start", gap, a.Head(), a.Offset(), offsetOf(t, db))
	}
	c := rec.get()
	if len(c) != 1 || c[0].Head != 4 || len(c[0].Changes) != 1 || c[0].Changes[0].Cursor != 4 || c[0].Changes[0].EntityType != "event" || c[0].EndLSN != 0 {
		t.Fatalf("OnCommit got %+v, want the marker event at cursor 4 and no EndLSN", c)
	}
	// The marker went through SanitizeEvent, like every system event.
	var stored string
	if err := db.Gorm().Raw(`SELECT payload::text FROM changecast.journal WHERE seq = 4`).Scan(&stored).Error; err != nil || strings.Contains(stored, "CANARY") {
		t.Fatalf("journaled marker %s (%v): want it sanitized", stored, err)
	}

	// Cursors before the marker cannot resume, with the lost range named;
	// at the marker or later they can.
	for _, after := range []int64{0, 1, 3} {
		_, err := db.ReadJournal(ctx, after, 10, nil)
		var ge *store.GapError
		if !errors.As(err, &ge) || !errors.Is(err, store.ErrJournalGap) || ge.Gap.Seq != 4 || ge.Gap.FromLSN != from || ge.Gap.ToLSN != 0x9000 ||
			!strings.Contains(err.Error(), from.String()) {
			t.Fatalf("ReadJournal(after %d) = %v, want a GapError naming %s..0/9000", after, err, from)
		}
		if _, err := db.ReadJournal(ctx, after, 10, []string{"pool"}); !errors.As(err, &ge) {
			t.Fatalf("ReadJournal(after %d, pool) = %v, want a GapError", after, err)
		}
	}
	for _, after := range []int64{4, 5} {
		if got, err := db.ReadJournal(ctx, after, 10, nil); err != nil || len(got) != 0 {
			t.Fatalf("ReadJournal(after %d) = %v, %v; want nothing and no error", after, got, err)
		}
	}
	if h, err := db.JournalHorizon(ctx); err != nil || h != 4 {
		t.Fatalf("JournalHorizon = %d, %v; want 4 (the marker)", h, err)
	}
	gaps, err := db.Gaps(ctx)
	if err != nil || len(gaps) != 1 || gaps[0].Seq != 4 || gaps[0].Reason != "replication slot missing" {
		t.Fatalf("Gaps = %+v, %v", gaps, err)
	}

	// The journal goes on after the gap, densely.
	runAll(t, a, queued(small(10, 2)))
	if got, err := db.ReadJournal(ctx, 4, 10, nil); err != nil || len(got) != 2 || got[0].Cursor != 5 {
		t.Fatalf("after the gap: %v, %v; want cursors 5 and 6", got, err)
	}
}

func TestAppender_SavePosition(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	a, _ := newAppender(t, db, store.AppenderConfig{})
	in := make(chan entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, in) }()
	for _, lsn := range []entities.LSN{0x500, 0x400, 0x700} {
		if err := a.SavePosition(ctx, lsn); err != nil {
			t.Fatalf("SavePosition(%s): %v", lsn, err)
		}
	}
	if a.Offset() != 0x700 || offsetOf(t, db) != 0x700 {
		t.Fatalf("offset %s, stored %s; want 0/700, never backwards", a.Offset(), offsetOf(t, db))
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.SavePosition(ctx, 0x800); !errors.Is(err, store.ErrAppenderStopped) {
		t.Fatalf("SavePosition after Run returned = %v, want ErrAppenderStopped", err)
	}
	if _, err := a.RecordGap(ctx, store.Gap{FromLSN: 1, ToLSN: 2}, entities.NewEvent().WithCategory("a").WithAction("b").WithSeverity(entities.Debug).MustBuild()); err == nil || !strings.Contains(err.Error(), "SanitizeEvent") {
		t.Fatalf("RecordGap without SanitizeEvent = %v, want a refusal", err)
	}
}
