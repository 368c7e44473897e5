// Package jsonenc appends JSON the way encoding/json writes it for
// changecast's frames (no HTML escaping), without reflection and without
// allocating: strings, floats, and the compaction of JSON text. The row
// representation (entities.Row) and the value decoder (watcher) build on it,
// so a value encoded here is byte for byte what encoding/json's Encoder with
// SetEscapeHTML(false) wrote for the same Go value.
package jsonenc

import (
	"math"
	"strconv"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// safe reports the ASCII bytes encoding/json writes unescaped when HTML
// escaping is off: printable characters other than '"' and '\\'.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendString appends s as a JSON string, escaped as encoding/json escapes
// it with SetEscapeHTML(false): '"' and '\\' with a backslash, control
// characters as \b \f \n \r \t or \u00XX, U+2028 and U+2029 as \u2028 and
// \u2029, and each byte of invalid UTF-8 as \ufffd.
func AppendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := decodeRune(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func decodeRune[S ~string | ~[]byte](s S) (rune, int) {
	var buf [utf8.UTFMax]byte
	n := copy(buf[:], s[:min(len(s), utf8.UTFMax)])
	return utf8.DecodeRune(buf[:n])
}

// AppendFloat appends f as encoding/json encodes a float64: the shortest
// representation that round-trips, in %f form unless the magnitude is
// below 1e-6 or at least 1e21, then in %e form with a two-digit exponent
// at least ("1e-07" becomes "1e-7"). f must not be NaN or infinite.
func AppendFloat(dst []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// AppendCompact appends the valid JSON src without insignificant
// whitespace, as encoding/json writes a json.RawMessage when HTML escaping
// is off. src must be valid JSON (json.Valid): everything outside strings
// that is not whitespace is copied as it is.
func AppendCompact(dst, src []byte) []byte {
	start := 0
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		case '"':
			i = StringEnd(src, i) - 1
		}
	}
	return append(dst, src[start:]...)
}

// StringEnd returns the index just past the JSON string that opens at
// b[i] (a '"'), or len(b) if it does not end.
func StringEnd(b []byte, i int) int {
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

// AppendHTMLEscaped appends the valid JSON src with '<', '>' and '&'
// escaped as \u003c, \u003e and \u0026, as json.Marshal (which escapes
// HTML) writes them. In valid JSON those bytes only occur inside strings.
func AppendHTMLEscaped(dst, src []byte) []byte {
	start := 0
	for i, c := range src {
		if c == '<' || c == '>' || c == '&' {
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}
