package client_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wsapi/client"
)

// Frames as the server writes them (keys sorted, compact), from
// docs/protocol.md's examples.
const (
	instanceUpdateFrame = `{"entity-type":"instance","operation":"update","payload":{"addresses":[{"address":"10.0.0.1","type":"public"}],"agent_id":7,"callback_url":"","create_attempt":1,"created_at":"2026-11-23T10:00:00.123456Z","github_runner_group":"","heartbeat":"2026-11-23T10:00:01.5Z","id":"00000000-0000-4000-8000-000000000006","name":"runner-1","os_arch":"amd64","os_type":"linux","pool_id":"00000000-0000-4000-8000-000000000004","provider_id":"lxd-1","runner_status":"idle","status":"running","token_fetched":true,"updated_at":"2026-11-23T10:00:01.000123Z"},"cursor":"1207","committed-at":"2026-11-23T10:00:01.000123Z","previous":{"id":"00000000-0000-4000-8000-000000000006","name":"runner-1","status":"pending"}}`
	poolCreateFrame     = `{"entity-type":"pool","operation":"create","payload":{"cost_per_hour":0.1250,"extra_specs":{"disk":9007199254740993},"id":"00000000-0000-4000-8000-000000000004","max_runners":5,"tags":["self-hosted"]},"cursor":"3","committed-at":"2026-11-23T10:00:00.000000Z"}`
	jobDeleteFrame      = `{"entity-type":"job","operation":"delete","payload":{"id":4711,"status":"completed"},"cursor":"9","committed-at":"2026-11-23T10:00:00.000001Z"}`
	truncateFrame       = `{"entity-type":"pool","operation":"truncate","payload":{},"cursor":"10","committed-at":"2026-11-23T10:00:00.000001Z"}`
	eventFrame          = `{"entity-type":"event","operation":"create","payload":{"action":"ping","category":"connection","description":"lost the database","id":"0192f0c4-0000-7000-8000-000000000001","severity":"error"},"cursor":"11","committed-at":"2026-11-23T10:00:02.000000Z"}`
)

func parse(t testing.TB, frame string) entities.Change {
	t.Helper()
	ch, err := client.ParseFrame([]byte(frame), nil)
	if err != nil {
		t.Fatalf("ParseFrame(%s): %v", frame, err)
	}
	return ch
}

func TestParseFrame(t *testing.T) {
	ch := parse(t, instanceUpdateFrame)
	if ch.EntityType != "instance" || ch.Operation != entities.OpUpdate || ch.EntityID != "00000000-0000-4000-8000-000000000006" || ch.Cursor != 1207 {
		t.Fatalf("got %s %s %s @%d", ch.EntityType, ch.Operation, ch.EntityID, ch.Cursor)
	}
	if want := time.Date(2026, 11, 23, 10, 0, 1, 123000, time.UTC); !ch.CommitTime.Equal(want) {
		t.Fatalf("CommitTime %v, want %v", ch.CommitTime, want)
	}
	if got, _ := ch.Previous.Get("status"); string(got) != `"pending"` {
		t.Fatalf("previous status %s", got)
	}
	if id := parse(t, jobDeleteFrame).EntityID; id != "4711" {
		t.Fatalf("job EntityID %q, want 4711 (a numeric key)", id)
	}
	if id := parse(t, eventFrame).EntityID; id != "0192f0c4-0000-7000-8000-000000000001" {
		t.Fatalf("event EntityID %q, want the event's id", id)
	}
	for _, bad := range []string{
		`{"namespace":"events","name":"control","args":{"type":"shutdown"}}`,
		`{"entity-type":"pool","operation":"upsert","payload":{}}`,
		`{"entity-type":"pool","operation":"create","payload":{},"cursor":"-1"}`,
		`{"entity-type":"pool","operation":"create","payload":[1]}`,
		`not json`,
		`{"namespace":"events","name":"system_state","id":"","args":{"cursor":7}}`,
	} {
		if _, err := client.ParseFrame([]byte(bad), nil); err == nil {
			t.Errorf("ParseFrame(%s) succeeded, want an error", bad)
		}
	}
}

