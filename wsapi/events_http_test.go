package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
	"github.com/changecast/changecast/wire"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// dbEvents is the EventStore cmd/changecast wires, minus the journal: the
// store's reads, and its writes in a transaction of their own.
type dbEvents struct {
	db   *store.DB
	pool *pgxpool.Pool
}

func (d *dbEvents) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	return d.db.ListEvents(ctx, q)
}

func (d *dbEvents) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	return d.db.EventTypes(ctx, owner)
}

func (d *dbEvents) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	return markStoreNotFound(pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		_, err := store.SetEventStatusTx(ctx, tx, owner, ids, status)
		return err
	}))
}

func (d *dbEvents) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	return markStoreNotFound(pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		_, err := store.DeleteEventsTx(ctx, tx, owner, ids)
		return err
	}))
}

func markStoreNotFound(err error) error {
	if errors.Is(err, store.ErrEventNotFound) {
		return MarkEventNotFound(err)
	}
	return err
}

// eventsEnv is a server with the events API over a fresh database holding
// the fixture events.
type eventsEnv struct {
	*testEnv
	store *dbEvents
	evs   []entities.Event
}

var (
	evAlice  = uuid.MustParse("a11ce000-0000-4000-8000-000000000001")
	evBob    = uuid.MustParse("b0b00000-0000-4000-8000-000000000002")
	evTarget = uuid.MustParse("7a76e700-0000-4000-8000-000000000003")
)

// Fixture indexes: 0 and 4 concern everyone, 1 and 2 alice, 3 bob.
func newEventsEnv(t testing.TB) *eventsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	url := storetest.NewDatabase(t)
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)

	specs := []struct {
		user      uuid.UUID
		category  string
		action    string
		sev       entities.Severity
		desc      string
		actedUpon uuid.UUID
	}{
		{uuid.Nil, "connection", "unreachable", entities.Error, "PostgreSQL unreachable", uuid.Nil},
		{evAlice, "replication", "lag_exceeded", entities.Warning, "replication lag over threshold", uuid.Nil},
		{evAlice, "server", "started", entities.Informational, "changecast started", evTarget},
		{evBob, "replication", "slot_invalidated", entities.Critical, "slot invalidated", uuid.Nil},
		{uuid.Nil, "journal", "retention_removed", entities.Warning, "retention removed rows", evTarget},
	}
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	evs := make([]entities.Event, len(specs))
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for i, s := range specs {
			meta := map[string]any{"i": i}
			if s.sev.AtLeast(entities.Error) {
				meta["err"] = errors.New("boom")
			}
			ev, err := entities.NewEvent().FromUser(s.user).ActedUpon(s.actedUpon).
				WithCategory(s.category).WithAction(s.action).WithSeverity(s.sev).
				WithDescription(s.desc).WithMetadata(meta).Build()
			if err != nil {
				return err
			}
			ev.CreatedAt = base.Add(time.Duration(i) * time.Minute)
			ev.UpdatedAt = ev.CreatedAt
			if _, err := store.InsertEventTx(ctx, tx, ev); err != nil {
				return err
			}
			evs[i] = ev
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert fixture events: %v", err)
	}
	d := &dbEvents{db: db, pool: pool}
	return &eventsEnv{testEnv: newTestEnv(t, func(c *Config) { c.Events = d }), store: d, evs: evs}
}

