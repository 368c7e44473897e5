package wsapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/changecast/changecast/wire"
)

// testClock is a clock tests move by hand, so nothing sleeps.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestLoginLimiter(t *testing.T) {
	type step struct {
		advance time.Duration
		op      string // "fail", "ok" (success), "wait"
		user    string
		addr    string
		want    time.Duration // fail: lock-out started; wait: wait left
	}
	cases := []struct {
		name             string
		perUser, perAddr int
		window           time.Duration // 0: a minute
		steps            []step
	}{
		{"free failures, then doubling", 3, -1, 0, []step{
			{op: "fail", user: "u", want: 0},
			{op: "fail", user: "u", want: 0},
			{op: "wait", user: "u", want: 0},
			{op: "fail", user: "u", want: time.Second},
			{op: "wait", user: "u", want: time.Second},
			{advance: 400 * time.Millisecond, op: "wait", user: "u", want: 600 * time.Millisecond},
			{advance: 600 * time.Millisecond, op: "wait", user: "u", want: 0},
			{op: "fail", user: "u", want: 2 * time.Second},
			{op: "fail", user: "u", want: 4 * time.Second},
			{op: "wait", user: "v", want: 0},
		}},
		{"capped at max delay", 1, -1, 0, []step{
			{op: "fail", user: "u", want: time.Second},
			{op: "fail", user: "u", want: 2 * time.Second},
			{op: "fail", user: "u", want: 4 * time.Second},
			{op: "fail", user: "u", want: 8 * time.Second},
			{op: "fail", user: "u", want: 10 * time.Second},
			{op: "fail", user: "u", want: 10 * time.Second},
		}},
		{"success clears the user", 2, -1, 0, []step{
			{op: "fail", user: "u"},
			{op: "fail", user: "u", want: time.Second},
			{op: "ok", user: "u"},
			{op: "wait", user: "u", want: 0},
			{op: "fail", user: "u", want: 0},
		}},
		{"success keeps the address", -1, 2, 0, []step{
			{op: "fail", user: "a", addr: "10.0.0.1"},
			{op: "fail", user: "b", addr: "10.0.0.1", want: time.Second},
			{op: "ok", user: "b", addr: "10.0.0.1"},
			{op: "wait", user: "c", addr: "10.0.0.1", want: time.Second},
			{op: "wait", user: "c", addr: "10.0.0.2", want: 0},
		}},
		{"longest of user and address", 2, 3, 0, []step{
			{op: "fail", user: "u", addr: "10.0.0.1"},
			{op: "fail", user: "u", addr: "10.0.0.1", want: time.Second},
			{op: "fail", user: "v", addr: "10.0.0.1", want: time.Second},
			{op: "fail", user: "v", addr: "10.0.0.1", want: 2 * time.Second},
			{op: "wait", user: "w", addr: "10.0.0.1", want: 2 * time.Second},
			{op: "wait", user: "u", addr: "10.0.0.9", want: time.Second}, // u's own lock, at any address
		}},
		{"forgotten a window after the last failure", 2, -1, 0, []step{
			{op: "fail", user: "u"},
			{advance: 59 * time.Second, op: "fail", user: "u", want: time.Second}, // locked until 60s
			{advance: 60 * time.Second, op: "wait", user: "u", want: 0},           // 119s: lock over, count kept
			{advance: 999 * time.Millisecond, op: "fail", user: "u", want: 2 * time.Second},
			{advance: 62 * time.Second, op: "wait", user: "u", want: 0}, // a window after the 2s lock
			{op: "fail", user: "u", want: 0},                            // the count started again
		}},
		{"a lock-out longer than the window is not forgiven when it ends", 1, -1, 5 * time.Second, []step{
			{op: "fail", user: "u", want: time.Second},
			{op: "fail", user: "u", want: 2 * time.Second},
			{op: "fail", user: "u", want: 4 * time.Second},
			{op: "fail", user: "u", want: 8 * time.Second},
			{op: "fail", user: "u", want: 10 * time.Second},
			{advance: 10 * time.Second, op: "fail", user: "u", want: 10 * time.Second},
		}},
		{"negative limits track nothing", -1, -1, 0, []step{
			{op: "fail", user: "u", addr: "10.0.0.1"},
			{op: "fail", user: "u", addr: "10.0.0.1"},
			{op: "wait", user: "u", addr: "10.0.0.1", want: 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newTestClock()
			window := cmp.Or(tc.window, time.Minute)
			l := newLoginLimiter(tc.perUser, tc.perAddr, window, 10*time.Second, clk.now)
			for i, s := range tc.steps {
				clk.advance(s.advance)
				var got time.Duration
				switch s.op {
				case "fail":
					got = l.failed(s.user, s.addr)
				case "ok":
					l.succeeded(s.user)
					continue
				case "wait":
					got = l.wait(s.user, s.addr)
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s@%s): got %s, want %s", i, s.op, s.user, s.addr, got, s.want)
				}
			}
		})
	}
}

