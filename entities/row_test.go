package entities

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// RowOf writes what encoding/json wrote for the same map (keys sorted, no
// HTML escaping), and the Row reads back its members without decoding.
func TestRowOf_IsEncodingJSONOfTheMap(t *testing.T) {
	m := map[string]any{
		"id": uuid.MustParse("0b0e3f3e-8f5e-4e0c-9a77-3d5b1b8e1f00"), "n": int64(9007199254740993), "s": "a<b>&\u2028\"q\"",
		"at": time.Date(2026, 11, 23, 10, 0, 0, 500000000, time.UTC), "j": json.RawMessage(`{ "x" : [1, 2.50] }`),
		"nil": nil, "tags": []string{"a", "b"}, "b": []byte{0, 1, 0xff},
	}
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		t.Fatal(err)
	}
	r := RowOf(m)
	if got := r.String(); got != strings.TrimSuffix(want.String(), "\n") {
		t.Fatalf("RowOf = %s\nwant   %s", got, want.String())
	}
	if r.Len() != len(m) || !reflect.DeepEqual(r.Names(), []string{"at", "b", "id", "j", "n", "nil", "s", "tags"}) {
		t.Fatalf("names %v", r.Names())
	}
	if v, ok := r.Get("j"); !ok || string(v) != `{"x":[1,2.50]}` {
		t.Fatalf(`Get("j") = %s, %v`, v, ok)
	}
	if s, ok := r.Text("n"); !ok || s != "9007199254740993" {
		t.Fatalf(`Text("n") = %q, %v`, s, ok)
	}
	if s, ok := r.Text("s"); !ok || s != m["s"] {
		t.Fatalf(`Text("s") = %q, %v`, s, ok)
	}
	if _, ok := r.Text("nil"); ok || !r.IsNull("nil") || r.IsNull("s") || r.Has("missing") {
		t.Fatal("null and missing columns")
	}
	var at time.Time
	if err := r.Decode("at", &at); err != nil || !at.Equal(m["at"].(time.Time)) {
		t.Fatalf(`Decode("at") = %v, %v`, at, err)
	}
	back, err := ParseRow(r.JSON())
	if err != nil || !back.Equal(r) || !reflect.DeepEqual(back.Names(), r.Names()) {
		t.Fatalf("ParseRow(JSON) = %v, %v; want %v", back, err, r)
	}
}

func TestRow_Nil(t *testing.T) {
	var r *Row
	if r.Len() != 0 || r.Has("x") || r.String() != "null" || r.Names() != nil || r.Without(func(string) bool { return true }) != nil {
		t.Fatal("a nil Row is not an absent row")
	}
	b, err := json.Marshal(struct{ R *Row }{})
	if err != nil || string(b) != `{"R":null}` {
		t.Fatalf("marshal nil: %s, %v", b, err)
	}
	if empty := (&RowBuilder{}).Row(); empty.String() != "{}" || empty.Len() != 0 {
		t.Fatalf("empty row = %s", empty)
	}
}

