package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/store/storetest"
)

// sysEvent is a system event frame's payload.
type sysEvent struct {
	ID          string         `json:"id"`
	UserID      *string        `json:"user_id"`
	SystemID    *string        `json:"system_id"`
	Category    string         `json:"category"`
	Action      string         `json:"action"`
	Severity    string         `json:"severity"`
	Description string         `json:"description"`
	Metadata    map[string]any `json:"metadata"`
	Status      string         `json:"status"`
}

// nextEvent reads frames until a system event arrives and returns it.
func nextEvent(t testing.TB, c *websocket.Conn, within time.Duration) (sysEvent, frame) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		f := readFrame(t, c, time.Until(deadline))
		if f.EntityType != "event" {
			continue
		}
		var ev sysEvent
		b, _ := json.Marshal(f.Payload)
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("event payload %s: %v", b, err)
		}
		return ev, f
	}
}

// TestServe_SystemEventsAcrossPostgresRestart checks changecast's own
// events: started when the pipeline first streams, postgres_unreachable
// (error, with err and a doc link) when PostgreSQL goes away, resumed when
// it is back, and shutdown when serve stops, each persisted through the
// journal (a client resuming from 0 replays them) and delivered live.
func TestServe_SystemEventsAcrossPostgresRestart(t *testing.T) {
	cluster := storetest.NewCluster(t)
	url := cluster.URL()
	dataDir := t.TempDir()
	srv := startServe(t, serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_sysevents"}, nil)
	srv.waitReady(t)
	ws := dialSince(t, srv.addr, mintToken(t, dataDir, "admin"), 0)
	sendJSON(t, ws, `{"filters": [{"entity-type": "event"}]}`)

	ev, _ := nextEvent(t, ws, 30*time.Second)
	if ev.Category != "replication" || ev.Action != "started" || ev.Severity != "informational" || ev.Metadata["slot"] != "cc_sysevents" || ev.Metadata["confirmed_lsn"] == nil || ev.Status != "unread" || ev.SystemID == nil {
		t.Fatalf("first event %+v, want replication/started with slot and confirmed_lsn", ev)
	}

	ctx := context.Background()
	if err := cluster.Stop(ctx); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	// The events raised while PostgreSQL is down are persisted once it
	// is back: nothing is lost, in order.
	waitLog(t, srv, "replication interrupted")
	if err := cluster.Start(ctx); err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	ev, _ = nextEvent(t, ws, 60*time.Second)
	if ev.Action != "postgres_unreachable" || ev.Severity != "error" || ev.Metadata["err"] == nil || !strings.HasPrefix(ev.Metadata["doc"].(string), "https://") {
		t.Fatalf("got %+v, want replication/postgres_unreachable with err and doc", ev)
	}
	if s := ev.Metadata["err"].(string); strings.Contains(s, "password=") {
		t.Fatalf("err metadata leaks the connection password: %s", s)
	}
	ev, _ = nextEvent(t, ws, 60*time.Second)
	if ev.Action != "resumed" || ev.Severity != "success" || ev.Metadata["start_lsn"] == nil {
		t.Fatalf("got %+v, want replication/resumed", ev)
	}

	srv.cancel()
	ev, _ = nextEvent(t, ws, 30*time.Second)
	if ev.Category != "server" || ev.Action != "shutdown" {
		t.Fatalf("got %+v, want server/shutdown before the socket closes", ev)
	}
}

// waitLog polls serve's log for want.
func waitLog(t testing.TB, in *instance, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(in.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q\nlogs:\n%s", want, in.logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestServe_EventsREST checks the events REST API against a real server:
// the started event is listed, marking it read is delivered live as an
// event update (journaled like any change), a viewer cannot change a
// system-wide event, and deleting it is delivered as a delete.
func TestServe_EventsREST(t *testing.T) {
	srv, _, dataDir := readyServer(t, "cc_events_rest")
	admin := mintToken(t, dataDir, "admin")
	ws := dialWS(t, srv.addr, admin)
	sendJSON(t, ws, `{"filters": [{"entity-type": "event", "operations": ["update", "delete"]}]}`)
	filterApplied(t, ws)

	call := func(method, path, token, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+srv.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var page struct {
		TotalCount int64      `json:"total_count"`
		Events     []sysEvent `json:"events"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := call("GET", "/api/v1/events?category=replication&action=started", admin, "")
		if code != 200 {
			t.Fatalf("list: %d %s", code, body)
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the started event was never listed: %s", body)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	id := page.Events[0].ID
	if code, body := call("PUT", "/api/v1/events/"+id+"/status", mintToken(t, dataDir, "viewer"), `{"status": "read"}`); code != 404 {
		t.Fatalf("viewer marking a system-wide event: got %d %s, want 404", code, body)
	}
	if code, body := call("PUT", "/api/v1/events/"+id+"/status", admin, `{"status": "reed"}`); code != 400 || !strings.Contains(string(body), "reed") {
		t.Fatalf("bad status: got %d %s, want 400 naming it", code, body)
	}
	if code, body := call("PUT", "/api/v1/events/"+id+"/status", admin, `{"status": "read"}`); code != 204 {
		t.Fatalf("mark read: got %d %s, want 204", code, body)
	}
	ev, f := nextEvent(t, ws, 10*time.Second)
	if f.Operation != "update" || ev.ID != id || ev.Status != "read" || f.Previous["status"] != "unread" {
		t.Fatalf("got %s, want the event update to read", f.raw)
	}
	if code, body := call("DELETE", "/api/v1/events/"+id, admin, ""); code != 204 {
		t.Fatalf("delete: got %d %s, want 204", code, body)
	}
	ev, f = nextEvent(t, ws, 10*time.Second)
	if f.Operation != "delete" || ev.ID != id {
		t.Fatalf("got %s, want the event delete", f.raw)
	}
	if code, _ := call("DELETE", "/api/v1/events/"+id, admin, ""); code != 404 {
		t.Fatalf("second delete: got %d, want 404", code)
	}
}
