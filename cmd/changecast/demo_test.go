package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// secretSet records every secret value the workload writes (its onSecret
// hook) so tests can look for them in bytes that leave changecast.
type secretSet struct {
	mu   sync.Mutex
	vals []string
}

func (s *secretSet) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals = append(s.vals, v)
}

func (s *secretSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vals)
}

// in returns the first recorded secret that b contains, or "".
func (s *secretSet) in(b []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vals {
		if bytes.Contains(b, []byte(v)) {
			return v
		}
	}
	return ""
}

func TestDemo_RateValidation(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate", "0"}, "--rate 0: want changes per second from 1 to 10000"},
		{[]string{"--rate", "-5"}, "--rate -5: want changes per second from 1 to 10000"},
		{[]string{"--rate", "10001"}, "--rate 10001: want changes per second from 1 to 10000"},
		{[]string{"--rate", "fast"}, `invalid value "fast" for flag -rate`},
		{[]string{"--seed", "-1"}, `invalid value "-1" for flag -seed`},
		{[]string{"now"}, `unexpected argument "now"`},
	} {
		var o, e bytes.Buffer
		args := append([]string{"demo", "--data-dir", dataDir}, tc.args...)
		err := run(context.Background(), args, &o, &e)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want it to contain %q", tc.args, err, tc.want)
			continue
		}
		if code := exitCode(err, io.Discard); code != 2 {
			t.Errorf("%v: exit code %d, want 2", tc.args, code)
		}
		if o.Len() != 0 {
			t.Errorf("%v: stdout %q, want nothing", tc.args, o.String())
		}
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected command line touched the data dir (stat: %v)", err)
	}
	for _, rate := range []string{"1", "10000"} {
		cfg, err := parseDemoFlags([]string{"--rate", rate}, io.Discard)
		if err != nil || strconv.Itoa(cfg.rate) != rate {
			t.Errorf("--rate %s: got rate %d, err %v; want it accepted", rate, cfg.rate, err)
		}
	}
	if cfg, _ := parseDemoFlags(nil, io.Discard); cfg.rate != defaultDemoRate || cfg.serve.listen != envOr(envListen, defaultListen) {
		t.Errorf("defaults: rate %d listen %q, want %d and serve's default", cfg.rate, cfg.serve.listen, defaultDemoRate)
	}
}

var demoTailRE = regexp.MustCompile(`tail: +CHANGECAST_TOKEN=(\S+) changecast tail --server http://(\S+)\n`)

