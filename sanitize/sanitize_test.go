package sanitize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

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
				m := map[string]any{}
				for _, col := range et.Columns {
					if et.IsSecret(col) {
						m[col] = canary(col)
					} else {
						m[col] = "plain-" + col
					}
				}
				row, prev := entities.RowOf(m), entities.RowOf(m)
				in := entities.Change{EntityType: et.Name, Operation: op, Payload: row, Previous: prev}
				got, err := s.Change(in)
				if err != nil {
					t.Fatalf("Change: %v", err)
				}
				b, err := json.Marshal(struct{ P, Q *entities.Row }{got.Payload, got.Previous})
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
					if val(got.Payload, col) != "plain-"+col || val(got.Previous, col) != "plain-"+col {
						t.Fatalf("column %s: got %v / %v, want plain-%s", col, val(got.Payload, col), val(got.Previous, col), col)
					}
				}
				// The input is untouched: the watcher's rows may be shared.
				for _, col := range et.Secrets {
					if val(row, col) != canary(col) {
						t.Fatalf("input row mutated at %s", col)
					}
				}
			})
		}
	}
}

func TestSanitizer_Change_UnknownTypeFailsClosed(t *testing.T) {
	s := New(entities.DefaultRegistry())
	_, err := s.Change(entities.Change{EntityType: "widget", Operation: entities.OpCreate, Payload: entities.RowOf(map[string]any{"secret": "x"})})
	if !errors.Is(err, entities.ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	out, err := s.Changes([]entities.Change{
		{EntityType: "pool", Operation: entities.OpCreate, Payload: entities.RowOf(map[string]any{"id": "a"})},
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

func TestPolicy_Builtins(t *testing.T) {
	type want struct {
		stripped []Rule
		public   []string
	}
	marked := func(cols ...string) []Rule {
		var out []Rule
		for _, c := range cols {
			out = append(out, Rule{Column: c, Reason: ReasonMarked})
		}
		return out
	}
	wants := map[string]want{
		"repository":         {marked("webhook_secret"), []string{"credentials_id"}},
		"organization":       {marked("webhook_secret"), []string{"credentials_id"}},
		"enterprise":         {marked("webhook_secret"), []string{"credentials_id"}},
		"pool":               {},
		"user":               {marked("password", "generation"), nil},
		"instance":           {marked("jit_configuration", "callback_token"), []string{"token_fetched"}},
		"job":                {},
		"controller":         {},
		"github_credentials": {marked("payload"), nil},
		"github_endpoint":    {},
		"scaleset":           {},
		"gitea_credentials":  {marked("payload"), nil},
		"template":           {marked("data"), nil},
		"file_object":        {marked("content"), nil},
		"forge_instance":     {marked("webhook_secret"), []string{"gitea_credentials_id"}},
		"proxy":              {marked("http_proxy", "https_proxy", "credentials"), nil},
	}
	reg := entities.DefaultRegistry()
	if len(reg.Types()) != len(wants) {
		t.Fatalf("%d built-in types, want %d: add the new type to this table", len(reg.Types()), len(wants))
	}
	for _, et := range reg.Types() {
		t.Run(et.Name, func(t *testing.T) {
			w, ok := wants[et.Name]
			if !ok {
				t.Fatalf("no expectation for built-in type %s", et.Name)
			}
			stripped, public := Policy(et)
			if !reflect.DeepEqual(stripped, w.stripped) {
				t.Errorf("stripped = %v, want %v", stripped, w.stripped)
			}
			if !reflect.DeepEqual(public, w.public) {
				t.Errorf("public = %v, want %v", public, w.public)
			}
			// No built-in column is stripped by the name rule alone: each
			// secret-looking one is either marked or explicitly allowed.
			for _, col := range et.Columns {
				if SecretName(col) && !et.IsSecret(col) && !et.IsPublic(col) {
					t.Errorf("column %s looks secret but is neither marked nor allowed", col)
				}
			}
		})
	}
}

func TestPolicy_Reasons(t *testing.T) {
	type gadget struct {
		ID         int64  `json:"id"`
		Label      string `json:"label"`
		Passphrase string `json:"passphrase" changecast:"secret"`
		APIKey     string `json:"api_key"`
		TokenCount int64  `json:"token_count" changecast:"public"`
	}
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "gadget", Table: "gadgets", GoType: reflect.TypeOf(gadget{}), Secrets: []string{"label", "legacy_pin"}, Public: []string{"session_count"}}); err != nil {
		t.Fatal(err)
	}
	et, _ := reg.Lookup("gadget")
	stripped, public := Policy(et)
	wantStripped := []Rule{
		{"label", ReasonDeclared},
		{"passphrase", ReasonMarked},
		{"api_key", ReasonName},
		{"legacy_pin", ReasonDeclared},
	}
	if !reflect.DeepEqual(stripped, wantStripped) {
		t.Errorf("stripped = %v, want %v", stripped, wantStripped)
	}
	if want := []string{"token_count", "session_count"}; !reflect.DeepEqual(public, want) {
		t.Errorf("public = %v, want %v", public, want)
	}
}

// TestSanitizer_Change_CountsWithheldNameColumns: a column the watcher did
// not decode (Change.Withheld) because only the name rule strips it is
// still counted in Stats.NameColumns, once per change; a marked or declared
// one is not, and the rows are returned as they are (nothing to copy).
func TestSanitizer_Change_CountsWithheldNameColumns(t *testing.T) {
	reg := entities.DefaultRegistry()
	if err := reg.Register(entities.EntityType{Name: "widget", Table: "widgets", Secrets: []string{"note"}}); err != nil {
		t.Fatal(err)
	}
	s := New(reg)
	row := entities.RowOf(map[string]any{"id": int64(1), "label": "w"})
	for range 3 {
		got, err := s.Change(entities.Change{EntityType: "widget", Operation: entities.OpUpdate, Payload: row, Previous: row,
			Withheld: []string{"db_password", "note"}})
		if err != nil {
			t.Fatal(err)
		}
		if got.Payload != row || got.Previous != row {
			t.Fatalf("rows with nothing to strip were copied")
		}
	}
	if n := s.Stats().NameColumns; n != 3 {
		t.Errorf("Stats().NameColumns = %d, want 3 (db_password, once per change)", n)
	}
}

// TestSanitizer_Change_UnmarkedColumn covers deny by default: a column the
// registry does not know (added by ALTER TABLE, decoded by the watcher from
// the new Relation message) is stripped when its name looks secret, and
// kept when it does not or when the type allows it explicitly.
func TestSanitizer_Change_UnmarkedColumn(t *testing.T) {
	reg := entities.DefaultRegistry()
	if err := reg.Register(entities.EntityType{Name: "widget", Table: "widgets", Public: []string{"token_count"}}); err != nil {
		t.Fatal(err)
	}
	s := New(reg)
	cases := []struct {
		entity string
		row    *entities.Row
		gone   []string
		kept   []string
	}{
		{"repository", entities.RowOf(map[string]any{"id": "r1", "name": "n", "api_token": canary("api_token"), "deploy_key": "public-ish"}),
			[]string{"api_token"}, []string{"id", "name", "deploy_key"}},
		{"instance", entities.RowOf(map[string]any{"id": "i1", "token_fetched": true, "runnerRegistrationToken": canary("reg"), "callback_url": "https://x"}),
			[]string{"runnerRegistrationToken"}, []string{"id", "token_fetched", "callback_url"}},
		{"widget", entities.RowOf(map[string]any{"id": int64(1), "token_count": int64(3), "db_password": canary("db"), "label": "w"}),
			[]string{"db_password"}, []string{"id", "token_count", "label"}},
		{"pool", entities.RowOf(map[string]any{"id": "p1", "token_count": int64(3)}),
			[]string{"token_count"}, []string{"id"}},
	}
	for _, c := range cases {
		t.Run(c.entity, func(t *testing.T) {
			for _, op := range []entities.Operation{entities.OpCreate, entities.OpUpdate, entities.OpDelete} {
				got, err := s.Change(entities.Change{EntityType: c.entity, Operation: op, Payload: c.row, Previous: c.row})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range []*entities.Row{got.Payload, got.Previous} {
					for _, col := range c.gone {
						if r.Has(col) {
							t.Errorf("%s: column %s survived", op, col)
						}
					}
					for _, col := range c.kept {
						if g, w := field(r, col), field(c.row, col); g != w {
							t.Errorf("%s: column %s = %v, want %v", op, col, g, w)
						}
					}
				}
			}
			// The package-level Row applies the same rules.
			et, _ := reg.Lookup(c.entity)
			r := Row(et, c.row)
			for _, col := range c.gone {
				if r.Has(col) {
					t.Errorf("Row: column %s survived", col)
				}
			}
			if r.Len() != len(c.kept) {
				t.Errorf("Row kept %v, want %v", r, c.kept)
			}
		})
	}
}

func TestSanitizer_Change_NestedJSON(t *testing.T) {
	s := New(entities.DefaultRegistry())
	specs := json.RawMessage(`{
		"disk_size": 9007199254740993,
		"price": 0.10,
		"token": "` + canary("d1") + `",
		"cloud": {"region": "eu", "secret_key": "` + canary("d2") + `"},
		"l1": {"l2": {"l3": {"l4": {"keep": "yes", "privateKey": "` + canary("d5") + `"}}}},
		"runners": [{"name": "a", "jitConfig": "` + canary("arr") + `"}, {"name": "b"}],
		"note": "the word token in a value is kept"
	}`)
	prevSpecs := json.RawMessage(`[{"password": "` + canary("prev") + `", "n": 1}]`)
	in := entities.Change{
		EntityType: "pool", Operation: entities.OpUpdate,
		Payload:  entities.RowOf(map[string]any{"id": "p1", "extra_specs": specs}),
		Previous: entities.RowOf(map[string]any{"id": "p1", "extra_specs": prevSpecs}),
	}
	specsCopy := append([]byte(nil), specs...)
	got, err := s.Change(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(struct{ P, Q *entities.Row }{got.Payload, got.Previous})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "CANARY") {
		t.Fatalf("nested secret survived: %s", b)
	}
	for _, keep := range []string{`"disk_size":9007199254740993`, `"price":0.10`, `"region":"eu"`, `"keep":"yes"`, `"name":"a"`, `{"name":"b"}`, `"note":"the word token in a value is kept"`, `[{"n":1}]`} {
		if !strings.Contains(string(b), keep) {
			t.Errorf("sanitized output lacks %s: %s", keep, b)
		}
	}
	if !bytes.Equal(specs, specsCopy) {
		t.Fatalf("input json value modified")
	}
	if st := s.Stats(); st.JSONRewritten != 2 || st.NameColumns != 0 || st.InvalidJSON != 0 {
		t.Errorf("Stats() = %+v, want 2 json values rewritten", st)
	}

	// Nothing to strip: the very same bytes go out.
	clean := json.RawMessage(`{"disk_size": 9007199254740993, "tags": ["tokenizer"]}`)
	in = entities.Change{EntityType: "pool", Operation: entities.OpCreate, Payload: entities.RowOf(map[string]any{"id": "p2", "extra_specs": clean})}
	got, err = s.Change(in)
	if err != nil {
		t.Fatal(err)
	}
	if got.Payload != in.Payload {
		t.Fatalf("clean row rewritten: %s", got.Payload)
	}
}

// TestSanitizer_Change_PublicColumnStillScanned: allowing a column applies
// to the column, never to keys inside its json value.
func TestSanitizer_Change_PublicColumnStillScanned(t *testing.T) {
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "widget", Table: "widgets", Public: []string{"session_info"}}); err != nil {
		t.Fatal(err)
	}
	got, err := New(reg).Change(entities.Change{EntityType: "widget", Operation: entities.OpCreate, Payload: entities.RowOf(map[string]any{
		"id": int64(1), "session_info": json.RawMessage(`{"started": 1, "cookie": "CANARY"}`),
	})})
	if err != nil {
		t.Fatal(err)
	}
	if v := field(got.Payload, "session_info"); v != `{"started":1}` {
		t.Fatalf("session_info = %s, want {\"started\":1}", v)
	}
}

