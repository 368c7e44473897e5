// Package sanitize turns decoded rows into the payloads changecast sends and
// stores, with every secret removed from the new row and from the previous
// row before anything is journaled or published.
//
// Guarantee: nothing secret by mark (`changecast:"secret"`, ReasonMarked),
// by declaration (entities.EntityType.Secrets, ReasonDeclared) or by name
// (SecretName, ReasonName: deny by default, allowed per type with
// `changecast:"public"` or entities.EntityType.Public) leaves, and
// secret-named keys are removed at any depth inside JSON values and nested
// maps and slices, kept columns included. It fails closed: a change of an
// unregistered entity type is an error. Sanitizing never mutates its input,
// and a Sanitizer is safe for concurrent use. The rules, their order and
// what they do not catch are docs/security.md.
package sanitize

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/changecast/changecast/entities"
)

// Reason says why a column is stripped.
type Reason string

// The reasons a column is stripped, strongest first.
const (
	// ReasonMarked: the Go type's field is tagged `changecast:"secret"`.
	ReasonMarked Reason = "marked"
	// ReasonDeclared: listed in entities.EntityType.Secrets at
	// registration.
	ReasonDeclared Reason = "declared"
	// ReasonName: nobody marked it, but its name is a SecretName and it is
	// not explicitly allowed.
	ReasonName Reason = "name"
	// ReasonNotAllowed: the type has an allow-list (entities.EntityType.
	// Allowed) and the column is not on it.
	ReasonNotAllowed Reason = "not in the allow-list"
)

// Rule is one stripped column and the reason it is stripped.
type Rule struct {
	Column string
	Reason Reason
}

// Policy returns the sanitize policy of et's static columns, for review
// (`changecast secrets`): stripped lists every column stripped and why, in
// column order (the Go type's columns, then declared secret columns it
// lacks); public lists the columns explicitly allowed although their names
// may look secret. A column that appears later (ALTER TABLE) is not in
// Policy's answer but is still stripped when its name is a SecretName.
func Policy(et entities.EntityType) (stripped []Rule, public []string) {
	for _, col := range staticColumns(et) {
		if r := reason(et, col); r != "" {
			stripped = append(stripped, Rule{Column: col, Reason: r})
		}
	}
	return stripped, append([]string(nil), et.Public...)
}

