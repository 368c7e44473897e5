package entitiestest

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// TestEventFromRow converts an event's Row back, both as Event.Row builds
// it and as the journal hands it back (every value a json.RawMessage), and
// names every broken column. It moved here from entities'
// TestEvent_JSONGolden with EventFromRow; the event is the same one.
func TestEventFromRow(t *testing.T) {
	ev := entities.NewEvent().
		FromUser(uuid.MustParse("7b1c2f4e-0000-4000-8000-000000000001")).
		FromSystem(uuid.MustParse("7b1c2f4e-0000-4000-8000-000000000002")).
		WithCategory("replication").WithAction("lag_exceeded").WithSeverity(entities.Error).
		WithDescription("replication lag is 64 MiB, over the 16 MiB threshold").
		WithMetadata(map[string]any{
			"err":       errors.New("lag 67108864 bytes > 16777216 <threshold>"),
			"doc":       "https://example.com/docs/events.md#replication-lag",
			"lag_bytes": int64(67108864),
		}).MustBuild()
	ev.ID = uuid.MustParse("0193b5a0-0000-7000-8000-00000000000a")
	ev.OperationID = uuid.MustParse("0193b5a0-0000-7000-8000-00000000000b")
	ev.CreatedAt = time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	ev.UpdatedAt = ev.CreatedAt

	rowJSON, err := json.Marshal(ev.Row())
	if err != nil {
		t.Fatal(err)
	}
	back, err := EventFromRow(ev.Row())
	if err != nil {
		t.Fatalf("EventFromRow(typed row): %v", err)
	}
	if !reflect.DeepEqual(back, ev) {
		t.Errorf("EventFromRow(Row()) = %+v, want %+v", back, ev)
	}

	// What the journal hands back: every value a json.RawMessage.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rowJSON, &raw); err != nil {
		t.Fatal(err)
	}
	jr, err := entities.ParseRow(rowJSON)
	if err != nil {
		t.Fatal(err)
	}
	back, err = EventFromRow(jr)
	if err != nil {
		t.Fatalf("EventFromRow(journal row): %v", err)
	}
	if !reflect.DeepEqual(back, ev) {
		t.Errorf("EventFromRow(journal row) = %+v, want %+v", back, ev)
	}
	delete(raw, "status")
	raw["id"] = json.RawMessage(`"not-a-uuid"`)
	broken, _ := json.Marshal(raw)
	if jr, err = entities.ParseRow(broken); err != nil {
		t.Fatal(err)
	}
	if _, err := EventFromRow(jr); err == nil || !strings.Contains(err.Error(), "status: missing") || !strings.Contains(err.Error(), "id:") {
		t.Errorf("EventFromRow(broken row) error = %v, want it to name id and status", err)
	}
}
