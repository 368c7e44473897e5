package watcher

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/changecast/changecast/entities"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

func TestDecodeValue(t *testing.T) {
	const citextOID = 91234 // extension types have no fixed OID
	cases := []struct {
		name string
		oid  uint32
		text string
		want any
	}{
		{"bool true", pgtype.BoolOID, "t", true},
		{"bool false", pgtype.BoolOID, "f", false},
		{"bool garbage", pgtype.BoolOID, "maybe", "maybe"},
		{"int2", pgtype.Int2OID, "-32768", int64(-32768)},
		{"int4", pgtype.Int4OID, "2147483647", int64(2147483647)},
		{"int8", pgtype.Int8OID, "9223372036854775807", int64(9223372036854775807)},
		{"oid", pgtype.OIDOID, "4294967295", int64(4294967295)},
		{"int8 overflow", pgtype.Int8OID, "9223372036854775808", "9223372036854775808"},
		{"float8", pgtype.Float8OID, "1.5", 1.5},
		{"float4", pgtype.Float4OID, "0.1", float64(float32(0.1))},
		{"float8 NaN", pgtype.Float8OID, "NaN", "NaN"},
		{"float8 Infinity", pgtype.Float8OID, "Infinity", "Infinity"},
		{"float4 -Infinity", pgtype.Float4OID, "-Infinity", "-Infinity"},
		{"numeric exact", pgtype.NumericOID, "12345678901234567890.000000000000000001", json.Number("12345678901234567890.000000000000000001")},
		{"numeric negative", pgtype.NumericOID, "-0.0100", json.Number("-0.0100")},
		{"numeric NaN", pgtype.NumericOID, "NaN", "NaN"},
		{"numeric Infinity", pgtype.NumericOID, "Infinity", "Infinity"},
		{"numeric -Infinity", pgtype.NumericOID, "-Infinity", "-Infinity"},
		{"text", pgtype.TextOID, "héllo\nworld", "héllo\nworld"},
		{"varchar", pgtype.VarcharOID, "v", "v"},
		{"bpchar", pgtype.BPCharOID, "ab  ", "ab  "},
		{"name", pgtype.NameOID, "widgets", "widgets"},
		{"char", pgtype.QCharOID, "x", "x"},
		{"citext", citextOID, "MiXeD", "MiXeD"},
		{"unknown oid", 999999, "whatever", "whatever"},
		{"uuid", pgtype.UUIDOID, "0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d", uuid.MustParse("0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d")},
		{"uuid braces", pgtype.UUIDOID, "{0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d}", "{0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d}"},
		{"timestamptz utc", pgtype.TimestamptzOID, "2026-11-23 10:00:00.123456+00", time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)},
		{"timestamptz offset", pgtype.TimestamptzOID, "2026-11-23 15:30:00+05:30", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
		{"timestamptz infinity", pgtype.TimestamptzOID, "infinity", "infinity"},
		{"timestamp", pgtype.TimestampOID, "2026-11-23 10:00:00.5", time.Date(2026, 11, 23, 10, 0, 0, 500000000, time.UTC)},
		{"timestamp -infinity", pgtype.TimestampOID, "-infinity", "-infinity"},
		{"timestamptz BC", pgtype.TimestamptzOID, "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"},
		{"timestamp year 10000", pgtype.TimestampOID, "10000-01-01 00:00:00", "10000-01-01 00:00:00"},
		{"date", pgtype.DateOID, "2026-11-23", "2026-11-23"},
		{"jsonb big int exact", pgtype.JSONBOID, `{"n": 9007199254740993}`, json.RawMessage(`{"n": 9007199254740993}`)},
		{"json", pgtype.JSONOID, `[1, 2.50, "x"]`, json.RawMessage(`[1, 2.50, "x"]`)},
		{"jsonb invalid", pgtype.JSONBOID, `{"n":`, `{"n":`},
		{"bytea hex", pgtype.ByteaOID, `\x00ff10`, []byte{0, 0xff, 0x10}},
		{"bytea empty", pgtype.ByteaOID, `\x`, []byte{}},
		{"bytea escape format is not parsed", pgtype.ByteaOID, `a\\b`, `a\\b`},
		{"interval", pgtype.IntervalOID, "1 day 02:00:00", "1 day 02:00:00"},
		{"inet", pgtype.InetOID, "10.0.0.1/8", "10.0.0.1/8"},
		{"text[]", pgtype.TextArrayOID, `{a,"b c","d,e","",NULL-ish}`, []string{"a", "b c", "d,e", "", "NULL-ish"}},
		{"text[] empty", pgtype.TextArrayOID, `{}`, []string{}},
		{"text[] with NULL", pgtype.TextArrayOID, `{a,NULL,"NULL"}`, []any{"a", nil, "NULL"}},
		{"varchar[]", pgtype.VarcharArrayOID, `{x,y}`, []string{"x", "y"}},
		{"int4[]", pgtype.Int4ArrayOID, `{1,NULL,-3}`, []any{int64(1), nil, int64(-3)}},
		{"numeric[]", pgtype.NumericArrayOID, `{1.10,NaN}`, []any{json.Number("1.10"), "NaN"}},
		{"jsonb[]", pgtype.JSONBArrayOID, `{"{\"a\": 9007199254740993}"}`, []any{json.RawMessage(`{"a": 9007199254740993}`)}},
		{"macaddr[]", pgtype.MacaddrArrayOID, `{08:00:2b:01:02:03,NULL}`, []any{"08:00:2b:01:02:03", nil}},
		{"uuid[]", pgtype.UUIDArrayOID, `{0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d}`, []any{uuid.MustParse("0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d")}},
		{"text[] two dimensions", pgtype.TextArrayOID, `{{a,b},{c,d}}`, []any{[]any{"a", "b"}, []any{"c", "d"}}},
		{"int4[] two dimensions, a NULL", pgtype.Int4ArrayOID, `{{1,NULL},{3,4}}`, []any{[]any{int64(1), nil}, []any{int64(3), int64(4)}}},
		{"text[] malformed", pgtype.TextArrayOID, `{a,"b`, `{a,"b`},
		{"enum[] unknown", 777777, `{red,green}`, `{red,green}`},
	}
	d := newValueDecoder()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := string(d.appendValue(nil, c.oid, []byte(c.text)))
			if want := encodeRef(t, c.want); got != want {
				t.Fatalf("decode(%d, %q) = %s, want %s (the JSON of %#v)", c.oid, c.text, got, want, c.want)
			}
		})
	}
}

