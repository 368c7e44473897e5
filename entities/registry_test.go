package entities

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultRegistry_Builtins(t *testing.T) {
	r := DefaultRegistry()
	// GARM's entity list: a GARM client's filter may name any of these.
	want := []string{"controller", "enterprise", "file_object", "forge_instance", "gitea_credentials", "github_credentials", "github_endpoint",
		"instance", "job", "organization", "pool", "proxy", "repository", "scaleset", "template", "user"}
	if got := r.Names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	tables := map[string]string{
		"repository": "repositories", "organization": "organizations", "enterprise": "enterprises",
		"pool": "pools", "user": "users", "instance": "instances", "job": "jobs", "controller": "controllers",
		"github_credentials": "github_credentials", "github_endpoint": "github_endpoints",
		"scaleset": "scalesets", "gitea_credentials": "gitea_credentials", "template": "templates",
		"file_object": "file_objects", "forge_instance": "forge_instances", "proxy": "proxies",
	}
	secrets := map[string][]string{
		"repository":         {"webhook_secret"},
		"organization":       {"webhook_secret"},
		"enterprise":         {"webhook_secret"},
		"user":               {"password", "generation"},
		"instance":           {"jit_configuration", "callback_token"},
		"github_credentials": {"payload"},
		"gitea_credentials":  {"payload"},
		"template":           {"data"},
		"file_object":        {"content"},
		"forge_instance":     {"webhook_secret"},
		"proxy":              {"http_proxy", "https_proxy", "credentials"},
	}
	public := map[string][]string{
		"repository":   {"credentials_id"},
		"organization": {"credentials_id"},
		"enterprise":   {"credentials_id"},
		"instance":     {"token_fetched"},
		// forge_instance's gitea_credentials_id: a foreign key, not a secret.
		"forge_instance": {"gitea_credentials_id"},
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
		// Every built-in secret is marked in the Go type, none declared.
		if !reflect.DeepEqual(et.Marked, secrets[et.Name]) {
			t.Errorf("%s: marked %v, want %v", et.Name, et.Marked, secrets[et.Name])
		}
		if !reflect.DeepEqual(et.Public, public[et.Name]) {
			t.Errorf("%s: public %v, want %v", et.Name, et.Public, public[et.Name])
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
	type typo struct {
		ID     string `json:"id"`
		Secret string `json:"webhook_secret" changecast:"secert"`
	}
	type both struct {
		ID    string `json:"id"`
		Token string `json:"token" changecast:"secret,public"`
	}
	type marked struct {
		ID    string `json:"id"`
		Token string `json:"token" changecast:"secret"`
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
		{"unknown tag option", EntityType{Name: "v", Table: "vs", GoType: reflect.TypeOf(typo{})}, `unknown changecast tag option "secert"`},
		{"tagged secret and public", EntityType{Name: "u", Table: "us", GoType: reflect.TypeOf(both{})}, "tagged both secret and public"},
		{"marked secret, declared public", EntityType{Name: "s", Table: "ss", GoType: reflect.TypeOf(marked{}), Public: []string{"token"}}, "both secret and public"},
		{"declared secret and public", EntityType{Name: "q", Table: "qs", Secrets: []string{"pin"}, Public: []string{"pin"}}, "both secret and public"},
		{"empty public column", EntityType{Name: "o", Table: "os", Public: []string{""}}, "empty column name"},
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

func TestRegistry_Register_MarkedDeclaredPublic(t *testing.T) {
	type gadget struct {
		ID         int64  `json:"id"`
		Passphrase string `json:"passphrase" changecast:"secret"`
		TokenCount int64  `json:"token_count" changecast:"public"`
		Label      string `json:"label"`
	}
	r := NewRegistry()
	in := EntityType{
		Name: "gadget", Table: "gadgets", GoType: reflect.TypeOf(gadget{}),
		Secrets: []string{"label", "passphrase"},
		Marked:  []string{"ignored"},
		Public:  []string{"session_count"},
	}
	if err := r.Register(in); err != nil {
		t.Fatal(err)
	}
	et, _ := r.Lookup("gadget")
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"Marked", et.Marked, []string{"passphrase"}},
		{"Secrets", et.Secrets, []string{"passphrase", "label"}},
		{"Public", et.Public, []string{"token_count", "session_count"}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if !et.IsMarked("passphrase") || et.IsMarked("label") || !et.IsSecret("label") || !et.IsPublic("token_count") || et.IsPublic("label") {
		t.Errorf("IsMarked/IsSecret/IsPublic disagree with %+v", et)
	}

	// Without a Go type nothing is marked; declarations stay.
	if err := r.Register(EntityType{Name: "widget", Table: "widgets", Secrets: []string{"pin"}, Public: []string{"token_count"}, Marked: []string{"pin"}}); err != nil {
		t.Fatal(err)
	}
	w, _ := r.Lookup("widget")
	if w.Marked != nil || !reflect.DeepEqual(w.Secrets, []string{"pin"}) || !reflect.DeepEqual(w.Public, []string{"token_count"}) {
		t.Errorf("widget: Marked %v, Secrets %v, Public %v; want [], [pin], [token_count]", w.Marked, w.Secrets, w.Public)
	}
}

func TestRegistry_Lookup_Unknown(t *testing.T) {
	_, err := DefaultRegistry().Lookup("pools")
	if !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Lookup(pools) error = %v, want ErrUnknownType", err)
	}
	if !strings.Contains(err.Error(), `"pools"`) || !strings.Contains(err.Error(), "pool, proxy, repository") {
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
