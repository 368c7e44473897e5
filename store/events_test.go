package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// eventsDB is a migrated database with the events table, and a pgx
// connection to it for the transactional writes.
type eventsDB struct {
	db   *store.DB
	conn *pgx.Conn
}

func newEventsDB(t testing.TB) *eventsDB {
	t.Helper()
	ctx := testCtx(t)
	url := storetest.NewDatabase(t)
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := store.MigrateEventsTable(ctx, db); err != nil {
		t.Fatalf("MigrateEventsTable: %v", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &eventsDB{db: db, conn: conn}
}

// inTx runs fn in a transaction, committed if fn succeeds, rolled back
// otherwise; it returns fn's error.
func (e *eventsDB) inTx(t testing.TB, fn func(pgx.Tx) error) error {
	t.Helper()
	ctx := testCtx(t)
	tx, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(ctx); rerr != nil {
			t.Fatalf("rollback: %v", rerr)
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return nil
}

func (e *eventsDB) insert(t testing.TB, evs ...entities.Event) []entities.Change {
	t.Helper()
	var out []entities.Change
	err := e.inTx(t, func(tx pgx.Tx) error {
		for _, ev := range evs {
			c, err := store.InsertEventTx(testCtx(t), tx, ev)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InsertEventTx: %v", err)
	}
	return out
}

var (
	alice    = uuid.MustParse("a11ce000-0000-4000-8000-000000000001")
	bob      = uuid.MustParse("b0b00000-0000-4000-8000-000000000002")
	target   = uuid.MustParse("7a76e700-0000-4000-8000-000000000003")
	fixtureT = time.Date(2025, 11, 23, 10, 0, 0, 0, time.UTC) // in the past: status updates move updated_at to now()
)

// fixtureEvents are eight events of alice, bob and the whole system,
// created a minute apart (index i at fixtureT + i minutes).
func fixtureEvents(t testing.TB) []entities.Event {
	t.Helper()
	type spec struct {
		user      uuid.UUID
		category  string
		action    string
		sev       entities.Severity
		desc      string
		actedUpon uuid.UUID
	}
	specs := []spec{
		{uuid.Nil, "connection", "unreachable", entities.Error, "PostgreSQL unreachable", uuid.Nil},
		{alice, "replication", "lag_exceeded", entities.Warning, "Replication lag 50% over threshold", uuid.Nil},
		{alice, "replication", "lag_recovered", entities.Success, "lag back under threshold", uuid.Nil},
		{bob, "replication", "slot_invalidated", entities.Critical, "slot invalidated", uuid.Nil},
		{uuid.Nil, "server", "started", entities.Informational, "changecast started!", uuid.Nil},
		{bob, "server", "shutdown", entities.Informational, "shutdown_now", uuid.Nil},
		{alice, "connection", "ping", entities.Debug, "Ping OK", target},
		{uuid.Nil, "journal", "retention_removed", entities.Warning, "retention removed rows", target},
	}
	out := make([]entities.Event, len(specs))
	for i, s := range specs {
		meta := map[string]any{"i": i, "nested": map[string]any{"z": 1, "a": []any{"x", 2.5}}}
		if s.sev.AtLeast(entities.Error) {
			meta["err"] = errors.New("boom " + s.action)
		}
		ev, err := entities.NewEvent().FromUser(s.user).ActedUpon(s.actedUpon).
			WithCategory(s.category).WithAction(s.action).WithSeverity(s.sev).
			WithDescription(s.desc).WithMetadata(meta).Build()
		if err != nil {
			t.Fatalf("fixture %d: %v", i, err)
		}
		ev.CreatedAt = fixtureT.Add(time.Duration(i) * time.Minute)
		ev.UpdatedAt = ev.CreatedAt
		out[i] = ev
	}
	out[2].Status = entities.StatusRead
	out[0].UpdatedAt = fixtureT.Add(100 * time.Minute)
	return out
}

func TestEvents_Migrate(t *testing.T) {
	t.Parallel()
	e := newEventsDB(t)
	if err := store.MigrateEventsTable(testCtx(t), e.db); err != nil {
		t.Fatalf("second MigrateEventsTable: %v", err)
	}
	cols := strings1(t, e.db, `SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns
		WHERE table_schema = 'changecast' AND table_name = 'events' ORDER BY ordinal_position`)
	want := []string{
		"id uuid NO", "user_id uuid YES", "system_id uuid YES", "acted_upon uuid YES",
		"category text NO", "action text NO", "severity text NO", "description text NO",
		"metadata jsonb NO", "status text NO", "operation_id uuid NO",
		"created_at timestamp with time zone NO", "updated_at timestamp with time zone NO",
	}
	if !reflect.DeepEqual(cols, want) {
		t.Errorf("columns = %v, want %v", cols, want)
	}
	idx := strings1(t, e.db, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'changecast' AND tablename = 'events' ORDER BY indexname`)
	for _, w := range []string{"(acted_upon)", "(category, action)", "(created_at)", "(user_id, created_at)", "(id)"} {
		found := false
		for _, d := range idx {
			found = found || strings.HasSuffix(d, w)
		}
		if !found {
			t.Errorf("no index on %s; indexes: %v", w, idx)
		}
	}
	// The table is not in the publication's schema: events reach the
	// journal through the appender, never through replication.
	if got := strings1(t, e.db, "SELECT coalesce(to_regclass('public.events')::text, '')"); len(got) != 1 || got[0] != "" {
		t.Errorf("public.events exists (%v); want the table only in schema changecast", got)
	}
	err := e.inTx(t, func(tx pgx.Tx) error {
		_, err := tx.Exec(testCtx(t), `INSERT INTO changecast.events (id, category, action, severity, status, operation_id)
			VALUES (gen_random_uuid(), 'a', 'b', 'debug', 'seen', gen_random_uuid())`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "events_status_check") {
		t.Errorf("insert with status seen: %v, want the status check to refuse it", err)
	}
}

func TestEvents_InsertAndList(t *testing.T) {
	t.Parallel()
	e := newEventsDB(t)
	evs := fixtureEvents(t)
	changes := e.insert(t, evs...)
	ctx := testCtx(t)

	// The create Changes carry the stored row.
	for i, c := range changes {
		if c.EntityType != "event" || c.Operation != entities.OpCreate || c.EntityID != evs[i].ID.String() || c.Previous != nil || c.CommitTime.IsZero() {
			t.Errorf("change %d = %+v, want an event create of %s with a commit time", i, c, evs[i].ID)
		}
		if !reflect.DeepEqual(c.Payload, evs[i].Row()) {
			t.Errorf("change %d payload = %v, want %v", i, c.Payload, evs[i].Row())
		}
		back, err := entitiestest.EventFromRow(c.Payload)
		if err != nil || !reflect.DeepEqual(back, evs[i]) {
			t.Errorf("EventFromRow(payload %d) = %+v, %v; want %+v", i, back, err, evs[i])
		}
	}
	got, err := e.db.GetEvent(ctx, evs[3].ID)
	if err != nil || !reflect.DeepEqual(got, evs[3]) {
		t.Errorf("GetEvent = %+v, %v; want %+v", got, err, evs[3])
	}
	missing := uuid.New()
	if _, err := e.db.GetEvent(ctx, missing); !errors.Is(err, store.ErrEventNotFound) || !strings.Contains(err.Error(), missing.String()) {
		t.Errorf("GetEvent(unknown) = %v, want ErrEventNotFound naming the id", err)
	}

	ptr := func(id uuid.UUID) *uuid.UUID { return &id }
	nilOwner := uuid.Nil
	tests := []struct {
		name  string
		q     entities.EventQuery
		want  []int
		total int64
	}{
		{"defaults", entities.EventQuery{}, []int{7, 6, 5, 4, 3, 2, 1, 0}, 8},
		{"owner alice", entities.EventQuery{Owner: ptr(alice)}, []int{7, 6, 4, 2, 1, 0}, 6},
		{"owner bob", entities.EventQuery{Owner: ptr(bob)}, []int{7, 5, 4, 3, 0}, 5},
		{"owner without events of its own", entities.EventQuery{Owner: &nilOwner}, []int{7, 4, 0}, 3},
		{"search is case-insensitive", entities.EventQuery{Search: "LAG"}, []int{2, 1}, 2},
		{"search description", entities.EventQuery{Search: "postgresql"}, []int{0}, 1},
		{"search category", entities.EventQuery{Search: "journ"}, []int{7}, 1},
		{"search percent is literal", entities.EventQuery{Search: "%"}, []int{1}, 1},
		{"search underscore is literal", entities.EventQuery{Search: "_"}, []int{7, 5, 3, 2, 1}, 5},
		{"search escape char is literal", entities.EventQuery{Search: "!"}, []int{4}, 1},
		{"search escape sequence is literal", entities.EventQuery{Search: "!%"}, nil, 0},
		{"search injection", entities.EventQuery{Search: `'; DROP TABLE changecast.events; --`}, nil, 0},
		{"search injection 2", entities.EventQuery{Search: `x' OR '1'='1`}, nil, 0},
		{"search backslash", entities.EventQuery{Search: `\`}, nil, 0},
		{"category", entities.EventQuery{Category: []string{"replication"}}, []int{3, 2, 1}, 3},
		{"categories", entities.EventQuery{Category: []string{"replication", "server"}}, []int{5, 4, 3, 2, 1}, 5},
		{"action", entities.EventQuery{Action: []string{"ping"}}, []int{6}, 1},
		{"severity", entities.EventQuery{Severity: []string{"error", "critical"}}, []int{3, 0}, 2},
		{"status read", entities.EventQuery{Status: []string{"read"}}, []int{2}, 1},
		{"status unread", entities.EventQuery{Status: []string{"unread"}}, []int{7, 6, 5, 4, 3, 1, 0}, 7},
		{"acted upon", entities.EventQuery{ActedUpon: ptr(target)}, []int{7, 6}, 2},
		{"combined", entities.EventQuery{Owner: ptr(alice), Category: []string{"replication"}, Severity: []string{"warning"}}, []int{1}, 1},
		{"asc", entities.EventQuery{Order: "asc"}, []int{0, 1, 2, 3, 4, 5, 6, 7}, 8},
		{"updated_at", entities.EventQuery{Sort: "updated_at"}, []int{0, 7, 6, 5, 4, 3, 2, 1}, 8},
		{"severity desc: worst first", entities.EventQuery{Sort: "severity"}, []int{3, 0, 7, 1, 5, 4, 2, 6}, 8},
		{"severity asc", entities.EventQuery{Sort: "severity", Order: "asc"}, []int{6, 2, 4, 5, 1, 7, 0, 3}, 8},
		{"category asc", entities.EventQuery{Sort: "category", Order: "asc"}, []int{0, 6, 7, 1, 2, 3, 4, 5}, 8},
		{"action desc", entities.EventQuery{Sort: "action"}, []int{0, 4, 3, 5, 7, 6, 2, 1}, 8},
		{"page 1", entities.EventQuery{PageSize: 3}, []int{7, 6, 5}, 8},
		{"page 2", entities.EventQuery{PageSize: 3, Page: 2}, []int{4, 3, 2}, 8},
		{"page 3", entities.EventQuery{PageSize: 3, Page: 3}, []int{1, 0}, 8},
		{"past the end", entities.EventQuery{PageSize: 3, Page: 4}, nil, 8},
		{"filtered page", entities.EventQuery{Owner: ptr(alice), PageSize: 2, Page: 2, Order: "asc"}, []int{2, 4}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := e.db.ListEvents(ctx, tt.q)
			if err != nil {
				t.Fatalf("ListEvents: %v", err)
			}
			var gotIdx []int
			for _, ev := range page.Events {
				gotIdx = append(gotIdx, indexOf(evs, ev.ID))
			}
			if !reflect.DeepEqual(gotIdx, tt.want) || page.TotalCount != tt.total {
				t.Errorf("got events %v of %d, want %v of %d", gotIdx, page.TotalCount, tt.want, tt.total)
			}
			if page.Events == nil {
				t.Error("Events is nil, want [] (encodes as [], not null)")
			}
			wantSize := int64(tt.q.PageSize)
			if wantSize == 0 {
				wantSize = entities.DefaultEventPageSize
			}
			if page.PageSize != wantSize || page.Page != int64(max(tt.q.Page, 1)) {
				t.Errorf("page %d size %d, want %d size %d", page.Page, page.PageSize, max(tt.q.Page, 1), wantSize)
			}
			for _, ev := range page.Events {
				if want := evs[indexOf(evs, ev.ID)]; !reflect.DeepEqual(ev, want) {
					t.Errorf("listed event %+v, want %+v", ev, want)
				}
			}
		})
	}

	for _, q := range []struct {
		q    entities.EventQuery
		want string
	}{
		{entities.EventQuery{PageSize: 101}, "pagesize must be from 1 to 100, got 101"},
		{entities.EventQuery{Page: -1}, "page must be from 1"},
		{entities.EventQuery{Sort: "created_at; DROP TABLE x"}, `unknown sort "created_at; DROP TABLE x"; known: created_at, updated_at, severity, category, action`},
		{entities.EventQuery{Order: "DESC"}, `unknown order "DESC"; known: asc, desc`},
		{entities.EventQuery{Severity: []string{"fatal"}}, `unknown severity "fatal"`},
		{entities.EventQuery{Status: []string{"seen"}}, `unknown event status "seen"`},
		{entities.EventQuery{Category: []string{"a' OR 1=1"}}, `category "a' OR 1=1" is not snake_case`},
		{entities.EventQuery{Search: strings.Repeat("x", 257)}, "search is 257 bytes long; at most 256"},
	} {
		if _, err := e.db.ListEvents(ctx, q.q); err == nil || !strings.Contains(err.Error(), q.want) {
			t.Errorf("ListEvents(%+v) = %v, want an error containing %q", q.q, err, q.want)
		}
	}
	// The injection attempts left the table alone.
	if page, err := e.db.ListEvents(ctx, entities.EventQuery{}); err != nil || page.TotalCount != 8 {
		t.Errorf("after the injection attempts: %d events, %v; want 8", page.TotalCount, err)
	}

	for _, tt := range []struct {
		name  string
		owner *uuid.UUID
		want  entities.EventTypes
	}{
		{"admin", nil, entities.EventTypes{
			Categories: []string{"connection", "journal", "replication", "server"},
			Actions:    []string{"lag_exceeded", "lag_recovered", "ping", "retention_removed", "shutdown", "slot_invalidated", "started", "unreachable"},
		}},
		{"bob", ptr(bob), entities.EventTypes{
			Categories: []string{"connection", "journal", "replication", "server"},
			Actions:    []string{"retention_removed", "shutdown", "slot_invalidated", "started", "unreachable"},
		}},
		{"no own events", &nilOwner, entities.EventTypes{
			Categories: []string{"connection", "journal", "server"},
			Actions:    []string{"retention_removed", "started", "unreachable"},
		}},
	} {
		got, err := e.db.EventTypes(ctx, tt.owner)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("EventTypes(%s) = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}

	// A second insert of one id names the problem.
	err = e.inTx(t, func(tx pgx.Tx) error {
		_, err := store.InsertEventTx(ctx, tx, evs[0])
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate insert: %v, want an already-exists error", err)
	}
	// An invalid event is refused before any SQL.
	err = e.inTx(t, func(tx pgx.Tx) error {
		_, err := store.InsertEventTx(ctx, tx, entities.Event{})
		return err
	})
	if !errors.Is(err, entities.ErrInvalidEvent) {
		t.Errorf("zero event insert: %v, want ErrInvalidEvent", err)
	}
}

func TestEvents_ListEmpty(t *testing.T) {
	t.Parallel()
	e := newEventsDB(t)
	page, err := e.db.ListEvents(testCtx(t), entities.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(page)
	if string(b) != `{"page":1,"page_size":25,"total_count":0,"events":[]}` {
		t.Errorf("empty page JSON %s", b)
	}
	types, err := e.db.EventTypes(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(types); string(b) != `{"categories":[],"actions":[]}` {
		t.Errorf("empty types JSON %s", b)
	}
}

func indexOf(evs []entities.Event, id uuid.UUID) int {
	for i, ev := range evs {
		if ev.ID == id {
			return i
		}
	}
	return -1
}

func TestEvents_SetStatusAndDelete(t *testing.T) {
	t.Parallel()
	e := newEventsDB(t)
	evs := fixtureEvents(t)
	e.insert(t, evs...)
	ctx := testCtx(t)

	setStatus := func(owner *uuid.UUID, status entities.EventStatus, ids ...uuid.UUID) ([]entities.Change, error) {
		var out []entities.Change
		err := e.inTx(t, func(tx pgx.Tx) error {
			var err error
			out, err = store.SetEventStatusTx(ctx, tx, owner, ids, status)
			return err
		})
		return out, err
	}
	del := func(owner *uuid.UUID, ids ...uuid.UUID) ([]entities.Change, error) {
		var out []entities.Change
		err := e.inTx(t, func(tx pgx.Tx) error {
			var err error
			out, err = store.DeleteEventsTx(ctx, tx, owner, ids)
			return err
		})
		return out, err
	}
	statuses := func() map[int]entities.EventStatus {
		page, err := e.db.ListEvents(ctx, entities.EventQuery{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		out := map[int]entities.EventStatus{}
		for _, ev := range page.Events {
			out[indexOf(evs, ev.ID)] = ev.Status
		}
		return out
	}

	// Admin marks 1, 2 (already read) and 3 read, 1 twice: one change
	// each for 1 and 3, in the order given, with the previous row.
	changes, err := setStatus(nil, entities.StatusRead, evs[3].ID, evs[1].ID, evs[2].ID, evs[1].ID)
	if err != nil {
		t.Fatalf("SetEventStatusTx: %v", err)
	}
	if len(changes) != 2 || changes[0].EntityID != evs[3].ID.String() || changes[1].EntityID != evs[1].ID.String() {
		t.Fatalf("changes %+v, want updates of events 3 and 1", changes)
	}
	for _, c := range changes {
		if st, prevSt := text(c.Payload, "status"), text(c.Previous, "status"); c.EntityType != "event" || c.Operation != entities.OpUpdate || st != "read" || prevSt != "unread" {
			t.Errorf("change %+v: want an event update from unread to read", c)
		}
		var updated, was time.Time
		if err := c.Payload.Decode("updated_at", &updated); err != nil {
			t.Fatal(err)
		}
		if err := c.Previous.Decode("updated_at", &was); err != nil {
			t.Fatal(err)
		}
		if !updated.After(was) || !updated.Equal(c.CommitTime) {
			t.Errorf("updated_at %v (was %v, commit %v): want it moved to the transaction time", updated, was, c.CommitTime)
		}
		prev := c.Previous
		for i := range c.Payload.Len() {
			k, v := c.Payload.At(i)
			if p, _ := prev.Get(k); k != "status" && k != "updated_at" && string(p) != string(v) {
				t.Errorf("column %s changed from %s to %s", k, p, v)
			}
		}
	}
	if st := statuses(); st[1] != "read" || st[2] != "read" || st[3] != "read" || st[0] != "unread" {
		t.Errorf("statuses after update: %v", st)
	}

	// Nothing to change: no Changes.
	if changes, err := setStatus(nil, entities.StatusRead, evs[1].ID); err != nil || len(changes) != 0 {
		t.Errorf("setting read again: %v, %v; want no changes", changes, err)
	}

	// Alice may change her own events, not bob's nor system-wide ones,
	// and a refused batch changes nothing.
	a := alice
	if changes, err := setStatus(&a, entities.StatusUnread, evs[1].ID, evs[6].ID); err != nil || len(changes) != 1 {
		t.Errorf("alice on her own events: %v, %v; want one change", changes, err)
	}
	for _, tc := range []struct {
		name string
		ids  []uuid.UUID
		bad  uuid.UUID
	}{
		{"bob's event", []uuid.UUID{evs[2].ID, evs[3].ID}, evs[3].ID},
		{"system-wide event", []uuid.UUID{evs[0].ID, evs[2].ID}, evs[0].ID},
		{"unknown id", []uuid.UUID{evs[2].ID, uuid.Nil, evs[3].ID}, uuid.Nil},
	} {
		_, err := setStatus(&a, entities.StatusUnread, tc.ids...)
		if !errors.Is(err, store.ErrEventNotFound) || !strings.Contains(err.Error(), tc.bad.String()) {
			t.Errorf("%s: %v, want ErrEventNotFound naming %s", tc.name, err, tc.bad)
		}
	}
	if st := statuses(); st[2] != "read" || st[3] != "read" {
		t.Errorf("a refused batch changed statuses: %v", st)
	}
	// The not-found check runs before any write, so even a caller that
	// commits after the error has changed nothing.
	tx, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetEventStatusTx(ctx, tx, &a, []uuid.UUID{evs[2].ID, evs[3].ID}, entities.StatusUnread); !errors.Is(err, store.ErrEventNotFound) {
		t.Fatalf("got %v, want ErrEventNotFound", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after not found: %v", err)
	}
	if st := statuses(); st[2] != "read" {
		t.Errorf("event 2 is %s after a refused batch was committed, want read", st[2])
	}
	if _, err := setStatus(nil, "seen", evs[1].ID); err == nil || !strings.Contains(err.Error(), `unknown event status "seen"`) {
		t.Errorf("unknown status: %v", err)
	}
	if changes, err := setStatus(nil, entities.StatusRead); err != nil || changes != nil {
		t.Errorf("no ids: %v, %v; want nothing", changes, err)
	}

	// Delete: the same rules.
	if _, err := del(&a, evs[6].ID, evs[7].ID); !errors.Is(err, store.ErrEventNotFound) || !strings.Contains(err.Error(), evs[7].ID.String()) {
		t.Errorf("alice deleting a system-wide event: %v, want ErrEventNotFound naming it", err)
	}
	if _, err := del(nil, evs[6].ID, uuid.Nil); !errors.Is(err, store.ErrEventNotFound) {
		t.Errorf("deleting an unknown id: %v, want ErrEventNotFound", err)
	}
	if page, _ := e.db.ListEvents(ctx, entities.EventQuery{}); page.TotalCount != 8 {
		t.Errorf("%d events after refused deletes, want 8", page.TotalCount)
	}
	before, err := e.db.GetEvent(ctx, evs[6].ID)
	if err != nil {
		t.Fatal(err)
	}
	changes, err = del(&a, evs[6].ID)
	if err != nil || len(changes) != 1 {
		t.Fatalf("alice deleting her event: %v, %v", changes, err)
	}
	if c := changes[0]; c.Operation != entities.OpDelete || c.EntityType != "event" || c.EntityID != evs[6].ID.String() || c.Previous != nil || !reflect.DeepEqual(c.Payload, before.Row()) {
		t.Errorf("delete change %+v, want payload %v", c, before.Row())
	}
	changes, err = del(nil, evs[0].ID, evs[7].ID, evs[0].ID)
	if err != nil || len(changes) != 2 || changes[0].EntityID != evs[0].ID.String() || changes[1].EntityID != evs[7].ID.String() {
		t.Fatalf("admin deleting system-wide events: %+v, %v", changes, err)
	}
	if _, err := e.db.GetEvent(ctx, evs[0].ID); !errors.Is(err, store.ErrEventNotFound) {
		t.Errorf("GetEvent of a deleted event: %v, want ErrEventNotFound", err)
	}
	if page, _ := e.db.ListEvents(ctx, entities.EventQuery{}); page.TotalCount != 5 {
		t.Errorf("%d events left, want 5", page.TotalCount)
	}
}

func TestEvents_BeforeMigrate(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	_, err := db.ListEvents(testCtx(t), entities.EventQuery{})
	if err == nil || !strings.Contains(err.Error(), "run changecast migrate first") {
		t.Errorf("ListEvents before migrate: %v, want a hint to migrate", err)
	}
}

// text is Row.Text without its ok.
func text(r *entities.Row, col string) string {
	s, _ := r.Text(col)
	return s
}
