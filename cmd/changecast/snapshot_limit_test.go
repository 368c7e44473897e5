package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestServe_SnapshotMaxDuration: a snapshot holds its slot (a database
// connection and a transaction that holds back vacuum) for at most
// --snapshot-max-duration while its rows are read, however steadily its
// client asks. A WebSocket client that stalls mid-snapshot is sent
// resync-required saying so; a REST snapshot whose pages keep coming
// within the page TTL still ends (410); either way the only slot
// (--max-snapshots 1) is free again for the next snapshot.
func TestServe_SnapshotMaxDuration(t *testing.T) {
	const limit = 1500 * time.Millisecond
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_limit", func(cfg *serveConfig) {
		cfg.snapshotMaxTime = limit
		cfg.snapshotPageTTL = time.Minute
		cfg.maxSnapshots = 1
	})
	// 20,000 rows of 2 KB: 40 MB, far more than the socket buffers of a
	// client that does not read can hold.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, repeat('x', 2000) FROM generate_series(1, 20000) g`)
	token := mintToken(t, dataDir, "admin")

	ws := dialWS(t, srv.addr, token)
	sendJSON(t, ws, `{"namespace":"events","name":"subscribe","id":"s1","args":{"filters":["order"],"snapshot":true}}`)
	time.Sleep(limit + 500*time.Millisecond) // the client stalls past the limit: the point of the test
	rows := 0
	for {
		f, err := readSnapFrame(t, ws, 60*time.Second)
		if err != nil {
			t.Fatalf("after %d snapshot rows: %v, want a resync-required frame first", rows, err)
		}
		if f.Operation == "snapshot" {
			rows++
			continue
		}
		if f.Args.Type == "snapshot-complete" {
			t.Fatalf("the snapshot completed (%d rows) although its client stalled past --snapshot-max-duration", rows)
		}
		if f.Args.Type == "resync-required" {
			if !strings.Contains(f.Args.Message, "snapshot-max-duration") || !strings.Contains(f.Args.Message, limit.String()) {
				t.Fatalf("resync-required %q: want it to name snapshot-max-duration and %s", f.Args.Message, limit)
			}
			break
		}
	}
	if rows >= 20000 {
		t.Fatalf("%d rows arrived before the resync-required: the limit cut nothing", rows)
	}

	// REST: pages asked for well within the page TTL, until the limit.
	opened := time.Now()
	p := getEntities(t, srv.addr, token, "order?limit=10")
	if p.status != http.StatusOK || p.Next == "" {
		t.Fatalf("first page: %d %.200s", p.status, p.raw)
	}
	for p.status == http.StatusOK {
		if time.Since(opened) > time.Minute {
			t.Fatal("REST pages kept coming for a minute")
		}
		time.Sleep(100 * time.Millisecond) // a steady client, far within the page TTL
		p = getEntities(t, srv.addr, token, "order?limit=10&after="+url.QueryEscape(p.Next))
	}
	if p.status != http.StatusGone || !strings.Contains(p.Error, "all of them within "+limit.String()) {
		t.Fatalf("a page past the limit: %d %.300s, want 410 naming the limit", p.status, p.raw)
	}
	if since := time.Since(opened); since < limit {
		t.Fatalf("the REST snapshot ended after %s, before the limit %s", since, limit)
	}
	// The slot is free again.
	if p := getEntities(t, srv.addr, token, "order?limit=5"); p.status != http.StatusOK || len(p.Rows) != 5 {
		t.Fatalf("a new snapshot after the limit: %d %.200s", p.status, p.raw)
	}
}

// TestServe_SnapshotWaitKeepsTheConnectionServed: while a snapshot waits
// to begin (the first snapshot waits for the transactions running when it
// starts), the connection is still served: a ping from the client is
// answered at once, and nothing of the snapshot is sent until the
// transaction it waits for ends; then the rows, that transaction's
// included, and snapshot-complete.
func TestServe_SnapshotWaitKeepsTheConnectionServed(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_wait")
	ctx := context.Background()
	tx, err := sql.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer_id, total, status) VALUES (7, 1, 1, 'new')`); err != nil {
		t.Fatal(err)
	}

	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	pong := make(chan struct{}, 1)
	ws.SetPongHandler(func(string) error {
		select {
		case pong <- struct{}{}:
		default:
		}
		return nil
	})
	frames := make(chan snapFrame, 16)
	go func() {
		defer close(frames)
		for {
			f, err := readSnapFrame(t, ws, time.Minute)
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	sendJSON(t, ws, `{"namespace":"events","name":"subscribe","id":"s1","args":{"filters":["order"],"snapshot":true}}`)
	if f := <-frames; f.ID != "s1" {
		t.Fatalf("first frame %s, want the subscribe's response", f.raw)
	}
	if err := ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pong:
	case f, ok := <-frames:
		t.Fatalf("got %s (open %v) before the transaction the snapshot waits for ended", f.raw, ok)
	case <-time.After(10 * time.Second):
		t.Fatal("no pong within 10 s while the snapshot waited to begin: the writer is blocked in the wait")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for f := range frames {
		switch {
		case f.Operation == "snapshot":
			rows = append(rows, string(f.Payload))
		case f.Args.Type == "snapshot-complete":
			if len(rows) != 1 || !strings.Contains(rows[0], `"id":7`) {
				t.Fatalf("snapshot rows %v, want order 7 alone", rows)
			}
			return
		default:
			t.Fatalf("unexpected frame %s", f.raw)
		}
	}
	t.Fatal("connection ended before snapshot-complete")
}