// TestDemo_EndToEnd runs the demo on a fresh embedded PostgreSQL, watches
// it as an admin from the first change on, and stops it as Ctrl-C would.
func TestDemo_EndToEnd(t *testing.T) {
	dataDir := traversableDir(t)
	cfg, err := parseDemoFlags([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir, "--rate", "500", "--seed", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var secrets secretSet
	cfg.onSecret = secrets.add
	stdout, logs := &syncBuffer{}, &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- demo(ctx, cfg, stdout, log) }()
	pidFile := filepath.Join(dataDir, "postgres", "pgdata", "postmaster.pid")
	stopped := false
	t.Cleanup(func() {
		cancel()
		if !stopped {
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("demo did not stop within 30s of cancel\nlogs:\n%s", logs.String())
			}
		}
		killLeftoverPostgres(pidFile)
	})

	// The banner: the tail line carries the token and the address.
	var m []string
	deadline := time.Now().Add(60 * time.Second)
	for m == nil {
		m = demoTailRE.FindStringSubmatch(stdout.String())
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("demo returned early: %v\nstdout:\n%s\nlogs:\n%s", err, stdout.String(), logs.String())
		case <-time.After(20 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tail command printed within 60s\nstdout:\n%s\nlogs:\n%s", stdout.String(), logs.String())
		}
	}
	token, addr := m[1], m[2]
	out := stdout.String()
	for _, want := range []string{
		"ws://" + addr + "/api/v1/ws/events",
		"  token:     " + token + " ",
		"  psql:      PGPASSFILE=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 6 {
		t.Errorf("banner has %d lines, want a few:\n%s", n, out)
	}

	// since=0 replays the journal from the start, so the setup rows the
	// workload wrote before this client connected arrive too.
	h := http.Header{"Authorization": {"Bearer " + token}}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/api/v1/ws/events?since=0", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial with the printed token: %v (status %d)", err, status)
	}
	defer ws.Close()
	sendJSON(t, ws, `{"send-everything": true}`)

	want := map[string][]string{"instance": {"create", "update", "delete"}, "job": {"create", "update"}, "github_credentials": {"create", "update"}}
	for _, et := range entities.Builtins() {
		if len(want[et.Name]) == 0 {
			want[et.Name] = []string{"create"}
		}
	}
	if len(want) != 16 { // GARM's entity list
		t.Fatalf("%d built-in entity types, want 16", len(want))
	}
	seen := map[string]map[string]int{}
	missing := func() []string {
		var out []string
		for et, ops := range want {
			for _, op := range ops {
				if seen[et][op] == 0 {
					out = append(out, et+":"+op)
				}
			}
		}
		sort.Strings(out)
		return out
	}
	frames := 0
	deadline = time.Now().Add(60 * time.Second)
	for len(missing()) > 0 {
		ws.SetReadDeadline(deadline)
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read after %d frames: %v; still missing %v; seen %v\nlogs:\n%s", frames, err, missing(), seen, logs.String())
		}
		frames++
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame is not JSON: %v: %s", err, b)
		}
		if f.Namespace == "error" {
			t.Fatalf("error frame: %s", b)
		}
		if f.EntityType == "" || f.EntityType == "event" {
			continue // control frames, system events
		}
		if s := secrets.in(b); s != "" {
			t.Fatalf("%s %s frame leaks a secret the workload wrote: %s", f.EntityType, f.Operation, b)
		}
		et, err := testRegistry.Lookup(f.EntityType)
		if err != nil {
			t.Fatalf("frame of unknown entity type: %s", b)
		}
		for _, col := range et.Secrets {
			_, inPayload := f.Payload[col]
			_, inPrevious := f.Previous[col]
			if inPayload || inPrevious {
				t.Fatalf("%s %s frame carries secret column %s: %s", f.EntityType, f.Operation, col, b)
			}
		}
		if seen[f.EntityType] == nil {
			seen[f.EntityType] = map[string]int{}
		}
		seen[f.EntityType][f.Operation]++
	}
	t.Logf("every entity type seen after %d frames: %v", frames, seen)
	if n := secrets.len(); n < 15 {
		t.Errorf("the workload recorded %d secrets, want at least 15 (credentials, webhooks, users, instances, templates, file objects, proxies)", n)
	}

	// Ctrl-C: the workload stops, then serve, then PostgreSQL.
	cancel()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Fatalf("demo returned %v after cancel, want nil\nlogs:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("demo did not return within 30s of cancel\nlogs:\n%s", logs.String())
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("embedded PostgreSQL still running after demo returned (stat %s: %v)", pidFile, err)
	}
	if s := secrets.in([]byte(stdout.String() + logs.String())); s != "" {
		t.Errorf("stdout or logs contain a secret the workload wrote")
	}
	if strings.Contains(logs.String(), "demo workload paused") {
		t.Errorf("the workload paused on a healthy database:\n%s", logs.String())
	}
}

// killLeftoverPostgres stops a postmaster a failed test left behind.
func killLeftoverPostgres(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGQUIT)
	}
}

// migratedDatabase returns a fresh database with changecast's tables.
func migratedDatabase(t testing.TB) string {
	t.Helper()
	url := storetest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, entities.DefaultRegistry()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return url
}

// workloadRun is a workload running in its own goroutine.
type workloadRun struct {
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns; err is then set
	err    error
}

