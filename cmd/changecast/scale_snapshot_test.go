package main

import (
	"io"
	"net/http"
	"strings"
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
