package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/wsapi"
	"github.com/changecast/changecast/wsapi/client"
	"github.com/changecast/changecast/wsapi/client/clienttest"
)

// These tests run the client against a real wsapi server (clienttest:
// httptest, real WebSocket, in-memory journal) that they restart, cut off
// and misuse. Nothing sleeps for synchronisation: waits poll with a
// deadline.

const waitTimeout = 15 * time.Second

// fast is the backoff tests use, so a restart costs milliseconds.
func fast(o client.Options) client.Options {
	o.MinBackoff, o.MaxBackoff = 5*time.Millisecond, 50*time.Millisecond
	return o
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

var commitTime = time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)

// instance returns an instance change whose payload is a full, sanitized
// instances row.
func instance(op entities.Operation, n int, status string) entities.Change {
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	return entities.Change{
		EntityType: "instance",
		Operation:  op,
		EntityID:   id,
		Payload: entities.RowOf(map[string]any{
			"id": id, "name": fmt.Sprintf("runner-%d", n), "agent_id": int64(n), "provider_id": "lxd-" + id[len(id)-4:],
			"os_type": "linux", "os_arch": "amd64", "addresses": json.RawMessage(`[{"type":"public","address":"10.0.0.1"}]`),
			"status": status, "runner_status": "idle", "pool_id": nil, "callback_url": "https://garm.example.com/cb",
			"create_attempt": int64(1), "token_fetched": true, "github_runner_group": "", "heartbeat": nil,
			"created_at": commitTime, "updated_at": commitTime,
		}),
		CommitTime: commitTime,
	}
}

func pool(op entities.Operation, n int) entities.Change {
	id := fmt.Sprintf("00000000-0000-4000-9000-%012d", n)
	return entities.Change{EntityType: "pool", Operation: op, EntityID: id, Payload: entities.RowOf(map[string]any{"id": id, "max_runners": int64(n)}), CommitTime: commitTime}
}

// recorder is a Handler that records what it was given.
type recorder struct {
	mu      sync.Mutex
	changes []entities.Change
	fail    func(entities.Change) error // optional
}

func (r *recorder) handle(ch entities.Change) error {
	if r.fail != nil {
		if err := r.fail(ch); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, ch)
	return nil
}

func (r *recorder) cursors() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, c := range r.changes {
		out = append(out, c.Cursor)
	}
	return out
}

func (r *recorder) waitCount(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d changes", n), func() bool { return len(r.cursors()) >= n })
}

// events records OnEvent calls.
type events struct {
	mu  sync.Mutex
	evs []client.Event
}

func (e *events) add(ev client.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) count(typ client.EventType, reconnect bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Type == typ && ev.Reconnect == reconnect {
			n++
		}
	}
	return n
}

// selected returns the cursors of the changes keep selects.
func selected(changes []entities.Change, keep func(entities.Change) bool) []int64 {
	var out []int64
	for _, c := range changes {
		if keep(c) {
			out = append(out, c.Cursor)
		}
	}
	return out
}

