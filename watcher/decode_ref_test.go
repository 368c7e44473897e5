package watcher

// This file keeps the value decoder changecast used before rows became
// JSON bytes (typed Go values, then encoding/json), as the reference the
// one-pass decoder is checked against: for every value the old one typed,
// the new one must write the bytes encoding/json wrote for it.

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// refDecoder turns one column value, in PostgreSQL's text format, into the
// typed Go value documented on entities.Row. It never fails and never
// panics: a value it cannot parse as its type is returned as a string of
// the server's text, so a surprising value is visible rather than lost.
//
// A refDecoder is not safe for concurrent use (pgtype.Map caches scan
// plans); the watcher keeps one per Run.
//
// The replication connection sets DateStyle=ISO, IntervalStyle=postgres,
// TimeZone=UTC and bytea_output=hex, so the texts parsed here are in the
// formats those settings produce; the parsers also accept other offsets.
type refDecoder struct {
	m *pgtype.Map
	// domains maps a domain's type OID to its base type's, so a domain
	// column decodes as its base type (loaded when replication starts;
	// a domain created later decodes as text until the next start).
	domains map[uint32]uint32
}

func newRefDecoder() *refDecoder {
	return &refDecoder{m: pgtype.NewMap()}
}

// decode returns the Go value of text, the text-format value of a column of
// type oid. text is never retained: every returned slice is a copy.
func (d *refDecoder) decode(oid uint32, text []byte) any {
	for range 8 { // a domain over a domain over …, to a sane depth
		base, ok := d.domains[oid]
		if !ok {
			break
		}
		oid = base
	}
	switch oid {
	case pgtype.BoolOID:
		switch string(text) {
		case "t":
			return true
		case "f":
			return false
		}
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			return n
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		// JSON has no NaN or infinities: keep those as the server's text.
		bits := 64
		if oid == pgtype.Float4OID {
			bits = 32
		}
		if f, err := strconv.ParseFloat(string(text), bits); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f
		}
	case pgtype.NumericOID:
		// Exact: the server's digits, never a float. NaN and the
		// infinities are not JSON numbers and stay strings.
		if refIsJSONNumber(text) {
			return json.Number(string(text))
		}
	case pgtype.UUIDOID:
		if u, err := uuid.ParseBytes(text); err == nil && len(text) == 36 {
			return u
		}
	case pgtype.TimestamptzOID:
		var ts pgtype.Timestamptz
		if err := d.m.Scan(oid, pgtype.TextFormatCode, text, &ts); err == nil && ts.Valid && ts.InfinityModifier == pgtype.Finite && refJSONYear(ts.Time.UTC()) {
			return ts.Time.UTC()
		}
	case pgtype.TimestampOID:
		var ts pgtype.Timestamp
		if err := d.m.Scan(oid, pgtype.TextFormatCode, text, &ts); err == nil && ts.Valid && ts.InfinityModifier == pgtype.Finite && refJSONYear(ts.Time) {
			return ts.Time
		}
	case pgtype.JSONOID, pgtype.JSONBOID:
		// Kept as the server's bytes: decoding would turn
		// 9007199254740993 into 9007199254740992 (docs/replication.md rule 12).
		// Validated so that encoding the Row later cannot fail.
		if json.Valid(text) {
			return json.RawMessage(append([]byte(nil), text...))
		}
	case pgtype.ByteaOID:
		var b []byte
		if err := d.m.Scan(oid, pgtype.TextFormatCode, text, &b); err == nil {
			if b == nil {
				b = []byte{}
			}
			return b
		}
	default:
		if elem, ok := refArrayElements[oid]; ok {
			if v, ok := d.decodeArray(oid, elem, text); ok {
				return v
			}
		}
	}
	// text, varchar, bpchar, name, "char", date, interval, inet, enums,
	// extension types (citext) and anything unknown: the server's text.
	return string(text)
}

