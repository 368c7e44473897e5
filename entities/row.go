package entities

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/changecast/changecast/internal/jsonenc"
)

// Row is one table row as clients receive it: a JSON object whose members
// are the row's columns, each value already encoded as JSON. It is the
// payload of a Change from the watcher to the wire: the watcher appends
// each column's JSON straight from the replicated text, sanitize removes
// members by name, the journal stores the object's bytes, and the hub sends
// them, all without decoding a value into a Go type.
//
// A Row keeps the object's bytes in one buffer (compact JSON, as
// MarshalJSON returns it) and, for each member, its name and where its
// value lies in that buffer. Members keep the order they were added in;
// the rows the watcher builds and RowOf are sorted by name (byte order, as
// encoding/json sorts a map's keys), which is the order payloads have
// always had on the wire. Every value is valid JSON: SQL NULL is null.
//
// A nil *Row is "no row" (a change without a previous row): its Len is 0,
// Get finds nothing and it encodes as null. A Row is immutable once built,
// so it can be shared between goroutines and changes; Without and the
// builders make new ones.
type Row struct {
	data []byte // the object: {"name":value,...}
	cols []rowCol
}

type rowCol struct {
	name   string
	v0, v1 int // the value is data[v0:v1]
}

// Len returns the number of members; 0 for a nil Row.
func (r *Row) Len() int {
	if r == nil {
		return 0
	}
	return len(r.cols)
}

// At returns the name and the JSON value of the i-th member, 0 ≤ i <
// Len(). The value shares the Row's buffer: do not modify it.
func (r *Row) At(i int) (name string, value []byte) {
	c := r.cols[i]
	return c.name, r.data[c.v0:c.v1:c.v1]
}

// Get returns the JSON value of the member called name (for example
// `"running"`, `7`, `null`), and false when the row has no such member.
// The value shares the Row's buffer: do not modify it.
func (r *Row) Get(name string) ([]byte, bool) {
	if r == nil {
		return nil, false
	}
	for _, c := range r.cols {
		if c.name == name {
			return r.data[c.v0:c.v1:c.v1], true
		}
	}
	return nil, false
}

// Has reports whether the row has a member called name (whose value may
// be null).
func (r *Row) Has(name string) bool {
	_, ok := r.Get(name)
	return ok
}

// Names returns the members' names, in the row's order.
func (r *Row) Names() []string {
	if r == nil {
		return nil
	}
	out := make([]string, len(r.cols))
	for i, c := range r.cols {
		out[i] = c.name
	}
	return out
}

// IsNull reports whether the member called name exists and is null.
func (r *Row) IsNull(name string) bool {
	v, ok := r.Get(name)
	return ok && string(v) == "null"
}

// Text returns the member's value as text: a string's contents
// (unescaped), or a number's digits as written. It returns false when the
// member is missing or holds null, a boolean, an object or an array.
func (r *Row) Text(name string) (string, bool) {
	v, ok := r.Get(name)
	if !ok || len(v) == 0 {
		return "", false
	}
	switch c := v[0]; {
	case c == '"':
		if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
			return string(v[1 : len(v)-1]), true
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", false
		}
		return s, true
	case c == '-' || (c >= '0' && c <= '9'):
		return string(v), true
	}
	return "", false
}

// Decode decodes the member's JSON value into v with encoding/json
// (numbers into an `any` become float64, as json.Unmarshal makes them). A
// missing member is an error.
func (r *Row) Decode(name string, v any) error {
	raw, ok := r.Get(name)
	if !ok {
		return fmt.Errorf("row has no column %q", name)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("column %q: %w", name, err)
	}
	return nil
}

// Value returns the member's value as a Go value decoded with
// encoding/json, numbers as json.Number (exact): nil, bool, json.Number,
// string, []any or map[string]any. For tests and tools; code on the hot
// path reads the bytes (Get).
func (r *Row) Value(name string) (any, bool) {
	raw, ok := r.Get(name)
	if !ok {
		return nil, false
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, false // cannot happen: values are valid JSON
	}
	return v, true
}

// Map returns the row as a map of Value's Go values; nil for a nil Row.
// For tests and tools.
func (r *Row) Map() map[string]any {
	if r == nil {
		return nil
	}
	m := make(map[string]any, len(r.cols))
	for _, c := range r.cols {
		m[c.name], _ = r.Value(c.name)
	}
	return m
}

// AppendJSON appends the row's JSON object (null for a nil Row) to dst.
func (r *Row) AppendJSON(dst []byte) []byte {
	if r == nil {
		return append(dst, "null"...)
	}
	return append(dst, r.data...)
}

// JSON returns the row's JSON object (null for a nil Row). The bytes are
// the Row's own: do not modify them.
func (r *Row) JSON() []byte {
	if r == nil {
		return []byte("null")
	}
	return r.data[:len(r.data):len(r.data)]
}