// TestSanitizer_Change_GoValues: []any and map[string]any values (arrays of
// json, or rows built in Go) get the nested rule too, copy-on-write.
func TestSanitizer_Change_GoValues(t *testing.T) {
	s := New(entities.DefaultRegistry())
	inner := map[string]any{"a": 1, "api_key": "CANARY"}
	arr := []any{json.RawMessage(`{"token": "CANARY", "x": 1}`), inner, "plain", nil}
	cleanArr := []any{json.RawMessage(`{"x": 1}`), map[string]any{"y": 2}}
	row := entities.RowOf(map[string]any{"id": "j", "labels": arr, "meta": map[string]any{"deep": map[string]any{"session": "CANARY", "k": []any{map[string]any{"password": "CANARY"}}}}, "clean": cleanArr})
	got, err := s.Change(entities.Change{EntityType: "job", Operation: entities.OpCreate, Payload: row})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(got.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "CANARY") {
		t.Fatalf("secret survived: %s", b)
	}
	want := `{"clean":[{"x":1},{"y":2}],"id":"j","labels":[{"x":1},{"a":1},"plain",null],"meta":{"deep":{"k":[{}]}}}`
	if string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	if !strings.Contains(row.String(), "CANARY") || inner["api_key"] != "CANARY" {
		t.Fatalf("input mutated: %s", row)
	}
	if g, w := field(got.Payload, "clean"), field(row, "clean"); g != w {
		t.Fatalf("clean value rewritten: %s, want %s", g, w)
	}
}