// runWorkload runs a workload on url; t.Cleanup stops it.
func runWorkload(t testing.TB, url string, rate int, secrets *secretSet) *workloadRun {
	t.Helper()
	r := &workloadRun{logs: &syncBuffer{}, done: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := newWorkload(url, rate, 1, log, secrets.add)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = w.run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() { r.wait(t, true) })
	return r
}

// wait returns run's result, after cancelling it if cancel is set. It
// fails the test if run does not return within 10s.
func (r *workloadRun) wait(t testing.TB, cancel bool) error {
	t.Helper()
	if cancel {
		r.cancel()
	}
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("workload did not return within 10s (cancelled: %v)\nlogs:\n%s", cancel, r.logs.String())
		return nil
	}
}

func TestDemoWorkload_ResumesAfterLostConnection(t *testing.T) {
	url := migratedDatabase(t)
	var secrets secretSet
	wr := runWorkload(t, url, 1000, &secrets)
	logs := wr.logs
	db := connect(t, url)
	count := func(sql string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(context.Background(), sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	poll := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s\nlogs:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	poll("instances created", func() bool { return count(`SELECT count(*) FROM instances`) > 0 })

	// What a PostgreSQL restart does to the workload's session.
	var killed int
	if err := db.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
		demoAppName).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminate the workload's session: killed %d, err %v; want 1", killed, err)
	}
	poll("workload resumed", func() bool { return strings.Contains(logs.String(), "demo workload resumed") })
	if n := count(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'changecast demo' AND datname = current_database()`); n != 1 {
		t.Fatalf("%d workload sessions after resume, want 1", n)
	}
	if err := wr.wait(t, true); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
	l := logs.String()
	if n := strings.Count(l, "demo workload paused"); n != 1 {
		t.Errorf("logged the pause %d times, want once:\n%s", n, l)
	}
	if s := secrets.in([]byte(l)); s != "" {
		t.Errorf("logs contain a secret the workload wrote:\n%s", l)
	}
	if count(`SELECT count(*) FROM users`) != 2 || count(`SELECT count(*) FROM pools`) != 6 {
		t.Errorf("setup rows: want 2 users and 6 pools")
	}
}

func TestDemoWorkload_MissingTablesEndIt(t *testing.T) {
	url := storetest.NewDatabase(t) // no migration: no tables
	var secrets secretSet
	err := runWorkload(t, url, 1000, &secrets).wait(t, false) // fails on its first tick
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if err == nil || !strings.Contains(err.Error(), `relation "jobs" does not exist`) || !strings.Contains(err.Error(), "empty --data-dir") {
		t.Fatalf("err %v, want it to name the missing table and say to start with an empty --data-dir", err)
	}
}

func TestDemoWorkload_ErrorsHideSecrets(t *testing.T) {
	url := storetest.NewDatabase(t)
	w := newWorkload(url, 10, 1, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	w.conn = conn
	defer w.disconnect()
	sec := w.newPAT()
	for _, sql := range []string{
		`SELECT $1::text::uuid`, // the server quotes the value in its error
		`SELECT $1::uuid`,       // pgx fails to encode it, quoting the value
	} {
		_, raw := conn.Exec(context.Background(), sql, sec)
		if raw == nil {
			t.Fatalf("%s: no error", sql)
		}
		err := w.exec(context.Background(), "probe", []string{sec}, sql, sec)
		var we *workloadError
		if !errors.As(err, &we) {
			t.Fatalf("%s: got %T %v, want a workloadError", sql, err, err)
		}
		if strings.Contains(err.Error(), sec) {
			t.Errorf("%s: error shows the secret: %v", sql, err)
		}
		if strings.Contains(raw.Error(), sec) && !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("%s: error %v, want the secret replaced by [redacted]", sql, err)
		}
		if we.retry {
			t.Errorf("%s: classified retryable; a bad value never fixes itself", sql)
		}
	}
}
