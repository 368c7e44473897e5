package wsapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func regClaims(sub string) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{Subject: sub}
}

func newTestAuth(t testing.TB) *Auth {
	t.Helper()
	a, err := NewAuth(testSecret)
	if err != nil {
		t.Fatalf("NewAuth: %v", err)
	}
	return a
}

// craftToken builds a JWT by hand from header and claims, signed with
// HMAC-SHA256 over testSecret unless sig is given: for headers golang-jwt
// would refuse to produce.
func craftToken(t testing.TB, header, claims map[string]any, sig *string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(header) + "." + enc(claims)
	if sig != nil {
		return signing + "." + *sig
	}
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func validClaimsMap() map[string]any {
	now := time.Now()
	return map[string]any{"sub": "u1", "name": "Ann", "role": "admin", "gen": 1, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

func TestNewAuth_ShortSecret(t *testing.T) {
	_, err := NewAuth([]byte("too-short-secret"))
	if err == nil {
		t.Fatal("NewAuth accepted a 16-byte secret")
	}
	if strings.Contains(err.Error(), "too-short-secret") {
		t.Fatalf("error %q echoes the secret", err)
	}
}

func TestAuth_MintVerify(t *testing.T) {
	a := newTestAuth(t)
	in := Claims{Name: "Ann", Role: RoleViewer, Scope: []string{"pool", "job"}, Gen: 3, RegisteredClaims: regClaims("u1")}
	tok, err := a.Mint(in, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	got, err := a.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Subject != "u1" || got.Name != "Ann" || got.Role != RoleViewer || got.Gen != 3 || !reflect.DeepEqual(got.Scope, in.Scope) {
		t.Fatalf("got claims %+v, want %+v", got, in)
	}
	if got.ExpiresAt == nil || got.IssuedAt == nil {
		t.Fatalf("got exp %v iat %v, want both set", got.ExpiresAt, got.IssuedAt)
	}
	if d := got.ExpiresAt.Sub(got.IssuedAt.Time); d != time.Hour {
		t.Fatalf("got exp-iat %s, want 1h", d)
	}
}

func TestAuth_MintRejects(t *testing.T) {
	a := newTestAuth(t)
	cases := map[string]struct {
		c   Claims
		ttl time.Duration
	}{
		"unknown role": {Claims{Role: "root", RegisteredClaims: regClaims("u1")}, time.Hour},
		"empty role":   {Claims{RegisteredClaims: regClaims("u1")}, time.Hour},
		"no subject":   {Claims{Role: RoleAdmin}, time.Hour},
		"zero ttl":     {Claims{Role: RoleAdmin, RegisteredClaims: regClaims("u1")}, 0},
		"empty scope":  {Claims{Role: RoleViewer, Scope: []string{""}, RegisteredClaims: regClaims("u1")}, time.Hour},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tok, err := a.Mint(tc.c, tc.ttl); err == nil {
				t.Fatalf("Mint succeeded with %q", tok)
			}
		})
	}
}

// rejectedTokens returns tokens Verify must refuse, each with the sentinel
// it must wrap. Shared with the upgrade tests.
func rejectedTokens(t testing.TB) map[string]struct {
	token string
	want  error
} {
	t.Helper()
	past := newTestAuth(t)
	past.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, err := past.Mint(Claims{Role: RoleAdmin, RegisteredClaims: regClaims("u1")}, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	other, err := NewAuth([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatalf("NewAuth: %v", err)
	}
	wrongKey, err := other.Mint(Claims{Role: RoleAdmin, RegisteredClaims: regClaims("u1")}, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	hs384, err := jwt.NewWithClaims(jwt.SigningMethodHS384, jwt.MapClaims(validClaimsMap())).SignedString(testSecret)
	if err != nil {
		t.Fatalf("sign HS384: %v", err)
	}
	noExp := validClaimsMap()
	delete(noExp, "exp")
	badRole := validClaimsMap()
	badRole["role"] = "root"
	noSub := validClaimsMap()
	delete(noSub, "sub")
	empty := ""
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}
	return map[string]struct {
		token string
		want  error
	}{
		"malformed":       {"not-a-jwt", ErrTokenInvalid},
		"two segments":    {"eyJhbGciOiJIUzI1NiJ9.e30", ErrTokenInvalid},
		"wrong signature": {wrongKey, ErrTokenInvalid},
		"alg none":        {craftToken(t, map[string]any{"alg": "none", "typ": "JWT"}, validClaimsMap(), &empty), ErrTokenInvalid},
		"alg HS384":       {hs384, ErrTokenInvalid},
		"alg RS256":       {craftToken(t, map[string]any{"alg": "RS256", "typ": "JWT"}, validClaimsMap(), nil), ErrTokenInvalid},
		"alg unknown":     {craftToken(t, map[string]any{"alg": "XS999", "typ": "JWT"}, validClaimsMap(), nil), ErrTokenInvalid},
		"expired":         {expired, ErrTokenExpired},
		"no exp":          {craftToken(t, hs, noExp, nil), ErrTokenInvalid},
		"bad role":        {craftToken(t, hs, badRole, nil), ErrTokenInvalid},
		"no sub":          {craftToken(t, hs, noSub, nil), ErrTokenInvalid},
	}
}

func TestAuth_VerifyRejects(t *testing.T) {
	a := newTestAuth(t)
	// The hand-crafted HS256 path must itself be valid, or the cases
	// above prove nothing.
	if _, err := a.Verify(craftToken(t, map[string]any{"alg": "HS256", "typ": "JWT"}, validClaimsMap(), nil)); err != nil {
		t.Fatalf("crafted valid token rejected: %v", err)
	}
	for name, tc := range rejectedTokens(t) {
		t.Run(name, func(t *testing.T) {
			c, err := a.Verify(tc.token)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", c)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want %v", err, tc.want)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, part := range append(strings.Split(tc.token, "."), string(testSecret)) {
				if len(part) > 8 && strings.Contains(msg, part) {
					t.Fatalf("error %q echoes part of the token or the secret", msg)
				}
			}
		})
	}
}
