package sanitize

import (
	"github.com/changecast/changecast/entities"

	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestStripJSON(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"depth 1", `{"a": 1, "token": "CANARY"}`, `{"a":1}`},
		{"depth 2", `{"a": {"b": 2, "password": "CANARY"}}`, `{"a":{"b":2}}`},
		{"depth 3 as in the issue", `{"a": {"b": {"private_key": "x"}}}`, `{"a":{"b":{}}}`},
		{"depth 5", `{"l1": {"l2": {"l3": {"l4": {"keep": true, "apiKey": "CANARY"}}}}}`, `{"l1":{"l2":{"l3":{"l4":{"keep":true}}}}}`},
		{"in an array", `[{"token": 1}]`, `[{}]`},
		{"array of objects, mixed", `[{"a": 1, "secret": 2}, {"b": [{"jit_config": "CANARY", "c": 3}]}, 4]`, `[{"a":1},{"b":[{"c":3}]},4]`},
		{"secret first, then others", `{"token": 1, "a": 2, "b": 3}`, `{"a":2,"b":3}`},
		{"secret last", `{"a": 2, "b": 3, "token": 1}`, `{"a":2,"b":3}`},
		{"only secrets", `{"token": 1, "secret": {"a": 1}}`, `{}`},
		{"whole value goes, whatever it holds", `{"credentials": {"user": "u", "nested": [1, 2]}, "n": null}`, `{"n":null}`},
		{"numbers keep their text", `{"big": 9007199254740993, "f": 1.50, "e": -2E+10, "token": 1}`, `{"big":9007199254740993,"f":1.50,"e":-2E+10}`},
		{"string escapes kept", `{"s": "a\"b\\c\u00e9\/", "token": "x"}`, `{"s":"a\"b\\c\u00e9\/"}`},
		{"escaped key spelling token", `{"\u0074oken": "CANARY", "a": 1}`, `{"a":1}`},
		{"secret-looking value, harmless key", `{"note": "token password"}`, `{"note": "token password"}`},
		{"secret word as a string in an array", `["token", "password"]`, `["token", "password"]`},
		{"order and duplicates kept", `{"z": 1, "a": 2, "z": 3, "token": 0}`, `{"z":1,"a":2,"z":3}`},
		{"camelCase and headers", `{"headers": {"Authorization": "Bearer CANARY", "X-Api-Key": "CANARY", "Accept": "json"}}`, `{"headers":{"Accept":"json"}}`},
		{"nothing secret: same bytes", `{ "a" : [ 1 , 2 ], "tokenizer": "x", "b": {"keyboard": 9007199254740993} }`, `{ "a" : [ 1 , 2 ], "tokenizer": "x", "b": {"keyboard": 9007199254740993} }`},
		{"scalar", `"token"`, `"token"`},
		{"null", `null`, `null`},
		{"invalid becomes null", `{"token": `, `null`},
		{"empty becomes null", ``, `null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.in)
			got, stripped := StripJSON(in)
			if string(got) != c.want {
				t.Fatalf("StripJSON(%s) = %s, want %s", c.in, got, c.want)
			}
			if wantStripped := c.in != c.want; stripped != wantStripped {
				t.Fatalf("StripJSON(%s) stripped = %v, want %v", c.in, stripped, wantStripped)
			}
			if !stripped && &got[0] != &in[0] {
				t.Fatalf("StripJSON(%s) copied although nothing was stripped; want the input bytes", c.in)
			}
			if string(in) != c.in {
				t.Fatalf("StripJSON modified its input: %s", in)
			}
			if !json.Valid(got) {
				t.Fatalf("StripJSON(%s) = %s: not valid JSON", c.in, got)
			}
		})
	}
}

func TestStripJSON_NoAllocWhenNothingStripped(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	in := []byte(`{"disk_size": 100, "network": {"vlan": 12, "tags": ["a", "b"]}, "image_key_hint": "ubuntu"}`)
	allocs := testing.AllocsPerRun(100, func() { StripJSON(in) })
	if allocs != 0 {
		t.Fatalf("StripJSON allocates %v times for a clean value, want 0", allocs)
	}
}

// FuzzStripJSON checks StripJSON on arbitrary bytes: it never panics, its
// output is valid JSON when the input was (and null when it was not), no
// secret-named key survives at any depth, everything else survives
// unchanged, and the input is returned as is when nothing was stripped.
// The seed corpus is in testdata/fuzz/FuzzStripJSON.
func FuzzStripJSON(f *testing.F) {
	for _, s := range []string{
		`{"a": {"b": {"private_key": "x"}}}`,
		`[{"token": 1}]`,
		`{"\u0074oken": 1, "n": 9007199254740993}`,
		`{"l1": {"l2": {"l3": {"l4": {"apiKey": "x", "keep": [1, {"JITConfig": 2}]}}}}}`,
		`{"a": 1, "a": 2, "secret": 3}`,
		`"plain"`,
		`{"tokenizer": "keyboard"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, stripped := StripJSON(in)
		if !bytes.Equal(in, orig) {
			t.Fatalf("input modified")
		}
		if !json.Valid(orig) {
			if string(out) != "null" || !stripped {
				t.Fatalf("invalid input %q: got %q, %v; want null, true", orig, out, stripped)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("StripJSON(%q) = %q: not valid JSON", orig, out)
		}
		got := decodeNumbers(t, out)
		if path := secretKeyPath(got, "$"); path != "" {
			t.Fatalf("StripJSON(%q) = %q: secret key survives at %s", orig, out, path)
		}
		want := removeSecretKeys(decodeNumbers(t, orig))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("StripJSON(%q) = %q: content changed beyond the secret keys; decoded %#v, want %#v", orig, out, got, want)
		}
		if !stripped && !bytes.Equal(out, orig) {
			t.Fatalf("StripJSON(%q) = %q without stripping; want the input bytes", orig, out)
		}
	})
}

