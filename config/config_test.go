package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// samples is the shared directory of sample configuration files.
const samples = "../testdata/config"

func TestLoad_Orders(t *testing.T) {
	path := filepath.Join(samples, "orders.yaml")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &File{Path: path, Entities: []Entity{
		{
			Name: "order", Schema: "public", Table: "orders",
			Key:             []string{"id"},
			Columns:         []string{"id", "customer_id", "total", "status", "updated_at"},
			ReplicaIdentity: ReplicaIdentityFull,
			Line:            3,
		},
		{
			Name: "customer", Schema: "public", Table: "customers",
			Secrets: []string{"api_key", "password_reset_code"},
			Line:    11,
		},
		{
			Name: "order_item", Schema: "shop", Table: "order_items",
			Key:             []string{"order_id", "line_no"},
			Columns:         []string{"order_id", "line_no", "sku", "quantity", "unit_price"},
			ReplicaIdentity: ReplicaIdentityDefault,
			Line:            16,
		},
	}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got\n%#v\nwant\n%#v", f, want)
	}
}

// wantLine is each invalid sample's first line: "# want: LINE: phrase",
// or "# want: phrase" for a mistake that is the whole file.
var wantLine = regexp.MustCompile(`^# want: (?:(\d+): )?(.+)$`)

func TestParse_InvalidSamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(samples, "invalid", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no invalid samples (%v)", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := bytes.Cut(data, []byte("\n"))
			m := wantLine.FindSubmatch(first)
			if m == nil {
				t.Fatalf("first line %q is not \"# want: LINE: phrase\"", first)
			}
			line, _ := strconv.Atoi(string(m[1]))
			phrase := string(m[2])

			f, err := Load(path)
			if err == nil {
				t.Fatalf("got %+v, want an error containing %q", f, phrase)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %T %v, want *Error", err, err)
			}
			msg := err.Error()
			prefix := path + ":"
			if line > 0 {
				prefix = fmt.Sprintf("%s:%d:", path, line)
			}
			if !strings.HasPrefix(msg, prefix) || ce.Line != line {
				t.Errorf("got %q (line %d), want it to start with %q", msg, ce.Line, prefix)
			}
			if !strings.Contains(msg, phrase) {
				t.Errorf("got %q, want it to contain %q", msg, phrase)
			}
		})
	}
}

