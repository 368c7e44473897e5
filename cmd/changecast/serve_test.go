package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// syncBuffer is safe to read while other goroutines write to it.
type syncBuffer = testutil.SyncBuffer

// instance is one running "changecast serve".
type instance struct {
	addr   string
	stdout *syncBuffer
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when serve returns; err is then set
	err    error
}

// stop shuts serve down as a signal would and waits for it.
func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.cancel()
	select {
	case <-in.done:
		if in.err != nil {
			t.Fatalf("serve returned %v\nlogs:\n%s", in.err, in.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop within 30s\nlogs:\n%s", in.logs.String())
	}
}

var servingRE = regexp.MustCompile(`serving on http://(\S+) `)

// startServe runs serve in-process. beforeWatch, if not nil, runs after the
// listener is up and before the watcher starts.
func startServe(t testing.TB, cfg serveConfig, beforeWatch func(addr string)) *instance {
	t.Helper()
	if cfg.listen == "" {
		cfg.listen = "127.0.0.1:0"
	}
	if cfg.slot == "" {
		cfg.slot = "changecast"
	}
	if cfg.domain == "" && cfg.configPath == "" && len(cfg.tables) == 0 {
		cfg.domain = domainGARM // these tests watch the built-in domain
	}
	cfg.beforeWatch = beforeWatch
	in := &instance{stdout: &syncBuffer{}, logs: &syncBuffer{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	log := slog.New(slog.NewTextHandler(in.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		in.err = serve(ctx, cfg, in.stdout, log)
		close(in.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			// The server's side of a failure: its last log lines.
			logs := in.logs.String()
			t.Logf("server logs (last 16 KiB):\n%s", logs[max(0, len(logs)-16<<10):])
		}
		cancel()
		select {
		case <-in.done:
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of cancel\nlogs:\n%s", in.logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(in.stdout.String()); m != nil {
			in.addr = m[1]
			break
		}
		select {
		case <-in.done:
			t.Fatalf("serve exited early: %v\nlogs:\n%s", in.err, in.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start within 60s\nlogs:\n%s", in.logs.String())
		}
	}
	return in
}

// readyServer runs serve on a fresh database with its own replication slot
// and returns once the watcher is streaming, with the database URL and the
// data dir (for minting tokens). tweaks adjust the configuration.
func readyServer(t testing.TB, slot string, tweaks ...func(*serveConfig)) (srv *instance, url, dataDir string) {
	t.Helper()
	return readyServerAt(t, storetest.NewDatabase(t), slot, tweaks...)
}

// readyServerAt is readyServer on the database at url.
func readyServerAt(t testing.TB, url, slot string, tweaks ...func(*serveConfig)) (srv *instance, _, dataDir string) {
	t.Helper()
	dataDir = t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: slot}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	srv = startServe(t, cfg, nil)
	srv.waitReady(t)
	return srv, url, dataDir
}

// waitReady polls /readyz until the watcher is streaming.
func (in *instance) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + in.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("/readyz never became 200\nlogs:\n%s", in.logs.String())
}

func mintToken(t testing.TB, dataDir, role string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--data-dir", dataDir, "--user", "tester", "--role", role}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func dialWS(t testing.TB, addr, token string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/api/v1/ws/events", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sendJSON(t testing.TB, c *websocket.Conn, v string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(v)); err != nil {
		t.Fatalf("write %s: %v", v, err)
	}
}

type frame struct {
	raw        []byte
	EntityType string         `json:"entity-type"`
	Operation  string         `json:"operation"`
	Payload    map[string]any `json:"payload"`
	Previous   map[string]any `json:"previous"`
	Committed  string         `json:"committed-at"`
	Namespace  string         `json:"namespace"`
}

func readFrame(t testing.TB, c *websocket.Conn, within time.Duration) frame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame is not JSON: %v: %s", err, b)
	}
	f.raw = b
	return f
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// queryRows runs query and collects its rows with to, failing t on any
// error.
func queryRows[T any](t testing.TB, c *pgx.Conn, to pgx.RowToFunc[T], query string, args ...any) []T {
	t.Helper()
	rows, err := c.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	out, err := pgx.CollectRows(rows, to)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func exec1(t testing.TB, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// sqlCase is one entity type's insert, update and delete, written as an
// operator would in psql. Every secret column holds a canary that must never
// appear in a frame.
type sqlCase struct {
	entity, key         string
	insert, update, del string
	checkCol            string // a non-secret column whose new value the update sets
	checkVal            any
	canaries            []string
}

func entityCases() []sqlCase {
	u := func(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }
	return []sqlCase{
		{"repository", u(1),
			`INSERT INTO repositories (id, owner, name, webhook_secret) VALUES ('` + u(1) + `', 'acme', 'rockets', 'CANARY-repo-hook-1')`,
			`UPDATE repositories SET name = 'rockets2', webhook_secret = 'CANARY-repo-hook-2' WHERE id = '` + u(1) + `'`,
			`DELETE FROM repositories WHERE id = '` + u(1) + `'`, "name", "rockets2", []string{"CANARY-repo-hook-1", "CANARY-repo-hook-2"}},
		{"organization", u(2),
			`INSERT INTO organizations (id, name, webhook_secret) VALUES ('` + u(2) + `', 'acme', 'CANARY-org-hook-1')`,
			`UPDATE organizations SET name = 'acme2' WHERE id = '` + u(2) + `'`,
			`DELETE FROM organizations WHERE id = '` + u(2) + `'`, "name", "acme2", []string{"CANARY-org-hook-1"}},
		{"enterprise", u(3),
			`INSERT INTO enterprises (id, name, webhook_secret) VALUES ('` + u(3) + `', 'bigco', 'CANARY-ent-hook-1')`,
			`UPDATE enterprises SET name = 'bigco2', webhook_secret = 'CANARY-ent-hook-2' WHERE id = '` + u(3) + `'`,
			`DELETE FROM enterprises WHERE id = '` + u(3) + `'`, "name", "bigco2", []string{"CANARY-ent-hook-1", "CANARY-ent-hook-2"}},
		{"pool", u(4),
			`INSERT INTO pools (id, provider_name, image, max_runners, tags, enabled, cost_per_hour, extra_specs) VALUES ('` + u(4) + `', 'lxd', 'ubuntu:24.04', 5, '{self-hosted,linux}', true, 0.1250, '{"disk": 9007199254740993}')`,
			`UPDATE pools SET max_runners = 7 WHERE id = '` + u(4) + `'`,
			`DELETE FROM pools WHERE id = '` + u(4) + `'`, "max_runners", float64(7), nil},
		{"user", u(5),
			`INSERT INTO users (id, username, email, password, generation) VALUES ('` + u(5) + `', 'ada', 'ada@example.com', 'CANARY-user-hash-1', 424242001)`,
			`UPDATE users SET email = 'ada@example.org', password = 'CANARY-user-hash-2', generation = 424242002 WHERE id = '` + u(5) + `'`,
			`DELETE FROM users WHERE id = '` + u(5) + `'`, "email", "ada@example.org", []string{"CANARY-user-hash-1", "CANARY-user-hash-2", "424242001", "424242002"}},
		{"instance", u(6),
			`INSERT INTO instances (id, name, status, jit_configuration, callback_token, addresses) VALUES ('` + u(6) + `', 'runner-1', 'creating', 'CANARY-jit-1', 'CANARY-cb-1', '[{"type":"public","address":"10.0.0.1"}]')`,
			`UPDATE instances SET status = 'running', heartbeat = '2026-11-23 10:00:00.123456+00' WHERE id = '` + u(6) + `'`,
			`DELETE FROM instances WHERE id = '` + u(6) + `'`, "status", "running", []string{"CANARY-jit-1", "CANARY-cb-1"}},
		{"job", "4711",
			`INSERT INTO jobs (id, run_id, status, labels, duration_seconds) VALUES (4711, 99, 'queued', '{ubuntu-latest}', 12.500)`,
			`UPDATE jobs SET status = 'completed', conclusion = 'success' WHERE id = 4711`,
			`DELETE FROM jobs WHERE id = 4711`, "status", "completed", nil},
		{"controller", u(8),
			`INSERT INTO controllers (id, hostname, callback_url) VALUES ('` + u(8) + `', 'garm-1', 'https://garm.example.com/callbacks')`,
			`UPDATE controllers SET hostname = 'garm-2' WHERE id = '` + u(8) + `'`,
			`DELETE FROM controllers WHERE id = '` + u(8) + `'`, "hostname", "garm-2", nil},
		{"github_credentials", u(9),
			`INSERT INTO github_credentials (id, name, payload) VALUES ('` + u(9) + `', 'ci-pat', '{"token": "CANARY-pat-1", "nested": {"private_key": "CANARY-key-1"}}')`,
			`UPDATE github_credentials SET description = 'rotated', payload = '{"token": "CANARY-pat-2"}' WHERE id = '` + u(9) + `'`,
			`DELETE FROM github_credentials WHERE id = '` + u(9) + `'`, "description", "rotated", []string{"CANARY-pat-1", "CANARY-key-1", "CANARY-pat-2"}},
		{"github_endpoint", "ghes",
			`INSERT INTO github_endpoints (name, base_url, ca_cert_bundle) VALUES ('ghes', 'https://ghes.example.com', '\x0102')`,
			`UPDATE github_endpoints SET description = 'on-prem' WHERE name = 'ghes'`,
			`DELETE FROM github_endpoints WHERE name = 'ghes'`, "description", "on-prem", nil},
		{"scaleset", "4712",
			`INSERT INTO scalesets (id, name, provider_name, max_runners, extra_specs) VALUES (4712, 'ubuntu-scale', 'lxd', 3, '{"disk": 20}')`,
			`UPDATE scalesets SET state = 'active', desired_runner_count = 2 WHERE id = 4712`,
			`DELETE FROM scalesets WHERE id = 4712`, "state", "active", nil},
		{"gitea_credentials", u(12),
			`INSERT INTO gitea_credentials (id, name, endpoint_name, payload) VALUES ('` + u(12) + `', 'gitea-pat', 'gitea.example.com', '{"token": "CANARY-gitea-pat-1", "nested": {"private_key": "CANARY-gitea-key-1"}}')`,
			`UPDATE gitea_credentials SET description = 'rotated', payload = '{"token": "CANARY-gitea-pat-2"}' WHERE id = '` + u(12) + `'`,
			`DELETE FROM gitea_credentials WHERE id = '` + u(12) + `'`, "description", "rotated", []string{"CANARY-gitea-pat-1", "CANARY-gitea-key-1", "CANARY-gitea-pat-2"}},
		{"template", "4713",
			`INSERT INTO templates (id, name, data) VALUES (4713, 'linux-github', '#!/bin/sh
docker login -p CANARY-tpl-data-1 registry.example.com')`,
			`UPDATE templates SET description = 'with registry login', data = '#!/bin/sh
export GH_TOKEN=CANARY-tpl-data-2' WHERE id = 4713`,
			`DELETE FROM templates WHERE id = 4713`, "description", "with registry login", []string{"CANARY-tpl-data-1", "CANARY-tpl-data-2"}},
		{"file_object", "4714",
			`INSERT INTO file_objects (id, name, size, sha256, content) VALUES (4714, 'kubeconfig', 20, 'abc123', convert_to('CANARY-file-content-1', 'UTF8'))`,
			`UPDATE file_objects SET description = 'cluster access', content = convert_to('CANARY-file-content-2', 'UTF8') WHERE id = 4714`,
			`DELETE FROM file_objects WHERE id = 4714`, "description", "cluster access",
			[]string{"CANARY-file-content-1", "CANARY-file-content-2", b64("CANARY-file-content-1"), b64("CANARY-file-content-2")}},
		{"forge_instance", u(15),
			`INSERT INTO forge_instances (id, endpoint_name, webhook_secret) VALUES ('` + u(15) + `', 'gitea.example.com', 'CANARY-forge-hook-1')`,
			`UPDATE forge_instances SET pool_balancer_type = 'pack', webhook_secret = 'CANARY-forge-hook-2' WHERE id = '` + u(15) + `'`,
			`DELETE FROM forge_instances WHERE id = '` + u(15) + `'`, "pool_balancer_type", "pack", []string{"CANARY-forge-hook-1", "CANARY-forge-hook-2"}},
		{"proxy", "4716",
			`INSERT INTO proxies (id, name, http_proxy, https_proxy, no_proxy, credentials) VALUES (4716, 'corp', 'http://ci:CANARY-proxy-url-1@proxy.example.com:3128', 'http://ci:CANARY-proxy-url-2@proxy.example.com:3128', 'localhost,.internal', '{"username": "ci", "password": "CANARY-proxy-pass-1"}')`,
			`UPDATE proxies SET no_proxy = 'localhost', https_proxy = 'http://ci:CANARY-proxy-url-3@proxy.example.com:3129' WHERE id = 4716`,
			`DELETE FROM proxies WHERE id = 4716`, "no_proxy", "localhost", []string{"CANARY-proxy-url-1", "CANARY-proxy-url-2", "CANARY-proxy-url-3", "CANARY-proxy-pass-1"}},
	}
}

// b64 is how a bytea canary would appear in a frame: base64.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestServe_EveryEntityType(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_every")
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": true}`)
	db := connect(t, url)

	for _, tc := range entityCases() {
		t.Run(tc.entity, func(t *testing.T) {
			for i, step := range []struct {
				sql string
				op  string
			}{{tc.insert, "create"}, {tc.update, "update"}, {tc.del, "delete"}} {
				exec1(t, db, step.sql)
				f, _ := readChange(t, ws, 10*time.Second) // skips the started system event
				for _, c := range tc.canaries {
					if bytes.Contains(f.raw, []byte(c)) {
						t.Fatalf("%s frame leaks secret %q: %s", step.op, c, f.raw)
					}
				}
				if f.EntityType != tc.entity || f.Operation != step.op {
					t.Fatalf("step %d: got %s %s, want %s %s: %s", i, f.EntityType, f.Operation, tc.entity, step.op, f.raw)
				}
				et, _ := testRegistry.Lookup(tc.entity)
				if got := fmt.Sprint(f.Payload[et.Key]); got != tc.key {
					t.Fatalf("%s payload key %s = %q, want %q", step.op, et.Key, got, tc.key)
				}
				for _, s := range et.Secrets {
					if _, ok := f.Payload[s]; ok {
						t.Fatalf("%s payload has secret column %s", step.op, s)
					}
					if _, ok := f.Previous[s]; ok {
						t.Fatalf("%s previous has secret column %s", step.op, s)
					}
				}
				switch step.op {
				case "update":
					if got := f.Payload[tc.checkCol]; got != tc.checkVal {
						t.Fatalf("update payload %s = %#v, want %#v", tc.checkCol, got, tc.checkVal)
					}
					if f.Previous == nil || f.Previous[tc.checkCol] == tc.checkVal {
						t.Fatalf("update previous %s = %#v, want the old value", tc.checkCol, f.Previous[tc.checkCol])
					}
				case "delete":
					if got := f.Payload[tc.checkCol]; got != tc.checkVal {
						t.Fatalf("delete payload (previous row) %s = %#v, want %#v", tc.checkCol, got, tc.checkVal)
					}
				}
				if _, err := time.Parse(time.RFC3339Nano, f.Committed); err != nil {
					t.Fatalf("committed-at %q: %v", f.Committed, err)
				}
			}
		})
	}
}

func TestServe_TypedPayload(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_typed")
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "pool", "operations": ["create"]}]}`)
	db := connect(t, url)
	exec1(t, db, `INSERT INTO pools (id, provider_name, max_runners, tags, enabled, cost_per_hour, extra_specs, created_at)
		VALUES ('00000000-0000-4000-8000-000000000042', 'lxd', 5, '{a,"b c"}', false, 12.3400, '{"big": 9007199254740993}', '2026-11-23 10:00:00.123456+00')`)
	f := readFrame(t, ws, 10*time.Second)
	// Decode numbers exactly to check nothing went through float64.
	var p map[string]json.RawMessage
	var env struct {
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(f.raw, &env); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id":            `"00000000-0000-4000-8000-000000000042"`,
		"max_runners":   `5`,
		"tags":          `["a","b c"]`,
		"enabled":       `false`,
		"cost_per_hour": `12.3400`,
		"extra_specs":   `{"big":9007199254740993}`,
		"created_at":    `"2026-11-23T10:00:00.123456Z"`,
		"repo_id":       `null`,
	}
	for k, v := range want {
		if got := string(p[k]); got != v {
			t.Errorf("payload %s = %s, want %s", k, got, v)
		}
	}
}

func TestServe_TransactionsInCommitOrder(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_order")
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "controller"}]}`)
	a, b := connect(t, url), connect(t, url)

	// A rolled-back transaction produces nothing: the first frame is the
	// marker committed after it.
	exec1(t, a, "BEGIN")
	exec1(t, a, "INSERT INTO controllers (hostname) VALUES ('rolled-back')")
	exec1(t, a, "ROLLBACK")
	exec1(t, b, "INSERT INTO controllers (hostname) VALUES ('marker')")
	if f := readFrame(t, ws, 10*time.Second); f.Payload["hostname"] != "marker" {
		t.Fatalf("first frame %s, want the marker (rolled-back row leaked?)", f.raw)
	}

	// Interleaved: A starts first but commits last, so B's rows come first;
	// each transaction's rows arrive together and in statement order.
	exec1(t, a, "BEGIN")
	exec1(t, a, "INSERT INTO controllers (hostname) VALUES ('a1')")
	exec1(t, b, "BEGIN")
	exec1(t, b, "INSERT INTO controllers (hostname) VALUES ('b1')")
	exec1(t, a, "INSERT INTO controllers (hostname) VALUES ('a2')")
	exec1(t, b, "INSERT INTO controllers (hostname) VALUES ('b2')")
	exec1(t, b, "UPDATE controllers SET hostname = 'b3' WHERE hostname = 'b2'")
	exec1(t, b, "COMMIT")
	exec1(t, a, "INSERT INTO controllers (hostname) VALUES ('a3')")
	exec1(t, a, "COMMIT")
	var got []string
	for range 6 {
		f := readFrame(t, ws, 10*time.Second)
		got = append(got, f.Operation+":"+fmt.Sprint(f.Payload["hostname"]))
	}
	want := []string{"create:b1", "create:b2", "update:b3", "create:a1", "create:a2", "create:a3"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestServe_RestartDeliversChangesCommittedWhileDown(t *testing.T) {
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_restart"}
	token := mintToken(t, dataDir, "admin")
	db := connect(t, url)

	subscribe := func(addr string) *websocket.Conn {
		ws := dialWS(t, addr, token)
		sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "enterprise"}]}`)
		filterApplied(t, ws)
		return ws
	}

	first := startServe(t, cfg, nil)
	first.waitReady(t)
	ws := subscribe(first.addr)
	exec1(t, db, "INSERT INTO enterprises (name) VALUES ('before')")
	if f := readFrame(t, ws, 10*time.Second); f.Payload["name"] != "before" {
		t.Fatalf("got %s, want 'before'", f.raw)
	}
	first.stop(t)

	exec1(t, db, "INSERT INTO enterprises (name) VALUES ('while-down-1')")
	exec1(t, db, "BEGIN; INSERT INTO enterprises (name) VALUES ('while-down-2'); UPDATE enterprises SET name = 'while-down-3' WHERE name = 'while-down-2'; COMMIT")

	// The client subscribes before the watcher starts, so it sees what the
	// slot held. Without the journal there is nothing to replay from for a
	// client that connects later; that is cursor resume (docs/protocol.md,
	// "Resuming").
	// startServe returns once serve prints its address, which can be
	// before the hook has run: wait for the subscription.
	subscribed := make(chan *websocket.Conn, 1)
	startServe(t, cfg, func(addr string) { subscribed <- subscribe(addr) })
	var ws2 *websocket.Conn
	select {
	case ws2 = <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("the client did not subscribe within 30s")
	}
	exec1(t, db, "INSERT INTO enterprises (name) VALUES ('after')")
	var got []string
	for range 4 {
		f := readFrame(t, ws2, 10*time.Second)
		got = append(got, f.Operation+":"+fmt.Sprint(f.Payload["name"]))
	}
	want := []string{"create:while-down-1", "create:while-down-2", "update:while-down-3", "create:after"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v (a 'before' here would be a duplicate)", got, want)
	}
}

// filterApplied returns once the server has applied every message sent
// before it on c: it sends a message the server must reject and waits for the
// error frame. A connection's messages are handled in order and a rejected
// message leaves the previous filter in place.
func filterApplied(t testing.TB, c *websocket.Conn) {
	t.Helper()
	sendJSON(t, c, `{"barrier": true}`)
	if f := readFrame(t, c, 10*time.Second); f.Namespace != "error" {
		t.Fatalf("barrier: got %s, want an error frame", f.raw)
	}
}

// traversableDir is a temporary directory the embedded PostgreSQL's OS user
// can reach (t.TempDir is private to root when tests run as root).
func traversableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "changecast-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var testRegistry = entities.DefaultRegistry()

func TestServe_EmbeddedDefault(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql not found: install the PostgreSQL client (apt-get install -y postgresql-client)")
	}
	dataDir := traversableDir(t)
	srv := startServe(t, serveConfig{common: common{dataDir: dataDir}}, nil)
	srv.waitReady(t)
	m := regexp.MustCompile(`connect: PGPASSFILE=(\S+) psql "(\S+)"`).FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("serve did not print a psql connect line:\n%s", srv.stdout.String())
	}
	if strings.Contains(srv.stdout.String(), "password") {
		t.Fatalf("stdout mentions a password:\n%s", srv.stdout.String())
	}
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": true}`)

	cmd := exec.Command("psql", m[2], "-v", "ON_ERROR_STOP=1", "-c", "INSERT INTO jobs (id, status) VALUES (1, 'queued')")
	cmd.Env = append(os.Environ(), "PGPASSFILE="+m[1])
	inserted := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	f := readFrame(t, ws, 10*time.Second)
	latency := time.Since(inserted)
	if f.EntityType != "job" || f.Operation != "create" {
		t.Fatalf("got %s", f.raw)
	}
	t.Logf("psql INSERT reached the WebSocket client %v after psql started (includes psql's own start-up)", latency)
	srv.stop(t)
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--data-dir", dir, "--user", "ci", "--role", "viewer", "--scope", "pool,job", "--ttl", "5m"}, &out, &errb); err != nil {
		t.Fatalf("token: %v", err)
	}
	tok := strings.TrimSpace(out.String())
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("stdout %q, want exactly one JWT line", out.String())
	}
	secret, err := os.ReadFile(dir + "/jwt-secret")
	if err != nil {
		t.Fatalf("secret file: %v", err)
	}
	if fi, _ := os.Stat(dir + "/jwt-secret"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(out.String()+errb.String(), strings.TrimSpace(string(secret))) {
		t.Fatal("token output contains the signing secret")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "--data-dir", dir}, "--user is required"},
		{[]string{"token", "--data-dir", dir, "--user", "x", "--role", "root"}, `--role "root"`},
		{[]string{"token", "--data-dir", dir, "--user", "x", "--scope", "pools"}, `unknown entity type "pools"`},
		{[]string{"token", "--data-dir", dir, "--user", "x", "--ttl", "-1h"}, "must be positive"},
		{[]string{"token", "--data-dir", dir, "--bogus"}, "bogus"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		var o, e bytes.Buffer
		err := run(context.Background(), tc.args, &o, &e)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want it to contain %q", tc.args, err, tc.want)
			continue
		}
		if code := exitCode(err, io.Discard); code != 2 {
			t.Errorf("%v: exit code %d, want 2", tc.args, code)
		}
	}
}