// TestSanitizer_Change_InvalidJSON: a Row holds valid JSON only, so JSON
// that does not parse cannot reach the sanitizer inside a row: building
// the row fails, naming the column, and says nothing of the value.
func TestSanitizer_Change_InvalidJSON(t *testing.T) {
	_, err := entities.NewRow(map[string]any{"id": "p", "extra_specs": json.RawMessage(`{"token": "CANARY"`)})
	if err == nil || !strings.Contains(err.Error(), "extra_specs") || strings.Contains(err.Error(), "CANARY") {
		t.Fatalf("NewRow with invalid json = %v, want an error naming the column and not the value", err)
	}
	if _, err := entities.ParseRow([]byte(`{"extra_specs": {"token": "CANARY"}`)); err == nil {
		t.Fatal("ParseRow accepted invalid JSON")
	}
}

// TestSanitizer_LazyCacheBounded: columns unknown to the registry are
// cached up to maxLazyColumns per type and still decided beyond it.
func TestSanitizer_LazyCacheBounded(t *testing.T) {
	s := New(entities.DefaultRegistry())
	for i := 0; i < maxLazyColumns+500; i++ {
		col := fmt.Sprintf("extra_%d_token", i)
		got, err := s.Change(entities.Change{EntityType: "job", Operation: entities.OpCreate, Payload: entities.RowOf(map[string]any{"id": int64(i), col: "CANARY", fmt.Sprintf("n_%d", i): 1})})
		if err != nil {
			t.Fatal(err)
		}
		if got.Payload.Has(col) || got.Payload.Len() != 2 {
			t.Fatalf("row %d: got %v, want id and n_%d only", i, got.Payload, i)
		}
	}
	p, _ := s.policy("job")
	if n := p.lazyN.Load(); n > maxLazyColumns {
		t.Fatalf("lazy cache holds %d columns, want at most %d", n, maxLazyColumns)
	}
	if st := s.Stats(); st.NameColumns != maxLazyColumns+500 {
		t.Fatalf("Stats().NameColumns = %d, want %d", st.NameColumns, maxLazyColumns+500)
	}
}

