package wsapi

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what a token's holder may see. See docs/security.md, "Users,
// login and sessions", and docs/protocol.md, "Authentication".
type Role string

// The roles a token can carry.
const (
	// RoleAdmin may see every entity type, user included.
	RoleAdmin Role = "admin"
	// RoleViewer may see the entity types in the token's scope (every
	// type when the scope is empty) except user, which it never sees.
	RoleViewer Role = "viewer"
)

// MinSecretBytes is the shortest HMAC secret NewAuth accepts: 256 bits, the
// size of an HS256 digest (RFC 7518 §3.2).
const MinSecretBytes = 32

// Errors returned (wrapped) by Auth.Verify. Their messages are safe to show to
// the client: they never contain the token or the secret.
var (
	// ErrTokenExpired is returned for a token whose exp is in the past.
	ErrTokenExpired = errors.New("token expired")
	// ErrTokenInvalid is returned for any other unusable token: malformed,
	// wrongly signed, signed with another algorithm, missing exp or sub,
	// or carrying an unknown role.
	ErrTokenInvalid = errors.New("invalid token")
)

// Claims are the JWT claims changecast issues and accepts. Subject (sub) is
// the user id; ExpiresAt (exp) is required.
type Claims struct {
	// Name is the user's display name, for logs and the dashboard.
	Name string `json:"name"`
	// Role is admin or viewer.
	Role Role `json:"role"`
	// Scope lists the entity types the holder may see. Empty means every
	// type the role allows. It narrows admins too, so an admin can mint a
	// least-privilege token for automation; it never widens a viewer to
	// user.
	Scope []string `json:"scope,omitempty"`
	// Gen is the user's password generation when the token was issued;
	// a password reset bumps it and so invalidates older tokens (checked
	// by the caller that owns the user table, not here).
	Gen int64 `json:"gen"`
	jwt.RegisteredClaims
}

// claimsError is a claim problem detected by Validate. Its message is fixed
// text, never a claim value, so it is safe in errors shown to clients.
type claimsError struct{ msg string }

func (e *claimsError) Error() string { return e.msg }

// Validate reports whether the claims are usable: sub set, role admin or
// viewer, no empty scope entry. golang-jwt calls it during Verify, after the
// registered claims (exp) have been checked.
func (c Claims) Validate() error {
	if c.Subject == "" {
		return &claimsError{"sub (user id) is required"}
	}
	switch c.Role {
	case RoleAdmin, RoleViewer:
	default:
		return &claimsError{"role must be admin or viewer"}
	}
	for _, s := range c.Scope {
		if s == "" {
			return &claimsError{"scope entries must not be empty"}
		}
	}
	return nil
}

// Auth mints and verifies changecast's HS256 tokens. It is safe for
// concurrent use.
type Auth struct {
	secret []byte
	now    func() time.Time // tests move the clock; set before use
	parser *jwt.Parser      // read-only after NewAuth
}

// NewAuth returns an Auth signing with secret, which must be at least
// MinSecretBytes long. The secret is copied.
func NewAuth(secret []byte) (*Auth, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("jwt secret is %d bytes; use at least %d random bytes (e.g. openssl rand -hex 32)", len(secret), MinSecretBytes)
	}
	a := &Auth{secret: append([]byte(nil), secret...), now: time.Now}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return a.now() }),
	)
	return a, nil
}

// Mint signs c with HS256, setting iat to now and exp to now+ttl (replacing
// any values in c). ttl must be positive; c must pass Validate.
func (a *Auth) Mint(c Claims, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("mint token: ttl must be positive, got %s", ttl)
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	now := a.now()
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// Verify parses token and returns its claims if it is an HS256 token signed
// with this Auth's secret, unexpired, with a valid role and subject. Errors
// wrap ErrTokenExpired or ErrTokenInvalid and never echo the token or the
// secret.
func (a *Auth) Verify(token string) (*Claims, error) {
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, a.key)
	if err != nil {
		return nil, classifyTokenError(err)
	}
	return &c, nil
}

func (a *Auth) key(t *jwt.Token) (any, error) {
	// WithValidMethods already rejected every other alg, "none" included;
	// checking the method type again guards against a future parser option
	// change turning an HMAC key into a public key (the classic alg
	// confusion).
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok || t.Method.Alg() != jwt.SigningMethodHS256.Alg() {
		return nil, errBadAlg
	}
	return a.secret, nil
}

var errBadAlg = errors.New("signing method not allowed")

// classifyTokenError maps golang-jwt's errors to fixed messages: its own
// messages can quote decoder errors about the token's bytes.
func classifyTokenError(err error) error {
	var ce *claimsError
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrTokenExpired
	case errors.As(err, &ce):
		return fmt.Errorf("%w: %s", ErrTokenInvalid, ce.msg)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Errorf("%w: exp is required", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: malformed", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && errors.Is(err, jwt.ErrSignatureInvalid):
		return fmt.Errorf("%w: signature invalid", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: signing method not allowed; use HS256", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w: not valid yet", ErrTokenInvalid)
	default:
		return fmt.Errorf("%w: claims rejected", ErrTokenInvalid)
	}
}
