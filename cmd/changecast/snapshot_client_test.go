package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wsapi/client"
)

// cutProxy forwards TCP connections to a server until cut, which closes
// every connection open through it (new ones still go through).
type cutProxy struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, to string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, to: to}
	p.wg.Add(1)
	go p.accept() // owned by the proxy: Cleanup closes the listener and waits
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.to)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(out, in); out.Close() }()
		go func() { defer p.wg.Done(); io.Copy(in, out); in.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestClient_SnapshotAgainAfterADrop: the Go client's connection drops in
// the middle of a snapshot's rows, and a row the dropped attempt delivered
// is deleted before the client reconnects; it reconnects, reports
// EventSnapshotRestarted (on which the program drops what the incomplete
// attempt gave it), asks for the snapshot again, and the rows then the
// changes rebuild the table exactly: the deleted row is in none of the
// new rows and no delete comes for it, so a program that kept the first
// attempt's rows would keep it. The server gave the dropped snapshot's slot
// back (--max-snapshots 1, and the second snapshot ran).
func TestClient_SnapshotAgainAfterADrop(t *testing.T) {
	url, sql, srv, dataDir := snapshotServer(t, "cc_snap_client_drop", func(cfg *serveConfig) { cfg.maxSnapshots = 1 })
	deleter := connect(t, url) // used by the Handler, while sql may be in use
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, 'new' FROM generate_series(1, 10000) g`)
	proxy := newCutProxy(t, srv.addr)

	var mu sync.Mutex
	table := map[string]string{} // key → payload, rebuilt as the client is told
	snapshotRows, completes, restarts := 0, 0, 0
	var deleteErr error
	cutOnce := sync.Once{}
	opts := client.Options{
		Filters:    []client.Filter{{EntityType: "order"}},
		Snapshot:   true,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Handler: func(ch entities.Change) error {
			mu.Lock()
			defer mu.Unlock()
			key := rowKey(ch.EntityType, json.RawMessage(ch.Payload.JSON()))
			switch ch.Operation {
			case entities.OpSnapshot:
				snapshotRows++
				table[key] = string(ch.Payload.JSON())
				if snapshotRows == 2 {
					// Mid-snapshot: the server has sent a page or two
					// of the 10,000 rows at most. Rows come in key
					// order, so this one is order 2: it is deleted
					// before the Handler returns, so before the
					// reconnect.
					cutOnce.Do(func() {
						proxy.cut()
						_, deleteErr = deleter.Exec(context.Background(), `DELETE FROM orders WHERE id = 2`)
					})
				}
			case entities.OpDelete:
				delete(table, key)
			default:
				table[key] = string(ch.Payload.JSON())
			}
			return nil
		},
		OnEvent: func(ev client.Event) {
			mu.Lock()
			defer mu.Unlock()
			switch ev.Type {
			case client.EventSnapshotComplete:
				completes++
			case client.EventSnapshotRestarted:
				// The rows start over: what the dropped attempt gave
				// is no longer known to be current.
				restarts++
				clear(table)
			}
		},
	}
	sub, err := client.Dial(context.Background(), "http://"+proxy.ln.Addr().String(), mintToken(t, dataDir, "admin"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 9999`)

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		done := completes > 0 && strings.Contains(table["order 9999"], `"status":"paid"`)
		rows, n, rs, derr, order2 := snapshotRows, len(table), restarts, deleteErr, table["order 2"]
		mu.Unlock()
		if done {
			if derr != nil {
				t.Fatalf("deleting order 2 mid-snapshot: %v", derr)
			}
			if rs != 1 {
				t.Fatalf("%d snapshot-restarted events, want 1", rs)
			}
			if order2 != "" {
				t.Fatalf("order 2, deleted between the two attempts, is still in the rebuilt table: %s", order2)
			}
			if rows < 2+9999 {
				t.Fatalf("%d snapshot rows, want at least 2, then all 9,999 left after the drop", rows)
			}
			if n != 9999 {
				t.Fatalf("rebuilt table holds %d rows, want 9999", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d snapshot rows, %d snapshot-complete, order 9999 %s\nserver log:\n%s", rows, completes, table["order 9999"], srv.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	mu.Lock()
	defer mu.Unlock()
	if completes != 1 {
		t.Errorf("%d snapshot-complete events, want 1 (the dropped snapshot never completed)", completes)
	}
}
