package sanitize

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/changecast/changecast/entities"
)

// canary returns a value unique to one secret so a leak names its source.
func canary(col string) string { return "CANARY-" + col + "-7f3a" }

func TestSanitizer_Change_EveryBuiltinType(t *testing.T) {
	reg := entities.DefaultRegistry()
	s := New(reg)
	for _, et := range reg.Types() {
		for _, op := range entities.Operations {
			t.Run(et.Name+"/"+string(op), func(t *testing.T) {
				row := entities.Row{}
				for _, col := range et.Columns {
					if et.IsSecret(col) {
						row[col] = canary(col)
					} else {
						row[col] = "plain-" + col
					}
				}
				prev := entities.Row{}
				for k, v := range row {
					prev[k] = v
				}
				in := entities.Change{EntityType: et.Name, Operation: op, Payload: row, Previous: prev}
				got, err := s.Change(in)
				if err != nil {
					t.Fatalf("Change: %v", err)
				}
				b, err := json.Marshal(struct{ P, Q entities.Row }{got.Payload, got.Previous})
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), "CANARY") {
					t.Fatalf("secret survived: %s", b)
				}
				for _, col := range et.Columns {
					if et.IsSecret(col) {
						continue
					}
					if got.Payload[col] != "plain-"+col || got.Previous[col] != "plain-"+col {
						t.Fatalf("column %s: got %v / %v, want plain-%s", col, got.Payload[col], got.Previous[col], col)
					}
				}
				// The input is untouched: the watcher's rows may be shared.
				for _, col := range et.Secrets {
					if row[col] != canary(col) {
						t.Fatalf("input row mutated at %s", col)
					}
				}
			})
		}
	}
}

func TestSanitizer_Change_UnknownTypeFailsClosed(t *testing.T) {
	s := New(entities.DefaultRegistry())
	_, err := s.Change(entities.Change{EntityType: "widget", Operation: entities.OpCreate, Payload: entities.Row{"secret": "x"}})
	if !errors.Is(err, entities.ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	out, err := s.Changes([]entities.Change{
		{EntityType: "pool", Operation: entities.OpCreate, Payload: entities.Row{"id": "a"}},
		{EntityType: "widget", Operation: entities.OpCreate},
	})
	if err == nil || out != nil {
		t.Fatalf("Changes with one unknown type = %v, %v; want nil, error", out, err)
	}
}

func TestRow_Nil(t *testing.T) {
	et, _ := entities.DefaultRegistry().Lookup("user")
	if Row(et, nil) != nil {
		t.Fatal("Row(nil) should stay nil so 'previous' is omitted")
	}
}
