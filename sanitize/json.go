package sanitize

import (
	"bytes"
	"encoding/json"

	"github.com/changecast/changecast/internal/jsonenc"
)

// jsonNull replaces a json value that does not parse.
var jsonNull = []byte("null")

// jsonResult is what stripJSON did to a value.
type jsonResult int

const (
	jsonKept     jsonResult = iota // nothing secret: the input bytes are returned
	jsonStripped                   // secret-named keys removed: new bytes
	jsonInvalid                    // not JSON: replaced by null
)

// stripJSON removes, at any depth, every object member whose key is a
// SecretName, including inside arrays: {"a": {"b": {"private_key": "x"}}}
// becomes {"a":{"b":{}}} and [{"token": 1}] becomes [{}]. The key and its
// whole value go, whatever the value holds.
//
// When nothing is removed, it returns raw itself (the same bytes, not a
// copy) and jsonKept. When something is removed, it returns new compact
// JSON in which everything kept is the input's own text: member order,
// duplicate keys, string escapes and number literals (9007199254740993
// stays exact) are preserved, only insignificant whitespace is dropped.
//
// raw that is not valid JSON cannot be inspected reliably, so it is
// replaced by null (jsonInvalid). (PostgreSQL validates json and
// jsonb on input, and the watcher only produces valid json.RawMessage
// values, so this is a defence, not a path expected in practice.)
//
// Keys are checked without a full decode: raw is validated, then a single
// scan finds the object keys; only a value that holds a secret-named key is
// rewritten.
func stripJSON(raw []byte) ([]byte, jsonResult) {
	if !jsonenc.Valid(raw) {
		return jsonNull, jsonInvalid
	}
	return stripValidJSON(raw)
}

// stripValidJSON is stripJSON for raw known to be valid JSON (a Row's
// values are): it skips the validation.
func stripValidJSON(raw []byte) ([]byte, jsonResult) {
	if !hasSecretKey(raw) {
		return raw, jsonKept
	}
	s := stripper{in: raw, out: make([]byte, 0, len(raw))}
	s.value()
	return s.out, jsonStripped
}

// hasSecretKey reports whether valid JSON holds an object key that is a
// SecretName at any depth. In valid JSON every '"' outside a string opens a
// string, and a string followed by ':' is an object key.
func hasSecretKey(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		start := i
		i = stringEnd(b, i)
		j := i
		for j < len(b) && isSpace(b[j]) {
			j++
		}
		if j < len(b) && b[j] == ':' && keyIsSecret(b[start:i]) {
			return true
		}
		i-- // the loop's i++ lands on the byte after the string
	}
	return false
}

// stringEnd returns the index just past the string that opens at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// keyIsSecret reports whether a quoted JSON key, quotes included, is a
// SecretName once unescaped.
func keyIsSecret(quoted []byte) bool {
	if len(quoted) < 2 {
		return false
	}
	content := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(content, '\\') < 0 {
		return secretName(content)
	}
	// Escapes can spell letters ("\u0074oken"): decode first.
	var key string
	if err := json.Unmarshal(quoted, &key); err != nil {
		return true // cannot happen for validated input; fail closed
	}
	return secretName(key)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// stripper copies valid JSON from in to out, leaving out the members whose
// keys are secret. It relies on in being valid (json.Valid), which also
// bounds the nesting depth (encoding/json rejects more than 10000 levels).
type stripper struct {
	in  []byte
	i   int
	out []byte
}

func (s *stripper) ws() {
	for s.i < len(s.in) && isSpace(s.in[s.i]) {
		s.i++
	}
}

// value copies the value at s.i.
func (s *stripper) value() {
	s.ws()
	if s.i >= len(s.in) {
		return
	}
	switch s.in[s.i] {
	case '{':
		s.object()
	case '[':
		s.array()
	case '"':
		start := s.i
		s.i = stringEnd(s.in, s.i)
		s.out = append(s.out, s.in[start:s.i]...)
	default: // number, true, false, null: copied as written
		start := s.i
		for s.i < len(s.in) {
			c := s.in[s.i]
			if c == ',' || c == ']' || c == '}' || isSpace(c) {
				break
			}
			s.i++
		}
		s.out = append(s.out, s.in[start:s.i]...)
	}
}

func (s *stripper) object() {
	s.i++ // '{'
	s.out = append(s.out, '{')
	first := true
	for s.i < len(s.in) {
		s.ws()
		switch s.in[s.i] {
		case '}':
			s.i++
			s.out = append(s.out, '}')
			return
		case ',':
			s.i++
			s.ws()
		}
		start := s.i
		s.i = stringEnd(s.in, s.i)
		key := s.in[start:s.i]
		s.ws()
		s.i++ // ':'
		if keyIsSecret(key) {
			n := len(s.out)
			s.value()
			s.out = s.out[:n]
			continue
		}
		if !first {
			s.out = append(s.out, ',')
		}
		first = false
		s.out = append(s.out, key...)
		s.out = append(s.out, ':')
		s.value()
	}
}

func (s *stripper) array() {
	s.i++ // '['
	s.out = append(s.out, '[')
	for s.i < len(s.in) {
		s.ws()
		switch s.in[s.i] {
		case ']':
			s.i++
			s.out = append(s.out, ']')
			return
		case ',':
			s.i++
			s.out = append(s.out, ',')
		}
		s.value()
	}
}
