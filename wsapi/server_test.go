package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

func TestNewServer_Validates(t *testing.T) {
	auth := newTestAuth(t)
	reg := entities.DefaultRegistry()
	cases := map[string]Config{
		"no registry":       {Auth: auth},
		"no auth":           {Registry: reg},
		"ping >= pong":      {Registry: reg, Auth: auth, PingInterval: time.Minute, PongWait: time.Minute},
		"negative queue":    {Registry: reg, Auth: auth, QueueLen: -1},
		"negative page":     {Registry: reg, Auth: auth, CatchUpPage: -1},
		"negative workers":  {Registry: reg, Auth: auth, CatchUpWorkers: -1},
		"origin with path":  {Registry: reg, Auth: auth, AllowedOrigins: []string{"https://a.example/x"}},
		"origin sans host":  {Registry: reg, Auth: auth, AllowedOrigins: []string{"a.example"}},
		"negative max size": {Registry: reg, Auth: auth, MaxMessageBytes: -1},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := NewServer(cfg); err == nil {
				t.Fatal("NewServer accepted it")
			}
		})
	}
	s, err := NewServer(Config{Registry: reg, Auth: auth})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	c := s.cfg
	if c.QueueLen != DefaultQueueLen || c.CatchUpPage != DefaultCatchUpPage || c.PingInterval != DefaultPingInterval || c.PongWait != DefaultPongWait ||
		c.WriteWait != DefaultWriteWait || c.MaxMessageBytes != DefaultMaxMessageBytes || c.Logger == nil ||
		c.CatchUpWorkers != defaultCatchUpWorkers(runtime.GOMAXPROCS(0)) || cap(s.hub.slots) != c.CatchUpWorkers {
		t.Fatalf("got defaults %+v", c)
	}
}

// TestServer_UpgradeRejected checks every way to present a bad or misplaced
// token gets a JSON error, the right status and no upgrade.
func TestServer_UpgradeRejected(t *testing.T) {
	e := newTestEnv(t, nil)
	valid := e.token(t, "u1", RoleAdmin)
	type tc struct {
		query        string
		header       http.Header
		subprotocols []string
		status       int
		msg          string // substring of the error body
	}
	cases := map[string]tc{
		"missing":               {status: 401, msg: "missing token"},
		"basic scheme":          {header: http.Header{"Authorization": {"Basic dTpw"}}, status: 401, msg: "Bearer <token>"},
		"empty bearer":          {header: http.Header{"Authorization": {"Bearer "}}, status: 401, msg: "Bearer <token>"},
		"token in query":        {query: "?token=" + valid, header: bearer(valid), status: 400, msg: "Authorization: Bearer"},
		"access_token in query": {query: "?access_token=" + valid, status: 400, msg: "Authorization: Bearer"},
		"subprotocol sans v1":   {subprotocols: []string{"bearer." + valid}, status: 401, msg: "changecast.v1"},
		"subprotocol only v1":   {subprotocols: []string{wire.Subprotocol}, status: 401, msg: "missing token"},
		"subprotocol bad token": {subprotocols: []string{wire.Subprotocol, "bearer.abc.def.ghi"}, status: 401, msg: "invalid token"},
	}
	for name, r := range rejectedTokens(t) {
		cases["bearer "+name] = tc{header: bearer(r.token), status: 401, msg: r.want.Error()}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			conn, resp, body, err := e.dialRaw(t, e.wsURL()+c.query, c.header, c.subprotocols...)
			if err == nil || conn != nil {
				t.Fatal("upgrade succeeded")
			}
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
				t.Fatalf("got error %v, want a bad handshake with a response", err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("got status %d, want %d (body %s)", resp.StatusCode, c.status, body)
			}
			var got struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil || got.Error == "" {
				t.Fatalf("got body %q, want {\"error\": ...}", body)
			}
			if !strings.Contains(got.Error, c.msg) {
				t.Fatalf("got error %q, want it to mention %q", got.Error, c.msg)
			}
			if strings.Contains(string(body), valid) {
				t.Fatalf("body %s echoes the token", body)
			}
		})
	}
	if n := e.srv.Clients(); n != 0 {
		t.Fatalf("got %d clients, want 0", n)
	}
}

func TestServer_UpgradeBearer(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	if p := conn.Subprotocol(); p != "" {
		t.Fatalf("got subprotocol %q, want none", p)
	}
	e.publish([]entities.Change{marker()})
	expectKeys(t, conn, "pool/create/marker")
}

func TestServer_UpgradeSubprotocol(t *testing.T) {
	e := newTestEnv(t, nil)
	tok := e.token(t, "u1", RoleAdmin)
	conn, resp, body, err := e.dialRaw(t, e.wsURL(), nil, wire.Subprotocol, "bearer."+tok)
	if err != nil {
		t.Fatalf("dial: %v (body %s)", err, body)
	}
	if p := conn.Subprotocol(); p != wire.Subprotocol {
		t.Fatalf("got subprotocol %q, want %q", p, wire.Subprotocol)
	}
	if strings.Contains(resp.Header.Get("Sec-WebSocket-Protocol"), tok) {
		t.Fatal("server echoed the bearer subprotocol")
	}
	e.sendFilter(t, conn, `{"send-everything": true}`)
	e.publish([]entities.Change{marker()})
	expectKeys(t, conn, "pool/create/marker")
}