// TestLoginLimiter_Bounded checks the table never holds more than maxKeys
// entries: expired ones go first, then the one closest to expiry, and an
// active lock-out survives a flood of new names.
func TestLoginLimiter_Bounded(t *testing.T) {
	clk := newTestClock()
	l := newLoginLimiter(1, -1, time.Minute, time.Hour, clk.now)
	l.maxKeys = 10
	for range 5 {
		l.failed("victim", "")
	}
	victimWait := l.wait("victim", "")
	if victimWait == 0 {
		t.Fatal("victim not locked out")
	}
	for i := range 1000 {
		clk.advance(time.Millisecond)
		l.failed(fmt.Sprintf("flood-%d", i), "")
		if n := l.size(); n > l.maxKeys {
			t.Fatalf("after %d names: %d keys, want at most %d", i+1, n, l.maxKeys)
		}
	}
	if got := l.wait("victim", ""); got == 0 {
		t.Fatal("a flood of new names evicted an active lock-out")
	}
	// Past every window, the whole table is reclaimed at the next insert.
	clk.advance(2 * time.Hour)
	l.failed("late", "")
	if n := l.size(); n != 1 {
		t.Fatalf("after every entry expired: %d keys, want 1", n)
	}
}

func TestLoginLimiter_RemoteKey(t *testing.T) {
	cases := map[string]string{
		"192.0.2.7:4711":                 "192.0.2.7",
		"[::ffff:192.0.2.7]:4711":        "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1%eth0]:80": "2001:db8:1:2::/64",
		"pipe":                           "pipe",
	}
	for in, want := range cases {
		if got := remoteKey(in); got != want {
			t.Errorf("remoteKey(%q): got %q, want %q", in, got, want)
		}
	}
}

// loginAttempt is one login's answer.
type loginAttempt struct {
	status     int
	retryAfter string
	body       string
}

