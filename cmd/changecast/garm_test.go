package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	garmws "github.com/cloudbase/garm-provider-common/util/websocket"
	"github.com/gorilla/websocket"
)

// TestGARMClient connects with GARM's own Go client (garm-provider-common's
// util/websocket reader, the one GARM's providers and CLI use), sends GARM's
// send-everything filter, and receives a change made with plain SQL in the
// shape GARM clients decode: entity-type, operation, payload.
func TestGARMClient(t *testing.T) {
	srv, url, dataDir := readyServer(t, "garm_client")
	token := mintToken(t, dataDir, "admin")

	type garmMessage struct { // GARM's ChangePayload
		EntityType string          `json:"entity-type"`
		Operation  string          `json:"operation"`
		Payload    json.RawMessage `json:"payload"`
	}
	var mu sync.Mutex
	var got []garmMessage
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reader, err := garmws.NewReader(ctx, "http://"+srv.addr, "/api/v1/ws/events", token, func(mt int, msg []byte) error {
		if mt != websocket.TextMessage {
			t.Errorf("got message type %d, want text", mt)
		}
		var m garmMessage
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Errorf("GARM client cannot decode %s: %v", msg, err)
			return err
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatalf("garm NewReader: %v", err)
	}
	if err := reader.Start(); err != nil {
		t.Fatalf("garm reader Start: %v", err)
	}
	defer reader.Stop()
	if err := reader.WriteMessage(websocket.TextMessage, []byte(`{"send-everything":true}`)); err != nil {
		t.Fatalf("garm WriteMessage: %v", err)
	}

	// GARM clients get no reply to a filter, so keep writing until the
	// filter is in place and a change arrives.
	db := connect(t, url)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		exec1(t, db, `INSERT INTO pools (provider_name, image, flavor) VALUES ('garm-compat', 'ubuntu:24.04', 'small')`)
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GARM's client received nothing in 30s\nlogs:\n%s", srv.logs.String())
		}
		select {
		case <-reader.Done():
			t.Fatalf("GARM's client stopped\nlogs:\n%s", srv.logs.String())
		case <-time.After(100 * time.Millisecond): // polling interval
		}
	}
	mu.Lock()
	m := got[0]
	mu.Unlock()
	if m.EntityType != "pool" || m.Operation != "create" {
		t.Fatalf("got %s/%s, want pool/create", m.EntityType, m.Operation)
	}
	var pool map[string]any
	if err := json.Unmarshal(m.Payload, &pool); err != nil || pool["provider_name"] != "garm-compat" || !strings.Contains(string(m.Payload), `"image":"ubuntu:24.04"`) {
		t.Fatalf("payload %s: want the inserted pool", m.Payload)
	}
}