// encodeRef is the JSON changecast wrote for a typed value before rows
// became JSON bytes: encoding/json without HTML escaping.
func encodeRef(t testing.TB, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("encode %#v: %v", v, err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestDecodeValue_CopiesInput(t *testing.T) {
	d := newValueDecoder()
	for _, oid := range []uint32{pgtype.JSONBOID, pgtype.ByteaOID, pgtype.TextOID, pgtype.TextArrayOID} {
		buf := []byte(`{"a"}`)
		switch oid {
		case pgtype.JSONBOID:
			buf = []byte(`{"a":1}`)
		case pgtype.ByteaOID:
			buf = []byte(`\x6869`)
		}
		var b entities.RowBuilder
		b.End(d.appendValue(b.Key("c"), oid, buf))
		row := b.Row()
		before := row.String()
		for i := range buf {
			buf[i] = '!'
		}
		after := row.String()
		if string(before) != string(after) {
			t.Errorf("oid %d: value changed when the receive buffer was reused: %s -> %s", oid, before, after)
		}
	}
}

// FuzzDecodeValue checks that decoding arbitrary bytes as any type never
// panics, always writes one valid JSON value, and writes what encoding/json
// wrote for the typed value of the decoder changecast had before
// (decode_ref_test.go).
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []struct {
		oid  uint32
		text string
	}{
		{pgtype.BoolOID, "t"}, {pgtype.Int8OID, "-42"}, {pgtype.Float8OID, "NaN"},
		{pgtype.NumericOID, "1.000"}, {pgtype.UUIDOID, "0190d6f4-4b3c-7a57-9b7f-2c0e6a0c1b2d"},
		{pgtype.TimestamptzOID, "2026-11-23 10:00:00+00"}, {pgtype.TimestampOID, "2026-11-23 10:00:00"},
		{pgtype.JSONBOID, `{"n": 9007199254740993}`}, {pgtype.ByteaOID, `\x00ff`},
		{pgtype.TextArrayOID, `{a,NULL,"b\"c"}`}, {pgtype.Int4ArrayOID, `{1,2}`}, {pgtype.DateOID, "2026-11-23"},
	} {
		f.Add(s.oid, []byte(s.text))
	}
	f.Add(uint32(testCompositeOID), []byte(`(1,"b ""c"" \\d",{1,NULL})`))
	f.Add(uint32(testCompositeArrayOID), []byte(`{"(1,x,{2})",NULL,"(,\"\",)"}`))
	f.Fuzz(func(t *testing.T, oid uint32, text []byte) {
		d := newValueDecoder()
		d.cat = testCatalog()
		got := d.appendValue([]byte("x"), oid, text)
		if got[0] != 'x' {
			t.Fatalf("decode(%d, %q) changed what was before it in the buffer: %q", oid, text, got)
		}
		got = got[1:]
		if !json.Valid(got) {
			t.Fatalf("decode(%d, %q) = %s, not valid JSON", oid, text, got)
		}
		if _, isArray := arrayElements[oid]; isArray || oid >= firstNormalOID {
			return // malformed literals differ at the edges (FuzzDecodeArray compares what the server sends); the old decoder knew no catalog
		}
		if want := encodeRef(t, newRefDecoder().decode(oid, text)); string(got) != want {
			t.Fatalf("decode(%d, %q) = %s, the decoder before wrote %s", oid, text, got, want)
		}
	})
}

// FuzzDecodeArray builds array literals the way the server writes them
// (array_out: elements quoted when empty, "NULL" or holding a delimiter,
// brace, quote, backslash or space) from fuzzed elements, one or two
// dimensions, and checks that each decodes, for several element types, to
// what the decoder changecast had before wrote.
func FuzzDecodeArray(f *testing.F) {
	f.Add("a\x00b c\x00NULL\x00", false)
	f.Add("1\x002\x00-3", true)
	f.Add("2026-11-23 10:00:00+00\x00infinity", false)
	f.Fuzz(func(t *testing.T, joined string, twoDims bool) {
		if !utf8.ValidString(joined) {
			return // the server sends valid UTF-8 (the old parser wrote U+FFFD itself, not \ufffd)
		}
		elems := strings.Split(joined, "\x00")
		lit := arrayLiteral(elems, twoDims)
		for _, oid := range []uint32{pgtype.TextArrayOID, pgtype.Int8ArrayOID, pgtype.NumericArrayOID, pgtype.Float8ArrayOID,
			pgtype.TimestamptzArrayOID, pgtype.JSONBArrayOID, pgtype.UUIDArrayOID, pgtype.BoolArrayOID, pgtype.ByteaArrayOID} {
			got := newValueDecoder().appendValue(nil, oid, []byte(lit))
			if !json.Valid(got) {
				t.Fatalf("decode(%d, %q) = %s, not valid JSON", oid, lit, got)
			}
			if want := encodeRef(t, newRefDecoder().decode(oid, []byte(lit))); string(got) != want {
				t.Fatalf("decode(%d, %q) = %s, the decoder before wrote %s", oid, lit, got, want)
			}
		}
	})
}

// arrayLiteral writes elems as array_out does; twoDims makes a 2×n array
// of the first 2n elements ("NULL" stands for a NULL element).
func arrayLiteral(elems []string, twoDims bool) string {
	quote := func(e string) string {
		if e == "NULL" {
			return e
		}
		if e == "" || strings.EqualFold(e, "null") || strings.ContainsAny(e, "{},\"\\ \t\n\r\v\f") {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(e) + `"`
		}
		return e
	}
	join := func(es []string) string {
		q := make([]string, len(es))
		for i, e := range es {
			q[i] = quote(e)
		}
		return "{" + strings.Join(q, ",") + "}"
	}
	if !twoDims || len(elems) < 2 {
		return join(elems)
	}
	n := len(elems) / 2
	return "{" + join(elems[:n]) + "," + join(elems[n:2*n]) + "}"
}

// OIDs of testCatalog's types.
const (
	testCompositeOID      = 90001 // (a int4, b text, c int4[])
	testDomainOID         = 90002 // over int4
	testCompositeArrayOID = 90003 // testCompositeOID[]
	testDomainArrayOID    = 90004 // testDomainOID[]
	testNestedOID         = 90005 // (p testCompositeOID, t timestamptz)
)

func testCatalog() *catalog {
	return &catalog{
		domains: map[uint32]uint32{testDomainOID: pgtype.Int4OID},
		arrays:  map[uint32]uint32{testCompositeArrayOID: testCompositeOID, testDomainArrayOID: testDomainOID},
		composites: map[uint32][]attribute{
			testCompositeOID: {{"a", pgtype.Int4OID}, {"b", pgtype.TextOID}, {"c", pgtype.Int4ArrayOID}},
			testNestedOID:    {{"p", testCompositeOID}, {"t", pgtype.TimestamptzOID}},
		},
		known: map[uint32]bool{testCompositeOID: true, testDomainOID: true, testCompositeArrayOID: true, testDomainArrayOID: true, testNestedOID: true},
	}
}

// TestDecodeValue_Catalog: composite values as objects (record_out's
// quoting, NULL as an empty field, "" as an empty string), domains as their
// base type, arrays of both, and malformed or mis-shaped text as text.
func TestDecodeValue_Catalog(t *testing.T) {
	cases := []struct {
		name string
		oid  uint32
		text string
		want string
	}{
		{"composite", testCompositeOID, `(1,abc,"{1,2}")`, `{"a":1,"b":"abc","c":[1,2]}`},
		{"composite quoting", testCompositeOID, `(-2,"b ""c"" \\d, (e)",)`, `{"a":-2,"b":"b \"c\" \\d, (e)","c":null}`},
		{"composite NULL vs empty", testCompositeOID, `(,"",)`, `{"a":null,"b":"","c":null}`},
		// A composite value that does not match its type is withheld
		// (null here; the watcher leaves the column out): its fields'
		// names cannot be checked against the secret rules.
		{"composite too few fields", testCompositeOID, `(1,x)`, `null`},
		{"composite too many fields", testCompositeOID, `(1,x,,4)`, `null`},
		{"composite unterminated", testCompositeOID, `(1,"x,`, `null`},
		{"nested composite", testNestedOID, `("(1,""a b"",{3})","2026-11-23 10:00:00+00")`, `{"p":{"a":1,"b":"a b","c":[3]},"t":"2026-11-23T10:00:00Z"}`},
		{"domain", testDomainOID, `42`, `42`},
		{"domain array", testDomainArrayOID, `{1,NULL,3}`, `[1,null,3]`},
		{"composite array", testCompositeArrayOID, `{"(1,x,{2})",NULL,"(,\"\",)"}`, `[{"a":1,"b":"x","c":[2]},null,{"a":null,"b":"","c":null}]`},
		{"a type created since the catalog was read is withheld", 777777, `{red,green}`, `null`},
	}
	d := newValueDecoder()
	d.cat = testCatalog()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.withheld = false
			got := string(d.appendValue(nil, c.oid, []byte(c.text)))
			if got != c.want {
				t.Fatalf("decode(%d, %s) = %s, want %s", c.oid, c.text, got, c.want)
			}
			if d.withheld != (c.want == "null" && c.text != "NULL") {
				t.Fatalf("decode(%d, %s): withheld = %v", c.oid, c.text, d.withheld)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("not valid JSON: %s", got)
			}
		})
	}
}
