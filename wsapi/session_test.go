package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// testUsers is a user table for the hub's own tests: usernames to
// passwords, and per-subject revocation reasons. cmd/changecast's tests run
// the real one (bcrypt hashes in PostgreSQL, revocation through the change
// stream).
type testUsers struct {
	mu       sync.Mutex
	password map[string]string // username → password
	revoked  map[string]string // subject → reason
	failing  error             // CheckSession fails with this when set
	checks   int
	checksBy map[string]int // subject → checks
	auths    int            // Authenticate calls: password comparisons
}

const testPassword = "correct horse battery staple"

func newTestUsers() *testUsers {
	return &testUsers{
		password: map[string]string{"alice": testPassword, "bob": testPassword},
		revoked:  map[string]string{},
		checksBy: map[string]int{},
	}
}

func (u *testUsers) Authenticate(_ context.Context, username, password string) (Claims, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.auths++
	if u.failing != nil {
		return Claims{}, u.failing
	}
	if p, ok := u.password[username]; !ok || p != password {
		return Claims{}, fmt.Errorf("authenticate: %w", ErrBadCredentials)
	}
	role := RoleViewer
	if username == "alice" {
		role = RoleAdmin
	}
	return Claims{Name: username, Role: role, Gen: 3, RegisteredClaims: regClaims("id-" + username)}, nil
}

func (u *testUsers) CheckSession(_ context.Context, c *Claims) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.checks++
	u.checksBy[c.Subject]++
	if u.failing != nil {
		return u.failing
	}
	if why, ok := u.revoked[c.Subject]; ok {
		return fmt.Errorf("%w: %s", ErrSessionRevoked, why)
	}
	return nil
}

func (u *testUsers) checksOf(sub string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.checksBy[sub]
}

// authCount returns how many times Authenticate ran.
func (u *testUsers) authCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.auths
}

func (u *testUsers) revoke(sub, why string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.revoked[sub] = why
}

func (u *testUsers) setFailing(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.failing = err
}

func (e *testEnv) login(t testing.TB, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.ts.URL+wire.LoginPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST login: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestLogin(t *testing.T) {
	users := newTestUsers()
	e := newTestEnv(t, func(c *Config) { c.Users = users; c.LoginTTL = 30 * time.Minute })

	resp, body := e.login(t, `{"username": "alice", "password": "`+testPassword+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: got %d %s, want 200", resp.StatusCode, body)
	}
	var got struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.Token == "" {
		t.Fatalf("login body %s: want {\"token\": ...}", body)
	}
	claims, err := e.auth.Verify(got.Token)
	if err != nil {
		t.Fatalf("Verify login token: %v", err)
	}
	if claims.Subject != "id-alice" || claims.Role != RoleAdmin || claims.Gen != 3 || claims.Name != "alice" {
		t.Errorf("got claims %+v, want sub id-alice, role admin, gen 3, name alice", claims)
	}
	if ttl := claims.ExpiresAt.Sub(claims.IssuedAt.Time); ttl != 30*time.Minute {
		t.Errorf("got token lifetime %s, want LoginTTL 30m", ttl)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == wire.CookieName {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != got.Token || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/api/" || cookie.MaxAge != 1800 {
		t.Errorf("got cookie %+v, want HttpOnly SameSite=Strict %s=<token> Path=/api/ Max-Age=1800", cookie, wire.CookieName)
	}

	// The cookie authenticates the WebSocket (same origin, no header).
	conn, resp2, b, err := e.dialRaw(t, e.wsURL(), http.Header{"Cookie": {wire.CookieName + "=" + got.Token}, "Origin": {e.ts.URL}})
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v %s)", err, resp2, b)
	}
	e.sendFilter(t, conn, `{"send-everything": true}`)
	p := e.publish([]entities.Change{chg("pool", create, "p1")})
	expectCursors(t, conn, []int64{p[0].Cursor})
	// ... but not from a foreign page: browsers send cookies cross-site.
	_, resp3, b, _ := e.dialRaw(t, e.wsURL(), http.Header{"Cookie": {wire.CookieName + "=" + got.Token}, "Origin": {"https://evil.example"}})
	if resp3 == nil || resp3.StatusCode != 403 {
		t.Errorf("cookie from a foreign origin: got %v %s, want 403", resp3, b)
	}

	cases := []struct {
		name, body string
		status     int
		msg        string
	}{
		{"wrong password", `{"username": "alice", "password": "nope-nope"}`, 401, "invalid username or password"},
		{"unknown user", `{"username": "mallory", "password": "nope-nope"}`, 401, "invalid username or password"},
		{"missing password", `{"username": "alice"}`, 400, `"username" and "password" are required`},
		{"empty", `{}`, 400, "required"},
		{"not json", `username=alice&password=x`, 400, "must be JSON"},
		{"unknown field", `{"username": "alice", "password": "x", "otp": "1"}`, 400, `unknown field "otp"`},
		{"wrong type", `{"username": "alice", "password": 12345678}`, 400, `"password" must be a string`},
		{"two objects", `{"username": "a", "password": "b"} {}`, 400, "one JSON object"},
		{"stray bracket", `{"username": "a", "password": "b"}}`, 400, "one JSON object"},
		{"too large", `{"username": "alice", "password": "` + strings.Repeat("x", 70<<10) + `"}`, 400, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.login(t, c.body, nil)
			var got struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal([]byte(body), &got)
			if resp.StatusCode != c.status || !strings.Contains(got.Error, c.msg) {
				t.Fatalf("got %d %s, want %d mentioning %q", resp.StatusCode, body, c.status, c.msg)
			}
			if strings.Contains(body, "nope-nope") || strings.Contains(body, "12345678") {
				t.Fatalf("response %s echoes the password", body)
			}
			if len(resp.Cookies()) != 0 {
				t.Fatalf("a failed login set cookies %v", resp.Cookies())
			}
		})
	}
	if strings.Contains(e.logs.String(), "nope-nope") || strings.Contains(e.logs.String(), testPassword) {
		t.Fatalf("logs contain a password:\n%s", e.logs.String())
	}

	// Login from a foreign origin is refused (a login form on another
	// site must not obtain our cookie).
	resp, body = e.login(t, `{"username": "alice", "password": "`+testPassword+`"}`, http.Header{"Origin": {"https://evil.example"}})
	if resp.StatusCode != 403 {
		t.Errorf("login from a foreign origin: got %d %s, want 403", resp.StatusCode, body)
	}
	// The user table failing is not "bad credentials".
	users.setFailing(errors.New("database down"))
	resp, body = e.login(t, `{"username": "alice", "password": "`+testPassword+`"}`, nil)
	if resp.StatusCode != 503 || strings.Contains(body, "database down") {
		t.Errorf("login with the user table down: got %d %s, want 503 without internals", resp.StatusCode, body)
	}

	// Logout clears the cookie.
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+wire.LogoutPath, nil)
	lresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lresp.Body.Close()
	if lresp.StatusCode != 204 || len(lresp.Cookies()) != 1 || lresp.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: got %d cookies %v, want 204 and an expired %s", lresp.StatusCode, lresp.Cookies(), wire.CookieName)
	}
}

