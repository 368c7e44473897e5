package wire

import (
	"github.com/changecast/changecast/internal/testutil"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

func TestEncodeChange_NilPayload(t *testing.T) {
	got, err := EncodeChange(entities.Change{EntityType: "job", Operation: entities.OpDelete})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"entity-type":"job","operation":"delete","payload":{}}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// BenchmarkEncodeChange measures encoding one change frame (JSON), per
// operation; an update carries the previous row too. The hub pays it once
// per change, shared by every connection that receives it.
func BenchmarkEncodeChange(b *testing.B) {
	for _, op := range []entities.Operation{entities.OpCreate, entities.OpUpdate, entities.OpDelete} {
		b.Run(string(op), func(b *testing.B) {
			ch := entities.Change{
				EntityType: "instance",
				Operation:  op,
				EntityID:   "5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70",
				Payload:    testutil.InstanceRow("running"),
				CommitTime: time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC),
				Cursor:     1207,
			}
			if op == entities.OpUpdate {
				ch.Previous = testutil.InstanceRow("pending")
			}
			data, err := EncodeChange(ch)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := EncodeChange(ch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestEncodeChange_RawRows: a change read back from the journal carries
// its rows' JSON; encoding writes it verbatim, and the frame is the one
// the typed rows give.
func TestEncodeChange_RawRows(t *testing.T) {
	c := entities.Change{EntityType: "pool", Operation: entities.OpUpdate, Cursor: 7,
		Payload:  entities.RowOf(map[string]any{"b": "x<y", "a": int64(1)}),
		Previous: entities.RowOf(map[string]any{"a": int64(0)})}
	want, err := EncodeChange(c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Payload, err = entities.ParseRow([]byte(`{"a":1,"b":"x<y"}`)); err != nil {
		t.Fatal(err)
	}
	if c.Previous, err = entities.ParseRow([]byte(`{"a":0}`)); err != nil {
		t.Fatal(err)
	}
	got, err := EncodeChange(c)
	if err != nil || string(got) != string(want) {
		t.Fatalf("with raw rows: %s (%v)\nwant %s", got, err, want)
	}
	if c.Payload, err = entities.ParseRow([]byte(`{"verbatim":true}`)); err != nil {
		t.Fatal(err)
	}
	if got, _ := EncodeChange(c); !strings.Contains(string(got), `"payload":{"verbatim":true}`) {
		t.Fatalf("the raw payload was not written verbatim: %s", got)
	}
}
