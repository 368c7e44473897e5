package wsapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fuzzNow is the fixed clock of FuzzVerifyToken, so the committed seed
// tokens (testdata/fuzz/FuzzVerifyToken, signed with testSecret, iat
// 2026-11-23, exp 2026-11-24 unless the seed is about exp) keep their
// meaning whenever the fuzzer runs.
var fuzzNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// FuzzVerifyToken feeds arbitrary strings to Auth.Verify, the first thing
// that parses a client's bytes. Properties: it never panics; whatever it
// accepts is an HS256 token with a subject, a known role and an exp in the
// future; whatever it rejects gets one of the two sentinel errors, and the
// error never quotes the token or any long piece of it.
func FuzzVerifyToken(f *testing.F) {
	f.Add("")
	f.Add("not-a-jwt")
	f.Add("a.b.c")
	a := newTestAuth(f)
	a.now = func() time.Time { return fuzzNow }
	f.Fuzz(func(t *testing.T, token string) {
		c, err := a.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("error %v wraps neither ErrTokenInvalid nor ErrTokenExpired", err)
			}
			for _, part := range append(strings.Split(token, "."), token) {
				if len(part) >= 12 && strings.Contains(err.Error(), part) {
					t.Fatalf("error %q quotes the token", err)
				}
			}
			return
		}
		if c.Subject == "" || (c.Role != RoleAdmin && c.Role != RoleViewer) {
			t.Fatalf("accepted claims %+v without a subject or with an unknown role", c)
		}
		if c.ExpiresAt == nil || !c.ExpiresAt.After(fuzzNow) {
			t.Fatalf("accepted claims %+v without a future exp", c)
		}
		header, _, _ := strings.Cut(token, ".")
		raw, derr := base64.RawURLEncoding.DecodeString(header)
		var h struct {
			Alg string `json:"alg"`
		}
		if derr != nil || json.Unmarshal(raw, &h) != nil || h.Alg != "HS256" {
			t.Fatalf("accepted a token whose header is not alg HS256: %q", raw)
		}
	})
}