// apiResponse is one answered request.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// errorMsg returns the "error" of a JSON error body, failing the test if
// the body is not one.
func (r apiResponse) errorMsg(t testing.TB) string {
	t.Helper()
	var e map[string]string
	if err := json.Unmarshal(r.body, &e); err != nil || len(e) != 1 || e["error"] == "" {
		t.Fatalf("body %s (status %d): want {\"error\": \"...\"}", r.body, r.status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
	return e["error"]
}

// do sends a request with token as bearer (none if empty) and body (none
// if empty).
func (e *eventsEnv) do(t testing.TB, method, path, token, body string) apiResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if strings.Contains(string(b), token) && token != "" {
		t.Errorf("%s %s: the apiResponse body contains the token", method, path)
	}
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// list GETs the events list and returns the fixture indexes in order, and
// the total.
func (e *eventsEnv) list(t testing.TB, token, query string) ([]int, int64) {
	t.Helper()
	r := e.do(t, http.MethodGet, "/api/v1/events"+query, token, "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/v1/events%s: status %d, body %s", query, r.status, r.body)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &keys); err != nil {
		t.Fatalf("list body %s: %v", r.body, err)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}); !reflect.DeepEqual(got, []string{"events", "page", "page_size", "total_count"}) {
		t.Errorf("list keys %v, want events, page, page_size, total_count", got)
	}
	var page struct {
		TotalCount int64            `json:"total_count"`
		Events     []map[string]any `json:"events"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatal(err)
	}
	var idx []int
	for _, ev := range page.Events {
		i := slices.IndexFunc(e.evs, func(f entities.Event) bool { return f.ID.String() == ev["id"] })
		if i < 0 {
			t.Fatalf("listed event %v is not a fixture", ev)
		}
		idx = append(idx, i)
	}
	return idx, page.TotalCount
}

func (e *eventsEnv) status(t testing.TB, i int) entities.EventStatus {
	t.Helper()
	ev, err := e.store.db.GetEvent(context.Background(), e.evs[i].ID)
	if err != nil {
		t.Fatalf("GetEvent %d: %v", i, err)
	}
	return ev.Status
}

func (e *eventsEnv) exists(t testing.TB, i int) bool {
	t.Helper()
	_, err := e.store.db.GetEvent(context.Background(), e.evs[i].ID)
	if err != nil && !errors.Is(err, store.ErrEventNotFound) {
		t.Fatalf("GetEvent %d: %v", i, err)
	}
	return err == nil
}

func TestEventsHTTP_Auth(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t)
	id := e.evs[1].ID.String()
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/events", ""},
		{http.MethodGet, "/api/v1/events/types", ""},
		{http.MethodPut, "/api/v1/events/" + id + "/status", `{"status": "read"}`},
		{http.MethodPut, "/api/v1/events/status", `{"status": "read", "ids": ["` + id + `"]}`},
		{http.MethodDelete, "/api/v1/events/" + id, ""},
		{http.MethodDelete, "/api/v1/events", `{"ids": ["` + id + `"]}`},
	}
	other, err := NewAuth([]byte(strings.Repeat("another secret, not the server's ", 2)))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Mint(Claims{Role: RoleAdmin, RegisteredClaims: regClaims("mallory")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	narrow := e.token(t, evAlice.String(), RoleViewer, "pool", "job")
	narrowAdmin := e.token(t, "admin-1", RoleAdmin, "pool")
	for _, rt := range routes {
		name := rt.method + " " + rt.path
		if r := e.do(t, rt.method, rt.path, "", rt.body); r.status != http.StatusUnauthorized || !strings.Contains(r.errorMsg(t), "missing token") {
			t.Errorf("%s without a token: %d %s, want 401 missing token", name, r.status, r.body)
		}
		if r := e.do(t, rt.method, rt.path, forged, rt.body); r.status != http.StatusUnauthorized || !strings.Contains(r.errorMsg(t), "invalid token") {
			t.Errorf("%s with a forged token: %d %s, want 401 invalid token", name, r.status, r.body)
		}
		for _, tok := range []string{narrow, narrowAdmin} {
			r := e.do(t, rt.method, rt.path, tok, rt.body)
			if r.status != http.StatusForbidden {
				t.Errorf("%s with a scope without event: %d %s, want 403", name, r.status, r.body)
				continue
			}
			if msg := r.errorMsg(t); !strings.Contains(msg, "pool") || !strings.Contains(msg, `"event"`) {
				t.Errorf("403 message %q: want it to name what the token allows and what is missing", msg)
			}
		}
	}
	if !e.exists(t, 1) || e.status(t, 1) != entities.StatusUnread {
		t.Fatal("a refused request changed event 1")
	}

	// A scope naming event is enough.
	if got, _ := e.list(t, e.token(t, evAlice.String(), RoleViewer, "pool", "event"), ""); !reflect.DeepEqual(got, []int{4, 2, 1, 0}) {
		t.Errorf("viewer with scope pool,event lists %v, want [4 2 1 0]", got)
	}

	// Browsers authenticate with the login cookie.
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/api/v1/events/types", nil)
	req.AddCookie(&http.Cookie{Name: wire.CookieName, Value: e.token(t, "admin-1", RoleAdmin)})
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("types with the login cookie: status %d, want 200", resp.StatusCode)
	}
}

func TestEventsHTTP_List(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t)
	admin := e.token(t, "admin-1", RoleAdmin)
	alice := e.token(t, evAlice.String(), RoleViewer)
	bob := e.token(t, evBob.String(), RoleViewer)
	robot := e.token(t, "ci-robot", RoleViewer)

	good := []struct {
		name, token, query string
		want               []int
		total              int64
	}{
		{"admin sees all", admin, "", []int{4, 3, 2, 1, 0}, 5},
		{"alice sees hers and everyone's", alice, "", []int{4, 2, 1, 0}, 4},
		{"bob sees his and everyone's", bob, "", []int{4, 3, 0}, 3},
		{"a non-UUID viewer sees everyone's only", robot, "", []int{4, 0}, 2},
		{"page and pagesize", admin, "?page=2&pagesize=2", []int{2, 1}, 5},
		{"last page", admin, "?page=3&pagesize=2", []int{0}, 5},
		{"past the end", admin, "?page=9&pagesize=2", nil, 5},
		{"order asc", admin, "?order=asc", []int{0, 1, 2, 3, 4}, 5},
		{"sort severity", admin, "?sort=severity", []int{3, 0, 4, 1, 2}, 5},
		{"sort category asc", admin, "?sort=category&order=asc", []int{0, 4, 1, 3, 2}, 5},
		{"search", admin, "?search=REPLICATION", []int{3, 1}, 2},
		{"search with wildcards is literal", admin, "?search=%25", nil, 0},
		{"search injection", admin, "?search=" + evQueryEscape(`'; DELETE FROM changecast.events; --`), nil, 0},
		{"category comma list", admin, "?category=journal,connection", []int{4, 0}, 2},
		{"category repeated", admin, "?category=journal&category=connection", []int{4, 0}, 2},
		{"action", admin, "?action=started", []int{2}, 1},
		{"severity", admin, "?severity=warning", []int{4, 1}, 2},
		{"severity list", alice, "?severity=error,%20critical", []int{0}, 1},
		{"status", admin, "?status=unread", []int{4, 3, 2, 1, 0}, 5},
		{"acted_upon", admin, "?acted_upon=" + evTarget.String(), []int{4, 2}, 2},
		{"acted_upon for bob", bob, "?acted_upon=" + evTarget.String(), []int{4}, 1},
		{"empty values are no filter", admin, "?category=&search=", []int{4, 3, 2, 1, 0}, 5},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			got, total := e.list(t, tt.token, tt.query)
			if !reflect.DeepEqual(got, tt.want) || total != tt.total {
				t.Errorf("got %v of %d, want %v of %d", got, total, tt.want, tt.total)
			}
		})
	}

	// The whole event object, as docs/events.md names its fields.
	r := e.do(t, http.MethodGet, "/api/v1/events?action=unreachable", admin, "")
	var page struct {
		Page     int64                        `json:"page"`
		PageSize int64                        `json:"page_size"`
		Events   []map[string]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Events) != 1 {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if page.Page != 1 || page.PageSize != 25 {
		t.Errorf("page %d, page_size %d; want the defaults 1 and 25", page.Page, page.PageSize)
	}
	want, _ := json.Marshal(e.evs[0])
	var wantObj map[string]json.RawMessage
	if err := json.Unmarshal(want, &wantObj); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(page.Events[0], wantObj) {
		t.Errorf("listed event %s, want %s", r.body, want)
	}

	bad := []struct {
		name, query, want string
	}{
		{"unknown parameter", "?limit=5", `unknown query parameter "limit"; known: page, pagesize, search, order, sort, category, action, severity, status, acted_upon`},
		{"token in the query", "?token=abc", `unknown query parameter "token"`},
		{"page zero", "?page=0", `page must be an integer of at least 1, got "0"`},
		{"page not a number", "?page=two", `page must be an integer of at least 1, got "two"`},
		{"page twice", "?page=1&page=2", "page must be given at most once"},
		{"page too large", "?page=99999999999", "page must be from 1 to 2147483647, got 99999999999"},
		{"pagesize over 100", "?pagesize=101", `pagesize must be an integer from 1 to 100, got "101"`},
		{"pagesize zero", "?pagesize=0", "pagesize must be an integer from 1 to 100"},
		{"unknown order", "?order=up", `unknown order "up"; known: asc, desc`},
		{"unknown sort", "?sort=id", `unknown sort "id"; known: created_at, updated_at, severity, category, action`},
		{"sort injection", "?sort=" + evQueryEscape("created_at; DROP TABLE changecast.events"), `unknown sort "created_at; DROP TABLE changecast.events"`},
		{"unknown severity", "?severity=warning,fatal", `unknown severity "fatal"; known: emergency, alert, critical, error, warning, informational, success, debug`},
		{"unknown status", "?status=seen", `unknown event status "seen"; known: read, unread`},
		{"category not snake_case", "?category=Replication", `category "Replication" is not snake_case`},
		{"bad acted_upon", "?acted_upon=42", `acted_upon must be a UUID, got "42"`},
		{"search too long", "?search=" + strings.Repeat("x", 300), "search is 300 bytes long; at most 256"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, "/api/v1/events"+tt.query, admin, "")
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, body %s; want 400", r.status, r.body)
			}
			if msg := r.errorMsg(t); !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want it to contain %q", msg, tt.want)
			}
		})
	}
	if _, total := e.list(t, admin, ""); total != 5 {
		t.Errorf("%d events after the injection attempts, want 5", total)
	}
}