func TestMarshalFrame_RoundTrip(t *testing.T) {
	for _, frame := range []string{instanceUpdateFrame, poolCreateFrame, jobDeleteFrame, truncateFrame, eventFrame} {
		got, err := client.MarshalFrame(parse(t, frame))
		if err != nil {
			t.Fatalf("MarshalFrame: %v", err)
		}
		if string(got) != frame {
			t.Errorf("round trip changed the frame\n got %s\nwant %s", got, frame)
		}
	}
}

func TestDecode(t *testing.T) {
	ch := parse(t, instanceUpdateFrame)
	inst, err := client.Decode[entities.Instance](ch)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if inst.ID != uuid.MustParse("00000000-0000-4000-8000-000000000006") || inst.Status != "running" || inst.AgentID != 7 || !inst.TokenFetched ||
		inst.PoolID == nil || inst.PoolID.String() != "00000000-0000-4000-8000-000000000004" || inst.Heartbeat == nil || inst.JitConfiguration != "" {
		t.Fatalf("decoded %+v", inst)
	}
	prev, err := client.DecodePrevious[entities.Instance](ch)
	if err != nil || prev.Status != "pending" {
		t.Fatalf("DecodePrevious: %+v, %v", prev, err)
	}

	p, err := client.Decode[entities.Pool](parse(t, poolCreateFrame))
	if err != nil {
		t.Fatalf("Decode pool: %v", err)
	}
	if p.CostPerHour.String() != "0.1250" || string(p.ExtraSpecs) != `{"disk":9007199254740993}` || p.MaxRunners != 5 {
		t.Fatalf("decoded pool %+v: exact numerics must survive", p)
	}
	if ev, err := client.Decode[entities.Event](parse(t, eventFrame)); err != nil || ev.Severity != entities.Error || ev.Category != "connection" || ev.Description != "lost the database" {
		t.Fatalf("Decode event: %+v, %v", ev, err)
	}
	if j, err := client.Decode[entities.Job](parse(t, jobDeleteFrame)); err != nil || j.ID != 4711 {
		t.Fatalf("Decode job delete (the deleted row): %+v, %v", j, err)
	}

	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"wrong type", func() error { _, err := client.Decode[entities.Pool](ch); return err }, "use Decode[entities.Instance]"},
		{"pointer type", func() error { _, err := client.Decode[*entities.Instance](ch); return err }, "use Decode[entities.Instance]"},
		{"no previous", func() error { _, err := client.DecodePrevious[entities.Pool](parse(t, poolCreateFrame)); return err }, "only updates carry one"},
		{"truncate", func() error { _, err := client.Decode[entities.Pool](parse(t, truncateFrame)); return err }, "has no payload"},
		{"event into a pool", func() error { _, err := client.Decode[entities.Pool](parse(t, eventFrame)); return err }, "use Decode[entities.Event]"},
		{"unregistered type", func() error {
			_, err := client.Decode[entities.Pool](entities.Change{EntityType: "widget", Payload: entities.RowOf(map[string]any{})})
			return err
		}, `unknown entity type "widget"`},
	} {
		err := tc.run()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzParseFrame feeds ParseFrame arbitrary server bytes: it must not
// panic, and a change it accepts must encode back to a frame that parses
// to the same encoding.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{instanceUpdateFrame, poolCreateFrame, jobDeleteFrame, truncateFrame, eventFrame,
		`{"entity-type":"pool","operation":"create","payload":null}`, `{"namespace":"events","name":"control","args":{"type":"shutdown"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := client.ParseFrame(data, nil)
		if err != nil {
			return
		}
		b1, err := client.MarshalFrame(ch)
		if err != nil {
			t.Fatalf("MarshalFrame of a parsed change: %v", err)
		}
		ch2, err := client.ParseFrame(b1, nil)
		if err != nil {
			t.Fatalf("ParseFrame(MarshalFrame(x)) = %v for %s", err, b1)
		}
		b2, err := client.MarshalFrame(ch2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding not stable:\n%s\n%s (%v)", b1, b2, err)
		}
	})
}