func TestParseRow(t *testing.T) {
	cases := []struct{ in, want, names string }{
		{`{}`, `{}`, ""},
		{` { "b" : 1 , "a" : [ 1 , { "c" : null } ] } `, `{"b":1,"a":[1,{"c":null}]}`, "b,a"},
		{`{"\u0061":"x\"}","b":"\\"}`, `{"\u0061":"x\"}","b":"\\"}`, "a,b"},
		{`{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`, "a,b"}, // the last wins, as in a map
	}
	for _, c := range cases {
		r, err := ParseRow([]byte(c.in))
		if err != nil {
			t.Fatalf("ParseRow(%s): %v", c.in, err)
		}
		if r.String() != c.want || strings.Join(r.Names(), ",") != c.names {
			t.Errorf("ParseRow(%s) = %s %v, want %s %s", c.in, r, r.Names(), c.want, c.names)
		}
	}
	if r, err := ParseRow([]byte(" null ")); r != nil || err != nil {
		t.Errorf("ParseRow(null) = %v, %v; want nil, nil", r, err)
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{"a":}`, `{"a":1`, `{"a":1}{}`} {
		if _, err := ParseRow([]byte(bad)); err == nil {
			t.Errorf("ParseRow(%s) accepted", bad)
		}
	}
}

func TestRow_Without(t *testing.T) {
	r := RowOf(map[string]any{"a": 1, "secret": "x", "z": []int{1}})
	if got := r.Without(func(n string) bool { return n == "nope" }); got != r {
		t.Fatal("Without dropping nothing made a copy")
	}
	got := r.Without(func(n string) bool { return n == "secret" })
	if got.String() != `{"a":1,"z":[1]}` || r.String() != `{"a":1,"secret":"x","z":[1]}` {
		t.Fatalf("Without = %s (input now %s)", got, r)
	}
}

// FuzzParseRow checks ParseRow on arbitrary bytes (rows come from frames a
// client receives and from the journal): it never panics, accepts exactly
// the JSON objects encoding/json accepts, and its members hold the same
// values as a map decoded by encoding/json, the Row's bytes being compact
// valid JSON that parses back to the same Row. The seed corpus is in
// testdata/fuzz/FuzzParseRow.
func FuzzParseRow(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[true,null,{"c":"\u00e9"}]}`, `{"a":1,"a":2}`, ` {"x" : "y\"z" } `, `[1]`, `{"a":`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseRow(in)
		var m map[string]json.RawMessage
		mErr := json.Unmarshal(in, &m)
		if string(trimSpace(in)) == "null" {
			if r != nil || err != nil {
				t.Fatalf("ParseRow(null) = %v, %v", r, err)
			}
			return
		}
		if (err == nil) != (mErr == nil) {
			t.Fatalf("ParseRow(%q) error %v, encoding/json error %v", in, err, mErr)
		}
		if err != nil {
			return
		}
		if !json.Valid(r.JSON()) || r.Len() != len(m) {
			t.Fatalf("ParseRow(%q) = %s (%d members), want %d", in, r, r.Len(), len(m))
		}
		for k, v := range m {
			got, ok := r.Get(k)
			var want bytes.Buffer
			if err := json.Compact(&want, v); err != nil {
				t.Fatal(err)
			}
			if !ok || !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("ParseRow(%q): %q = %s, want %s", in, k, got, want.Bytes())
			}
		}
		again, err := ParseRow(r.JSON())
		if err != nil || !again.Equal(r) {
			t.Fatalf("ParseRow(%s) again = %v, %v", r, again, err)
		}
	})
}

// TestRow_Allocs: reading a member allocates nothing, and reading a row
// back from the journal allocates a fixed handful of times however many
// members it has (its values are not decoded).
func TestRow_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m := map[string]any{}
	for i := range 60 {
		m[strings.Repeat("c", i%7+1)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "value with \"escapes\" and ünïcode"
	}
	r := RowOf(m)
	if allocs := testing.AllocsPerRun(100, func() { _, _ = r.Get("ccccccczb") }); allocs != 0 {
		t.Errorf("Get: %v allocations, want 0", allocs)
	}
	data := r.JSON()
	if allocs := testing.AllocsPerRun(100, func() { _, _ = ParseRow(data) }); allocs > 8 {
		t.Errorf("ParseRow of %d members: %v allocations, want at most 8", r.Len(), allocs)
	}
}

// KeyMember builds the same row as Key, names needing escapes included,
// and Drop after it leaves the row as it was.
func TestRowBuilder_KeyMember(t *testing.T) {
	names := []string{"id", "a\"b", "tab\tnl\n", "<html>&", "\u2028", "ünï"}
	var byKey, byMember RowBuilder
	for i, n := range names {
		v := []byte{'1' + byte(i)}
		byKey.End(append(byKey.Key(n), v...))
		m := NewMember(n)
		if m.Name() != n {
			t.Fatalf("Member.Name: got %q, want %q", m.Name(), n)
		}
		byMember.KeyMember(NewMember("dropped"))
		byMember.Drop()
		byMember.End(append(byMember.KeyMember(m), v...))
	}
	a, b := byKey.Row(), byMember.Row()
	if a.String() != b.String() || !reflect.DeepEqual(a.Names(), b.Names()) {
		t.Fatalf("KeyMember row: got %s %q, want %s %q", b, b.Names(), a, a.Names())
	}
	if _, err := ParseRow(b.JSON()); err != nil {
		t.Fatalf("KeyMember row is not valid JSON: %v", err)
	}
}