// decodeArray decodes an array literal. A one-dimensional array of a
// string-like element type gives []string, or []any with nil for NULL
// elements; other element types give []any of decoded elements. A
// multi-dimensional array gives nested []any, one level per dimension
// ({{1,2},{3,4}} is [[1,2],[3,4]]). Malformed literals report false (the
// caller falls back to text).
func (d *refDecoder) decodeArray(oid, elem uint32, text []byte) (any, bool) {
	var arr pgtype.Array[*string]
	if err := d.m.Scan(oid, pgtype.TextFormatCode, text, &arr); err != nil {
		return nil, false
	}
	if len(arr.Dims) > 1 {
		total := 1
		for _, d := range arr.Dims {
			total *= int(d.Length)
		}
		if total != len(arr.Elements) {
			return nil, false
		}
		flat := make([]any, len(arr.Elements))
		for i, e := range arr.Elements {
			if e != nil {
				flat[i] = d.decode(elem, []byte(*e))
			}
		}
		return refNest(flat, arr.Dims), true
	}
	elems := arr.Elements
	if refStringTypes[elem] {
		strs := make([]string, 0, len(elems))
		for _, e := range elems {
			if e == nil {
				strs = nil
				break
			}
			strs = append(strs, *e)
		}
		if strs != nil {
			return strs, true
		}
	}
	out := make([]any, len(elems))
	for i, e := range elems {
		if e != nil {
			out[i] = d.decode(elem, []byte(*e))
		}
	}
	return out, true
}

// nest shapes the row-major elements of a multi-dimensional array into
// nested slices, one level per dimension.
func refNest(flat []any, dims []pgtype.ArrayDimension) any {
	if len(dims) == 1 {
		return flat
	}
	n := int(dims[0].Length)
	if n == 0 {
		return []any{}
	}
	step := len(flat) / n
	out := make([]any, n)
	for i := range n {
		out[i] = refNest(flat[i*step:(i+1)*step], dims[1:])
	}
	return out
}

// refJSONYear reports whether t can be encoded as JSON (RFC 3339 allows years
// 0000 to 9999); BC and far-future timestamps stay the server's text.
func refJSONYear(t time.Time) bool { return t.Year() >= 1 && t.Year() <= 9999 }

// refIsJSONNumber reports whether b is a number in JSON's grammar.
func refIsJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(b)
}

// refStringTypes are the element types whose arrays decode to []string.
var refStringTypes = map[uint32]bool{
	pgtype.TextOID:    true,
	pgtype.VarcharOID: true,
	pgtype.BPCharOID:  true,
	pgtype.NameOID:    true,
}

// refArrayElements maps the built-in array types the watcher decodes to their
// element types. Arrays of other types (enums, extension types) arrive as
// text.
var refArrayElements = map[uint32]uint32{
	pgtype.TextArrayOID:        pgtype.TextOID,
	pgtype.VarcharArrayOID:     pgtype.VarcharOID,
	pgtype.BPCharArrayOID:      pgtype.BPCharOID,
	pgtype.NameArrayOID:        pgtype.NameOID,
	pgtype.BoolArrayOID:        pgtype.BoolOID,
	pgtype.Int2ArrayOID:        pgtype.Int2OID,
	pgtype.Int4ArrayOID:        pgtype.Int4OID,
	pgtype.Int8ArrayOID:        pgtype.Int8OID,
	pgtype.OIDArrayOID:         pgtype.OIDOID,
	pgtype.Float4ArrayOID:      pgtype.Float4OID,
	pgtype.Float8ArrayOID:      pgtype.Float8OID,
	pgtype.NumericArrayOID:     pgtype.NumericOID,
	pgtype.UUIDArrayOID:        pgtype.UUIDOID,
	pgtype.JSONArrayOID:        pgtype.JSONOID,
	pgtype.JSONBArrayOID:       pgtype.JSONBOID,
	pgtype.ByteaArrayOID:       pgtype.ByteaOID,
	pgtype.DateArrayOID:        pgtype.DateOID,
	pgtype.TimestampArrayOID:   pgtype.TimestampOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID,
	pgtype.IntervalArrayOID:    pgtype.IntervalOID,
	pgtype.InetArrayOID:        pgtype.InetOID,
	pgtype.CIDRArrayOID:        pgtype.CIDROID,
	pgtype.TimeArrayOID:        pgtype.TimeOID,
	pgtype.QCharArrayOID:       pgtype.QCharOID,
}