// loginFrom posts a login for user from the local address ip (the server
// sees it as the remote address).
func (e *testEnv) loginFrom(t testing.TB, ip, user, password string) loginAttempt {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := c.Post(e.ts.URL+wire.LoginPath, "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("POST login from %s: %v", ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return loginAttempt{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
}

// TestLogin_ThrottlePerUser is issue 17's story: 20 wrong passwords for one
// user, then the right one, all within the window. Past the free failures
// the attempts get 429 with Retry-After and no password check; once the
// lock-out has passed the right password logs in, and that clears the
// count.
func TestLogin_ThrottlePerUser(t *testing.T) {
	users := newTestUsers()
	clk := newTestClock()
	e := newTestEnv(t, func(c *Config) {
		c.Users = users
		c.now = clk.now
		c.LoginFailuresPerUser = 5
		c.LoginFailuresPerAddr = -1
	})
	for i := range 20 {
		a := e.loginFrom(t, "127.0.0.1", "alice", "wrong-password")
		switch {
		case i < 5 && a.status != 401:
			t.Fatalf("attempt %d: got %d %s, want 401 (a free failure)", i+1, a.status, a.body)
		case i >= 5 && (a.status != 429 || a.retryAfter != "1"):
			t.Fatalf("attempt %d: got %d Retry-After %q %s, want 429 with Retry-After 1", i+1, a.status, a.retryAfter, a.body)
		case i >= 5 && a.body != `{"error":"too many failed logins; try again in 1 s"}`+"\n":
			t.Fatalf("attempt %d: got body %s, want the JSON error", i+1, a.body)
		}
	}
	// Over the limit, no password was compared.
	if n := users.authCount(); n != 5 {
		t.Fatalf("got %d password checks for 20 attempts, want 5 (none while locked out)", n)
	}
	// The right password is refused too while locked out ...
	if a := e.loginFrom(t, "127.0.0.1", "alice", testPassword); a.status != 429 {
		t.Fatalf("right password while locked out: got %d %s, want 429", a.status, a.body)
	}
	if n := e.srv.LoginsThrottled(); n != 16 {
		t.Errorf("LoginsThrottled: got %d, want 16", n)
	}
	// ... and accepted once the lock-out has passed.
	clk.advance(1001 * time.Millisecond)
	a := e.loginFrom(t, "127.0.0.1", "alice", testPassword)
	if a.status != 200 || !strings.Contains(a.body, `"token"`) {
		t.Fatalf("right password after the lock-out: got %d %s, want 200 with a token", a.status, a.body)
	}
	// The success cleared alice's count: the free failures are back
	// (without the reset, the first new mistake would lock her out).
	for i := range 5 {
		if a := e.loginFrom(t, "127.0.0.1", "alice", "wrong-password"); a.status != 401 {
			t.Fatalf("wrong password %d after a success: got %d %s, want 401", i+1, a.status, a.body)
		}
	}
	// Other users were never affected.
	if a := e.loginFrom(t, "127.0.0.1", "bob", testPassword); a.status != 200 {
		t.Fatalf("bob: got %d %s, want 200", a.status, a.body)
	}
	if strings.Contains(e.logs.String(), "wrong-password") {
		t.Fatalf("logs contain a password:\n%s", e.logs.String())
	}
}

// TestLogin_ThrottlePerAddr checks one address trying many usernames is
// throttled, while the same usernames from another address are not.
func TestLogin_ThrottlePerAddr(t *testing.T) {
	users := newTestUsers()
	clk := newTestClock()
	e := newTestEnv(t, func(c *Config) {
		c.Users = users
		c.now = clk.now
		c.LoginFailuresPerAddr = 10
	})
	for i := range 10 {
		if a := e.loginFrom(t, "127.0.0.1", fmt.Sprintf("user-%d", i), "wrong-password"); a.status != 401 {
			t.Fatalf("attempt %d: got %d %s, want 401", i+1, a.status, a.body)
		}
	}
	// Each username failed once: only the address limit can refuse.
	a := e.loginFrom(t, "127.0.0.1", "user-new", "wrong-password")
	if a.status != 429 || a.retryAfter != "1" {
		t.Fatalf("11th username from one address: got %d Retry-After %q %s, want 429 with Retry-After 1", a.status, a.retryAfter, a.body)
	}
	if a := e.loginFrom(t, "127.0.0.1", "bob", testPassword); a.status != 429 {
		t.Fatalf("right password from the throttled address: got %d %s, want 429", a.status, a.body)
	}
	if a := e.loginFrom(t, "127.0.0.2", "user-new", "wrong-password"); a.status != 401 {
		t.Fatalf("another address: got %d %s, want 401", a.status, a.body)
	}
	if a := e.loginFrom(t, "127.0.0.2", "bob", testPassword); a.status != 200 {
		t.Fatalf("right password from another address: got %d %s, want 200", a.status, a.body)
	}
}

// TestLogin_ThrottleUnknownUser checks an unknown username is counted and
// answered exactly as a known one, so throttling reveals no names.
func TestLogin_ThrottleUnknownUser(t *testing.T) {
	run := func(user string) []loginAttempt {
		users := newTestUsers()
		clk := newTestClock()
		e := newTestEnv(t, func(c *Config) {
			c.Users = users
			c.now = clk.now
			c.LoginFailuresPerUser = 3
			c.LoginFailuresPerAddr = -1
		})
		var got []loginAttempt
		for range 4 {
			got = append(got, e.loginFrom(t, "127.0.0.1", user, "wrong-password"))
			got = append(got, e.loginFrom(t, "127.0.0.1", user, "wrong-password"))
			clk.advance(1500 * time.Millisecond)
		}
		if n := users.authCount(); n >= len(got) {
			t.Fatalf("%s: %d password checks for %d attempts; want the throttle to refuse some", user, n, len(got))
		}
		return got
	}
	known, unknown := run("bob"), run("mallory")
	if fmt.Sprint(known) != fmt.Sprint(unknown) {
		t.Fatalf("answers differ:\n  known:   %v\n  unknown: %v", known, unknown)
	}
	throttled := 0
	for _, a := range unknown {
		if a.status == 429 {
			throttled++
		}
	}
	if throttled == 0 {
		t.Fatalf("unknown user never throttled: %v", unknown)
	}
}
