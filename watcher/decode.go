package watcher

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"math"
	"strconv"
	"time"

	"github.com/changecast/changecast/internal/jsonenc"
	"github.com/jackc/pgx/v5/pgtype"
)

// valueDecoder appends the JSON of one column value, given in PostgreSQL's
// text format, in one pass: no intermediate Go value, no reflection. The
// JSON of each type is docs/protocol.md's "Column types": integers and
// exact numerics as JSON numbers (the server's digits), floats as
// encoding/json writes a float64, booleans, UUIDs, timestamps as RFC 3339
// (UTC), json/jsonb verbatim (compacted), bytea as base64, arrays (of any
// depth) as JSON arrays, composite values as objects keyed by attribute
// name, domains as their base type, and every other type (text, enums,
// dates, intervals, network types, extension types) as a JSON string of
// the server's text.
//
// It never fails and never panics: a value it cannot parse as its type is
// written as a JSON string of the server's text, so a surprising value is
// visible rather than lost. Every output is valid JSON (FuzzDecodeValue).
//
// A valueDecoder is not safe for concurrent use (it reuses scratch
// buffers); the watcher keeps one per Run.
//
// The replication connection sets DateStyle=ISO, IntervalStyle=postgres,
// TimeZone=UTC and bytea_output=hex, so the texts parsed here are in the
// formats those settings produce; the parsers also accept other offsets.
type valueDecoder struct {
	// cat describes the database's own types (domains, composites, the
	// arrays of those and of enums); nil decodes built-in types only.
	cat *catalog
	// scratch holds unescaped array elements and record fields, one
	// buffer per nesting level, reused.
	scratch [maxNesting + 1][]byte
	bytea   []byte
	// withheld is set when a value was left out rather than sent as
	// text (see mustWithhold); the caller resets it per column.
	withheld bool
}

// maxNesting bounds how deep arrays and composite values nest into each
// other before the rest is written as text.
const maxNesting = 16

func newValueDecoder() *valueDecoder { return &valueDecoder{} }

// appendValue appends the JSON of text, the text-format value of a column
// of type oid, to dst. text is never retained.
func (d *valueDecoder) appendValue(dst []byte, oid uint32, text []byte) []byte {
	return d.value(dst, oid, text, 0)
}

func (d *valueDecoder) value(dst []byte, oid uint32, text []byte, depth int) []byte {
	oid = d.cat.base(oid)
	start := len(dst)
	ok := false
	switch oid {
	case pgtype.BoolOID:
		switch string(text) {
		case "t":
			return append(dst, "true"...)
		case "f":
			return append(dst, "false"...)
		}
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			return strconv.AppendInt(dst, n, 10)
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		// JSON has no NaN or infinities: keep those as the server's
		// text. A real is widened to float64 and written as one (the
		// form payloads have always had).
		bits := 64
		if oid == pgtype.Float4OID {
			bits = 32
		}
		if f, err := strconv.ParseFloat(string(text), bits); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return jsonenc.AppendFloat(dst, f)
		}
	case pgtype.NumericOID:
		// Exact: the server's digits, never a float. NaN and the
		// infinities are not JSON numbers and stay strings.
		if isJSONNumber(text) {
			return append(dst, text...)
		}
	case pgtype.UUIDOID:
		dst, ok = appendUUID(dst, text)
	case pgtype.TimestamptzOID:
		dst, ok = appendTimestamp(dst, text, true)
	case pgtype.TimestampOID:
		dst, ok = appendTimestamp(dst, text, false)
	case pgtype.JSONOID, pgtype.JSONBOID:
		// Kept as the server's text, whitespace aside: decoding would
		// turn 9007199254740993 into 9007199254740992
		// (docs/replication.md rule 12).
		if jsonenc.Valid(text) {
			return jsonenc.AppendCompact(dst, text)
		}
	case pgtype.ByteaOID:
		dst, ok = d.appendBytea(dst, text)
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
		// The commonest columns: their text as a string, without the
		// catalog lookups (array? composite? known?) of the default.
		return jsonenc.AppendString(dst, text)
	default:
		if depth < maxNesting {
			if elem, isArray := d.cat.element(oid); isArray {
				dst, ok = d.appendArray(dst, elem, text, depth+1)
			} else if attrs, isComposite := d.cat.composite(oid); isComposite {
				dst, ok = d.appendRecord(dst, attrs, text, depth+1)
			}
		}
	}
	if ok {
		return dst
	}
	if d.mustWithhold(oid) {
		// A composite value that does not parse as its type (an
		// attribute added since the catalog was read), or a value of a
		// type created since: its text holds fields whose names nobody
		// can check against the secret rules, so it does not go out.
		d.withheld = true
		return append(dst[:start], "null"...)
	}
	// "char", date, interval, inet, enums, extension types (citext) and
	// anything unknown or unparsable: the server's text.
	return jsonenc.AppendString(dst[:start], text)
}

