package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/wsapi"
)

// addUser runs "changecast user add" against url with password pw.
func addUser(t testing.TB, url, name, pw string, admin bool) {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"user", "add", "--database-url", url, "--username", name, "--password-file", pwFile}
	if admin {
		args = append(args, "--admin")
	}
	userCmd(t, args...)
}

func userCmd(t testing.TB, args ...string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("%v: %v (%s)", args, err, errb.String())
	}
}

// login posts GARM's login body and returns the status, the token and the
// cookie set.
func login(t testing.TB, addr, user, pw string) (int, string, *http.Cookie) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": pw})
	resp, err := http.Post("http://"+addr+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var got struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &got)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "changecast_token" {
			cookie = c
		}
	}
	return resp.StatusCode, got.Token, cookie
}

// expectRevoked reads until the token-expired control frame and the close,
// and returns how long that took.
func expectRevoked(t testing.TB, c *websocket.Conn, reason string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		f := readFrame(t, c, 15*time.Second)
		if f.Namespace != "events" || !strings.Contains(string(f.raw), `"token-expired"`) {
			continue // a change frame still in flight
		}
		if !strings.Contains(string(f.raw), reason) {
			t.Fatalf("token-expired frame %s does not say %q", f.raw, reason)
		}
		break
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("after token-expired: got %v, want close 1008", err)
	}
	return time.Since(start)
}

// TestServe_LoginAndRevocation is issue 4's session story end to end:
// users made with "changecast user", login with bcrypt-checked passwords
// (GARM's body and answer), the cookie authenticating the WebSocket, and
// revocation seen through changecast's own change stream of users: a
// password change, a disable and a delete each close that user's sockets
// with token-expired within a second, and leave other users alone.
func TestServe_LoginAndRevocation(t *testing.T) {
	srv, url, _ := readyServer(t, "cc_login")
	addUser(t, url, "alice", "alice-password-1", true)
	addUser(t, url, "bob", "bob-password-1", false)
	addUser(t, url, "carol", "carol-password-1", false)

	if code, _, _ := login(t, srv.addr, "bob", "wrong-password"); code != 401 {
		t.Fatalf("wrong password: got %d, want 401", code)
	}
	code, bobTok, cookie := login(t, srv.addr, "bob", "bob-password-1")
	if code != 200 || bobTok == "" || cookie == nil || cookie.Value != bobTok || !cookie.HttpOnly {
		t.Fatalf("login: got %d, token %t, cookie %+v", code, bobTok != "", cookie)
	}
	_, aliceTok, _ := login(t, srv.addr, "alice", "alice-password-1")
	_, carolTok, _ := login(t, srv.addr, "carol", "carol-password-1")

	// bob's browser: the cookie, same origin.
	h := http.Header{"Cookie": {"changecast_token=" + bobTok}, "Origin": {"http://" + srv.addr}}
	bobWS, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.addr+"/api/v1/ws/events", h)
	if err != nil {
		t.Fatalf("dial with cookie: %v (%v)", err, resp)
	}
	defer bobWS.Close()
	sendJSON(t, bobWS, `{"filters": [{"entity-type": "pool"}]}`)
	filterApplied(t, bobWS)
	bob2 := dialWS(t, srv.addr, bobTok)
	aliceWS := dialWS(t, srv.addr, aliceTok)
	sendJSON(t, aliceWS, `{"filters": [{"entity-type": "user"}]}`)
	filterApplied(t, aliceWS)
	carolWS := dialWS(t, srv.addr, carolTok)
	sendJSON(t, carolWS, `{"filters": [{"entity-type": "pool"}]}`)
	filterApplied(t, carolWS)

	db := connect(t, url)
	exec1(t, db, `INSERT INTO pools (provider_name) VALUES ('before-revocation')`)
	if f := readFrame(t, bobWS, 10*time.Second); f.EntityType != "pool" {
		t.Fatalf("bob got %s, want the pool", f.raw)
	}

	// Password change: bob's two sockets close; alice sees the user
	// update with neither hash nor generation.
	userCmd(t, "user", "passwd", "--database-url", url, "--username", "bob", "--password-file", writeTemp(t, "bob-password-2"))
	for _, c := range []*websocket.Conn{bobWS, bob2} {
		if d := expectRevoked(t, c, "password changed"); d > time.Second {
			t.Errorf("revocation took %s, want under 1s", d)
		}
	}
	f := readFrame(t, aliceWS, 10*time.Second)
	if f.EntityType != "user" || f.Operation != "update" || strings.Contains(string(f.raw), "$2a$") || strings.Contains(string(f.raw), "generation") || strings.Contains(string(f.raw), `"password"`) {
		t.Fatalf("alice got %s, want the user update without secrets", f.raw)
	}
	// The old token is refused at connect; the old password no longer
	// logs in; the new one does.
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.addr+"/api/v1/ws/events", http.Header{"Authorization": {"Bearer " + bobTok}}); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("old token after passwd: got %v %v, want 401", err, resp)
	}
	if code, _, _ := login(t, srv.addr, "bob", "bob-password-1"); code != 401 {
		t.Fatalf("old password: got %d, want 401", code)
	}
	if code, _, _ := login(t, srv.addr, "bob", "bob-password-2"); code != 200 {
		t.Fatalf("new password: got %d, want 200", code)
	}

	// Disable carol: her socket closes, alice's stays.
	userCmd(t, "user", "disable", "--database-url", url, "--username", "carol")
	if d := expectRevoked(t, carolWS, "user disabled"); d > time.Second {
		t.Errorf("revocation took %s, want under 1s", d)
	}
	if code, _, _ := login(t, srv.addr, "carol", "carol-password-1"); code != 401 {
		t.Fatalf("disabled user login: got %d, want 401", code)
	}

	// Deleting alice's row with SQL ends her session too.
	_, aliceTok2, _ := login(t, srv.addr, "alice", "alice-password-1")
	alice2 := dialWS(t, srv.addr, aliceTok2)
	exec1(t, db, `DELETE FROM users WHERE username = 'alice'`)
	if d := expectRevoked(t, alice2, "user deleted"); d > time.Second {
		t.Errorf("revocation took %s, want under 1s", d)
	}
	if strings.Contains(srv.logs.String(), "password-1") || strings.Contains(srv.logs.String(), "password-2") || strings.Contains(srv.logs.String(), bobTok) {
		t.Fatalf("logs contain a password or token:\n%s", srv.logs.String())
	}
}