// staticColumns lists et's known columns once each: Columns, then Secrets
// and Public entries that are not among them.
func staticColumns(et entities.EntityType) []string {
	seen := make(map[string]bool, len(et.Columns)+len(et.Secrets)+len(et.Public))
	var out []string
	for _, list := range [][]string{et.Columns, et.Allowed, et.Secrets, et.Public} {
		for _, c := range list {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// Stripped reports whether column col of et is removed from every row:
// marked, declared, (unless explicitly public) secret by name, or left
// out by the type's allow-list. Callers that must treat a column as
// secret (a filter may not match on it) ask here rather than re-deriving
// the rule.
//
// It is also what a decoder need not read at all (watcher.Config.Omit): a
// secret value is then never decoded, and a row holding none has nothing
// for Change to copy. A change decoded that way names the columns it
// lacks in Change.Withheld, which is how the pipeline's secret guard
// tells a withheld secret from one renamed away, and how the Sanitizer
// still counts columns stripped by the name rule alone
// (Stats.NameColumns). Omitting is a saving, not the guard: Change strips
// whatever a row holds.
func Stripped(et entities.EntityType, col string) bool { return reason(et, col) != "" }

// reason decides one column of et: why it is stripped, or "" to keep it.
func reason(et entities.EntityType, col string) Reason {
	switch {
	case et.IsMarked(col):
		return ReasonMarked
	case et.IsSecret(col):
		return ReasonDeclared
	case !et.IsAllowed(col):
		return ReasonNotAllowed
	case et.IsPublic(col):
		return ""
	case SecretName(col):
		return ReasonName
	}
	return ""
}

// maxLazyColumns bounds the per-type cache of decisions about columns the
// registry does not list (added by ALTER TABLE, or of a type without a Go
// type); past it, such columns are decided on every row (SecretName is
// cheap and does not allocate), so no input can grow memory without bound.
const maxLazyColumns = 1024

// typePolicy caches the decisions for one entity type. Registered types
// never change, so the cache is valid for the Sanitizer's lifetime.
type typePolicy struct {
	et     entities.EntityType
	static map[string]Reason // every static column; "" keeps it
	lazy   sync.Map          // column -> Reason, for columns not in static
	lazyN  atomic.Int64
}

func newTypePolicy(et entities.EntityType) *typePolicy {
	p := &typePolicy{et: et, static: map[string]Reason{}}
	for _, col := range staticColumns(et) {
		p.static[col] = reason(et, col)
	}
	return p
}

func (p *typePolicy) reason(col string) Reason {
	if r, ok := p.static[col]; ok {
		return r
	}
	if r, ok := p.lazy.Load(col); ok {
		return r.(Reason)
	}
	r := reason(p.et, col)
	if p.lazyN.Load() < maxLazyColumns {
		if _, loaded := p.lazy.LoadOrStore(col, r); !loaded {
			p.lazyN.Add(1)
		}
	}
	return r
}

// Stats counts what a Sanitizer removed since New. It carries no values
// and no names taken from rows, so it is safe for /metrics.
type Stats struct {
	// NameColumns counts columns stripped by the name rule alone (not
	// marked, not declared): a non-zero value means a secret-looking
	// column nobody reviewed is flowing through the source table.
	NameColumns uint64
	// JSONRewritten counts json values rewritten because a secret-named
	// key was removed from them.
	JSONRewritten uint64
	// InvalidJSON counts json values that did not parse and were replaced
	// by null.
	InvalidJSON uint64
}

// counters are a Sanitizer's Stats as they accumulate.
type counters struct {
	nameColumns, jsonRewritten, invalidJSON atomic.Uint64
}

// Sanitizer strips secrets using a registry, caching its decisions per
// entity type and column. It is safe for concurrent use. It fails closed:
// a change whose entity type is not registered is an error, never passed
// through.
type Sanitizer struct {
	reg      *entities.Registry
	policies sync.Map // type name -> *typePolicy
	stats    counters
}

// New returns a Sanitizer that reads entity types from reg.
func New(reg *entities.Registry) *Sanitizer {
	return &Sanitizer{reg: reg}
}

// Stats returns the counts so far.
func (s *Sanitizer) Stats() Stats {
	return Stats{
		NameColumns:   s.stats.nameColumns.Load(),
		JSONRewritten: s.stats.jsonRewritten.Load(),
		InvalidJSON:   s.stats.invalidJSON.Load(),
	}
}

func (s *Sanitizer) policy(name string) (*typePolicy, error) {
	if p, ok := s.policies.Load(name); ok {
		return p.(*typePolicy), nil
	}
	et, err := s.reg.Lookup(name)
	if err != nil {
		return nil, err
	}
	p, _ := s.policies.LoadOrStore(name, newTypePolicy(et))
	return p.(*typePolicy), nil
}

// Change returns c with secrets removed from Payload and Previous. The
// returned Change shares nothing mutable with c's rows.
//
// Columns marked, declared or (unless allowed) named secret are removed,
// and secret-named keys are removed at any depth from the values kept:
// inside json/jsonb values (see stripJSON), composite values (objects
// keyed by attribute name) and arrays of those. Allowing a column
// (`changecast:"public"`) applies to the top-level column only; the keys
// inside its value are still checked. A nil row stays nil, so an absent
// previous row stays absent.
//
// Sanitizing never mutates its input: a Row is immutable, so a row with
// nothing to remove is returned as it is (shared), and a new Row is built
// otherwise. Values are never decoded: a row's values are JSON already
// (entities.Row), and only objects and arrays are scanned for keys.
//
// Not recognised: secrets inside non-JSON text values (a password inside a
// connection string in a text column, or a json column whose text the
// watcher could not parse and passed on as a string) and secrets stored
// under names that look harmless (a token in a column called "notes", or
// under a JSON key "value"): mark or declare such columns secret.
func (s *Sanitizer) Change(c entities.Change) (entities.Change, error) {
	p, err := s.policy(c.EntityType)
	if err != nil {
		return entities.Change{}, fmt.Errorf("sanitize %s change: %w", c.Operation, err)
	}
	c.Payload = sanitizeRow(p, c.Payload, &s.stats)
	c.Previous = sanitizeRow(p, c.Previous, &s.stats)
	for _, col := range c.Withheld { // what the decoder did not read
		if p.reason(col) == ReasonName {
			s.stats.nameColumns.Add(1)
		}
	}
	// The entity id is the key column's value: if that column's name looks
	// secret (and nobody allowed it), the id must not leave either.
	if p.reason(p.et.Key) != "" { // Stripped's rule, from the type's cache
		c.EntityID = ""
	}
	for _, k := range p.et.KeyColumns {
		if p.reason(k) != "" { // a composite id carries every key column
			c.EntityID = ""
		}
	}
	return c, nil
}

// Changes sanitizes a batch into a new slice, leaving batch untouched. On
// error nothing is returned, so a batch is either wholly sanitized or not
// sent at all.
func (s *Sanitizer) Changes(batch []entities.Change) ([]entities.Change, error) {
	out := make([]entities.Change, len(batch))
	for i, c := range batch {
		sc, err := s.Change(c)
		if err != nil {
			return nil, err
		}
		out[i] = sc
	}
	return out, nil
}

// decider decides columns: why one is stripped, or "" to keep it.
type decider interface{ reason(col string) Reason }

// sanitizeRow returns row without the columns d strips and without
// secret-named keys inside the values kept (objects and arrays: json
// columns, composite values, arrays of those). Values are JSON already,
// so nothing is decoded: a column is dropped by name, and an object or
// array is scanned for secret-named keys (stripValidJSON) and rewritten
// only when it holds one. row itself is returned when nothing goes (Rows
// are immutable); otherwise a new Row.
func sanitizeRow(d decider, row *entities.Row, st *counters) *entities.Row {
	if row == nil {
		return nil
	}
	var b *entities.RowBuilder // made at the first change
	n := row.Len()
	for i := range n {
		name, v := row.At(i)
		r := d.reason(name)
		if r == ReasonName && st != nil {
			st.nameColumns.Add(1)
		}
		nv, changed := v, r != ""
		if r == "" && len(v) > 0 && (v[0] == '{' || v[0] == '[') {
			if out, res := stripValidJSON(v); res == jsonStripped {
				nv, changed = out, true
				if st != nil {
					st.jsonRewritten.Add(1)
				}
			}
		}
		if changed && b == nil {
			b = &entities.RowBuilder{}
			b.Grow(n, len(row.JSON()))
			for j := range i {
				b.AppendRaw(row.At(j))
			}
		}
		if b != nil && r == "" {
			b.AppendRaw(name, nv)
		}
	}
	if b == nil {
		return row
	}
	return b.Row()
}

// stripValue returns v without secret-named keys at any depth. v itself is
// never modified: a container is copied when something inside it goes.
func stripValue(v any, st *counters) any {
	out, _ := strip(v, st)
	return out
}

// strip is stripValue that also reports whether anything changed.
func strip(v any, st *counters) (any, bool) {
	switch x := v.(type) {
	case json.RawMessage:
		if len(x) == 0 {
			return v, false // nil encodes as null: nothing inside
		}
		out, res := stripJSON(x)
		switch res {
		case jsonKept:
			return v, false
		case jsonStripped:
			if st != nil {
				st.jsonRewritten.Add(1)
			}
		case jsonInvalid:
			if st != nil {
				st.invalidJSON.Add(1)
			}
		}
		return json.RawMessage(out), true
	case map[string]any:
		m, changed := stripMap(x, st)
		if !changed {
			return v, false
		}
		return m, true
	case []any:
		var out []any
		for i, e := range x {
			ne, changed := strip(e, st)
			if changed && out == nil {
				out = make([]any, len(x))
				copy(out, x[:i])
			}
			if out != nil {
				out[i] = ne
			}
		}
		if out == nil {
			return v, false
		}
		return out, true
	case []json.RawMessage:
		var out []json.RawMessage
		for i, e := range x {
			ne, changed := strip(e, st)
			if changed && out == nil {
				out = make([]json.RawMessage, len(x))
				copy(out, x[:i])
			}
			if out != nil {
				out[i] = ne.(json.RawMessage)
			}
		}
		if out == nil {
			return v, false
		}
		return out, true
	}
	return v, false
}

// stripMap returns m without secret-named keys at any depth, and whether
// anything changed; m itself is returned when nothing did.
func stripMap(m map[string]any, st *counters) (map[string]any, bool) {
	var out map[string]any // a copy of m, made at the first change
	for k, e := range m {
		if SecretName(k) {
			if out == nil {
				out = maps.Clone(m)
			}
			delete(out, k)
			continue
		}
		if ne, changed := strip(e, st); changed {
			if out == nil {
				out = maps.Clone(m)
			}
			out[k] = ne
		}
	}
	if out == nil {
		return m, false
	}
	return out, true
}