func evQueryEscape(s string) string {
	return strings.NewReplacer("%", "%25", " ", "%20", "'", "%27", ";", "%3B", "&", "%26", "#", "%23", "+", "%2B").Replace(s)
}

func TestEventsHTTP_Types(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t)
	for _, tt := range []struct {
		name, token string
		want        entities.EventTypes
	}{
		{"admin", e.token(t, "admin-1", RoleAdmin), entities.EventTypes{
			Categories: []string{"connection", "journal", "replication", "server"},
			Actions:    []string{"lag_exceeded", "retention_removed", "slot_invalidated", "started", "unreachable"},
		}},
		{"bob", e.token(t, evBob.String(), RoleViewer), entities.EventTypes{
			Categories: []string{"connection", "journal", "replication"},
			Actions:    []string{"retention_removed", "slot_invalidated", "unreachable"},
		}},
		{"non-UUID viewer", e.token(t, "ci-robot", RoleViewer, "event"), entities.EventTypes{
			Categories: []string{"connection", "journal"},
			Actions:    []string{"retention_removed", "unreachable"},
		}},
	} {
		r := e.do(t, http.MethodGet, "/api/v1/events/types", tt.token, "")
		var got entities.EventTypes
		if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %d %s, want 200 %+v", tt.name, r.status, r.body, tt.want)
		}
	}
	r := e.do(t, http.MethodGet, "/api/v1/events/types?category=x", e.token(t, "admin-1", RoleAdmin), "")
	if r.status != http.StatusBadRequest || !strings.Contains(r.errorMsg(t), `unknown query parameter "category"; /api/v1/events/types takes none`) {
		t.Errorf("types with a query: %d %s, want 400", r.status, r.body)
	}
}

