package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// protocolDoc is the document whose examples TestProtocolExamples keeps
// real.
const protocolDoc = "../../docs/protocol.md"

// protocolGoldens holds one golden file per example, <name>.json: the frame
// as captured, then a newline. The doc embeds each one verbatim.
const protocolGoldens = "../../testdata/protocol"

// updateDocsEnv rewrites the protocol goldens and the examples in
// docs/protocol.md from a test run (as -update does).
const updateDocsEnv = "CHANGECAST_UPDATE_DOCS"

// updateProtocol reports whether this run rewrites the protocol goldens
// and the document.
func updateProtocol() bool { return os.Getenv(updateDocsEnv) == "1" || *updateGolden }

// exampleRE finds an example block: a marker comment, then a json fence.
var exampleRE = regexp.MustCompile("(?s)<!-- example: ([a-z0-9-]+) -->\n```json\n(.*?)\n```")

// TestProtocolExamples produces every frame of the wire protocol from a real
// server, with real SQL changes, and checks it against the goldens in
// testdata/protocol: every golden must have the shape (keys and JSON types,
// recursively) of a frame this run produced, and every frame kind must have
// a golden. Then docs/protocol.md must show every golden verbatim
// (checkProtocolDoc, which TestProtocolDoc_MatchesGoldens also runs without
// a server). Run with CHANGECAST_UPDATE_DOCS=1 (or -update) to rewrite the
// goldens and the document's examples from the run.
func TestProtocolExamples(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_protocol_doc")
	admin := mintToken(t, dataDir, "admin")
	db := connect(t, url)
	got := map[string][]byte{}
	keep := func(name string, b []byte) {
		t.Helper()
		if _, ok := got[name]; !ok {
			got[name] = append([]byte(nil), b...)
		}
	}
	send := func(c *websocket.Conn, msg string) []byte {
		t.Helper()
		sendJSON(t, c, msg)
		return readFrame(t, c, 10*time.Second).raw
	}

	// A resuming admin: system events from the journal, then live changes.
	ws := dialSince(t, srv.addr, admin, 0)
	keep("error-filter", send(ws, `{"send-everything": false, "filters": [{"entity-type": "pools"}]}`))
	keep("response-subscribe", send(ws, `{"namespace": "events", "name": "subscribe", "id": "42", "args": ["event", {"entity-type": "pool", "operations": ["create", "update", "delete", "truncate"]}, {"entity-type": "job", "operations": ["update"], "match": {"status": ["completed", "failed"]}}]}`))
	f := readFrame(t, ws, 10*time.Second)
	if f.EntityType != "event" {
		t.Fatalf("first frame after resuming from 0: %s, want the started event", f.raw)
	}
	keep("event-create", f.raw)
	keep("response-ping", send(ws, `{"namespace": "events", "name": "ping", "id": "43"}`))
	keep("error-request", send(ws, `{"namespace": "events", "name": "subscribes", "id": "44", "args": ["pool"]}`))

	exec1(t, db, `INSERT INTO pools (id, provider_name, image, flavor, os_type, max_runners, tags, extra_specs)
		VALUES ('7c1c3a56-3b1d-4d5e-9a4b-0d7f3f1a2b3c', 'lxd', 'ubuntu:24.04', 'small', 'linux', 5, '{self-hosted,x64}', '{"disk_gb": 40}')`)
	keep("change-create", readFrame(t, ws, 10*time.Second).raw)
	exec1(t, db, `UPDATE pools SET max_runners = 7 WHERE id = '7c1c3a56-3b1d-4d5e-9a4b-0d7f3f1a2b3c'`)
	keep("change-update", readFrame(t, ws, 10*time.Second).raw)
	exec1(t, db, `DELETE FROM pools WHERE id = '7c1c3a56-3b1d-4d5e-9a4b-0d7f3f1a2b3c'`)
	keep("change-delete", readFrame(t, ws, 10*time.Second).raw)
	exec1(t, db, `TRUNCATE pools`)
	keep("change-truncate", readFrame(t, ws, 10*time.Second).raw)

	keep("response-system-state", send(ws, `{"namespace": "events", "name": "subscribe", "id": "45", "args": ["system-state"]}`))
	keep("system-state", readFrame(t, ws, 10*time.Second).raw)
	keep("response-unsubscribe", send(ws, `{"namespace": "events", "name": "unsubscribe", "id": "46", "args": ["system-state", "event"]}`))

	// resync-required: a cursor this server never issued.
	stale := dialSince(t, srv.addr, admin, 1_000_000)
	keep("control-resync-required", readFrame(t, stale, 10*time.Second).raw)

	// token-expired: a token that lives two seconds.
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--data-dir", dataDir, "--user", "brief", "--role", "viewer", "--ttl", "2s"}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	brief := dialWS(t, srv.addr, strings.TrimSpace(out.String()))
	keep("control-token-expired", readFrame(t, brief, 10*time.Second).raw)

	// lagging and caught-up: a client that stops reading while a large
	// transaction streams past.
	slow := dialWS(t, srv.addr, admin)
	sendJSON(t, slow, `{"filters": [{"entity-type": "job"}]}`)
	filterApplied(t, slow)
	// Commits of at most InlineMax changes are handed to clients live
	// (a larger one sends everyone to the journal without lagging).
	for i := 0; i < 40; i++ {
		exec1(t, db, fmt.Sprintf(`INSERT INTO jobs (id, status, name, labels) SELECT g, 'queued', repeat('x', 400), '{linux}' FROM generate_series(%d, %d) g`, i*1000+1, i*1000+1000))
	}
	waitMetric(t, srv.addr, "changecast_ws_overflows_total", 1)
	for {
		f := readFrame(t, slow, 30*time.Second)
		if strings.Contains(string(f.raw), `"lagging"`) {
			keep("control-lagging", f.raw)
		}
		if strings.Contains(string(f.raw), `"caught-up"`) {
			keep("control-caught-up", f.raw)
			break
		}
	}

	// HTTP: login and an error answer.
	addUser(t, url, "ada", "ada-password-1", false)
	body, _ := json.Marshal(map[string]string{"username": "ada", "password": "ada-password-1"})
	// The document shows the token's header and claims; its signature is
	// replaced (the key died with the test, but a JWT-shaped secret in the
	// repository would still trip scanners).
	loginBody := httpBody(t, http.MethodPost, "http://"+srv.addr+"/api/v1/auth/login", body)
	keep("http-login", regexp.MustCompile(`("token":"[^."]+\.[^."]+\.)[^"]+`).ReplaceAll(loginBody, []byte("${1}SIGNATURE")))
	keep("http-error", httpBody(t, http.MethodGet, "http://"+srv.addr+"/api/v1/ws/events?since=abc", nil))

	// shutdown, last.
	bye := dialWS(t, srv.addr, admin)
	sendJSON(t, bye, `{"filters": [{"entity-type": "pool"}]}`)
	filterApplied(t, bye)
	srv.cancel()
	for {
		f := readFrame(t, bye, 30*time.Second)
		if strings.Contains(string(f.raw), `"shutdown"`) {
			keep("control-shutdown", f.raw)
			break
		}
	}

	checkProtocolGoldens(t, got)
	checkProtocolDoc(t)
}

