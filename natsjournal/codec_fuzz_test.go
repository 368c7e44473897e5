package natsjournal

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

// FuzzDecodeChange: a message body read from the stream either decodes
// into a change whose rows encode back to what the body held, or fails;
// it never panics.
func FuzzDecodeChange(f *testing.F) {
	c := entities.Change{EntityType: "pool", Operation: entities.OpUpdate, EntityID: "p1",
		Payload: entities.RowOf(map[string]any{"id": "p1", "n": int64(2)}), Previous: entities.RowOf(map[string]any{"id": "p1", "n": int64(1)}),
		CommitLSN: 0x1000, Index: 3, Xid: 7, CommitTime: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	m, err := encodeMsg(&c, 0x1100, "")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Data)
	f.Add([]byte(`{"entity_type":"event","operation":"create","entity_id":"x","payload":null,"committed_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"payload":{"a":[1,2,{"b":null}]},"previous":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := decodeChange(1, data)
		if err != nil {
			return
		}
		if ch.Cursor != 1 {
			t.Fatalf("cursor %d", ch.Cursor)
		}
		if ch.Payload != nil && !json.Valid(ch.Payload.JSON()) {
			t.Fatalf("payload %s is not JSON", ch.Payload.JSON())
		}
	})
}