func TestEventsHTTP_Status(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t)
	admin := e.token(t, "admin-1", RoleAdmin)
	alice := e.token(t, evAlice.String(), RoleViewer)
	robot := e.token(t, "ci-robot", RoleViewer)
	path := func(i int) string { return "/api/v1/events/" + e.evs[i].ID.String() + "/status" }
	ids := func(is ...int) string {
		var q []string
		for _, i := range is {
			q = append(q, `"`+e.evs[i].ID.String()+`"`)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	expect := func(name string, r apiResponse, status int, msg string) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s: status %d, body %s; want %d", name, r.status, r.body, status)
			return
		}
		if status == http.StatusNoContent {
			if len(r.body) != 0 {
				t.Errorf("%s: 204 with body %s", name, r.body)
			}
			return
		}
		if got := r.errorMsg(t); !strings.Contains(got, msg) {
			t.Errorf("%s: error %q, want it to contain %q", name, got, msg)
		}
	}

	// One event.
	expect("alice marks her own read", e.do(t, http.MethodPut, path(1), alice, `{"status": "read"}`), http.StatusNoContent, "")
	if e.status(t, 1) != entities.StatusRead {
		t.Error("event 1 is not read")
	}
	expect("again: nothing to change", e.do(t, http.MethodPut, path(1), alice, `{"status": "read"}`), http.StatusNoContent, "")
	expect("alice on bob's", e.do(t, http.MethodPut, path(3), alice, `{"status": "read"}`), http.StatusNotFound, "event not found: "+e.evs[3].ID.String())
	expect("alice on everyone's", e.do(t, http.MethodPut, path(0), alice, `{"status": "read"}`), http.StatusNotFound, "event not found")
	expect("non-UUID viewer", e.do(t, http.MethodPut, path(0), robot, `{"status": "read"}`), http.StatusNotFound, "event not found")
	expect("unknown id", e.do(t, http.MethodPut, "/api/v1/events/"+uuid.NewString()+"/status", admin, `{"status": "read"}`), http.StatusNotFound, "event not found")
	expect("admin on everyone's", e.do(t, http.MethodPut, path(0), admin, `{"status": "read"}`), http.StatusNoContent, "")
	expect("admin on bob's", e.do(t, http.MethodPut, path(3), admin, `{"status": "read"}`), http.StatusNoContent, "")
	expect("admin back to unread", e.do(t, http.MethodPut, path(3), admin, `{"status": "unread"}`), http.StatusNoContent, "")
	if got := []entities.EventStatus{e.status(t, 0), e.status(t, 1), e.status(t, 2), e.status(t, 3), e.status(t, 4)}; !reflect.DeepEqual(got, []entities.EventStatus{"read", "read", "unread", "unread", "unread"}) {
		t.Errorf("statuses %v, want read read unread unread unread", got)
	}

	for _, tt := range []struct {
		name, path, body, want string
	}{
		{"bad id", "/api/v1/events/nope/status", `{"status": "read"}`, `event id must be a UUID, got "nope"`},
		{"unknown status", path(2), `{"status": "seen"}`, `unknown event status "seen"; known: read, unread`},
		{"status missing", path(2), `{}`, `"status" is required`},
		{"status null body", path(2), `null`, `"status" is required`},
		{"status not a string", path(2), `{"status": true}`, `"status" must be a string ("read" or "unread"), got a JSON bool`},
		{"unknown field", path(2), `{"status": "read", "ids": []}`, `unknown field "ids"`},
		{"empty body", path(2), ``, "request body is empty"},
		{"not JSON", path(2), `status=read`, "request body is not JSON"},
		{"truncated", path(2), `{"status": "re`, "truncated"},
		{"array", path(2), `["read"]`, "must be a JSON object"},
		{"two objects", path(2), `{"status": "read"} {"status": "unread"}`, "must be one JSON object"},
		{"trailing garbage", path(2), `{"status": "read"}}`, "request body"},
		{"too large", path(2), `{"status": "read", "x": "` + strings.Repeat("x", MaxEventBodyBytes) + `"}`, "larger than 1048576 bytes"},
	} {
		expect(tt.name, e.do(t, http.MethodPut, tt.path, admin, tt.body), http.StatusBadRequest, tt.want)
	}

	// Several events, all or none.
	expect("bulk: alice on hers", e.do(t, http.MethodPut, "/api/v1/events/status", alice, `{"status": "unread", "ids": `+ids(1, 2)+`}`), http.StatusNoContent, "")
	if e.status(t, 1) != entities.StatusUnread {
		t.Error("bulk update left event 1 read")
	}
	expect("bulk: alice with one of bob's", e.do(t, http.MethodPut, "/api/v1/events/status", alice, `{"status": "read", "ids": `+ids(1, 3, 2)+`}`), http.StatusNotFound, e.evs[3].ID.String())
	if e.status(t, 1) != entities.StatusUnread || e.status(t, 2) != entities.StatusUnread {
		t.Error("a refused bulk update changed alice's events")
	}
	expect("bulk: admin", e.do(t, http.MethodPut, "/api/v1/events/status", admin, `{"status": "read", "ids": `+ids(4, 3, 4)+`}`), http.StatusNoContent, "")
	if e.status(t, 3) != entities.StatusRead || e.status(t, 4) != entities.StatusRead {
		t.Error("admin's bulk update did not mark 3 and 4 read")
	}
	tooMany := make([]string, MaxEventIDs+1)
	for i := range tooMany {
		tooMany[i] = `"` + uuid.NewString() + `"`
	}
	for _, tt := range []struct {
		name, body, want string
	}{
		{"no ids", `{"status": "read"}`, `"ids" is required`},
		{"empty ids", `{"status": "read", "ids": []}`, `"ids" is empty`},
		{"null ids", `{"status": "read", "ids": null}`, `"ids" is required`},
		{"too many ids", `{"status": "read", "ids": [` + strings.Join(tooMany, ",") + `]}`, `"ids" has 1001 entries; at most 1000`},
		{"bad id", `{"status": "read", "ids": ["` + e.evs[1].ID.String() + `", "x-1"]}`, `"ids"[1] must be a UUID, got "x-1"`},
		{"ids not strings", `{"status": "read", "ids": [1]}`, `"ids" must be an array of event id strings, got a JSON number`},
		{"ids not an array", `{"status": "read", "ids": "` + e.evs[1].ID.String() + `"}`, `"ids" must be an array of event id strings, got a JSON string`},
		{"no status", `{"ids": ` + ids(1) + `}`, `"status" is required`},
		{"unknown status", `{"status": "READ", "ids": ` + ids(1) + `}`, `unknown event status "READ"`},
		{"unknown field", `{"status": "read", "ids": ` + ids(1) + `, "all": true}`, `unknown field "all"`},
	} {
		expect("bulk: "+tt.name, e.do(t, http.MethodPut, "/api/v1/events/status", admin, tt.body), http.StatusBadRequest, tt.want)
	}
}