func decodeNumbers(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// secretKeyPath returns the path of a secret-named key in v, or "". The
// path is built only on the way back from a hit, so deep values stay linear.
func secretKeyPath(v any, root string) string {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if SecretName(k) {
				return root + "." + k
			}
			if p := secretKeyPath(e, ""); p != "" {
				return root + "." + k + p
			}
		}
	case []any:
		for i, e := range x {
			if p := secretKeyPath(e, ""); p != "" {
				return fmt.Sprintf("%s[%d]%s", root, i, p)
			}
		}
	}
	return ""
}

// removeSecretKeys is the reference: decode, then delete secret keys.
func removeSecretKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if SecretName(k) {
				delete(x, k)
				continue
			}
			x[k] = removeSecretKeys(e)
		}
	case []any:
		for i, e := range x {
			x[i] = removeSecretKeys(e)
		}
	}
	return v
}

func TestStripJSON_DeepNesting(t *testing.T) {
	const depth = 5000
	in := strings.Repeat(`{"a":`, depth) + `{"token":1,"b":2}` + strings.Repeat(`}`, depth)
	want := strings.Repeat(`{"a":`, depth) + `{"b":2}` + strings.Repeat(`}`, depth)
	got, stripped := StripJSON([]byte(in))
	if !stripped || string(got) != want {
		t.Fatalf("deeply nested value: stripped %v, output differs from the expected %d levels", stripped, depth)
	}
}

// TestSanitizer_CleanRowAllocs: a row with nothing secret in it (the
// common case) is sanitized without allocating: it is returned as it is.
func TestSanitizer_CleanRowAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s := New(entities.DefaultRegistry())
	row := typicalPoolRow()
	c := entities.Change{EntityType: "pool", Operation: entities.OpUpdate, Payload: row, Previous: row}
	if _, err := s.Change(c); err != nil { // fill the policy cache
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = s.Change(c) }); allocs != 0 {
		t.Errorf("Change of a clean row: %v allocations, want 0", allocs)
	}
}
