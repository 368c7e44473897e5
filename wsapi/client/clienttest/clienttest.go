// Package clienttest runs a real changecast WebSocket server for tests of
// programs built on package client: a wsapi.Server behind an httptest
// server, fed by Publish, with an in-memory journal that outlives restarts,
// so resume (?since=) works across Stop and Start exactly as against
// "changecast serve" (whose journal lives in PostgreSQL). Nothing is mocked:
// clients talk real WebSocket to the real hub.
package clienttest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wsapi"
)

// secret signs the test server's tokens; tests only.
var secret = []byte("clienttest-secret-0123456789abcdefghijklmn")

// Server is a restartable changecast WebSocket server on a fixed address.
// Its methods are safe for concurrent use.
type Server struct {
	t       testing.TB
	auth    *wsapi.Auth
	journal *Journal
	logs    io.Writer
	tweak   func(*wsapi.Config)

	mu struct {
		sync.Mutex
		addr string // host:port, kept across restarts
		srv  *wsapi.Server
		ts   *httptest.Server
		ln   *trackingListener
	}
}

// Option adjusts a Server.
type Option func(*Server)

// WithConfig adjusts the wsapi.Config of every server instance started
// (e.g. a small QueueLen).
func WithConfig(f func(*wsapi.Config)) Option { return func(s *Server) { s.tweak = f } }

// WithLogs sends the server's logs to w (default: discarded).
func WithLogs(w io.Writer) Option { return func(s *Server) { s.logs = w } }

// New starts a server on 127.0.0.1 with an empty journal; t's cleanup
// stops it.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	auth, err := wsapi.NewAuth(secret)
	if err != nil {
		t.Fatalf("clienttest: %v", err)
	}
	s := &Server{t: t, auth: auth, journal: &Journal{}, logs: io.Discard}
	for _, o := range opts {
		o(s)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL returns the server's base URL, http://127.0.0.1:port; it stays the
// same across restarts.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.mu.addr
}

// Journal returns the server's journal.
func (s *Server) Journal() *Journal { return s.journal }

// Token mints a one-hour token for user sub with role and optional scope.
func (s *Server) Token(sub string, role wsapi.Role, scope ...string) string {
	return s.TokenTTL(sub, role, time.Hour, scope...)
}

// TokenTTL mints a token that expires after ttl.
func (s *Server) TokenTTL(sub string, role wsapi.Role, ttl time.Duration, scope ...string) string {
	s.t.Helper()
	tok, err := s.auth.Mint(wsapi.Claims{Name: sub, Role: role, Scope: scope, RegisteredClaims: jwt.RegisteredClaims{Subject: sub}}, ttl)
	if err != nil {
		s.t.Fatalf("clienttest: mint token: %v", err)
	}
	return tok
}

// Publish journals changes (assigning their cursors) and, while the server
// runs, publishes them to its clients, as changecast's journal appender
// does. While stopped, changes are only journaled: a client resuming after
// Start receives them from the journal. It returns the changes with their
// cursors.
func (s *Server) Publish(changes ...entities.Change) []entities.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	head, out := s.journal.append(changes)
	if s.mu.srv != nil {
		s.mu.srv.Publish(head, slices.Clone(out))
	}
	return out
}

// Start starts a new server instance on the address of the previous one
// (a fresh one the first time), as a restarted "changecast serve" would,
// with the same journal and token secret. Start on a running server does
// nothing.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.srv != nil {
		return
	}
	cfg := wsapi.Config{
		Registry: entities.DefaultRegistry(),
		Auth:     s.auth,
		Journal:  s.journal,
		Logger:   slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if s.tweak != nil {
		s.tweak(&cfg)
	}
	srv, err := wsapi.NewServer(cfg)
	if err != nil {
		s.t.Fatalf("clienttest: new server: %v", err)
	}
	srv.Publish(s.journal.Head(), nil)
	addr := s.mu.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var inner net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The old listener is closed; its port may take a moment to
		// be free again.
		inner, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	if err != nil {
		s.t.Fatalf("clienttest: listen on %s: %v", addr, err)
	}
	ln := &trackingListener{Listener: inner}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	s.mu.addr = inner.Addr().String()
	s.mu.srv, s.mu.ts, s.mu.ln = srv, ts, ln
}

// Stop shuts the server down as "changecast serve" does on SIGTERM: every
// client gets a shutdown control frame and a close, then the listener
// closes. The journal is kept. Stop on a stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.mu.srv.Close(ctx); err != nil {
		s.t.Errorf("clienttest: close server: %v", err)
	}
	s.mu.ts.Close()
	s.mu.srv, s.mu.ts, s.mu.ln = nil, nil, nil
}

// Restart is Stop then Start.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// DropConnections closes every client's TCP connection at once, without
// a shutdown or close frame, as a network failure or a crash would. The
// server keeps running.
func (s *Server) DropConnections() {
	s.mu.Lock()
	ln := s.mu.ln
	s.mu.Unlock()
	if ln != nil {
		ln.closeAll()
	}
}

// Clients returns the number of clients connected to the running
// instance (0 when stopped).
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.srv == nil {
		return 0
	}
	return s.mu.srv.Clients()
}

// trackingListener remembers accepted connections so DropConnections can
// cut them (a hijacked WebSocket is the same net.Conn).
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Journal is an in-memory wsapi.Journal: every published change, in cursor
// order. Trim removes old ones, as retention does.
type Journal struct {
	mu      sync.Mutex
	rows    []entities.Change
	last    int64
	horizon int64
}

func (j *Journal) append(changes []entities.Change) (int64, []entities.Change) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]entities.Change, len(changes))
	for i, c := range changes {
		j.last++
		c.Cursor = j.last
		out[i] = c
	}
	j.rows = append(j.rows, out...)
	return j.last, out
}

// Head returns the highest cursor assigned.
func (j *Journal) Head() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Trim removes every change with cursor <= upTo.
func (j *Journal) Trim(upTo int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.horizon = max(j.horizon, upTo)
	i, _ := slices.BinarySearchFunc(j.rows, upTo+1, func(c entities.Change, cur int64) int { return cmp.Compare(c.Cursor, cur) })
	j.rows = j.rows[i:]
}

// ReadAfter implements wsapi.Journal.
func (j *Journal) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if after < j.horizon {
		return nil, fmt.Errorf("read journal after cursor %d: expired (retention removed up to %d)", after, j.horizon)
	}
	i, _ := slices.BinarySearchFunc(j.rows, after+1, func(c entities.Change, cur int64) int { return cmp.Compare(c.Cursor, cur) })
	var out []entities.Change
	for ; i < len(j.rows) && len(out) < limit; i++ {
		if types == nil || slices.Contains(types, j.rows[i].EntityType) {
			out = append(out, j.rows[i])
		}
	}
	return out, nil
}

// Horizon implements wsapi.Journal.
func (j *Journal) Horizon(context.Context) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.horizon, nil
}