func httpBody(t testing.TB, method, url string, body []byte) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return bytes.TrimSpace(b)
}

// waitMetric polls /metrics until the counter reaches at least min.
func waitMetric(t testing.TB, addr, name string, min float64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for metricValue(t, scrape(t, addr), name) < min {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached %v", name, min)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// checkProtocolGoldens compares the frames got with the goldens (after
// rewriting the goldens from them, when updating).
func checkProtocolGoldens(t *testing.T, got map[string][]byte) {
	t.Helper()
	if updateProtocol() {
		writeProtocolGoldens(t, got)
	}
	goldens := readProtocolGoldens(t)
	for name, golden := range goldens {
		frame, ok := got[name]
		if !ok {
			t.Errorf("%s/%s.json is an example this test does not produce; capture it in TestProtocolExamples or delete the file", protocolGoldens, name)
			continue
		}
		var want, have any
		if err := json.Unmarshal(golden, &want); err != nil {
			t.Errorf("%s/%s.json is not JSON: %v", protocolGoldens, name, err)
			continue
		}
		if err := json.Unmarshal(frame, &have); err != nil {
			t.Fatalf("captured %q is not JSON: %v", name, err)
		}
		if a, b := shape(want), shape(have); a != b {
			t.Errorf("%s/%s.json is out of date (run %s=1 go test -run TestProtocolExamples ./cmd/changecast)\ngolden shape: %s\nreal shape:   %s\nreal frame: %s", protocolGoldens, name, updateDocsEnv, a, b, frame)
		}
	}
	var missing []string
	for name := range got {
		if _, ok := goldens[name]; !ok {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s lacks goldens %v (run %s=1 go test -run TestProtocolExamples ./cmd/changecast, then show each in docs/protocol.md)", protocolGoldens, missing, updateDocsEnv)
	}
}

// writeProtocolGoldens replaces the goldens with the frames got: the
// directory holds exactly the examples this test produces.
func writeProtocolGoldens(t *testing.T, got map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(protocolGoldens, 0o755); err != nil {
		t.Fatal(err)
	}
	for name := range readProtocolGoldens(t) {
		if _, ok := got[name]; !ok {
			if err := os.Remove(filepath.Join(protocolGoldens, name+".json")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, frame := range got {
		if err := os.WriteFile(filepath.Join(protocolGoldens, name+".json"), append(append([]byte(nil), frame...), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readProtocolGoldens returns the golden frames by example name, without
// their final newline.
func readProtocolGoldens(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(protocolGoldens, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".json")] = bytes.TrimSuffix(b, []byte("\n"))
	}
	return out
}

// TestProtocolDoc_MatchesGoldens checks, without a server, that
// docs/protocol.md shows every protocol golden verbatim and nothing else.
// With CHANGECAST_UPDATE_DOCS=1 (or -update) it first rewrites the
// document's examples from the goldens.
func TestProtocolDoc_MatchesGoldens(t *testing.T) {
	checkProtocolDoc(t)
}

// checkProtocolDoc compares the document's examples with the goldens (after
// rewriting the examples from them, when updating): each example must equal
// its golden byte for byte, and each golden must be shown.
func checkProtocolDoc(t *testing.T) {
	t.Helper()
	goldens := readProtocolGoldens(t)
	if len(goldens) == 0 {
		t.Fatalf("no goldens in %s (run %s=1 go test -run TestProtocolExamples ./cmd/changecast)", protocolGoldens, updateDocsEnv)
	}
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	if updateProtocol() {
		updated := exampleRE.ReplaceAllFunc(doc, func(block []byte) []byte {
			name := string(exampleRE.FindSubmatch(block)[1])
			golden, ok := goldens[name]
			if !ok {
				return block
			}
			return []byte(fmt.Sprintf("<!-- example: %s -->\n```json\n%s\n```", name, golden))
		})
		if !bytes.Equal(updated, doc) {
			if err := os.WriteFile(protocolDoc, updated, 0o644); err != nil {
				t.Fatal(err)
			}
			doc = updated
		}
	}
	seen := map[string]bool{}
	for _, m := range exampleRE.FindAllSubmatch(doc, -1) {
		name := string(m[1])
		if seen[name] {
			t.Errorf("docs/protocol.md shows example %q twice", name)
		}
		seen[name] = true
		golden, ok := goldens[name]
		if !ok {
			t.Errorf("docs/protocol.md shows example %q, which has no golden in %s (TestProtocolExamples writes one for each frame it produces)", name, protocolGoldens)
			continue
		}
		if !json.Valid(m[2]) {
			t.Errorf("docs/protocol.md example %q is not JSON", name)
		}
		if !bytes.Equal(m[2], golden) {
			t.Errorf("docs/protocol.md example %q differs from %s/%s.json (run %s=1 go test -run TestProtocolDoc ./cmd/changecast to copy the goldens into the document)\ndoc:    %s\ngolden: %s", name, protocolGoldens, name, updateDocsEnv, m[2], golden)
		}
	}
	var missing []string
	for name := range goldens {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/protocol.md lacks examples %v; add a block <!-- example: NAME --> followed by a json fence", missing)
	}
}

// shape describes a JSON value's structure: object keys (sorted) with their
// shapes, array element shape (the first element's), or the scalar kind.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b strings.Builder
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(k + ":" + shape(x[k]))
		}
		b.WriteString("}")
		return b.String()
	case []any:
		if len(x) == 0 {
			return "[]"
		}
		return "[" + shape(x[0]) + "]"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
