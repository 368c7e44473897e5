package wsapi

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/changecast/changecast/wire"
)

// do sends a request to the test server and returns its status, body and
// the login cookie it set, if any.
func (e *testEnv) do(t testing.TB, method, path, body string, h http.Header) (int, string, *http.Cookie) {
	t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == wire.CookieName {
			cookie = c
		}
	}
	return resp.StatusCode, string(b), cookie
}

func TestSession_WhoAmI(t *testing.T) {
	e := newTestEnv(t, nil)
	code, body, _ := e.do(t, "GET", SessionPath, "", nil)
	if code != http.StatusUnauthorized {
		t.Fatalf("without a token: %d %s", code, body)
	}
	// A viewer scoped to pool and event: those types, never user, no
	// secret column.
	tok := e.token(t, "v1", RoleViewer, "pool", "event", "user", "repository")
	code, body, _ = e.do(t, "GET", SessionPath, "", bearer(tok))
	if code != http.StatusOK {
		t.Fatalf("GET session: %d %s", code, body)
	}
	var info sessionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range info.EntityTypes {
		names = append(names, ti.Name)
		if ti.Name == "repository" && slices.Contains(ti.Columns, "webhook_secret") {
			t.Errorf("a secret column is listed: %v", ti.Columns)
		}
		if ti.Name == "repository" && !slices.Contains(ti.Columns, "name") {
			t.Errorf("repository columns lack name: %v", ti.Columns)
		}
	}
	if !slices.Equal(names, []string{"pool", "repository"}) || !info.Events || info.Name != "v1-name" || info.Role != RoleViewer || info.ExpiresAt.IsZero() {
		t.Fatalf("session: %s", body)
	}
	// The cookie works from the page's own origin, not from another.
	c := &http.Cookie{Name: wire.CookieName, Value: tok}
	if code, body, _ := e.do(t, "GET", SessionPath, "", http.Header{"Cookie": {c.String()}, "Origin": {e.ts.URL}}); code != http.StatusOK {
		t.Fatalf("cookie, same origin: %d %s", code, body)
	}
	if code, body, _ := e.do(t, "GET", SessionPath, "", http.Header{"Cookie": {c.String()}, "Origin": {"http://evil.example"}}); code != http.StatusForbidden {
		t.Fatalf("cookie, foreign origin: %d %s", code, body)
	}
}

func TestSession_TokenExchange(t *testing.T) {
	e := newTestEnv(t, nil)
	tok, err := e.auth.Mint(Claims{Name: "ops", Role: RoleAdmin, RegisteredClaims: regClaims("ops")}, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	code, body, cookie := e.do(t, "POST", SessionPath, "", bearer(tok))
	if code != http.StatusOK || cookie == nil || cookie.Value != tok || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/api/" {
		t.Fatalf("exchange: %d %s cookie %+v", code, body, cookie)
	}
	if cookie.MaxAge > 90 || cookie.MaxAge < 80 {
		t.Fatalf("cookie lives %d s, want the token's remaining 90 s", cookie.MaxAge)
	}
	if strings.Contains(body, tok) {
		t.Fatalf("the answer repeats the token")
	}
	for _, h := range []http.Header{nil, bearer("not-a-token"), {"Authorization": {"Bearer " + tok}, "Origin": {"http://evil.example"}}} {
		code, body, cookie := e.do(t, "POST", SessionPath, "", h)
		if code < 400 || cookie != nil {
			t.Fatalf("exchange with %v: %d %s cookie %v", h, code, body, cookie)
		}
	}
}

func TestSignInLink(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	e := newTestEnv(t, func(c *Config) { c.now = func() time.Time { return now } })
	claims := Claims{Name: "admin", Role: RoleAdmin, RegisteredClaims: jwt.RegisteredClaims{Subject: "signin-link"}}
	code, err := e.srv.SignInLink(claims, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	body := func(c string) string { return `{"code":"` + c + `"}` }
	// httptest listens on loopback: the link works, once.
	st, b, cookie := e.do(t, "POST", LinkPath, body(code), nil)
	if st != http.StatusOK || cookie == nil || !cookie.HttpOnly {
		t.Fatalf("redeem: %d %s %v", st, b, cookie)
	}
	if c, err := e.auth.Verify(cookie.Value); err != nil || c.Role != RoleAdmin || c.Subject != "signin-link" {
		t.Fatalf("the cookie's token: %+v %v", c, err)
	}
	if st, b, _ := e.do(t, "POST", LinkPath, body(code), nil); st != http.StatusUnauthorized || !strings.Contains(b, "already used") {
		t.Fatalf("second use: %d %s", st, b)
	}
	// Expired: refused, and gone.
	code2, _ := e.srv.SignInLink(claims, time.Minute)
	now = now.Add(2 * time.Minute)
	if st, b, c := e.do(t, "POST", LinkPath, body(code2), nil); st != http.StatusUnauthorized || c != nil {
		t.Fatalf("expired: %d %s", st, b)
	}
	// Bad bodies and foreign origins change nothing.
	code3, _ := e.srv.SignInLink(claims, time.Minute)
	for _, tc := range []struct {
		body string
		h    http.Header
		want int
	}{
		{`{"code":""}`, nil, http.StatusBadRequest},
		{`{"code":"x","extra":1}`, nil, http.StatusBadRequest},
		{body(code3) + `{}`, nil, http.StatusBadRequest},
		{body(code3), http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{body("wrong"), nil, http.StatusUnauthorized},
	} {
		if st, b, c := e.do(t, "POST", LinkPath, tc.body, tc.h); st != tc.want || c != nil {
			t.Fatalf("%s %v: %d %s, want %d", tc.body, tc.h, st, b, tc.want)
		}
	}
	if st, b, _ := e.do(t, "POST", LinkPath, body(code3), nil); st != http.StatusOK {
		t.Fatalf("the link after refused attempts: %d %s", st, b)
	}
	if strings.Contains(e.logs.String(), code) || strings.Contains(e.logs.String(), code3) {
		t.Fatalf("a sign-in code reached the log")
	}
	// Only from loopback.
	for addr, want := range map[string]bool{"127.0.0.1:5000": true, "[::1]:5000": true, "192.0.2.7:5000": false, "[2001:db8::1]:1": false, "garbage": false} {
		if isLoopback(addr) != want {
			t.Errorf("isLoopback(%s) = %v", addr, !want)
		}
	}
}
