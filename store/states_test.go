package store_test

import (
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

// stripSecret is the test's sanitizer: "secret" is a secret column.
func stripSecret(c entities.Change) (entities.Change, error) {
	secret := func(name string) bool { return name == "secret" }
	if c.Payload != nil {
		c.Payload = c.Payload.Without(secret)
	}
	if c.Previous != nil {
		c.Previous = c.Previous.Without(secret)
	}
	return c, nil
}

// tracked builds a Final source transaction of changes to a table
// without REPLICA IDENTITY FULL (Backfill set) at LSN 0x1000*k.
func tracked(k int, changes ...entities.Change) entities.Transaction {
	commit := entities.LSN(0x1000 * k)
	t := entities.Transaction{Xid: uint32(k), CommitLSN: commit, EndLSN: commit + 0x100, CommitTime: time.Now(), Final: true}
	for i, c := range changes {
		if c.EntityType == "" {
			c.EntityType = "account"
		}
		c.Backfill, c.Index, c.CommitLSN, c.EndLSN, c.Xid = true, i, commit, commit+0x100, uint32(k)
		t.Changes = append(t.Changes, c)
	}
	return t
}

func row(kv ...any) *entities.Row {
	r := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		r[kv[i].(string)] = kv[i+1]
	}
	return entities.RowOf(r)
}

// The appender completes updates and deletes from the last journaled
// state: within one journal commit, across commits, across appenders (it
// is stored, not cached), sanitized again; a gap forgets every state.
func TestAppender_Backfill(t *testing.T) {
	db := migrated(t)
	a, _ := newAppender(t, db, store.AppenderConfig{Sanitize: stripSecret})
	up := entities.OpUpdate
	// One group: create, then an update that needs the create's state.
	runAll(t, a, queued(
		tracked(1, entities.Change{Operation: entities.OpCreate, EntityID: "1", Payload: row("id", int64(1), "bio", "long", "n", int64(1))}),
		tracked(2, entities.Change{Operation: up, EntityID: "1", Payload: row("id", int64(1), "n", int64(2)), Unchanged: []string{"bio"}}),
	))
	a.Close()

	// A new appender: the state comes from the database. Between the
	// journal rows a stale "secret" value (as if journaled before the
	// column became secret) must not come out of a state.
	if err := db.Gorm().Exec(`UPDATE changecast.journal SET payload = '{"bio":"long","id":1,"n":2,"secret":"CANARY"}' WHERE seq = 2`).Error; err != nil {
		t.Fatal(err)
	}
	a, _ = newAppender(t, db, store.AppenderConfig{Sanitize: stripSecret})
	runAll(t, a, queued(
		tracked(3, entities.Change{Operation: up, EntityID: "1", Payload: row("id", int64(1), "n", int64(3)), Unchanged: []string{"bio"}}),
		tracked(4, entities.Change{Operation: entities.OpDelete, EntityID: "1", Payload: row("id", int64(1))},
			// Never seen before: nothing to fill, nothing guessed.
			entities.Change{Operation: entities.OpDelete, EntityID: "9", Payload: row("id", int64(9))}),
	))
	got := readAll(t, db)
	if len(got) != 5 {
		t.Fatalf("journal has %d changes, want 5", len(got))
	}
	want := []struct {
		payload, previous *entities.Row
		unchanged         int
	}{
		{row("id", 1, "bio", "long", "n", 1), nil, 0},
		{row("id", 1, "bio", "long", "n", 2, "secret", "CANARY"), row("id", 1, "bio", "long", "n", 1), 0}, // as rewritten above
		{row("id", 1, "bio", "long", "n", 3), row("id", 1, "bio", "long", "n", 2), 0},
		{row("id", 1, "bio", "long", "n", 3), nil, 0},
		{row("id", 9), nil, 0},
	}
	for i, w := range want {
		c := got[i]
		if !c.Payload.Equal(w.payload) || !c.Previous.Equal(w.previous) || len(c.Unchanged) != w.unchanged {
			t.Errorf("change %d: payload %v previous %v unchanged %v; want %v, %v", i+1, c.Payload, c.Previous, c.Unchanged, w.payload, w.previous)
		}
	}

	// A gap: whatever happened in the lost stretch, no state holds.
	runAll(t, a, queued(tracked(5, entities.Change{Operation: entities.OpCreate, EntityID: "2", Payload: row("id", int64(2), "n", int64(1))})))
	a.Close()
	a, _ = newAppender(t, db, store.AppenderConfig{Sanitize: stripSecret, SanitizeEvent: stripPassword})
	if _, err := a.RecordGap(testCtx(t), store.Gap{FromLSN: 0x5100, ToLSN: 0x9000, Reason: "test"}, entities.NewEvent().WithCategory("replication").WithAction("slot_lost").WithSeverity(entities.Critical).WithDescription("lost").WithMetadata(map[string]any{"err": "gone"}).MustBuild()); err != nil {
		t.Fatal(err)
	}
	runAll(t, a, queued(tracked(10, entities.Change{Operation: up, EntityID: "2", Payload: row("id", int64(2), "n", int64(5))})))
	var previous *string
	if err := db.Gorm().Raw(`SELECT previous::text FROM changecast.journal ORDER BY seq DESC LIMIT 1`).Row().Scan(&previous); err != nil || previous != nil {
		t.Errorf("update after a gap: previous %v (%v), want none", previous, err)
	}
}
