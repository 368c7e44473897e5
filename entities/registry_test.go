package entities

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultRegistry_Builtins(t *testing.T) {
	r := DefaultRegistry()
	want := []string{"controller", "enterprise", "github_credentials", "github_endpoint", "instance", "job", "organization", "pool", "repository", "user"}
	if got := r.Names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	tables := map[string]string{
		"repository": "repositories", "organization": "organizations", "enterprise": "enterprises",
		"pool": "pools", "user": "users", "instance": "instances", "job": "jobs", "controller": "controllers",
		"github_credentials": "github_credentials", "github_endpoint": "github_endpoints",
	}
	secrets := map[string][]string{
		"repository":         {"webhook_secret"},
		"organization":       {"webhook_secret"},
		"enterprise":         {"webhook_secret"},
		"user":               {"password", "generation"},
		"instance":           {"jit_configuration", "callback_token"},
		"github_credentials": {"payload"},
	}
	for _, et := range r.Types() {
		if got := tables[et.Name]; et.Table != got {
			t.Errorf("%s: table %q, want %q", et.Name, et.Table, got)
		}
		if back, ok := r.ByTable(et.Table); !ok || back.Name != et.Name {
			t.Errorf("ByTable(%q) = %v, %v", et.Table, back.Name, ok)
		}
		if !reflect.DeepEqual(et.Secrets, secrets[et.Name]) {
			t.Errorf("%s: secrets %v, want %v", et.Name, et.Secrets, secrets[et.Name])
		}
		if len(et.Columns) == 0 || et.Columns[0] != et.Key && et.Name != "github_endpoint" {
			t.Errorf("%s: columns %v, key %q", et.Name, et.Columns, et.Key)
		}
	}
}

func TestRegistry_Register_Errors(t *testing.T) {
	type noTag struct{ A string }
	type dashed struct {
		ID string `json:"id"`
		S  string `json:"-"`
	}
	type plain struct {
		ID string `json:"id"`
	}
	type keyed struct {
		ID string `json:"id" changecast:"secret"`
	}
	cases := []struct {
		name string
		et   EntityType
		want string
	}{
		{"camel name", EntityType{Name: "Pool", Table: "pools"}, "snake_case"},
		{"reserved", EntityType{Name: "event", Table: "events"}, "reserved"},
		{"duplicate name", EntityType{Name: "pool", Table: "pools2"}, "already registered"},
		{"duplicate table", EntityType{Name: "pool2", Table: "pools"}, "already belongs"},
		{"no json tag", EntityType{Name: "x", Table: "xs", GoType: reflect.TypeOf(noTag{})}, "no json tag"},
		{"json dash", EntityType{Name: "y", Table: "ys", GoType: reflect.TypeOf(dashed{})}, "changecast:"},
		{"secret key", EntityType{Name: "z", Table: "zs", GoType: reflect.TypeOf(keyed{})}, "cannot be secret"},
		{"missing key", EntityType{Name: "w", Table: "ws", Key: "nope", GoType: reflect.TypeOf(plain{})}, "not a column"},
	}
	r := DefaultRegistry()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := r.Register(c.et)
			if err == nil {
				t.Fatalf("Register(%+v) = nil, want error containing %q", c.et, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Register error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestRegistry_Lookup_Unknown(t *testing.T) {
	_, err := DefaultRegistry().Lookup("pools")
	if !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Lookup(pools) error = %v, want ErrUnknownType", err)
	}
	if !strings.Contains(err.Error(), `"pools"`) || !strings.Contains(err.Error(), "pool, repository") {
		t.Fatalf("Lookup error %q should name the value and the known types", err)
	}
}

func TestParseOperation(t *testing.T) {
	if op, err := ParseOperation("update"); err != nil || op != OpUpdate {
		t.Fatalf("ParseOperation(update) = %v, %v", op, err)
	}
	if _, err := ParseOperation("upsert"); err == nil || !strings.Contains(err.Error(), "create, update, delete") {
		t.Fatalf("ParseOperation(upsert) error = %v", err)
	}
}

func TestLSN_String(t *testing.T) {
	if got := LSN(0x16_B374D848).String(); got != "16/B374D848" {
		t.Fatalf("got %s, want 16/B374D848", got)
	}
}