// mustWithhold reports whether a value of type oid that cannot be decoded
// must be left out instead of sent as its text: a composite type, an
// array of one, or a type the catalog does not know (created since it was
// read, possibly a composite). Enums, domains over base types and
// extension types known at load time go out as text.
func (d *valueDecoder) mustWithhold(oid uint32) bool {
	if d.cat == nil {
		return false // no database to read types from (unit tests)
	}
	for range maxNesting {
		if !d.cat.knows(oid) {
			return true
		}
		if _, ok := d.cat.composite(oid); ok {
			return true
		}
		elem, ok := d.cat.element(oid)
		if !ok {
			return false
		}
		oid = d.cat.base(elem)
	}
	return true
}

// appendUUID appends a UUID in its canonical lowercase form; false when
// text is not one.
func appendUUID(dst, text []byte) ([]byte, bool) {
	if len(text) != 36 {
		return dst, false
	}
	dst = append(dst, '"')
	for i, c := range text {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return dst, false
			}
		default:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			case c >= 'A' && c <= 'F':
				c += 'a' - 'A'
			default:
				return dst, false
			}
		}
		dst = append(dst, c)
	}
	return append(dst, '"'), true
}

// appendBytea appends the base64 of a bytea in hex format (\x0102ff).
func (d *valueDecoder) appendBytea(dst, text []byte) ([]byte, bool) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' {
		return dst, false
	}
	n := (len(text) - 2) / 2
	if cap(d.bytea) < n {
		d.bytea = make([]byte, n)
	}
	b := d.bytea[:n]
	if _, err := hex.Decode(b, text[2:]); err != nil {
		return dst, false
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"'), true
}

// appendArray appends an array literal ({1,2}, {{a,"b c"},{NULL,d}},
// [0:1]={1,2}) as a JSON array, nested one level per dimension, each
// element decoded as elem. It reports false for a malformed literal or a
// non-rectangular one (the caller writes the text instead).
func (d *valueDecoder) appendArray(dst []byte, elem uint32, text []byte, depth int) ([]byte, bool) {
	i := 0
	if len(text) > 0 && text[0] == '[' {
		// Explicit bounds: the shape is in the braces.
		eq := bytes.IndexByte(text, '=')
		if eq < 0 {
			return dst, false
		}
		i = eq + 1
	}
	p := arrayParser{d: d, elem: elem, text: text, i: i, depth: depth, dims: [maxDims]int{-1, -1, -1, -1, -1, -1}, leaf: -1}
	dst, ok := p.array(dst, 0)
	if !ok || p.i != len(text) {
		return dst, false
	}
	return dst, true
}

// maxDims is PostgreSQL's MAXDIM.
const maxDims = 6

type arrayParser struct {
	d     *valueDecoder
	elem  uint32
	text  []byte
	i     int
	depth int
	// dims[k] is the length every sub-array at level k must have (-1:
	// not seen yet); leaf is the level holding elements (-1: not seen).
	dims [maxDims]int
	leaf int
}

