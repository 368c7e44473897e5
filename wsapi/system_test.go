package wsapi

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// eventChange is a system event as the journal appender hands it to
// Publish.
func eventChange(t testing.TB, user *uuid.UUID, action string) entities.Change {
	t.Helper()
	b := entities.NewEvent().WithCategory("test").WithAction(action).WithSeverity(entities.Informational).WithDescription(action)
	if user != nil {
		b = b.FromUser(*user)
	}
	ev, err := b.Build()
	if err != nil {
		t.Fatalf("build event: %v", err)
	}
	return entities.Change{EntityType: entities.EventEntityType, Operation: create, EntityID: ev.ID.String(), Payload: ev.Row(), CommitTime: ev.CreatedAt}
}

// TestEvents_PerUserDelivery checks docs/events.md, "Who receives one": a
// system event with a user_id goes only to that user's connections and to
// admins, live and from the journal; one without goes to everyone allowed
// to see event.
func TestEvents_PerUserDelivery(t *testing.T) {
	e := newJournalEnv(t, nil)
	ann, bob := uuid.New(), uuid.New()
	annConn := e.dialFilter(t, e.token(t, ann.String(), RoleViewer), `{"send-everything": true}`)
	bobConn := e.dialFilter(t, e.token(t, bob.String(), RoleViewer), `{"filters": [{"entity-type": "event"}]}`)
	admin := e.dialFilter(t, e.token(t, "root", RoleAdmin), `{"filters": [{"entity-type": "event"}]}`)
	noEvents := e.dialFilter(t, e.token(t, ann.String(), RoleViewer, "pool"), `{"send-everything": true}`)

	b := e.publish([]entities.Change{
		eventChange(t, &ann, "for_ann"),
		eventChange(t, &bob, "for_bob"),
		eventChange(t, nil, "for_all"),
		chg("pool", create, "end"),
	})
	expectCursors(t, annConn, []int64{b[0].Cursor, b[2].Cursor, b[3].Cursor})
	expectCursors(t, bobConn, []int64{b[1].Cursor, b[2].Cursor})
	expectCursors(t, admin, []int64{b[0].Cursor, b[1].Cursor, b[2].Cursor})
	expectCursors(t, noEvents, []int64{b[3].Cursor})

	// The same from the journal (payload values are raw JSON there).
	resumed := e.dialSince(t, e.token(t, bob.String(), RoleViewer), "0")
	e.sendFilter(t, resumed, `{"send-everything": true}`)
	expectCursors(t, resumed, []int64{b[1].Cursor, b[2].Cursor, b[3].Cursor})
}

// TestSystemState checks the system-state subscription: a response saying
// so, a first frame at once, then one per interval, and none after
// unsubscribe.
func TestSystemState(t *testing.T) {
	var calls atomic.Int64
	e := newTestEnv(t, func(c *Config) {
		c.SystemStateInterval = 50 * time.Millisecond
		c.SystemState = func() any {
			calls.Add(1)
			return map[string]any{"journal_head": "7", "connected_clients": 1}
		}
	})
	conn := e.dial(t, e.token(t, "u1", RoleViewer))
	send := func(msg string) {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"namespace": "events", "name": "subscribe", "id": "s", "args": ["system-state"]}`)
	f := readFrame(t, conn)
	if f.Name != "response" || f.Args["system-state"] != true {
		t.Fatalf("got %+v, want a response with system-state true", f)
	}
	start := time.Now()
	var stamps []time.Time
	for len(stamps) < 4 {
		raw := readRaw(t, conn)
		var sf struct {
			Namespace, Name string
			ID              *string
			Args            map[string]any
		}
		if err := json.Unmarshal(raw, &sf); err != nil {
			t.Fatal(err)
		}
		if sf.Namespace != "events" || sf.Name != "system_state" || sf.ID == nil || *sf.ID != "" || sf.Args["journal_head"] != "7" {
			t.Fatalf("got %s, want a system_state frame", raw)
		}
		stamps = append(stamps, time.Now())
	}
	// The first frame comes at once; four take about three intervals.
	if d := stamps[3].Sub(start); d < 100*time.Millisecond {
		t.Errorf("4 frames in %s with a 50ms interval: too fast", d)
	}
	send(`{"namespace": "events", "name": "unsubscribe", "id": "u", "args": ["system-state"]}`)
	for {
		raw := readRaw(t, conn)
		if strings.Contains(string(raw), `"name":"response"`) {
			if strings.Contains(string(raw), "system-state") {
				t.Fatalf("unsubscribe response %s still reports system-state", raw)
			}
			break
		}
	}
	// No more frames: for more than three intervals, each marker
	// published is the very next frame (no system_state in between).
	n := calls.Load()
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "pool"}]}`)
	for quiet := time.Now(); time.Since(quiet) < 200*time.Millisecond; {
		b := e.publish([]entities.Change{marker()})
		expectCursors(t, conn, []int64{b[0].Cursor})
	}
	if calls.Load() != n {
		t.Errorf("SystemState called %d more times after unsubscribe", calls.Load()-n)
	}
}

func TestSystemState_Unavailable(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "subscribe", "id": "s", "args": ["system-state"]}`)); err != nil {
		t.Fatal(err)
	}
	f := readFrame(t, conn)
	if f.key() != "error.error" || !strings.Contains(f.Args["message"].(string), `"system-state" is not available`) {
		t.Fatalf("got %+v, want an error frame", f)
	}
}

// TestSystemState_FirstFrameAtOnce checks that subscribing sends a
// system_state frame right after the response, not one interval later.
func TestSystemState_FirstFrameAtOnce(t *testing.T) {
	e := newTestEnv(t, func(c *Config) {
		c.SystemStateInterval = time.Hour
		c.SystemState = func() any { return map[string]any{"journal_head": "1"} }
	})
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "subscribe", "id": "s", "args": ["system-state"]}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn); f.Name != "response" {
		t.Fatalf("got %+v, want the response", f)
	}
	if f := readFrame(t, conn); f.Name != "system_state" {
		t.Fatalf("got %+v, want a system_state frame at once", f)
	}
}
