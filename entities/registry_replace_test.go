package entities

import (
	"slices"
	"testing"
)

func TestRegistry_Replace(t *testing.T) {
	r := NewRegistry()
	for _, et := range []EntityType{{Name: "order", Table: "orders", Schema: "public"}, {Name: "customer", Table: "customers"}} {
		if err := r.Register(et); err != nil {
			t.Fatal(err)
		}
	}
	next := NewRegistry()
	if err := next.Register(EntityType{Name: "order", Table: "orders", Schema: "public", Secrets: []string{"note"}}); err != nil {
		t.Fatal(err)
	}
	if err := next.Register(EntityType{Name: "invoice", Table: "invoices", Schema: "billing"}); err != nil {
		t.Fatal(err)
	}
	r.Replace(next)
	if got, want := r.Names(), []string{"invoice", "order"}; !slices.Equal(got, want) {
		t.Fatalf("names after Replace: got %v, want %v", got, want)
	}
	if _, ok := r.ByTable("customers"); ok {
		t.Errorf("the replaced type's table still resolves")
	}
	if et, ok := r.ByRelation("billing", "invoices"); !ok || et.Name != "invoice" {
		t.Errorf("ByRelation(billing, invoices) = %v, %t; want invoice", et.Name, ok)
	}
	if et, _ := r.Lookup("order"); !et.IsSecret("note") {
		t.Errorf("order's new secret is not in force after Replace")
	}
	// The two registries are independent afterwards.
	if err := r.Register(EntityType{Name: "refund", Table: "refunds"}); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Lookup("refund"); err == nil {
		t.Errorf("registering in the replaced registry changed the source")
	}
	r.Replace(r) // a no-op, not a deadlock
}