func TestParse_Errors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"whitespace only", "\n  \n", "c.yaml: the file declares nothing"},
		{"comment only", "# nothing yet\n", "c.yaml: the file declares nothing"},
		{"null entities", "entities:\n", "c.yaml:1:1: no entities declared"},
		{"not a mapping", "- name: order\n", "c.yaml:1:1: the file must be a mapping with an entities list"},
		{"entities not a list", "entities: order\n", "c.yaml:1:11: entities must be a list"},
		{"entity not a mapping", "entities:\n  - order\n", "c.yaml:2:5: entity 1 must be a mapping"},
		{"name not a string", "entities:\n  - name: [a]\n    table: t\n", "c.yaml:2:11: name must be a string"},
		{"key a mapping", "entities:\n  - name: a\n    table: t\n    key: {a: b}\n", "c.yaml:4:11: key must be a column name or a list of them"},
		{"key entry a list", "entities:\n  - name: a\n    table: t\n    key: [id, [x]]\n", "c.yaml:4:15: key must be a column name or a list of them"},
		{"null name", "entities:\n  - name:\n    table: t\n", "c.yaml:2:5: entity 1 has no name"},
		{"name with dash", "entities:\n  - name: order-item\n    table: t\n", "c.yaml:2:11: entity name \"order-item\" is not snake_case"},
		{"table with capitals", "entities:\n  - name: a\n    table: Orders\n", "c.yaml:3:12: table \"Orders\" is not a valid table name"},
		{"table empty schema", "entities:\n  - name: a\n    table: .orders\n", "is not a valid table name"},
		{"table too long", "entities:\n  - name: a\n    table: " + strings.Repeat("t", 64) + "\n", "is not a valid table name"},
		{"two documents", "entities: []\n---\nentities: []\n", "c.yaml:3:1: the file holds 2 YAML documents"},
		{"duplicate key", "entities:\n  - name: a\n    name: b\n", "c.yaml:3:5: mapping key \"name\" already defined"},
		{"merge key", "entities:\n  - <<: {name: a}\n    table: t\n", "anchors, aliases and merge keys"},
		{"tag", "entities:\n  - name: !!str a\n    table: t\n", "c.yaml:2:11: YAML tags (!...) are not supported"},
		// goccy/go-yaml#735: decoding this panics inside the library.
		{"tag without a value", "entities:\n  - name: a\n    table: t\n    columns: !foo\n", "c.yaml:4:14: YAML tags (!...) are not supported"},
		{"duplicate key column", "entities:\n  - name: a\n    table: t\n    key: [id, id]\n", "c.yaml:4:15: key lists \"id\" twice"},
		{"flow entity", "entities: [{name: a, table: t}, {name: a, table: u}]\n", "c.yaml:1:40: duplicate entity name \"a\", declared on lines 1 and 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("c.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("got %+v, want an error containing %q", f, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParse_Accepts(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       Entity
	}{
		{"minimal", "entities:\n  - name: a\n    table: t\n", Entity{Name: "a", Schema: "public", Table: "t", Line: 2}},
		{"flow style", "{entities: [{name: a, table: s.t, key: [x, y]}]}", Entity{Name: "a", Schema: "s", Table: "t", Key: []string{"x", "y"}, Line: 1}},
		{"quoted values", "entities:\n  - name: \"a\"\n    table: 's.t'\n    key: \"id\"\n", Entity{Name: "a", Schema: "s", Table: "t", Key: []string{"id"}, Line: 2}},
		{"null optionals", "entities:\n  - name: a\n    table: t\n    key:\n    secrets:\n    columns:\n    replica_identity:\n", Entity{Name: "a", Schema: "public", Table: "t", Line: 2}},
		{"secret outside the allow-list", "entities:\n  - name: a\n    table: t\n    secrets: [api_key]\n    columns: [id]\n", Entity{Name: "a", Schema: "public", Table: "t", Secrets: []string{"api_key"}, Columns: []string{"id"}, Line: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("c.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Entities) != 1 || !reflect.DeepEqual(f.Entities[0], tc.want) {
				t.Errorf("got %#v, want [%#v]", f.Entities, tc.want)
			}
		})
	}
}

func TestParseTableFlag(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		want    Entity
		wantErr string
	}{
		{flag: "order=public.orders", want: Entity{Name: "order", Schema: "public", Table: "orders"}},
		{flag: "order=orders", want: Entity{Name: "order", Schema: "public", Table: "orders"}},
		{flag: "order_item=shop.order_items", want: Entity{Name: "order_item", Schema: "shop", Table: "order_items"}},
		{flag: "public.orders", wantErr: `--table: "public.orders": write name=table`},
		{flag: "order=", wantErr: "write name=table"},
		{flag: "=orders", wantErr: "write name=table"},
		{flag: "Order=orders", wantErr: "is not snake_case"},
		{flag: "event=events", wantErr: "reserved for system events"},
		{flag: "order=a.b.c", wantErr: "is not a valid table name"},
		{flag: `order="Orders"`, wantErr: "is not a valid table name"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			e, err := ParseTableFlag(tc.flag)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e, tc.want) {
				t.Errorf("got %#v, want %#v", e, tc.want)
			}
		})
	}
}

func TestEntity_EntityType(t *testing.T) {
	e := Entity{Name: "order_item", Schema: "shop", Table: "order_items", Key: []string{"order_id", "line_no"}, Secrets: []string{"api_key"},
		Columns: []string{"order_id", "line_no", "sku"}, ReplicaIdentity: ReplicaIdentityFull}
	got := e.EntityType()
	if got.Name != "order_item" || got.Table != "order_items" || got.Key != "order_id" || !reflect.DeepEqual(got.Secrets, []string{"api_key"}) ||
		got.Schema != "shop" || !reflect.DeepEqual(got.KeyColumns, []string{"order_id", "line_no"}) ||
		!reflect.DeepEqual(got.Allowed, []string{"order_id", "line_no", "sku"}) || !got.ReplicaIdentityFull {
		t.Errorf("got %+v", got)
	}
	got.Secrets[0] = "changed"
	if e.Secrets[0] != "api_key" {
		t.Error("EntityType shares Secrets with the Entity")
	}
	if k := (Entity{Name: "a", Table: "t"}).EntityType().Key; k != "" {
		t.Errorf("got key %q for an entity without one, want empty (the primary key, resolved later)", k)
	}
}

// TestSamples_FirstLine keeps each invalid sample's header honest: one
// header, on the first line.
func TestSamples_FirstLine(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(samples, "invalid", "*"))
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		n := 0
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "# want:") {
				n++
			}
		}
		f.Close()
		if n != 1 || filepath.Ext(path) != ".yaml" {
			t.Errorf("%s: got %d want headers, want one in a .yaml file", path, n)
		}
	}
}

func TestSafely(t *testing.T) {
	err := safely(func() error { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("got %v, want an error naming the panic", err)
	}
}

// TestConfigurationDoc_ShowsOrders keeps the documentation's example the
// sample that TestLoad_Orders checks.
func TestConfigurationDoc_ShowsOrders(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile(filepath.Join(samples, "orders.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append([]byte("```yaml\n"), sample...)) {
		t.Error("docs/configuration.md does not show testdata/config/orders.yaml verbatim in a yaml block")
	}
}
