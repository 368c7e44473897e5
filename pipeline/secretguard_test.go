package pipeline

import (
	"reflect"
	"testing"

	"github.com/changecast/changecast/entities"
)

func TestSecretGuard(t *testing.T) {
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "customer", Table: "customers", Secrets: []string{"api_key"}}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(entities.EntityType{Name: "order", Table: "orders"}); err != nil {
		t.Fatal(err)
	}
	g := newSecretGuard(reg)
	var stops []string
	stop := func(typ, col string) { stops = append(stops, typ+"."+col) }
	ch := func(typ string, op entities.Operation, row *entities.Row, unchanged ...string) entities.Change {
		return entities.Change{EntityType: typ, Operation: op, Payload: row, Unchanged: unchanged}
	}
	withheld := ch("customer", entities.OpUpdate, entities.RowOf(map[string]any{"id": 1}))
	withheld.Withheld = []string{"api_key"} // in the table, not decoded
	ok := []entities.Change{
		ch("customer", entities.OpCreate, entities.RowOf(map[string]any{"id": 1, "api_key": nil})), // NULL is present
		ch("customer", entities.OpUpdate, entities.RowOf(map[string]any{"id": 1}), "api_key"),      // unchanged TOAST
		ch("customer", entities.OpDelete, entities.RowOf(map[string]any{"id": 1})),                 // key-only old row
		ch("order", entities.OpCreate, entities.RowOf(map[string]any{"id": 7})),                    // no secrets
		withheld,
	}
	if got := g.filter(ok, stop); !reflect.DeepEqual(got, ok) || len(stops) != 0 {
		t.Fatalf("filter kept %d of %d, stops %v; want every change, no stop", len(got), len(ok), stops)
	}
	renamed := []entities.Change{
		ch("order", entities.OpCreate, entities.RowOf(map[string]any{"id": 8})),
		ch("customer", entities.OpCreate, entities.RowOf(map[string]any{"id": 2, "contact_hint": "s3cret"})),
		ch("customer", entities.OpDelete, entities.RowOf(map[string]any{"id": 1})),
		ch("order", entities.OpUpdate, entities.RowOf(map[string]any{"id": 8})),
	}
	got := g.filter(renamed, stop)
	if len(got) != 2 || got[0].EntityType != "order" || got[1].EntityType != "order" || !reflect.DeepEqual(stops, []string{"customer.api_key"}) {
		t.Fatalf("filter kept %+v, stops %v; want the orders only and one stop of customer.api_key", got, stops)
	}
	if got := g.filter([]entities.Change{ch("customer", entities.OpCreate, entities.RowOf(map[string]any{"id": 3, "api_key": "k"}))}, stop); len(got) != 0 || len(stops) != 1 {
		t.Fatalf("a stopped type came back (%v), or was stopped twice (%v)", got, stops)
	}
	if g.blocked["customer"] != "api_key" {
		t.Fatalf("blocked = %v", g.blocked)
	}
}
