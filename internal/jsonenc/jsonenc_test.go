package jsonenc

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// encode is what the frames have always been written with: encoding/json
// without HTML escaping.
func encode(t testing.TB, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\`, "\x00\x01\b\f\n\r\t\x1f\x7f", "<>&", "é\u2028\u2029😀", "\xff\xfe bad", "a\xe2\x80"} {
		if got, want := string(AppendString(nil, s)), encode(t, s); got != want {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
		if got, want := string(AppendString(nil, []byte(s))), encode(t, s); got != want {
			t.Errorf("AppendString([]byte %q) = %s, want %s", s, got, want)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1.5, 0.1, 1e-6, 1e-7, 123456789e-15, 1e20, 1e21, 1.7976931348623157e308, 5e-324, float64(float32(0.1))} {
		if got, want := string(AppendFloat(nil, f)), encode(t, f); got != want {
			t.Errorf("AppendFloat(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestAppendCompact(t *testing.T) {
	in := []byte(" { \"a b\" : [ 1 , 2.50 , \"x \\\" y\" ] ,\n\t\"c\" : { } } ")
	var want bytes.Buffer
	if err := json.Compact(&want, in); err != nil {
		t.Fatal(err)
	}
	if got := AppendCompact(nil, in); !bytes.Equal(got, want.Bytes()) {
		t.Errorf("AppendCompact = %s, want %s", got, want.Bytes())
	}
}

func TestAppendHTMLEscaped(t *testing.T) {
	v := map[string]any{"k<": "a<b>&c"}
	want, _ := json.Marshal(v) // escapes HTML
	if got := AppendHTMLEscaped(nil, []byte(encode(t, v))); string(got) != string(want) {
		t.Errorf("AppendHTMLEscaped = %s, want %s", got, want)
	}
}

// FuzzAppendString checks AppendString against encoding/json (without
// HTML escaping) on arbitrary bytes, invalid UTF-8 included, and
// AppendFloat against it on the float the bytes parse as, if any.
func FuzzAppendString(f *testing.F) {
	f.Add("héllo \"q\" <b>\u2028\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(AppendString(nil, s)), encode(t, s); got != want {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
		var f float64
		if err := json.Unmarshal([]byte(s), &f); err == nil {
			if got, want := string(AppendFloat(nil, f)), encode(t, f); got != want {
				t.Fatalf("AppendFloat(%v) = %s, want %s", f, got, want)
			}
		}
	})
}