func TestEventsHTTP_Delete(t *testing.T) {
	t.Parallel()
	e := newEventsEnv(t)
	admin := e.token(t, "admin-1", RoleAdmin)
	alice := e.token(t, evAlice.String(), RoleViewer)
	bob := e.token(t, evBob.String(), RoleViewer)
	path := func(i int) string { return "/api/v1/events/" + e.evs[i].ID.String() }

	check := func(name string, r apiResponse, status int, msg string) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s: status %d, body %s; want %d", name, r.status, r.body, status)
			return
		}
		if msg != "" {
			if got := r.errorMsg(t); !strings.Contains(got, msg) {
				t.Errorf("%s: error %q, want it to contain %q", name, got, msg)
			}
		}
	}
	check("bob deletes alice's", e.do(t, http.MethodDelete, path(1), bob, ""), http.StatusNotFound, "event not found: "+e.evs[1].ID.String())
	check("bob deletes everyone's", e.do(t, http.MethodDelete, path(0), bob, ""), http.StatusNotFound, "event not found")
	check("bad id", e.do(t, http.MethodDelete, "/api/v1/events/types", admin, ""), http.StatusBadRequest, `event id must be a UUID, got "types"`)
	check("alice deletes hers", e.do(t, http.MethodDelete, path(1), alice, ""), http.StatusNoContent, "")
	check("again", e.do(t, http.MethodDelete, path(1), alice, ""), http.StatusNotFound, "event not found")
	if e.exists(t, 1) {
		t.Error("event 1 still exists")
	}
	if !e.exists(t, 0) {
		t.Error("a refused delete removed event 0")
	}

	bulk := func(is ...int) string {
		var q []string
		for _, i := range is {
			q = append(q, `"`+e.evs[i].ID.String()+`"`)
		}
		return `{"ids": [` + strings.Join(q, ", ") + `]}`
	}
	check("bulk: alice with everyone's", e.do(t, http.MethodDelete, "/api/v1/events", alice, bulk(2, 4)), http.StatusNotFound, e.evs[4].ID.String())
	if !e.exists(t, 2) {
		t.Error("a refused bulk delete removed event 2")
	}
	for _, tt := range []struct{ name, body, want string }{
		{"no body", "", "request body is empty"},
		{"empty ids", `{"ids": []}`, `"ids" is empty`},
		{"status field", `{"ids": ["` + e.evs[2].ID.String() + `"], "status": "read"}`, `unknown field "status"`},
		{"bad id", `{"ids": ["` + e.evs[2].ID.String() + `", ""]}`, `"ids"[1] must be a UUID, got ""`},
	} {
		check("bulk: "+tt.name, e.do(t, http.MethodDelete, "/api/v1/events", admin, tt.body), http.StatusBadRequest, tt.want)
	}
	check("bulk: admin", e.do(t, http.MethodDelete, "/api/v1/events", admin, bulk(0, 2, 3, 4)), http.StatusNoContent, "")
	if got, total := e.list(t, admin, ""); len(got) != 0 || total != 0 {
		t.Errorf("after deleting everything: %v of %d", got, total)
	}
}

