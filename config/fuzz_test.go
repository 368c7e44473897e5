package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// FuzzParse checks that Parse never panics, that every refusal is an
// *Error naming the file, and that every accepted file keeps the rules
// Parse promises and reads back the same when written out again.
// Seeds: the sample files, and config/testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(samples, "*.yaml"))
	more, _ := filepath.Glob(filepath.Join(samples, "invalid", "*.yaml"))
	for _, p := range append(paths, more...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("f.yaml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Message == "" || !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("got error %T %q, want an *Error starting with the file name", err, err)
			}
			if file != nil {
				t.Fatalf("got a file and an error")
			}
			return
		}
		checkInvariants(t, file)
		again, err := Parse("f.yaml", render(t, file))
		if err != nil {
			t.Fatalf("an accepted file, written out, is refused: %v\n%s", err, render(t, file))
		}
		if a, b := withoutLines(file), withoutLines(again); !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip: got %#v, want %#v", b, a)
		}
	})
}

// checkInvariants fails t unless f keeps every rule Parse promises.
func checkInvariants(t testing.TB, f *File) {
	t.Helper()
	if len(f.Entities) == 0 {
		t.Fatal("accepted a file without entities")
	}
	names, tables := map[string]bool{}, map[string]bool{}
	for _, e := range f.Entities {
		if !snakeName.MatchString(e.Name) || e.Name == reservedName {
			t.Fatalf("accepted entity name %q", e.Name)
		}
		for _, id := range []string{e.Schema, e.Table} {
			if !snakeName.MatchString(id) || len(id) > maxIdentifier {
				t.Fatalf("accepted table %s.%s", e.Schema, e.Table)
			}
		}
		if names[e.Name] || tables[e.QualifiedTable()] {
			t.Fatalf("accepted a duplicate: %s on %s", e.Name, e.QualifiedTable())
		}
		names[e.Name], tables[e.QualifiedTable()] = true, true
		for _, list := range [][]string{e.Key, e.Secrets, e.Columns} {
			seen := map[string]bool{}
			for _, c := range list {
				if strings.TrimSpace(c) == "" || seen[c] {
					t.Fatalf("accepted list %q", list)
				}
				seen[c] = true
			}
		}
		for _, s := range e.Secrets {
			if contains(e.Columns, s) || contains(e.Key, s) {
				t.Fatalf("accepted secret %q that is allowed or a key", s)
			}
		}
		for _, k := range e.Key {
			if len(e.Columns) > 0 && !contains(e.Columns, k) {
				t.Fatalf("accepted key %q outside the allow-list", k)
			}
		}
		switch e.ReplicaIdentity {
		case "", ReplicaIdentityFull, ReplicaIdentityDefault:
		default:
			t.Fatalf("accepted replica_identity %q", e.ReplicaIdentity)
		}
		if e.Line < 1 {
			t.Fatalf("entity %s has line %d", e.Name, e.Line)
		}
	}
}

// render writes f back out as a config file.
func render(t testing.TB, f *File) []byte {
	t.Helper()
	type entity struct {
		Name            string   `yaml:"name"`
		Table           string   `yaml:"table"`
		Key             []string `yaml:"key,omitempty"`
		Secrets         []string `yaml:"secrets,omitempty"`
		Columns         []string `yaml:"columns,omitempty"`
		ReplicaIdentity string   `yaml:"replica_identity,omitempty"`
	}
	var out struct {
		Entities []entity `yaml:"entities"`
	}
	for _, e := range f.Entities {
		out.Entities = append(out.Entities, entity{e.Name, e.QualifiedTable(), e.Key, e.Secrets, e.Columns, e.ReplicaIdentity})
	}
	data, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func withoutLines(f *File) []Entity {
	out := make([]Entity, len(f.Entities))
	for i, e := range f.Entities {
		e.Line = 0
		out[i] = e
	}
	return out
}