// MarshalJSON returns the row's object as it is, without re-encoding.
func (r *Row) MarshalJSON() ([]byte, error) { return r.JSON(), nil }

// String returns the row's JSON, for messages and tests.
func (r *Row) String() string { return string(r.JSON()) }

// Equal reports whether r and o have the same members with the same JSON
// bytes in the same order (nil equals nil only).
func (r *Row) Equal(o *Row) bool {
	if r == nil || o == nil {
		return r == o
	}
	return bytes.Equal(r.data, o.data)
}

// UnmarshalJSON reads a JSON object into r without decoding its values:
// each member keeps its value's bytes (compacted). A later duplicate name
// replaces the earlier member, as encoding/json does for a map. null
// leaves r unchanged; any other non-object is an error.
func (r *Row) UnmarshalJSON(b []byte) error {
	if string(trimSpace(b)) == "null" {
		return nil
	}
	row, err := ParseRow(b)
	if err != nil {
		return err
	}
	*r = *row
	return nil
}

// ParseRow reads a JSON object into a new Row without decoding its values
// (see UnmarshalJSON); null gives a nil Row. b is not retained.
func ParseRow(b []byte) (*Row, error) {
	t := trimSpace(b)
	if string(t) == "null" {
		return nil, nil
	}
	if len(t) == 0 || t[0] != '{' {
		return nil, errors.New("row: not a JSON object")
	}
	if !jsonenc.Valid(t) {
		return nil, errors.New("row: invalid JSON")
	}
	data := jsonenc.AppendCompact(make([]byte, 0, len(t)), t)
	r := &Row{data: data}
	keys := make([]byte, 0, len(data)/4) // every unescaped name, to make one string of
	type span struct{ k0, k1, v0, v1 int }
	spans := make([]span, 0, bytes.Count(data, []byte{':'}))
	i := 1
	for i < len(data) && data[i] != '}' {
		if data[i] == ',' {
			i++
		}
		ks := i
		i = jsonenc.StringEnd(data, i)
		key := data[ks+1 : i-1]
		k0 := len(keys)
		if bytes.IndexByte(key, '\\') < 0 && utf8.Valid(key) {
			keys = append(keys, key...)
		} else {
			var s string
			if err := json.Unmarshal(data[ks:i], &s); err != nil {
				return nil, fmt.Errorf("row: key: %w", err)
			}
			keys = append(keys, s...)
		}
		i++ // ':'
		v0 := i
		i = valueEnd(data, i)
		spans = append(spans, span{k0, len(keys), v0, i})
	}
	names := string(keys)
	r.cols = make([]rowCol, len(spans))
	dup := false
	for n, s := range spans {
		r.cols[n] = rowCol{name: names[s.k0:s.k1], v0: s.v0, v1: s.v1}
		if !dup && slices.ContainsFunc(r.cols[:n], func(c rowCol) bool { return c.name == r.cols[n].name }) {
			dup = true
		}
	}
	if dup {
		return r.dedup(), nil
	}
	return r, nil
}

// trimSpace trims JSON's whitespace (space, tab, newline, carriage
// return) from both ends of b.
func trimSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// dedup rebuilds r keeping, for each name, the last member, at the place
// of the first.
func (r *Row) dedup() *Row {
	var b RowBuilder
	b.Grow(len(r.cols), len(r.data))
	for i, c := range r.cols {
		if slices.ContainsFunc(r.cols[:i], func(p rowCol) bool { return p.name == c.name }) {
			continue
		}
		last := c
		for _, l := range r.cols[i+1:] {
			if l.name == c.name {
				last = l
			}
		}
		b.AppendRaw(c.name, r.data[last.v0:last.v1])
	}
	return b.Row()
}