// failingEvents is an EventStore whose every call fails, for the one fault
// the database cannot be made to produce on cue.
type failingEvents struct{ err error }

func (f failingEvents) ListEvents(context.Context, entities.EventQuery) (entities.EventPage, error) {
	return entities.EventPage{}, f.err
}
func (f failingEvents) EventTypes(context.Context, *uuid.UUID) (entities.EventTypes, error) {
	return entities.EventTypes{}, f.err
}
func (f failingEvents) SetEventStatus(context.Context, *uuid.UUID, []uuid.UUID, entities.EventStatus) error {
	return f.err
}
func (f failingEvents) DeleteEvents(context.Context, *uuid.UUID, []uuid.UUID) error { return f.err }

func TestEventsHTTP_StoreFailure(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, func(c *Config) {
		c.Events = failingEvents{errors.New("list events: dial tcp 10.0.0.5:5432: connection refused")}
	})
	e := &eventsEnv{testEnv: env}
	r := e.do(t, http.MethodGet, "/api/v1/events", e.token(t, "admin-1", RoleAdmin), "")
	if r.status != http.StatusInternalServerError || strings.Contains(string(r.body), "10.0.0.5") || !strings.Contains(r.errorMsg(t), "list events failed") {
		t.Errorf("store failure: %d %s, want 500 without the store's details", r.status, r.body)
	}
	if !strings.Contains(env.logs.String(), "list events") {
		t.Errorf("store failure not logged: %s", env.logs.String())
	}
}
