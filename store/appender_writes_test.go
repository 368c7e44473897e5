package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
	"github.com/changecast/changecast/store"
)

// stripPassword stands in for sanitize.Event (store cannot import
// sanitize): it drops the metadata key "password".
func stripPassword(ev entities.Event) (entities.Event, error) {
	m := map[string]any{}
	for k, v := range ev.Metadata {
		if k != "password" {
			m[k] = v
		}
	}
	ev.Metadata = m
	return ev, nil
}

// TestAppender_PersistEvent checks that a system event goes through the
// appender: the events row and its journal row commit together, between
// source transactions, with the next dense cursor, reported to OnCommit
// with no source position; the sanitizer runs first; and an event is never
// skipped as already journaled, whatever the stored offset.
func TestAppender_PersistEvent(t *testing.T) {
	db := migrated(t)
	ctx := testCtx(t)
	a, rec := newAppender(t, db, store.AppenderConfig{SanitizeEvent: stripPassword})
	// Unbuffered: a send returns once the appender has taken the
	// transaction, so the event below is submitted after it.
	in := make(chan entities.Transaction)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx, in) }()

	in <- small(5, 3) // offset moves to 0x5100
	user := uuid.New()
	ev := entities.NewEvent().FromUser(user).WithCategory("watcher").WithAction("started").
		WithSeverity(entities.Informational).WithMetadata(map[string]any{"slot": "s", "password": "CANARY"}).MustBuild()
	if err := a.PersistEvent(ctx, ev); err != nil {
		t.Fatalf("PersistEvent: %v", err)
	}
	in <- small(6, 2)
	close(in)
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}

	got := readAll(t, db)
	if len(got) != 6 {
		t.Fatalf("journal has %d rows, want 3 + 1 event + 2", len(got))
	}
	evRow := got[3]
	if evRow.Cursor != 4 || evRow.EntityType != entities.EventEntityType || evRow.Operation != entities.OpCreate || evRow.EntityID != ev.ID.String() {
		t.Fatalf("journal row 4 is %+v, want the event create", evRow)
	}
	back, err := entitiestest.EventFromRow(evRow.Payload)
	if err != nil {
		t.Fatalf("EventFromRow: %v", err)
	}
	if back.ID != ev.ID || back.UserID == nil || *back.UserID != user || back.Metadata["slot"] != "s" {
		t.Fatalf("journaled event %+v, want the persisted one", back)
	}
	if _, ok := back.Metadata["password"]; ok {
		t.Fatal("the journal holds the metadata the sanitizer removed")
	}
	stored, err := db.GetEvent(ctx, ev.ID)
	if err != nil {
		t.Fatalf("GetEvent: %v", err)
	}
	if _, ok := stored.Metadata["password"]; ok || stored.Metadata["slot"] != "s" {
		t.Fatalf("events table holds metadata %v", stored.Metadata)
	}
	// OnCommit saw the event as its own commit with no source position.
	var found bool
	for _, c := range rec.get() {
		if len(c.Changes) == 1 && c.Changes[0].EntityType == entities.EventEntityType {
			found = true
			if c.EndLSN != 0 || c.Head != 4 || c.Changes[0].Cursor != 4 {
				t.Errorf("event commit %+v, want head 4, cursor 4, EndLSN 0", c)
			}
		}
	}
	if !found {
		t.Errorf("OnCommit never reported the event")
	}
	if off := offsetOf(t, db); off != 0x6100 {
		t.Errorf("offset %s, want 0/6100: the event must not move it", off)
	}
}

// TestAppender_SubmitFailure checks that a write whose function fails
// changes nothing and leaves the appender working, and that Submit reports
// a stopped appender instead of hanging.
func TestAppender_SubmitFailure(t *testing.T) {
	db := migrated(t)
	ctx := testCtx(t)
	a, _ := newAppender(t, db, store.AppenderConfig{})
	in := make(chan entities.Transaction)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx, in) }()

	boom := errors.New("boom")
	err := a.Submit(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO changecast.offsets (slot, lsn, updated_at) VALUES ('x', 1, now())`); err != nil {
			return nil, err
		}
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Submit: got %v, want boom", err)
	}
	if lsn, err := db.LoadOffset(ctx, "x"); err != nil || lsn != 0 {
		t.Fatalf("the failed write left offset %s (%v); want nothing written", lsn, err)
	}
	if err := a.PersistEvent(ctx, entities.NewEvent().WithCategory("a").WithAction("b").WithSeverity(entities.Debug).MustBuild()); err == nil || !strings.Contains(err.Error(), "SanitizeEvent") {
		t.Fatalf("PersistEvent without a sanitizer: got %v, want a refusal", err)
	}
	in <- small(1, 1)
	close(in)
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := a.Submit(ctx, func(context.Context, pgx.Tx) ([]entities.Change, error) { return nil, nil }); !errors.Is(err, store.ErrAppenderStopped) {
		t.Fatalf("Submit after Run: got %v, want ErrAppenderStopped", err)
	}
	if n := journalCount(t, db); n != 1 {
		t.Fatalf("journal has %d rows, want 1", n)
	}
}

// TestAppender_EventWaitsForChunkedTransaction checks that a system event
// submitted while a chunked source transaction is open waits for it (the
// journal keeps commit order) rather than failing, and that persisting the
// same event again (a retry after an unknown outcome) is a no-op.
func TestAppender_EventWaitsForChunkedTransaction(t *testing.T) {
	db := migrated(t)
	ctx := testCtx(t)
	a, _ := newAppender(t, db, store.AppenderConfig{SanitizeEvent: stripPassword})
	in := make(chan entities.Transaction)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx, in) }()

	in <- txn(0x9000, 0x9100, 9, 0, 3, false) // first chunk: the journal transaction is open
	ev := entities.NewEvent().WithCategory("test").WithAction("during_chunk").WithSeverity(entities.Debug).MustBuild()
	persisted := make(chan error, 1)
	go func() { persisted <- a.PersistEvent(ctx, ev) }()
	// While the source transaction is open the event must wait: for a
	// while nothing may come back (an immediate check would pass before
	// the goroutine even ran).
	select {
	case err := <-persisted:
		t.Fatalf("PersistEvent returned %v inside an open source transaction", err)
	case <-time.After(300 * time.Millisecond):
	}
	in <- txn(0x9000, 0x9100, 9, 3, 2, true) // final chunk
	if err := <-persisted; err != nil {
		t.Fatalf("PersistEvent: %v", err)
	}
	if err := a.PersistEvent(ctx, ev); err != nil {
		t.Fatalf("PersistEvent again (a retry): %v", err)
	}
	close(in)
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := readAll(t, db)
	if len(got) != 6 || got[5].EntityType != entities.EventEntityType {
		t.Fatalf("journal has %d rows (last %+v), want the 5 chunked changes then the event once", len(got), got[len(got)-1])
	}
}