func TestSanitizer_Change_Concurrent(t *testing.T) {
	s := New(entities.DefaultRegistry())
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				m := typicalPoolValues()
				m[fmt.Sprintf("added_%d_secret", i%20)] = "CANARY"
				row := entities.RowOf(m)
				got, err := s.Change(entities.Change{EntityType: "pool", Operation: entities.OpUpdate, Payload: row, Previous: row})
				if err != nil {
					t.Error(err)
					return
				}
				if b, _ := json.Marshal(got.Payload); strings.Contains(string(b), "CANARY") {
					t.Errorf("secret survived: %s", b)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// typicalPoolRow is a pool row as the watcher decodes it.
func typicalPoolRow() *entities.Row { return entities.RowOf(typicalPoolValues()) }

// typicalPoolValues is typicalPoolRow's columns as Go values.
func typicalPoolValues() map[string]any {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return map[string]any{
		"id":                       uuid.MustParse("5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70"),
		"provider_name":            "lxd",
		"runner_prefix":            "garm",
		"max_runners":              int64(10),
		"min_idle_runners":         int64(1),
		"image":                    "ubuntu:24.04",
		"flavor":                   "default",
		"os_type":                  "linux",
		"os_arch":                  "amd64",
		"tags":                     []string{"self-hosted", "x64", "ubuntu"},
		"enabled":                  true,
		"runner_bootstrap_timeout": int64(20),
		"priority":                 int64(0),
		"cost_per_hour":            json.Number("0.0420"),
		"extra_specs":              json.RawMessage(`{"disk_size": 100, "network": {"name": "lxdbr0", "vlan": 12}, "profiles": ["default", "runner"], "cloud_init": {"packages": ["git", "curl"]}}`),
		"repo_id":                  uuid.MustParse("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
		"org_id":                   nil,
		"enterprise_id":            nil,
		"created_at":               now,
		"updated_at":               now,
	}
}

// BenchmarkSanitize_Row measures the hot path: one typical pool row with a
// jsonb column holding nothing secret (the common case), new and previous.
func BenchmarkSanitize_Row(b *testing.B) {
	s := New(entities.DefaultRegistry())
	row := typicalPoolRow()
	c := entities.Change{EntityType: "pool", Operation: entities.OpUpdate, Payload: row, Previous: row}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Change(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSanitize_RowNestedSecret is the same with a secret key nested in
// the jsonb value, so it is rewritten.
func BenchmarkSanitize_RowNestedSecret(b *testing.B) {
	s := New(entities.DefaultRegistry())
	m := typicalPoolValues()
	m["extra_specs"] = json.RawMessage(`{"disk_size": 100, "network": {"name": "lxdbr0", "vlan": 12}, "profiles": ["default", "runner"], "cloud_init": {"packages": ["git", "curl"], "runner_token": "x"}}`)
	row := entities.RowOf(m)
	c := entities.Change{EntityType: "pool", Operation: entities.OpUpdate, Payload: row, Previous: row}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Change(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSecretName(b *testing.B) {
	names := []string{"pool_balancer_type", "runner_bootstrap_timeout", "privateKeyPEM", "extra_specs"}
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range names {
			SecretName(n)
		}
	}
}

func TestSanitizer_Change_SecretNamedKeyHidesEntityID(t *testing.T) {
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "session", Table: "sessions", Key: "session_token"}); err != nil {
		t.Fatal(err)
	}
	got, err := New(reg).Change(entities.Change{
		EntityType: "session", Operation: entities.OpDelete, EntityID: "CANARY-key",
		Payload: entities.RowOf(map[string]any{"session_token": "CANARY-key", "user": "ada"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.EntityID != "" || got.Payload.Has("session_token") || val(got.Payload, "user") != "ada" {
		t.Fatalf("got id %q payload %v: a secret-named key column must not leave as the entity id", got.EntityID, got.Payload)
	}
}

// TestSanitizer_AllowList: with an allow-list nothing else leaves, even a
// column whose name looks harmless; secrets still apply within it.
func TestSanitizer_AllowList(t *testing.T) {
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "order", Table: "orders", Schema: "public",
		Allowed: []string{"id", "total", "note"}, Secrets: []string{"note"}}); err != nil {
		t.Fatal(err)
	}
	s := New(reg)
	c, err := s.Change(entities.Change{EntityType: "order", Operation: entities.OpUpdate, EntityID: "7",
		Payload:  entities.RowOf(map[string]any{"id": 7, "total": "9.50", "note": "CANARY-note", "internal_margin": "0.42"}),
		Previous: entities.RowOf(map[string]any{"id": 7, "total": "9.00", "internal_margin": "0.40"})})
	if err != nil {
		t.Fatal(err)
	}
	want := entities.RowOf(map[string]any{"id": 7, "total": "9.50"})
	if !reflect.DeepEqual(c.Payload, want) || !reflect.DeepEqual(c.Previous, entities.RowOf(map[string]any{"id": 7, "total": "9.00"})) || c.EntityID != "7" {
		t.Fatalf("payload %v, previous %v, id %q; want only id and total", c.Payload, c.Previous, c.EntityID)
	}
	et, _ := reg.Lookup("order")
	if !Stripped(et, "internal_margin") || Stripped(et, "total") {
		t.Fatal("Stripped must follow the allow-list: a filter may not test a column that never leaves")
	}
	if err := reg.Register(entities.EntityType{Name: "bad", Table: "bad", Allowed: []string{"total"}}); err == nil || !strings.Contains(err.Error(), "allow-list") {
		t.Fatalf("an allow-list without the key: %v, want an error", err)
	}
}

// val is a row's column as a Go value (Row.Value), nil when missing.
func val(r *entities.Row, col string) any {
	v, _ := r.Value(col)
	return v
}

// field is a row's column's JSON, "<missing>" when missing.
func field(r *entities.Row, col string) string {
	v, ok := r.Get(col)
	if !ok {
		return "<missing>"
	}
	return string(v)
}

// TestStripped_WhatADecoderMayOmit: every column the Sanitizer strips
// from every row, for whatever reason, is Stripped (and so left undecoded
// by the pipeline's watcher); no column it keeps is.
func TestStripped_WhatADecoderMayOmit(t *testing.T) {
	instance, err := entities.DefaultRegistry().Lookup("instance")
	if err != nil {
		t.Fatal(err)
	}
	order := entities.EntityType{Name: "order", Table: "orders", Key: "id", Secrets: []string{"internal_note"}, Public: []string{"public_key"}}
	listed := entities.EntityType{Name: "line", Table: "lines", Key: "id", Allowed: []string{"id", "sku"}}
	for _, c := range []struct {
		et   entities.EntityType
		col  string
		want bool
	}{
		{instance, "callback_token", true}, // marked
		{instance, "name", false},
		{order, "internal_note", true}, // declared
		{order, "api_key", true},       // the name rule
		{order, "public_key", false},   // allowed although it looks secret
		{order, "status", false},
		{listed, "price", true}, // not in the allow-list
		{listed, "sku", false},
	} {
		if got := Stripped(c.et, c.col); got != c.want {
			t.Errorf("Stripped(%s, %s) = %v, want %v", c.et.Name, c.col, got, c.want)
		}
	}
}