func writeTemp(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// countingUsers counts the password checks of the real user table (bcrypt
// against PostgreSQL) it wraps.
type countingUsers struct {
	wsapi.Users
	auths atomic.Int64
}

func (u *countingUsers) Authenticate(ctx context.Context, username, password string) (wsapi.Claims, error) {
	u.auths.Add(1)
	return u.Users.Authenticate(ctx, username, password)
}

// loginAnswer posts GARM's login body and returns the status, the
// Retry-After header and the body.
func loginAnswer(t testing.TB, addr, user, pw string) (int, string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": pw})
	resp, err := http.Post("http://"+addr+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestServe_LoginThrottle is issue 17 against the real user table: with
// --login-max-failures-user 3, wrong passwords past the third are refused
// with 429 and Retry-After, and no refused attempt, the right password
// included, reaches the bcrypt check in PostgreSQL's users table. The
// clock is real here, so the check holds attempt by attempt: a 401 costs
// one password check, a 429 none.
func TestServe_LoginThrottle(t *testing.T) {
	counting := &countingUsers{}
	srv, url, _ := readyServer(t, "cc_login_throttle", func(c *serveConfig) {
		c.loginFailuresUser = 3
		c.loginMaxDelay = time.Hour
		c.wrapUsers = func(u wsapi.Users) wsapi.Users { counting.Users = u; return counting }
	})
	addUser(t, url, "dave", "dave-password-1", false)

	throttled := 0
	for i := range 8 {
		pw := "wrong-password"
		if i == 7 {
			pw = "dave-password-1" // the right one, still refused while locked out
		}
		before := counting.auths.Load()
		code, retry, body := loginAnswer(t, srv.addr, "dave", pw)
		checks := counting.auths.Load() - before
		switch {
		case i < 3 && code != 401:
			t.Fatalf("attempt %d: got %d %s, want 401 (a free failure)", i+1, code, body)
		case code == 401 && checks != 1:
			t.Fatalf("attempt %d: 401 after %d password checks, want 1", i+1, checks)
		case code == 429:
			throttled++
			if checks != 0 {
				t.Fatalf("attempt %d: 429 after %d password checks, want none", i+1, checks)
			}
			if retry != "1" || !strings.Contains(body, `"error":"too many failed logins`) {
				t.Fatalf("attempt %d: got Retry-After %q %s, want 1 and a JSON error", i+1, retry, body)
			}
		case i == 3:
			// Right after the third failure: its 1s lock-out holds.
			t.Fatalf("attempt 4: got %d %s, want 429", code, body)
		case code != 401:
			t.Fatalf("attempt %d: got %d %s, want 429 (or 401 once the 1s lock-out passed)", i+1, code, body)
		}
	}
	if throttled == 0 {
		t.Fatal("no attempt was throttled")
	}
	if n := metricValue(t, scrape(t, srv.addr), "changecast_login_throttled_total"); int(n) != throttled {
		t.Errorf("changecast_login_throttled_total: got %v, want %d", n, throttled)
	}
	if strings.Contains(srv.logs.String(), "wrong-password") || strings.Contains(srv.logs.String(), "dave-password-1") {
		t.Fatalf("logs contain a password:\n%s", srv.logs.String())
	}
}

// TestServe_LoginThrottleFlags checks the throttle's flags, their defaults
// (wsapi's) and that serve parses them.
func TestServe_LoginThrottleFlags(t *testing.T) {
	parse := func(args ...string) serveConfig {
		t.Helper()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var cfg serveConfig
		if err := cfg.register(fs); err != nil {
			t.Fatal(err)
		}
		if err := fs.Parse(args); err != nil {
			t.Fatalf("parse %v: %v", args, err)
		}
		return cfg
	}
	def := parse()
	if def.loginFailuresUser != wsapi.DefaultLoginFailuresPerUser || def.loginFailuresAddr != wsapi.DefaultLoginFailuresPerAddr ||
		def.loginWindow != wsapi.DefaultLoginWindow || def.loginMaxDelay != wsapi.DefaultLoginMaxDelay {
		t.Errorf("defaults: got %d, %d, %s, %s; want wsapi's defaults", def.loginFailuresUser, def.loginFailuresAddr, def.loginWindow, def.loginMaxDelay)
	}
	got := parse("--login-max-failures-user", "7", "--login-max-failures-addr", "-1", "--login-window", "1h", "--login-max-delay", "30s")
	if got.loginFailuresUser != 7 || got.loginFailuresAddr != -1 || got.loginWindow != time.Hour || got.loginMaxDelay != 30*time.Second {
		t.Errorf("got %d, %d, %s, %s; want 7, -1, 1h, 30s", got.loginFailuresUser, got.loginFailuresAddr, got.loginWindow, got.loginMaxDelay)
	}
}
