package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/natsjournal/natstest"
	"github.com/changecast/changecast/store/storetest"
)

// onNATS puts the journal in the JetStream stream at url, in role.
func onNATS(url, role string, replicas int) func(*serveConfig) {
	return func(cfg *serveConfig) {
		cfg.journalURL = url
		cfg.scale = scaleConfig{role: role, journalStream: natsjournal.DefaultStream, journalReplicas: replicas}
	}
}

// readStream reads every change of the stream at url (changecast's own
// events left out), checking the cursors are dense.
func readStream(t testing.TB, url string) []record {
	t.Helper()
	j, err := natsjournal.Open(context.Background(), natsjournal.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var out []record
	var after int64
	for {
		page, err := j.ReadAfter(context.Background(), after, 1000, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			if c.Cursor != after+1 {
				t.Fatalf("stream cursor %d after %d: not dense", c.Cursor, after)
			}
			after = c.Cursor
			if c.EntityType != "event" {
				out = append(out, record{string(c.Operation), c.EntityID})
			}
		}
		if len(page) < 1000 {
			return out
		}
	}
}

// A gateway serves since, catch-up, filters and the events API from the
// stream, with the watcher in another process (here: another serve).
func TestScale_GatewayServesFromTheStream(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	base := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_scale"}
	wcfg := base
	onNATS(nurl, roleWatcher, 1)(&wcfg)
	watcher := startServe(t, wcfg, nil)
	watcher.waitReady(t)
	gcfg := base
	onNATS(nurl, roleGateway, 1)(&gcfg)
	gw := startServe(t, gcfg, nil)
	gw.waitReady(t)
	token := mintToken(t, dataDir, "admin")
	db := connect(t, url)

	ws := dialWS(t, gw.addr, token)
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "enterprise"}]}`)
	filterApplied(t, ws)
	exec1(t, db, "INSERT INTO enterprises (name) VALUES ('e1')")
	exec1(t, db, "INSERT INTO organizations (name) VALUES ('o1')")
	exec1(t, db, "BEGIN; INSERT INTO enterprises (name) VALUES ('e2'); UPDATE enterprises SET name = 'e3' WHERE name = 'e2'; COMMIT")
	var got []string
	var cursors []string
	for range 3 {
		f := readFrame(t, ws, 10*time.Second)
		got = append(got, f.Operation+":"+fmt.Sprint(f.Payload["name"]))
		var c struct {
			Cursor string `json:"cursor"`
		}
		_ = json.Unmarshal(f.raw, &c)
		cursors = append(cursors, c.Cursor)
	}
	if strings.Join(got, " ") != "create:e1 create:e2 update:e3" {
		t.Fatalf("live from the gateway: %v", got)
	}

	// Resume after the first change: the rest comes from the stream.
	h := http.Header{"Authorization": {"Bearer " + token}}
	ws2, _, err := websocket.DefaultDialer.Dial("ws://"+gw.addr+"/api/v1/ws/events?since="+cursors[0], h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	sendJSON(t, ws2, `{"send-everything": false, "filters": [{"entity-type": "enterprise"}, {"entity-type": "organization"}]}`)
	var resumed []string
	for len(resumed) < 3 {
		f := readFrame(t, ws2, 10*time.Second)
		if f.Namespace != "" {
			continue
		}
		resumed = append(resumed, f.EntityType+":"+fmt.Sprint(f.Payload["name"]))
	}
	if strings.Join(resumed, " ") != "organization:o1 enterprise:e2 enterprise:e3" {
		t.Fatalf("resumed from the stream: %v", resumed)
	}

	// The events API of the gateway writes through the active watcher,
	// and the change comes back through the stream.
	ev := dialWS(t, gw.addr, token)
	sendJSON(t, ev, `{"send-everything": false, "filters": [{"entity-type": "event"}]}`)
	filterApplied(t, ev)
	req, _ := http.NewRequest(http.MethodGet, "http://"+gw.addr+"/api/v1/events?pagesize=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var page struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Events) == 0 {
		t.Fatalf("list events: %v %s", err, body)
	}
	req, _ = http.NewRequest(http.MethodPut, "http://"+gw.addr+"/api/v1/events/"+page.Events[0].ID+"/status", strings.NewReader(`{"status": "read"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("set status through the gateway: %d %s\nwatcher:\n%s\ngateway:\n%s", resp.StatusCode, body, watcher.logs.String(), gw.logs.String())
	}
	for {
		f := readFrame(t, ev, 10*time.Second)
		if f.EntityType == "event" && f.Operation == "update" && fmt.Sprint(f.Payload["id"]) == page.Events[0].ID {
			break
		}
	}

	want := []record{{"create", ""}, {"create", ""}, {"create", ""}, {"update", ""}}
	got2 := readStream(t, nurl)
	if len(got2) != len(want) {
		t.Fatalf("stream holds %v", got2)
	}
}
