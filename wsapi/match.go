package wsapi

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/changecast/changecast/entities"
)

// This file holds field filters: a clause's "match" object (docs/protocol.md,
// "Field filters"), {"field": value | [values]}. Conditions are AND-ed; an
// array is IN. Values are JSON scalars, compared by JSON value:
//
//   - strings exactly, after decoding escapes ("\u0041" == "A");
//   - numbers by exact decimal value (5 == 5.0 == 5e0 == 50e-1), with no
//     float rounding, so large integer ids compare exactly;
//   - true, false and null as themselves; null matches a field whose value
//     is null, never a missing one.
//
// A field absent from the payload, or whose value is an object or an array,
// never matches. A truncate has no payload, so a clause with match never
// selects it. Payload values are JSON (entities.Row), live and replayed
// from the journal alike, and are reduced to the same normal form as the
// match values (scalarKey), so live and catch-up select the same rows.

// fieldMatch is one condition: payload[field] must equal one of keys.
type fieldMatch struct {
	field string
	keys  []string        // normal forms (scalarKey), OR-ed
	raw   json.RawMessage // the value as the client sent it, compacted, for responses
}

// parseMatch parses and validates a clause's match object for type et.
func (pc parseCtx) parseMatch(raw json.RawMessage, what string, et entities.EntityType) ([]fieldMatch, error) {
	what += `: "match"`
	members, err := objectMembers(raw, what)
	if err != nil {
		return nil, err
	}
	out := make([]fieldMatch, 0, len(members))
	for field, v := range members {
		if pc.isSecret(et, field) {
			return nil, filterErrorf("%s: field %s is secret and cannot be matched", what, quote(field))
		}
		if len(et.Columns) > 0 && !slices.Contains(et.Columns, field) {
			var known []string
			for _, col := range et.Columns {
				if !pc.isSecret(et, col) {
					known = append(known, col)
				}
			}
			return nil, filterErrorf("%s: unknown field %s for entity type %s; known: %s", what, quote(field), quote(et.Name), strings.Join(known, ", "))
		}
		fm := fieldMatch{field: field}
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return nil, filterErrorf("%s: invalid JSON", what)
		}
		fm.raw = b.Bytes()
		badValue := filterErrorf("%s: field %s: value must be a string, number, boolean, null or a non-empty array of them", what, quote(field))
		if t := bytes.TrimSpace(v); len(t) > 0 && t[0] == '[' {
			var elems []json.RawMessage
			if err := json.Unmarshal(t, &elems); err != nil || len(elems) == 0 {
				return nil, badValue
			}
			for _, e := range elems {
				k, ok := scalarKey(e)
				if !ok {
					return nil, badValue
				}
				if !slices.Contains(fm.keys, k) {
					fm.keys = append(fm.keys, k)
				}
			}
		} else {
			k, ok := scalarKey(v)
			if !ok {
				return nil, badValue
			}
			fm.keys = []string{k}
		}
		out = append(out, fm)
	}
	if len(out) == 0 {
		return nil, nil // {} adds no condition
	}
	slices.SortFunc(out, func(a, b fieldMatch) int { return strings.Compare(a.field, b.field) })
	return out, nil
}

// matchFields reports whether every condition holds for c.
func matchFields(ms []fieldMatch, c *entities.Change) bool {
	if len(ms) == 0 {
		return true
	}
	if c.Operation == entities.OpTruncate || c.Payload == nil {
		return false
	}
	for i := range ms {
		v, ok := c.Payload.Get(ms[i].field)
		if !ok {
			return false
		}
		k, ok := scalarKey(v)
		if !ok || !slices.Contains(ms[i].keys, k) {
			return false
		}
	}
	return true
}

// Normal forms: a kind letter, then for strings the decoded string and for
// numbers the canonical decimal (see canonNumber).
const (
	keyTrue  = "t"
	keyFalse = "f"
	keyNull  = "z"
)

// scalarKey returns the normal form of a JSON scalar; ok is false for
// objects, arrays and invalid JSON.
func scalarKey(raw []byte) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "", false
	}
	switch c := t[0]; {
	case c == '"':
		if len(t) >= 2 && t[len(t)-1] == '"' && bytes.IndexByte(t, '\\') < 0 && utf8.Valid(t) {
			return "s" + string(t[1:len(t)-1]), true // no escapes: the text is the string
		}
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return "", false
		}
		return "s" + s, true
	case c == '-' || (c >= '0' && c <= '9'):
		return numberKey(string(t))
	}
	switch string(t) {
	case "true":
		return keyTrue, true
	case "false":
		return keyFalse, true
	case "null":
		return keyNull, true
	}
	return "", false
}

func numberKey(s string) (string, bool) {
	n, ok := canonNumber(s)
	if !ok {
		return "", false
	}
	return "n" + n, true
}

// maxExponent bounds a number's exponent so canonNumber's arithmetic
// cannot overflow; JSON numbers beyond it are not matchable.
const maxExponent = 1 << 30

// canonNumber returns the canonical form of a JSON number's exact decimal
// value: "0", or an optional "-", the significant digits without leading or
// trailing zeros, "e" and the exponent ("50e-1" → "5e0"). ok is false for
// text that is not a JSON number or whose exponent is out of range.
func canonNumber(s string) (string, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	mant, expText, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, hasPoint := strings.Cut(mant, ".")
	if !digitsOnly(intPart) || intPart == "" || (len(intPart) > 1 && intPart[0] == '0') ||
		!digitsOnly(frac) || (hasPoint && frac == "") {
		return "", false
	}
	exp := 0
	if hasExp {
		d := strings.TrimPrefix(strings.TrimPrefix(expText, "+"), "-")
		if d == "" || !digitsOnly(d) {
			return "", false
		}
		d = strings.TrimLeft(d, "0")
		if len(d) > 10 {
			return "", false
		}
		e, _ := strconv.Atoi(d + "0")
		e /= 10
		if e > maxExponent {
			return "", false
		}
		if strings.HasPrefix(expText, "-") {
			e = -e
		}
		exp = e
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return "0", true // -0 == 0
	}
	exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	if neg {
		trimmed = "-" + trimmed
	}
	return trimmed + "e" + strconv.Itoa(exp), true
}

func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