func dial(t testing.TB, srv *clienttest.Server, token string, opts client.Options) *client.Subscription {
	t.Helper()
	sub, err := client.Dial(context.Background(), srv.URL(), token, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func TestSubscription_ResumesAcrossRestartsAndDrops(t *testing.T) {
	var logs syncBuffer
	srv := clienttest.New(t)
	token := srv.Token("automation", wsapi.RoleAdmin)
	rec := &recorder{}
	// Decode every change in the handler, as automation would.
	rec.fail = func(ch entities.Change) error {
		inst, err := client.Decode[entities.Instance](ch)
		if err != nil {
			return err
		}
		if inst.ID.String() != ch.EntityID || inst.Name == "" {
			return fmt.Errorf("decoded %+v for %s", inst, ch.EntityID)
		}
		return nil
	}
	var evs events
	sub := dial(t, srv, token, fast(client.Options{
		Filters: []client.Filter{{EntityType: "instance", Operations: []entities.Operation{entities.OpCreate, entities.OpDelete}}},
		Handler: rec.handle,
		OnEvent: evs.add,
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}))
	wanted := func(c entities.Change) bool {
		return c.EntityType == "instance" && c.Operation != entities.OpUpdate
	}
	var all []entities.Change
	n := 0
	publishBatch := func() {
		var batch []entities.Change
		for range 3 {
			n++
			batch = append(batch, instance(entities.OpCreate, n, "pending"), pool(entities.OpUpdate, n), instance(entities.OpUpdate, n, "running"))
			if n%2 == 0 {
				batch = append(batch, instance(entities.OpDelete, n, "running"))
			}
		}
		all = append(all, srv.Publish(batch...)...)
	}

	publishBatch()
	rec.waitCount(t, len(selected(all, wanted)))

	// A graceful restart: shutdown frame, close, the port refuses for a
	// while, changes are journaled meanwhile.
	srv.Stop()
	publishBatch()
	srv.Start()
	publishBatch()
	rec.waitCount(t, len(selected(all, wanted)))

	// A network failure: no frame at all. Changes published right after
	// may be queued for the dead connection; they come back from the
	// journal on resume.
	srv.DropConnections()
	publishBatch()
	rec.waitCount(t, len(selected(all, wanted)))
	publishBatch()
	rec.waitCount(t, len(selected(all, wanted)))

	if got, want := rec.cursors(), selected(all, wanted); !slices.Equal(got, want) {
		t.Fatalf("delivered cursors\n got %v\nwant %v", got, want)
	}
	if n := evs.count(client.EventConnected, true); n < 2 {
		t.Errorf("got %d reconnected events, want at least 2 (restart and drop)", n)
	}
	if n := evs.count(client.EventDisconnected, false); n < 2 {
		t.Errorf("got %d disconnected events, want at least 2", n)
	}
	last, ok := sub.Cursor()
	if want := all[len(all)-1].Cursor; !ok || last < selected(all, wanted)[len(selected(all, wanted))-1] || last > want {
		t.Errorf("Cursor() = %d, %v; want between the last delivered cursor and %d", last, ok, want)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-sub.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if strings.Contains(logs.String(), token) {
		t.Fatalf("client logs contain the token:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "reconnecting") {
		t.Errorf("client logs do not mention reconnecting:\n%s", logs.String())
	}
}

func TestSubscription_ChannelDelivery(t *testing.T) {
	srv := clienttest.New(t)
	sub := dial(t, srv, srv.Token("ch", wsapi.RoleViewer), client.Options{SendEverything: true})
	want := srv.Publish(pool(entities.OpCreate, 1), instance(entities.OpCreate, 2, "pending"), pool(entities.OpDelete, 1))
	for i, w := range want {
		select {
		case got := <-sub.Changes():
			if got.Cursor != w.Cursor || got.EntityType != w.EntityType || got.Operation != w.Operation || got.EntityID != w.EntityID {
				t.Fatalf("change %d: got %s %s %s @%d, want %s %s %s @%d", i, got.EntityType, got.Operation, got.EntityID, got.Cursor, w.EntityType, w.Operation, w.EntityID, w.Cursor)
			}
			if !got.CommitTime.Equal(commitTime) {
				t.Fatalf("CommitTime %v, want %v", got.CommitTime, commitTime)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("change %d not delivered", i)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, open := <-sub.Changes(); open {
		t.Fatal("Changes() still open after Close")
	}
}

func TestSubscription_CursorFileResumesAfterRestart(t *testing.T) {
	srv := clienttest.New(t)
	token := srv.Token("automation", wsapi.RoleAdmin)
	dir := t.TempDir()
	path := filepath.Join(dir, "cursor")
	opts := func(rec *recorder) client.Options {
		return fast(client.Options{
			Filters:     []client.Filter{{EntityType: "instance"}},
			Since:       "0", // overridden by the cursor file once it exists
			CursorStore: client.FileCursorStore(path),
			Handler:     rec.handle,
		})
	}

	// The first program processes three changes, then its handler fails
	// on the fourth (a crash before it finished): the cursor stays at
	// the third.
	first := &recorder{}
	var seen int
	first.fail = func(entities.Change) error {
		if seen++; seen == 4 {
			return errors.New("disk full (test)")
		}
		return nil
	}
	sub := dial(t, srv, token, opts(first))
	all := srv.Publish(instance(entities.OpCreate, 1, "a"), pool(entities.OpCreate, 1), instance(entities.OpCreate, 2, "a"), instance(entities.OpCreate, 3, "a"), instance(entities.OpCreate, 4, "a"), instance(entities.OpCreate, 5, "a"))
	select {
	case <-sub.Done():
	case <-time.After(waitTimeout):
		t.Fatal("subscription did not end on the handler's error")
	}
	err := sub.Err()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Op != "handle" || !strings.Contains(err.Error(), "disk full (test)") || client.Retryable(err) {
		t.Fatalf("Err() = %v, want a non-retryable handle error wrapping the handler's", err)
	}
	instances := selected(all, func(c entities.Change) bool { return c.EntityType == "instance" })
	if got := readCursorFile(t, path); got != instances[2] {
		t.Fatalf("cursor file holds %d, want %d (the last change handled)", got, instances[2])
	}

	// Changes keep coming while no program runs; a new one resumes from
	// the file: the failed change first, nothing before it, nothing twice.
	all = append(all, srv.Publish(instance(entities.OpDelete, 1, "a"), instance(entities.OpCreate, 6, "a"))...)
	instances = selected(all, func(c entities.Change) bool { return c.EntityType == "instance" })
	second := &recorder{}
	sub = dial(t, srv, token, opts(second))
	second.waitCount(t, len(instances)-3)
	if got, want := second.cursors(), instances[3:]; !slices.Equal(got, want) {
		t.Fatalf("resumed delivery: got %v, want %v", got, want)
	}
	waitFor(t, "cursor file to reach the last change", func() bool { return readCursorFile(t, path) == instances[len(instances)-1] })
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("cursor dir holds %d files, want only the cursor (no temp files left)", len(entries))
	}
}

// TestSubscription_SnapshotIgnoredWhenACursorIsSaved: with Snapshot and a
// CursorStore that holds a cursor, the program resumes after the cursor
// (no snapshot is asked for) and the cursor moves on as changes are
// handled, as without Snapshot.
func TestSubscription_SnapshotIgnoredWhenACursorIsSaved(t *testing.T) {
	srv := clienttest.New(t)
	token := srv.Token("automation", wsapi.RoleAdmin)
	path := filepath.Join(t.TempDir(), "cursor")
	all := srv.Publish(instance(entities.OpCreate, 1, "a"), instance(entities.OpCreate, 2, "a"))
	if err := client.FileCursorStore(path).Save(all[0].Cursor); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	dial(t, srv, token, fast(client.Options{
		Filters:     []client.Filter{{EntityType: "instance"}},
		Snapshot:    true,
		CursorStore: client.FileCursorStore(path),
		Handler:     rec.handle,
	}))
	rec.waitCount(t, 1)
	if got := rec.cursors(); !slices.Equal(got, []int64{all[1].Cursor}) {
		t.Fatalf("resumed delivery: got %v, want [%d] (after the saved cursor, no snapshot rows)", got, all[1].Cursor)
	}
	waitFor(t, "the cursor file to reach the change handled", func() bool { return readCursorFile(t, path) == all[1].Cursor })
}

func TestSubscription_SyncMovesCursorPastSkippedChanges(t *testing.T) {
	srv := clienttest.New(t)
	var saved []int64
	var mu sync.Mutex
	store := client.CursorFuncs(nil, func(c int64) error {
		mu.Lock()
		defer mu.Unlock()
		saved = append(saved, c)
		return nil
	})
	rec := &recorder{}
	dial(t, srv, srv.Token("narrow", wsapi.RoleAdmin), client.Options{
		Filters:      []client.Filter{{EntityType: "instance", Operations: []entities.Operation{entities.OpDelete}}},
		Handler:      rec.handle,
		CursorStore:  store,
		SyncInterval: 10 * time.Millisecond,
	})
	// Only pool changes: nothing is delivered, yet the position moves,
	// so a resume does not replay them (nor hit retention).
	all := srv.Publish(pool(entities.OpCreate, 1), pool(entities.OpUpdate, 1), pool(entities.OpDelete, 1))
	head := all[len(all)-1].Cursor
	waitFor(t, "the saved cursor to reach the head", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(saved) > 0 && saved[len(saved)-1] == head
	})
	if got := rec.cursors(); len(got) != 0 {
		t.Fatalf("delivered %v, want nothing", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.IsSorted(saved) {
		t.Fatalf("saved cursors %v went backwards", saved)
	}
}

func TestSubscription_SinceResumesAfterCursor(t *testing.T) {
	srv := clienttest.New(t)
	all := srv.Publish(pool(entities.OpCreate, 1), pool(entities.OpCreate, 2), pool(entities.OpCreate, 3))
	rec := &recorder{}
	dial(t, srv, srv.Token("since", wsapi.RoleAdmin), client.Options{
		SendEverything: true,
		Since:          fmt.Sprint(all[0].Cursor),
		Handler:        rec.handle,
	})
	all = append(all, srv.Publish(pool(entities.OpCreate, 4))...)
	rec.waitCount(t, 3)
	if got, want := rec.cursors(), []int64{all[1].Cursor, all[2].Cursor, all[3].Cursor}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDial_TerminalErrors(t *testing.T) {
	srv := clienttest.New(t)
	old := srv.Publish(pool(entities.OpCreate, 1), pool(entities.OpCreate, 2))
	srv.Journal().Trim(old[0].Cursor)
	admin := srv.Token("admin", wsapi.RoleAdmin)
	badToken := "eyJhbGciOiJIUzI1NiJ9.CANARY-token-body.c2ln"
	instanceFilter := []client.Filter{{EntityType: "instance"}}

	for _, tc := range []struct {
		name     string
		token    string
		opts     client.Options
		kind     error  // the sentinel
		status   int    // HTTP status, 0 when none
		contains string // in the error text
		late     bool   // reported by Err after Dial succeeded
	}{
		{"bad token", badToken, client.Options{Filters: instanceFilter}, client.ErrUnauthorized, 401, "invalid token", false},
		{"expired token", srv.TokenTTL("late", wsapi.RoleAdmin, time.Nanosecond), client.Options{Filters: instanceFilter}, client.ErrTokenExpired, 401, "token expired", false},
		{"viewer asks for user", srv.Token("v", wsapi.RoleViewer), client.Options{Filters: []client.Filter{{EntityType: "user"}}}, client.ErrForbidden, 0, `entity type "user" is not allowed for this token`, false},
		{"scope excludes pool", srv.Token("v", wsapi.RoleViewer, "instance"), client.Options{Filters: []client.Filter{{EntityType: "pool"}}}, client.ErrForbidden, 0, "allowed: instance", false},
		{"unknown match field", admin, client.Options{Filters: []client.Filter{{EntityType: "instance", Match: map[string]any{"colour": "blue"}}}}, client.ErrBadFilter, 0, `unknown field "colour"`, false},
		{"unknown entity type", admin, client.Options{Filters: []client.Filter{{EntityType: "instances"}}}, client.ErrBadFilter, 0, `unknown entity type "instances"`, false},
		{"cursor beyond head", admin, client.Options{Filters: instanceFilter, Since: "999"}, client.ErrResyncRequired, 0, "re-read the state", false},
		{"cursor past retention", admin, client.Options{Filters: instanceFilter, Since: "0"}, client.ErrResyncRequired, 0, "no longer in the journal", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			sub, err := client.Dial(context.Background(), srv.URL(), tc.token, tc.opts)
			if err == nil && tc.late {
				// The server checks retention once the filter is
				// in force, after accepting it.
				select {
				case <-sub.Done():
				case <-time.After(waitTimeout):
					t.Fatal("subscription did not end")
				}
				err = sub.Err()
			} else if err == nil {
				sub.Close()
				t.Fatal("Dial succeeded, want an error")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
			if client.Retryable(err) {
				t.Fatalf("Retryable(%v) = true, want false", err)
			}
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != tc.status {
				t.Fatalf("got %#v, want an *Error with status %d", err, tc.status)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %q does not contain %q", err, tc.contains)
			}
			if strings.Contains(err.Error()+logs.String(), tc.token) || strings.Contains(err.Error()+logs.String(), "CANARY") {
				t.Fatalf("the token leaked: %v\n%s", err, logs.String())
			}
		})
	}
	t.Run("expired token at dial is also unauthorized", func(t *testing.T) {
		_, err := client.Dial(context.Background(), srv.URL(), srv.TokenTTL("late", wsapi.RoleAdmin, time.Nanosecond), client.Options{SendEverything: true})
		if !errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("got %v, want it to match ErrUnauthorized too", err)
		}
	})
}

func TestDial_RetryableErrors(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	_, err = client.Dial(context.Background(), closed, "tok", client.Options{SendEverything: true})
	if err == nil || !client.Retryable(err) {
		t.Fatalf("unreachable server: got %v, want a retryable error", err)
	}

	for _, status := range []int{502, 503} {
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error": "upstream down"}`, status)
		}))
		_, err := client.Dial(context.Background(), proxy.URL, "tok", client.Options{SendEverything: true})
		proxy.Close()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != status || !client.Retryable(err) || !strings.Contains(err.Error(), "upstream down") {
			t.Fatalf("HTTP %d: got %v, want a retryable error with the status and message", status, err)
		}
	}

	for _, tc := range []struct {
		name string
		url  string
		opts client.Options
		want string
	}{
		{"no filter", "http://127.0.0.1:1", client.Options{}, "no filter"},
		{"both", "http://127.0.0.1:1", client.Options{SendEverything: true, Filters: []client.Filter{{EntityType: "pool"}}}, "not both"},
		{"bad operation", "http://127.0.0.1:1", client.Options{Filters: []client.Filter{{EntityType: "pool", Operations: []entities.Operation{"upsert"}}}}, `unknown operation "upsert"`},
		{"bad since", "http://127.0.0.1:1", client.Options{SendEverything: true, Since: "yesterday"}, "since"},
		{"bad scheme", "ftp://127.0.0.1:1", client.Options{SendEverything: true}, "want http(s)"},
		{"credentials in URL", "http://u:p@127.0.0.1:1", client.Options{SendEverything: true}, "must not carry credentials"},
	} {
		_, err := client.Dial(context.Background(), tc.url, "tok", tc.opts)
		if err == nil || client.Retryable(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a non-retryable error containing %q", tc.name, err, tc.want)
		}
	}
	if client.Retryable(nil) || client.Retryable(context.Canceled) {
		t.Error("Retryable(nil or context.Canceled) = true")
	}
}

func TestSubscription_TokenExpiresMidStream(t *testing.T) {
	srv := clienttest.New(t)
	// JWT expiry has one-second resolution: this token lives 1-2 s.
	sub := dial(t, srv, srv.TokenTTL("short", wsapi.RoleAdmin, 2*time.Second), fast(client.Options{SendEverything: true, Handler: func(entities.Change) error { return nil }}))
	select {
	case <-sub.Done():
	case <-time.After(waitTimeout):
		t.Fatal("subscription did not end when its token expired")
	}
	err := sub.Err()
	if !errors.Is(err, client.ErrTokenExpired) || client.Retryable(err) || !strings.Contains(err.Error(), "mint a new token") {
		t.Fatalf("Err() = %v, want non-retryable ErrTokenExpired saying what to do", err)
	}
}

func TestSubscription_ResyncRequiredMidStream(t *testing.T) {
	// A server without a journal cannot catch a lagging client up: it
	// sends resync-required, which no reconnection can fix.
	srv := clienttest.New(t, clienttest.WithConfig(func(c *wsapi.Config) { c.Journal = nil; c.QueueLen = 1 }))
	// The handler holds the first change until everything is published,
	// so the client stops reading, the socket fills and the server's
	// queue of one overflows, whatever the scheduling.
	release := make(chan struct{})
	sub := dial(t, srv, srv.Token("slow", wsapi.RoleAdmin), fast(client.Options{SendEverything: true, Handler: func(entities.Change) error {
		<-release
		return nil
	}}))
	var batch []entities.Change
	big := strings.Repeat("x", 1024)
	for i := range 10_000 {
		ch := pool(entities.OpCreate, i)
		ch.Payload = entitiestest.WithColumn(ch.Payload, "image", big)
		batch = append(batch, ch)
	}
	srv.Publish(batch...)
	close(release)
	select {
	case <-sub.Done():
	case <-time.After(waitTimeout):
		t.Fatal("subscription did not end on resync-required")
	}
	if err := sub.Err(); !errors.Is(err, client.ErrResyncRequired) || client.Retryable(err) {
		t.Fatalf("Err() = %v, want non-retryable ErrResyncRequired", err)
	}
}

func readCursorFile(t testing.TB, path string) int64 {
	t.Helper()
	n, ok, err := client.FileCursorStore(path).Load()
	if err != nil || !ok {
		t.Fatalf("load cursor file: %d %v %v", n, ok, err)
	}
	return n
}

// syncBuffer is safe to read while other goroutines write to it.
type syncBuffer = testutil.SyncBuffer