func TestLogin_DisabledWithoutUsers(t *testing.T) {
	e := newTestEnv(t, nil)
	resp, body := e.login(t, `{"username": "alice", "password": "x"}`, nil)
	if resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Fatalf("login without a user table: got %d %s, want 404", resp.StatusCode, body)
	}
}

// TestSession_RefusedAtConnect checks that a revoked session cannot
// connect, and that a session that cannot be checked gets 503, not 401.
func TestSession_RefusedAtConnect(t *testing.T) {
	users := newTestUsers()
	e := newTestEnv(t, func(c *Config) { c.Users = users })
	tok := e.token(t, "id-bob", RoleViewer)
	users.revoke("id-bob", "user disabled")
	_, resp, body, err := e.dialRaw(t, e.wsURL(), bearer(tok))
	if err == nil || resp == nil || resp.StatusCode != 401 || !strings.Contains(string(body), "user disabled") {
		t.Fatalf("revoked session: got %v %v %s, want 401 naming the reason", err, resp, body)
	}
	users.setFailing(errors.New("database down"))
	_, resp, body, _ = e.dialRaw(t, e.wsURL(), bearer(e.token(t, "id-alice", RoleAdmin)))
	if resp == nil || resp.StatusCode != 503 || strings.Contains(string(body), "database down") {
		t.Fatalf("unverifiable session: got %v %s, want 503 without internals", resp, body)
	}
}

