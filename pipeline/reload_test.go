package pipeline

import (
	"context"
	"errors"
	"testing"

	"github.com/changecast/changecast/entities"
)

func guardRegistry(t *testing.T, types ...entities.EntityType) *entities.Registry {
	t.Helper()
	reg := entities.NewRegistry()
	for _, et := range types {
		if err := reg.Register(et); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// TestSecretGuard_Follow: a type stopped for a missing secret column stays
// stopped across a reload that keeps its secrets, and flows again after
// one that changes them (the renamed column declared) or removes it.
func TestSecretGuard_Follow(t *testing.T) {
	g := newSecretGuard(guardRegistry(t,
		entities.EntityType{Name: "customer", Table: "customers", Secrets: []string{"api_key"}},
		entities.EntityType{Name: "vendor", Table: "vendors", Secrets: []string{"token"}},
		entities.EntityType{Name: "partner", Table: "partners", Secrets: []string{"key"}},
	))
	g.blocked["customer"] = "api_key"
	g.blocked["vendor"] = "token"
	g.blocked["partner"] = "key"
	n := g.follow(guardRegistry(t,
		entities.EntityType{Name: "customer", Table: "customers", Secrets: []string{"api_key"}},
		entities.EntityType{Name: "vendor", Table: "vendors", Secrets: []string{"token", "contact_hint"}},
	))
	if n.blocked["customer"] != "api_key" {
		t.Errorf("customer (secrets unchanged) is no longer stopped: %v", n.blocked)
	}
	if _, ok := n.blocked["vendor"]; ok {
		t.Errorf("vendor (secrets changed) is still stopped: %v", n.blocked)
	}
	if _, ok := n.blocked["partner"]; ok {
		t.Errorf("partner (removed) is still listed: %v", n.blocked)
	}
	if len(n.secrets["vendor"]) != 2 {
		t.Errorf("the new guard checks vendor's secrets %v, want the reloaded two", n.secrets["vendor"])
	}
}

// TestReload_NotRunning: Reload before Run is refused at once and changes
// nothing.
func TestReload_NotRunning(t *testing.T) {
	reg := guardRegistry(t, entities.EntityType{Name: "order", Table: "orders"})
	p, err := New(Config{DatabaseURL: "postgres://localhost/x", Registry: reg, Journal: nopJournal{}})
	if err != nil {
		t.Fatal(err)
	}
	applied := false
	next := guardRegistry(t, entities.EntityType{Name: "note", Table: "notes"})
	err = p.Reload(context.Background(), next, func(context.Context) error { applied = true; return nil })
	if !errors.Is(err, ErrNotRunning) || applied || p.cfg.Registry != reg {
		t.Fatalf("Reload before Run: %v (applied %t); want ErrNotRunning and no change", err, applied)
	}
}

// nopJournal satisfies Journal for tests that never reach it.
type nopJournal struct{ Journal }
