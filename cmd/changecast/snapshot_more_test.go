package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/store/storetest"
)

// readSnapshot sends a snapshot subscribe for types and returns the rows'
// raw frames and the snapshot-complete frame; it fails on a secret, and on
// a change before snapshot-complete (its callers write nothing while the
// rows come).
func readSnapshot(t *testing.T, ws *websocket.Conn, req string) (rows []snapFrame, complete snapFrame) {
	t.Helper()
	sendJSON(t, ws, req)
	for complete.Args.Type == "" {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(f.raw, []byte("CANARY")) {
			t.Fatalf("a secret left changecast: %s", f.raw)
		}
		switch {
		case f.Name == "control":
			complete = f
		case f.Operation == "snapshot":
			rows = append(rows, f)
		case f.Operation != "":
			t.Fatalf("before snapshot-complete: %s", f.raw)
		}
	}
	if complete.Args.Type != "snapshot-complete" {
		t.Fatalf("got %s, want snapshot-complete", complete.raw)
	}
	return rows, complete
}

// TestServe_SnapshotWithTheJournalApart: with --journal-url, the rows come
// from the watched database and the seam from the journal database.
func TestServe_SnapshotWithTheJournalApart(t *testing.T) {
	journal := storetest.NewDatabase(t)
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_apart", func(cfg *serveConfig) { cfg.journalURL = journal })
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (1, 1, 1.00, 'new')`)
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	rows, _ := readSnapshot(t, ws, subscribeSnapshot)
	if len(rows) != 1 || !strings.Contains(string(rows[0].Payload), `"id":1,`) {
		t.Fatalf("snapshot rows %v, want order 1", rows)
	}
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 1`)
	if f, err := readSnapFrame(t, ws, 30*time.Second); err != nil || f.Operation != "update" {
		t.Fatalf("after the snapshot: %s (%v), want the update", f.raw, err)
	}
}

// TestServe_SnapshotFollowsReload: a secret a reload adds is stripped from
// snapshot rows as from changes.
func TestServe_SnapshotFollowsReload(t *testing.T) {
	sql, cfgPath, srv, dataDir, _ := reloadServer(t, "cc_snap_reload")
	exec1(t, sql, `INSERT INTO customers (id, email, balance) VALUES (1, 'CANARY-email@example.com', 3)`)
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	req := `{"namespace":"events","name":"subscribe","id":"s1","args":{"filters":["customer"],"snapshot":true}}`
	// Before: email flows (the canary check is off for this read).
	sendJSON(t, ws, req)
	for {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Operation == "snapshot" && !bytes.Contains(f.Payload, []byte("CANARY-email")) {
			t.Fatalf("before the reload: %s, want the email", f.raw)
		}
		if f.Name == "control" {
			break
		}
	}
	writeConfig(t, cfgPath, strings.Replace(reloadBase, "secrets: [api_key]", "secrets: [api_key, email]", 1))
	if out, err := reloadCmd(t, srv, dataDir); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	ws2 := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	rows, _ := readSnapshot(t, ws2, req)
	if len(rows) != 1 || !bytes.Contains(rows[0].Payload, []byte(`"balance":3`)) {
		t.Fatalf("after the reload: %v, want customer 1 without its email", rows)
	}
	// The REST snapshot applies the rules in force too.
	p := getEntities(t, srv.addr, mintToken(t, dataDir, "admin"), "customer")
	if p.status != 200 || len(p.Rows) != 1 || strings.Contains(p.raw, "CANARY") || !strings.Contains(p.raw, `"balance":3`) {
		t.Fatalf("GET /api/v1/entities/customer after the reload: %d %s, want customer 1 without its email", p.status, p.raw)
	}
}

// TestServe_SnapshotRefusesARenamedSecret: a declared secret column
// renamed is no longer stripped under its new name; the stream stops the
// type, and a snapshot of it is refused rather than read.
func TestServe_SnapshotRefusesARenamedSecret(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_renamed")
	exec1(t, sql, `INSERT INTO customers (id, email, api_key) VALUES (1, 'ada@example.com', 'CANARY-key')`)
	exec1(t, sql, `ALTER TABLE customers RENAME COLUMN api_key TO contact_hint`)
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"namespace":"events","name":"subscribe","id":"s1","args":{"filters":["customer"],"snapshot":true}}`)
	for {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatalf("no refusal before the connection ended: %v", err)
		}
		if bytes.Contains(f.raw, []byte("CANARY")) {
			t.Fatalf("the renamed secret left changecast in a snapshot: %s", f.raw)
		}
		if f.Operation == "snapshot" {
			t.Fatalf("a row of a type whose secret column is gone: %s", f.raw)
		}
		if f.Namespace == "error" || f.Args.Type == "resync-required" {
			return // refused
		}
		if f.Args.Type == "snapshot-complete" {
			t.Fatalf("snapshot completed: %s", f.raw)
		}
	}
}