// TestSession_RevokedByUserChange checks revocation through the change
// stream: when a user change is published and the user's session is no
// longer valid, that user's sockets get token-expired and close within a
// second; other users' sockets and changes to other users are unaffected.
func TestSession_RevokedByUserChange(t *testing.T) {
	users := newTestUsers()
	e := newJournalEnv(t, func(c *Config) { c.Users = users })
	bob1 := e.dialFilter(t, e.token(t, "id-bob", RoleViewer), `{"send-everything": true}`)
	bob2 := e.dial(t, e.token(t, "id-bob", RoleViewer)) // no filter: still closed
	alice := e.dialFilter(t, e.token(t, "id-alice", RoleAdmin), `{"filters": [{"entity-type": "pool"}]}`)

	// A change to another user re-checks nobody of bob's.
	waitFor(t, "bob's sockets to register", func() bool { return e.srv.Clients() == 3 })
	bobChecks := users.checksOf("id-bob") // at connect
	users.revoke("id-bob", "password changed")
	u := chg("user", update, "id-carol")
	b := e.publish([]entities.Change{u, chg("pool", update, "p0")})
	expectCursors(t, alice, []int64{b[1].Cursor})
	// bob, a viewer, never sees user changes, only the pool one.
	expectCursors(t, bob1, []int64{b[1].Cursor})
	// Two changes to alice, each awaited: the revoker has finished the
	// pass that handled carol's change by the time it checks alice twice.
	for i := 1; i <= 2; i++ {
		before := users.checksOf("id-alice")
		e.publish([]entities.Change{chg("user", update, "id-alice")})
		waitFor(t, "alice's re-check", func() bool { return users.checksOf("id-alice") > before })
	}
	if got := users.checksOf("id-bob"); got != bobChecks {
		t.Fatalf("changes to other users re-checked bob %d times", got-bobChecks)
	}

	start := time.Now()
	u = chg("user", update, "id-bob")
	e.publish([]entities.Change{u})
	for _, c := range []*websocket.Conn{bob1, bob2} {
		f := readFrame(t, c)
		if controlType(f) != string(wire.ControlTokenExpired) || !strings.Contains(fmt.Sprint(f.Args["message"]), "password changed") {
			t.Fatalf("got %+v, want token-expired naming the reason", f)
		}
		if code := expectClose(t, c); code != websocket.ClosePolicyViolation {
			t.Fatalf("got close code %d, want %d", code, websocket.ClosePolicyViolation)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("revocation took %s, want under 1s", d)
	}
	waitFor(t, "bob's sockets to go", func() bool { return e.srv.Clients() == 1 })
	p := e.publish([]entities.Change{chg("pool", create, "after")})
	expectCursors(t, alice, []int64{p[0].Cursor})

	// A truncate of user re-checks everyone.
	users.revoke("id-alice", "user deleted")
	tr := chg("user", entities.OpTruncate, "")
	tr.EntityID, tr.Payload = "", nil
	e.publish([]entities.Change{tr})
	for {
		f := readFrame(t, alice)
		if controlType(f) == string(wire.ControlTokenExpired) {
			break
		}
	}
	expectClose(t, alice)
}

// TestSession_CheckRetried checks that a session check that fails for a
// transient reason is retried rather than dropped.
func TestSession_CheckRetried(t *testing.T) {
	users := newTestUsers()
	e := newTestEnv(t, func(c *Config) { c.Users = users })
	bob := e.dial(t, e.token(t, "id-bob", RoleViewer))
	users.setFailing(errors.New("database down"))
	e.publish([]entities.Change{chg("user", update, "id-bob")})
	waitFor(t, "a failed check", func() bool {
		users.mu.Lock()
		defer users.mu.Unlock()
		return users.checks >= 3 // at connect, then at least twice after the change
	})
	users.revoke("id-bob", "user disabled")
	users.setFailing(nil)
	if f := readFrame(t, bob); controlType(f) != string(wire.ControlTokenExpired) {
		t.Fatalf("got %+v, want token-expired after the retry", f)
	}
	if strings.Contains(e.logs.String(), "session check failed") == false {
		t.Errorf("the failed check was not logged:\n%s", e.logs.String())
	}
}

func TestLimits_MaxConnections(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.MaxConnections = 2 })
	tok := e.token(t, "u1", RoleAdmin)
	a := e.dial(t, tok)
	e.dial(t, tok)
	waitFor(t, "both to register", func() bool { return e.srv.Clients() == 2 })
	_, resp, body, err := e.dialRaw(t, e.wsURL(), bearer(tok))
	if err == nil || resp == nil || resp.StatusCode != 503 || !strings.Contains(string(body), "connection limit reached (2 connections)") {
		t.Fatalf("third connection: got %v %v %s, want 503 naming the limit", err, resp, body)
	}
	a.Close()
	waitFor(t, "a slot to free", func() bool { return e.srv.Clients() == 1 })
	e.dial(t, tok)
}

func TestLimits_MaxFilters(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.MaxFilters = 2 })
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"filters": [{"entity-type": "pool"}]}`)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"filters": [{"entity-type": "pool"}, {"entity-type": "job"}, {"entity-type": "instance"}]}`)); err != nil {
		t.Fatal(err)
	}
	f := readFrame(t, conn)
	if f.key() != "error.error" || !strings.Contains(fmt.Sprint(f.Args["message"]), "too many filters: 3; at most 2") {
		t.Fatalf("got %+v, want an error frame naming the limit", f)
	}
	// Envelope subscribe past the limit: error with the id, filter kept.
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "subscribe", "id": "s1", "args": ["job", "instance"]}`)); err != nil {
		t.Fatal(err)
	}
	f = readFrame(t, conn)
	if f.key() != "error.error" || f.ID == nil || *f.ID != "s1" {
		t.Fatalf("got %+v, want an error frame with id s1", f)
	}
	b := e.publish([]entities.Change{chg("job", create, "j"), chg("pool", create, "p")})
	expectCursors(t, conn, []int64{b[1].Cursor})
}