func TestServer_Origin(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.AllowedOrigins = []string{"https://Dash.Example:8443"} })
	tok := e.token(t, "u1", RoleAdmin)
	cases := map[string]struct {
		origin string
		ok     bool
	}{
		"none (non-browser)": {"", true},
		"same origin":        {e.ts.URL, true},
		"allowed":            {"https://dash.example:8443", true},
		"other":              {"https://evil.example", false},
		"allowed host, http": {"http://dash.example:8443", false},
		"null":               {"null", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h := bearer(tok)
			if c.origin != "" {
				h.Set("Origin", c.origin)
			}
			conn, resp, body, err := e.dialRaw(t, e.wsURL(), h)
			if c.ok {
				if err != nil {
					t.Fatalf("dial: %v (body %s)", err, body)
				}
				conn.Close()
				return
			}
			if err == nil {
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("got %v, want 403", resp)
			}
		})
	}
}

func getStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestServer_HealthReady(t *testing.T) {
	var ready atomic.Bool
	e := newTestEnv(t, func(c *Config) { c.Ready = ready.Load })
	if got := getStatus(t, e.ts.URL+"/healthz"); got != 200 {
		t.Fatalf("healthz: got %d, want 200", got)
	}
	if got := getStatus(t, e.ts.URL+"/readyz"); got != 503 {
		t.Fatalf("readyz before ready: got %d, want 503", got)
	}
	ready.Store(true)
	if got := getStatus(t, e.ts.URL+"/readyz"); got != 200 {
		t.Fatalf("readyz when ready: got %d, want 200", got)
	}
}

// TestServer_Close checks shutdown: control frame and close frame to every
// client, goroutines gone, readyz 503, healthz 200, new upgrades 503.
func TestServer_Close(t *testing.T) {
	e := newTestEnv(t, nil)
	a := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	b := e.dial(t, e.token(t, "u2", RoleViewer)) // no filter: still told
	waitFor(t, "both clients to register", func() bool { return e.srv.Clients() == 2 })
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		closed <- e.srv.Close(ctx)
	}()
	for _, conn := range []*websocket.Conn{a, b} {
		f := readFrame(t, conn)
		if f.key() != "events.control" || f.Args["type"] != string(wire.ControlShutdown) {
			t.Fatalf("got frame %+v, want shutdown control", f)
		}
		if code := expectClose(t, conn); code != websocket.CloseGoingAway {
			t.Fatalf("got close code %d, want %d", code, websocket.CloseGoingAway)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := e.srv.Clients(); n != 0 {
		t.Fatalf("got %d clients after Close, want 0", n)
	}
	if got := getStatus(t, e.ts.URL+"/readyz"); got != 503 {
		t.Fatalf("readyz after Close: got %d, want 503", got)
	}
	if got := getStatus(t, e.ts.URL+"/healthz"); got != 200 {
		t.Fatalf("healthz after Close: got %d, want 200", got)
	}
	_, resp, _, err := e.dialRaw(t, e.wsURL(), bearer(e.token(t, "u1", RoleAdmin)))
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after Close: got %v, %v, want 503", resp, err)
	}
	e.publish([]entities.Change{marker()}) // must not panic or block
}

// TestServer_CloseBounded checks Close honours its context when a client
// never answers the close handshake, and that the forced close still lets
// every goroutine exit.
func TestServer_CloseBounded(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.WriteWait = time.Hour })
	e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`) // never reads again
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.srv.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel2()
	if err := e.srv.Close(ctx2); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := e.srv.Clients(); n != 0 {
		t.Fatalf("got %d clients, want 0", n)
	}
}

func TestServer_TokenExpired(t *testing.T) {
	e := newTestEnv(t, nil)
	tok, err := e.auth.Mint(Claims{Role: RoleAdmin, RegisteredClaims: regClaims("u1")}, 2*time.Second)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	conn := e.dial(t, tok)
	f := readFrame(t, conn)
	if f.key() != "events.control" || f.Args["type"] != string(wire.ControlTokenExpired) {
		t.Fatalf("got frame %+v, want token-expired control", f)
	}
	if code := expectClose(t, conn); code != websocket.ClosePolicyViolation {
		t.Fatalf("got close code %d, want %d", code, websocket.ClosePolicyViolation)
	}
	waitFor(t, "client to be unregistered", func() bool { return e.srv.Clients() == 0 })
}

// TestServer_LogsNoToken checks connect and disconnect are logged with the
// user id and never with the token.
func TestServer_LogsNoToken(t *testing.T) {
	e := newTestEnv(t, nil)
	tok := e.token(t, "user-42", RoleAdmin)
	conn := e.dial(t, tok)
	sub, _, _, err := e.dialRaw(t, e.wsURL(), nil, wire.Subprotocol, "bearer."+tok)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	e.dialRaw(t, e.wsURL(), bearer(tok+"x")) // rejected
	conn.Close()
	sub.Close()
	waitFor(t, "disconnects", func() bool { return strings.Count(e.logs.String(), "websocket disconnected") == 2 })
	logs := e.logs.String()
	if !strings.Contains(logs, "user_id=user-42") {
		t.Fatalf("logs lack the user id:\n%s", logs)
	}
	for _, part := range strings.Split(tok, ".") {
		if strings.Contains(logs, part) {
			t.Fatalf("logs contain part of the token:\n%s", logs)
		}
	}
}
