package jsonenc

import (
	"encoding/json"
	"strings"
	"testing"
)

// validCases are documents on both sides of each rule, for the test and as
// the fuzz target's seeds.
var validCases = []string{
	``, ` `, `null`, `true`, `false`, `nul`, `truex`, `0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`,
	`-1.25e-10`, `"x"`, `"`, `"\"`, `"\u00e9"`, `"\u00g9"`, `"\u12"`, `"\x"`, `"\/\b\f\n\r\t\\\""`, "\"\x01\"", "\"\xff\xfe\"",
	`[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `[1,[2,[3]]]`, `{}`, `{ }`, `{"a":1}`, `{"a" : 1 , "b":[true,null]}`, `{"a"}`,
	`{"a":}`, `{a:1}`, `{"a":1,}`, `{"a":1 "b":2}`, `{"a":{"b":{"c":"d"}}}`, " \t\n\r{\"k\":\"v\"}\r\n", `{} {}`, `[1]]`,
	`{"password":"x","nested":[{"api_key":"y"}]}`,
}

func TestValid_AsEncodingJSON(t *testing.T) {
	cases := append([]string(nil), validCases...)
	cases = append(cases, strings.Repeat("[", maxDepth)+strings.Repeat("]", maxDepth),
		strings.Repeat("[", maxDepth+1)+strings.Repeat("]", maxDepth+1),
		strings.Repeat(`{"a":`, maxDepth)+"1"+strings.Repeat("}", maxDepth),
		strings.Repeat(`{"a":`, maxDepth+1)+"1"+strings.Repeat("}", maxDepth+1))
	for _, c := range cases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func BenchmarkValid(b *testing.B) {
	doc := []byte(`{"id": "6f1c3a52-8d1e-4c1e-9a57-2b1c9c0e4f11", "labels": ["linux", "x64", "gpu"], "status": {"phase": "running", "since": "2026-12-07T10:00:00Z", "attempts": 3, "ratio": 0.75, "ok": true, "note": null}, "messages": [{"created_at": "2026-12-07T10:00:00Z", "message": "runner \"r-17\" registered \u00e9"}]}`)
	b.Run("jsonenc", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if !Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if !json.Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
}