// valueEnd returns the index just past the valid JSON value starting at
// data[i] in a compact object or array.
func valueEnd(data []byte, i int) int {
	depth := 0
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			i = jsonenc.StringEnd(data, i) - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// Without returns the row without the members whose names drop reports,
// sharing nothing with r; r itself when nothing is dropped.
func (r *Row) Without(drop func(name string) bool) *Row {
	if r == nil {
		return nil
	}
	if !slices.ContainsFunc(r.cols, func(c rowCol) bool { return drop(c.name) }) {
		return r
	}
	var b RowBuilder
	b.Grow(len(r.cols), len(r.data))
	for _, c := range r.cols {
		if !drop(c.name) {
			b.AppendRaw(c.name, r.data[c.v0:c.v1])
		}
	}
	return b.Row()
}

// RowOf builds a Row from a map for tests and tools: members sorted by
// name, each value encoded with encoding/json without HTML escaping (as
// the wire writes it). It panics if a value does not encode; use NewRow
// for values not known to.
func RowOf(m map[string]any) *Row {
	r, err := NewRow(m)
	if err != nil {
		panic(err)
	}
	return r
}

// NewRow is RowOf returning the encoding error instead of panicking. A nil
// map gives an empty row, not a nil one.
func NewRow(m map[string]any) (*Row, error) {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	var (
		b   RowBuilder
		buf bytes.Buffer
	)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, k := range names {
		buf.Reset()
		if err := enc.Encode(m[k]); err != nil {
			return nil, fmt.Errorf("row column %q: %w", k, err)
		}
		b.AppendRaw(k, bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	}
	return b.Row(), nil
}

// RowBuilder builds a Row member by member. The zero value is ready to
// use; Row hands over what was built and resets the builder.
//
// A member's value is appended to the builder's buffer by the caller,
// between Key and End:
//
//	buf := b.Key("max_runners")
//	buf = strconv.AppendInt(buf, 7, 10)
//	b.End(buf)
//
// The caller must append exactly one valid JSON value (the watcher's
// value decoder is fuzzed for that); AppendRaw copies one it already has.
// Names are used as given: add them in the order the row should have
// (sorted, for rows that go on the wire) and each once.
type RowBuilder struct {
	data []byte
	cols []rowCol
	name string // the member Key started
	k0   int    // the buffer's length before Key
	v0   int
}

// Grow makes room for n more members and size more bytes, so that building
// a row of that size allocates its buffers once.
func (b *RowBuilder) Grow(n, size int) {
	b.cols = slices.Grow(b.cols, n)
	b.data = slices.Grow(b.data, size+2)
}

// Key starts a member called name and returns the buffer to append its
// JSON value to; pass the result to End.
func (b *RowBuilder) Key(name string) []byte {
	b.open()
	b.data = append(jsonenc.AppendString(b.data, name), ':')
	b.name, b.v0 = name, len(b.data)
	return b.data
}

// open starts a member with its separator (the object's brace before the
// first), remembering where it began for Drop.
func (b *RowBuilder) open() {
	b.k0 = len(b.data)
	if len(b.data) == 0 {
		b.data = append(b.data, '{')
	} else {
		b.data = append(b.data, ',')
	}
}

// Member is a member name with its JSON key (the quoted, escaped name and
// the colon) encoded once, for rows that have the same members again and
// again (every row of a table): KeyMember copies the key instead of
// escaping the name for each row.
type Member struct {
	name string
	key  []byte // "name":
}

// NewMember encodes name's key for KeyMember.
func NewMember(name string) Member {
	return Member{name: name, key: append(jsonenc.AppendString(nil, name), ':')}
}

// Name returns the member's name.
func (m Member) Name() string { return m.name }

// KeyMember is Key for a name encoded by NewMember: the same member, the
// same bytes.
func (b *RowBuilder) KeyMember(m Member) []byte {
	b.open()
	b.data = append(b.data, m.key...)
	b.name, b.v0 = m.name, len(b.data)
	return b.data
}

// End ends the member Key started: buf is Key's buffer with the value
// appended.
func (b *RowBuilder) End(buf []byte) {
	b.data = buf
	b.cols = append(b.cols, rowCol{name: b.name, v0: b.v0, v1: len(buf)})
}

// Drop abandons the member Key started instead of ending it: the row is
// as it was before Key.
func (b *RowBuilder) Drop() {
	b.data = b.data[:b.k0]
}

// AppendRaw adds a member whose value is the valid, compact JSON value.
func (b *RowBuilder) AppendRaw(name string, value []byte) {
	b.End(append(b.Key(name), value...))
}

// Len returns the number of members added so far.
func (b *RowBuilder) Len() int { return len(b.cols) }

// Get returns the value of a member added so far (see Row.Get).
func (b *RowBuilder) Get(name string) ([]byte, bool) {
	for _, c := range b.cols {
		if c.name == name {
			return b.data[c.v0:c.v1:c.v1], true
		}
	}
	return nil, false
}

// Row returns the row built so far (an empty row if nothing was added) and
// resets the builder; the Row owns the buffers.
func (b *RowBuilder) Row() *Row {
	if len(b.data) == 0 {
		b.data = append(b.data, '{')
	}
	r := &Row{data: append(b.data, '}'), cols: b.cols}
	*b = RowBuilder{}
	return r
}

// With returns o's members and those of r that o lacks, in name order: r
// overlaid by o. Either may be nil; the result is nil only when both are.
func (r *Row) With(o *Row) *Row {
	if r == nil {
		return o
	}
	if o == nil {
		return r
	}
	names := o.Names()
	for _, n := range r.Names() {
		if !o.Has(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var b RowBuilder
	b.Grow(len(names), len(r.data)+len(o.data))
	for _, n := range names {
		v, ok := o.Get(n)
		if !ok {
			v, _ = r.Get(n)
		}
		b.AppendRaw(n, v)
	}
	return b.Row()
}