// array parses the sub-array opening at p.i, at level k.
func (p *arrayParser) array(dst []byte, k int) ([]byte, bool) {
	if k >= maxDims || p.i >= len(p.text) || p.text[p.i] != '{' {
		return dst, false
	}
	p.i++
	dst = append(dst, '[')
	n := 0
	for {
		p.skipSpace()
		if p.i >= len(p.text) {
			return dst, false
		}
		if p.text[p.i] == '}' && n == 0 {
			p.i++
			if k > 0 { // {} inside an array: not a rectangular array
				return dst, false
			}
			return append(dst, ']'), true
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		var ok bool
		if p.text[p.i] == '{' {
			if p.leaf >= 0 && p.leaf <= k {
				return dst, false
			}
			dst, ok = p.array(dst, k+1)
		} else {
			if p.leaf >= 0 && p.leaf != k {
				return dst, false
			}
			p.leaf = k
			dst, ok = p.element(dst)
		}
		if !ok {
			return dst, false
		}
		n++
		p.skipSpace()
		if p.i >= len(p.text) {
			return dst, false
		}
		switch p.text[p.i] {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
		default:
			return dst, false
		}
		break
	}
	if p.dims[k] >= 0 && p.dims[k] != n {
		return dst, false
	}
	p.dims[k] = n
	return append(dst, ']'), true
}

func (p *arrayParser) skipSpace() {
	for p.i < len(p.text) && isArraySpace(p.text[p.i]) {
		p.i++
	}
}

// isArraySpace is array_in's scanner_isspace.
func isArraySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// element parses one element at p.i: quoted ("b \"c\""), unquoted (abc,
// with backslash escapes) or NULL.
func (p *arrayParser) element(dst []byte) ([]byte, bool) {
	t := p.text
	if t[p.i] == '"' {
		start := p.i + 1
		raw := true // no escapes: the text can be used in place
		j := start
		for ; j < len(t) && t[j] != '"'; j++ {
			if t[j] == '\\' {
				raw = false
				j++
			}
		}
		if j >= len(t) {
			return dst, false
		}
		val := t[start:j]
		if !raw {
			buf := p.d.scratch[p.depth][:0]
			for k := start; k < j; k++ {
				if t[k] == '\\' {
					k++
				}
				buf = append(buf, t[k])
			}
			p.d.scratch[p.depth] = buf
			val = buf
		}
		p.i = j + 1
		return p.d.value(dst, p.elem, val, p.depth), true
	}
	start := p.i
	escaped := false
	for ; p.i < len(t); p.i++ {
		c := t[p.i]
		if c == '\\' {
			escaped = true
			p.i++
			continue
		}
		if c == ',' || c == '}' || c == '{' || c == '"' {
			break
		}
	}
	if p.i > len(t) {
		return dst, false
	}
	val := bytes.TrimRight(t[start:p.i], " \t\n\r\v\f")
	if len(val) == 0 {
		return dst, false
	}
	if !escaped && len(val) == 4 && (val[0]|0x20) == 'n' && (val[1]|0x20) == 'u' && (val[2]|0x20) == 'l' && (val[3]|0x20) == 'l' {
		return append(dst, "null"...), true
	}
	if escaped {
		buf := p.d.scratch[p.depth][:0]
		for k := 0; k < len(val); k++ {
			if val[k] == '\\' && k+1 < len(val) {
				k++
			}
			buf = append(buf, val[k])
		}
		p.d.scratch[p.depth] = buf
		val = buf
	}
	return p.d.value(dst, p.elem, val, p.depth), true
}

// appendRecord appends a composite value's text form ((1,"b c",) — an
// empty field is NULL, "" an empty string) as a JSON object keyed by the
// attributes' names, each field decoded as its attribute's type. It
// reports false when the text is malformed or its field count is not the
// type's.
func (d *valueDecoder) appendRecord(dst []byte, attrs []attribute, text []byte, depth int) ([]byte, bool) {
	if len(text) < 2 || text[0] != '(' {
		return dst, false
	}
	dst = append(dst, '{')
	i := 1
	for n := 0; ; n++ {
		if n >= len(attrs) {
			return dst, false
		}
		// record_in's field grammar: quotes may open and close
		// anywhere, "" inside quotes is a quote, a backslash escapes
		// the next character; a field with no characters is NULL.
		buf := d.scratch[depth][:0]
		quoted, inQuote := false, false
		for ; i < len(text); i++ {
			c := text[i]
			if !inQuote && (c == ',' || c == ')') {
				break
			}
			switch {
			case c == '\\':
				i++
				if i >= len(text) {
					return dst, false
				}
				buf = append(buf, text[i])
			case c == '"' && !inQuote:
				inQuote, quoted = true, true
			case c == '"' && i+1 < len(text) && text[i+1] == '"':
				buf = append(buf, '"')
				i++
			case c == '"':
				inQuote = false
			default:
				buf = append(buf, c)
			}
		}
		d.scratch[depth] = buf
		if i >= len(text) {
			return dst, false
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, attrs[n].name)
		dst = append(dst, ':')
		if len(buf) == 0 && !quoted {
			dst = append(dst, "null"...)
		} else {
			// The field's bytes live in scratch[depth]; a nested value
			// uses the next level's buffer, so they stay intact.
			dst = d.value(dst, attrs[n].oid, buf, depth)
		}
		if text[i] == ')' {
			if i != len(text)-1 || n != len(attrs)-1 {
				return dst, false
			}
			return append(dst, '}'), true
		}
		i++ // ','
	}
}

// appendTimestamp appends a timestamptz (tz) or timestamp text in ISO
// style (2026-11-23 10:00:00.123456+00, BC years with " BC") as an RFC 3339
// JSON string in UTC, written as encoding/json writes a time.Time
// (fractional digits without trailing zeros). It reports false for
// infinities, malformed text and years outside 0001-9999 (RFC 3339's).
func appendTimestamp(dst, s []byte, tz bool) ([]byte, bool) {
	bc := false
	if n := len(s); n > 3 && s[n-3] == ' ' && s[n-2] == 'B' && s[n-1] == 'C' {
		s, bc = s[:n-3], true
	}
	i, year := 0, 0
	for i < len(s) && isDigit(s[i]) {
		if i >= 7 {
			return dst, false
		}
		year = year*10 + int(s[i]-'0')
		i++
	}
	if i < 4 || year < 1 {
		return dst, false
	}
	var month, day, hour, minute, sec, nsec, offset int
	var ok bool
	if i, ok = expect(s, i, '-'); !ok {
		return dst, false
	}
	if month, i, ok = twoDigits(s, i); !ok {
		return dst, false
	}
	if i, ok = expect(s, i, '-'); !ok {
		return dst, false
	}
	if day, i, ok = twoDigits(s, i); !ok {
		return dst, false
	}
	if bc {
		year = 1 - year
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return dst, false
	}
	if i, ok = expect(s, i, ' '); !ok {
		return dst, false // a date without a time
	}
	if hour, i, ok = twoDigits(s, i); !ok {
		return dst, false
	}
	if i, ok = expect(s, i, ':'); !ok {
		return dst, false
	}
	if minute, i, ok = twoDigits(s, i); !ok {
		return dst, false
	}
	if i, ok = expect(s, i, ':'); !ok {
		return dst, false
	}
	if sec, i, ok = twoDigits(s, i); !ok {
		return dst, false
	}
	if hour > 23 || minute > 59 || sec > 59 {
		return dst, false
	}
	carry := false
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == start {
			return dst, false
		}
		usec, ok := fractionMicros(s[start:i])
		if !ok {
			return dst, false
		}
		if usec == 1000000 {
			usec, carry = 0, true
		}
		nsec = usec * 1000
	}
	hasOffset := false
	if i < len(s) {
		switch s[i] {
		case 'Z':
			i++
			hasOffset = true
		case '+', '-':
			if offset, i, ok = parseOffset(s, i); !ok {
				return dst, false
			}
			hasOffset = true
		}
	}
	if i != len(s) || hasOffset != tz {
		return dst, false
	}
	if offset == 0 && !carry && !bc && year <= 9999 {
		// What the watcher's connection sends (TimeZone=UTC): already the
		// UTC instant, so its fields are written as they are, which is
		// what formatting the time.Time gives, without making one.
		return appendUTC(dst, year, month, day, hour, minute, sec, nsec/1000), true
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
	if carry {
		t = t.Add(time.Second)
	}
	if t.Year() < 1 || t.Year() > 9999 {
		return dst, false
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"'), true
}

// appendUTC appends a UTC time as a JSON string in RFC 3339 with the
// fraction's trailing zeros dropped (time.RFC3339Nano's form), for a year
// of 1 to 9999 and a fraction in microseconds.
func appendUTC(dst []byte, year, month, day, hour, minute, sec, usec int) []byte {
	dst = append(dst, '"',
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+month/10), byte('0'+month%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if usec > 0 {
		frac := [7]byte{'.'}
		n := 0 // digits kept: up to the last that is not 0
		for i := 6; i >= 1; i-- {
			if d := byte(usec % 10); d != 0 || n > 0 {
				frac[i] = '0' + d
				n = max(n, i)
			} else {
				frac[i] = '0'
			}
			usec /= 10
		}
		dst = append(dst, frac[:n+1]...)
	}
	return append(dst, 'Z', '"')
}

// fractionMicros converts fractional-second digits to microseconds,
// rounding as the server does (only more than six digits round; the server
// never sends more).
func fractionMicros(digits []byte) (int, bool) {
	if len(digits) <= 6 {
		usec := 0
		for _, c := range digits {
			usec = usec*10 + int(c-'0')
		}
		for range 6 - len(digits) {
			usec *= 10
		}
		return usec, true
	}
	f, err := strconv.ParseFloat("0."+string(digits), 64)
	if err != nil {
		return 0, false
	}
	return int(math.RoundToEven(f * 1e6)), true
}

// parseOffset parses a UTC offset at s[i] (+HH[:MM[:SS]], more hour digits
// allowed) into seconds east of UTC.
func parseOffset(s []byte, i int) (offset, next int, ok bool) {
	neg := s[i] == '-'
	i++
	var hour, minute, sec int
	if hour, i, ok = twoDigits(s, i); !ok {
		return 0, i, false
	}
	for i < len(s) && isDigit(s[i]) {
		hour = hour*10 + int(s[i]-'0')
		i++
		if hour > math.MaxInt32/3600 {
			return 0, i, false
		}
	}
	if i, ok = expect(s, i, ':'); ok {
		if minute, i, ok = twoDigits(s, i); !ok {
			return 0, i, false
		}
		if i, ok = expect(s, i, ':'); ok {
			if sec, i, ok = twoDigits(s, i); !ok {
				return 0, i, false
			}
		}
	}
	if minute > 59 || sec > 59 {
		return 0, i, false
	}
	seconds := int64(hour)*3600 + int64(minute*60+sec)
	if neg {
		seconds = -seconds
	}
	if seconds < math.MinInt32 || seconds > math.MaxInt32 {
		return 0, i, false
	}
	return int(seconds), i, true
}

func twoDigits(s []byte, i int) (v, next int, ok bool) {
	if i+1 >= len(s) || !isDigit(s[i]) || !isDigit(s[i+1]) {
		return 0, i, false
	}
	return int(s[i]-'0')*10 + int(s[i+1]-'0'), i + 2, true
}

func expect(s []byte, i int, c byte) (next int, ok bool) {
	if i >= len(s) || s[i] != c {
		return i, false
	}
	return i + 1, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// daysIn is the number of days of a month of a proleptic Gregorian year
// (astronomical numbering: 1 BC is year 0).
func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// isJSONNumber reports whether b is a number in JSON's grammar.
func isJSONNumber(b []byte) bool {
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

// arrayElements maps the built-in array types to their element types.
// Arrays of the database's own types (domains, enums, composites) come
// from the catalog.
var arrayElements = map[uint32]uint32{
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
	pgtype.MacaddrArrayOID:     pgtype.MacaddrOID,
	pgtype.TimeArrayOID:        pgtype.TimeOID,
	pgtype.QCharArrayOID:       pgtype.QCharOID,
}
