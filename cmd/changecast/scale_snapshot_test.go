package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/changecast/changecast/natsjournal/natstest"
	"github.com/changecast/changecast/store/storetest"
)

// A gateway serves snapshots with an exact seam: rows from the watched
// database, the journal's head and offset from the stream, the changes
// after the rows from the gateway's own reader of the stream; the watcher
// runs in another serve. The same load test as with the PostgreSQL
// journal, paced: a watcher publishing one-row transactions to a NATS
// server in the same process under the race detector keeps up with a few
// hundred a second, and a snapshot waits until the journal holds what it
// sees.
func TestScale_GatewaySnapshotSeamUnderLoad(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, shopSchema)
	dataDir := t.TempDir()
	base := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_scale_snap"}
	base.configPath = "../../testdata/config/orders.yaml"
	wcfg := base
	onNATS(nurl, roleWatcher, 1)(&wcfg)
	watcher := startServe(t, wcfg, nil)
	watcher.waitReady(t)
	gcfg := base
	onNATS(nurl, roleGateway, 1)(&gcfg)
	gw := startServe(t, gcfg, nil)
	gw.waitReady(t)
	snapshotSeamUnderLoad(t, url, sql, gw, mintToken(t, dataDir, "admin"), 50*time.Millisecond)
}

// A gateway serves the dashboard and its session endpoints, and prints
// its URL.
func TestScale_GatewayServesTheDashboard(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	base := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_scale_dash"}
	wcfg := base
	onNATS(nurl, roleWatcher, 1)(&wcfg)
	watcher := startServe(t, wcfg, nil)
	watcher.waitReady(t)
	gcfg := base
	onNATS(nurl, roleGateway, 1)(&gcfg)
	gw := startServe(t, gcfg, nil)
	gw.waitReady(t)
	if !strings.Contains(gw.stdout.String(), "dashboard: http://"+gw.addr+"/") {
		t.Fatalf("the gateway printed no dashboard URL:\n%s", gw.stdout.String())
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + gw.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Fatalf("GET / on the gateway: %d %.200s", code, body)
	}
	// The page's session endpoint answers (no session yet).
	resp, err := http.Post("http://"+gw.addr+"/api/v1/auth/link", "application/json", strings.NewReader(`{"code":"nope"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /api/v1/auth/link with a bad code on the gateway: %d, want 401", resp.StatusCode)
	}
}

// A gateway reloads its configuration (changecast reload, SIGHUP): its
// hub accepts the new types and its snapshots strip a secret the reload
// adds; the watcher, reloaded by SIGHUP, streams the new table.
func TestScale_GatewayReload(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, reloadSchema)
	cfgPath := filepath.Join(t.TempDir(), "changecast.yaml")
	writeConfig(t, cfgPath, reloadBase)
	dataDir := t.TempDir()
	base := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_scale_reload"}
	base.configPath = cfgPath
	wcfg := base
	onNATS(nurl, roleWatcher, 1)(&wcfg)
	watcher := startServe(t, wcfg, nil)
	watcher.waitReady(t)
	gcfg := base
	onNATS(nurl, roleGateway, 1)(&gcfg)
	gw := startServe(t, gcfg, nil)
	gw.waitReady(t)
	token := mintToken(t, dataDir, "admin")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note) VALUES (1, 1, 5, 'new', 'CANARY-note')`)

	ws := dialWS(t, gw.addr, token)
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "note"}]}`)
	if f := readFrame(t, ws, 10*time.Second); f.Namespace != "error" || !strings.Contains(string(f.raw), "note") {
		t.Fatalf("a filter on note before the reload: %s, want an error naming the unknown type", f.raw)
	}

	writeConfig(t, cfgPath, `entities:
  - name: order
    table: public.orders
    replica_identity: full
    secrets: [internal_note]
  - name: note
    table: public.notes
`)
	out, err := reloadCmd(t, gw, dataDir)
	if err != nil {
		t.Fatalf("reload the gateway: %v\nlogs:\n%s", err, gw.logs.String())
	}
	for _, want := range []string{"added note (public.notes)", "changed order: secrets: +internal_note"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload printed:\n%s\nwant a line %q", out, want)
		}
	}
	// The watcher has no HTTP reload endpoint: SIGHUP (which the gateway,
	// in the same test process, also hears: nothing changed for it).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(watcher.logs.String(), "configuration reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher logged no reload within 60s of SIGHUP\nlogs:\n%s", watcher.logs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the log
	}

	// The snapshot of order on the gateway strips the new secret.
	snap := dialWS(t, gw.addr, token)
	rows, _ := readSnapshot(t, snap, `{"namespace":"events","name":"subscribe","id":"s","args":{"filters":["order"],"snapshot":true}}`)
	if len(rows) != 1 || strings.Contains(string(rows[0].Payload), "internal_note") {
		t.Fatalf("snapshot rows after the reload: %v, want order 1 without internal_note", rows)
	}
	// The new type streams through the gateway.
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "note"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO notes (id, body) VALUES (1, 'hello')`)
	if f, _ := readChange(t, ws, 30*time.Second); f.EntityType != "note" {
		t.Fatalf("after the reload: %s, want the note", f.raw)
	}
}
