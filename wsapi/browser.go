package wsapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// This file holds what the dashboard (package ui) needs beyond the stream
// and the events API (docs/security.md, "The dashboard"):
//
//   - GET /api/v1/auth/session: who the caller is and which entity types
//     (with their non-secret columns) it may see, so a page that only holds
//     the HttpOnly login cookie can tell whether it is signed in;
//   - POST /api/v1/auth/session with "Authorization: Bearer <token>":
//     exchanges a pasted token for the HttpOnly cookie, so the page never
//     keeps a token in script memory or storage;
//   - POST /api/v1/auth/link: redeems a one-time sign-in link that serve or
//     demo prints for the embedded default, from loopback only.

// Dashboard paths.
const (
	SessionPath = "/api/v1/auth/session"
	LinkPath    = "/api/v1/auth/link"
)

// DefaultSignInLinkTTL is how long a sign-in link made by SignInLink stays
// redeemable.
const DefaultSignInLinkTTL = 15 * time.Minute

// maxSignInLinks bounds the unredeemed links kept; the oldest gives way.
const maxSignInLinks = 16

// sessionInfo is the answer of GET and POST SessionPath.
type sessionInfo struct {
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Role      Role      `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
	// Events is whether the caller may see system events (the stream's
	// event type and the events REST API).
	Events bool `json:"events"`
	// EntityTypes are the row types the caller may see, by name.
	EntityTypes []typeInfo `json:"entity_types"`
}

// typeInfo describes one entity type to the dashboard: its key columns
// and the columns that may leave changecast (never a secret one).
type typeInfo struct {
	Name    string   `json:"name"`
	Key     []string `json:"key"`
	Columns []string `json:"columns"`
}

func (s *Server) registerBrowserRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+SessionPath, s.serveSession)
	mux.HandleFunc("POST "+SessionPath, s.serveSessionExchange)
	mux.HandleFunc("POST "+LinkPath, s.serveLink)
}

// serveSession answers GET SessionPath for the token of the header or
// the login cookie.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticateHTTP(w, r)
	if !ok {
		return
	}
	writeJSONResponse(w, http.StatusOK, s.sessionInfo(claims))
}

// serveSessionExchange verifies the bearer token of the Authorization
// header (a token the user pasted into the dashboard) and sets it as the
// HttpOnly login cookie for the rest of its lifetime.
func (s *Server) serveSessionExchange(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	tok, err := headerToken(r)
	if err == nil && tok == "" {
		err = errors.New("missing token; send \"Authorization: Bearer <token>\" to exchange it for the login cookie")
	}
	if err != nil {
		writeUnauthorized(w, err.Error())
		return
	}
	claims, ok := s.verify(w, r, tok)
	if !ok {
		return
	}
	s.setLoginCookie(w, r, tok, claims)
	s.log.Info("session cookie set from a token", "user_id", claims.Subject, "name", claims.Name, "role", string(claims.Role))
	writeJSONResponse(w, http.StatusOK, s.sessionInfo(claims))
}

// setLoginCookie sets tok as the login cookie until the token expires.
func (s *Server) setLoginCookie(w http.ResponseWriter, r *http.Request, tok string, claims *Claims) {
	maxAge := int(s.cfg.LoginTTL / time.Second)
	if claims.ExpiresAt != nil {
		maxAge = max(1, int(time.Until(claims.ExpiresAt.Time)/time.Second))
	}
	http.SetCookie(w, &http.Cookie{
		Name:     wire.CookieName,
		Value:    tok,
		Path:     "/api/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

func (s *Server) sessionInfo(c *Claims) sessionInfo {
	sc := newScope(c)
	info := sessionInfo{
		Name:        c.Name,
		Subject:     c.Subject,
		Role:        c.Role,
		Events:      sc.allows(entities.EventEntityType),
		EntityTypes: []typeInfo{},
	}
	if c.ExpiresAt != nil {
		info.ExpiresAt = c.ExpiresAt.UTC()
	}
	pc := parseCtx{secret: s.cfg.SecretField}
	for _, et := range s.cfg.Registry.Types() {
		if !sc.allows(et.Name) {
			continue
		}
		ti := typeInfo{Name: et.Name, Key: et.KeyColumns, Columns: []string{}}
		if len(ti.Key) == 0 {
			ti.Key = []string{cmpOr(et.Key, "id")}
		}
		for _, col := range et.Columns {
			if et.IsAllowed(col) && !pc.isSecret(et, col) {
				ti.Columns = append(ti.Columns, col)
			}
		}
		info.EntityTypes = append(info.EntityTypes, ti)
	}
	slices.SortFunc(info.EntityTypes, func(a, b typeInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return info
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// signInLinks holds the unredeemed one-time sign-in codes, by SHA-256 (the
// codes themselves are not kept).
type signInLinks struct {
	mu    sync.Mutex
	codes map[[32]byte]signInLink
}

type signInLink struct {
	claims  Claims
	expires time.Time
}

// SignInLink makes a one-time sign-in code for claims, redeemable once,
// within ttl (DefaultSignInLinkTTL when zero), and only by a request from a
// loopback address, at POST /api/v1/auth/link; the dashboard reads it from
// the fragment of the URL "http://<addr>/#signin=<code>" (a fragment never
// reaches the server or a proxy log). Redeeming it sets the login cookie
// with a token for claims, valid for Config.LoginTTL. Print the code only
// to a terminal: it is a credential.
func (s *Server) SignInLink(claims Claims, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = DefaultSignInLinkTTL
	}
	if err := claims.Validate(); err != nil {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	code := base64.RawURLEncoding.EncodeToString(b[:])
	now := s.cfg.now()
	s.links.mu.Lock()
	defer s.links.mu.Unlock()
	if s.links.codes == nil {
		s.links.codes = map[[32]byte]signInLink{}
	}
	for k, l := range s.links.codes {
		if !now.Before(l.expires) {
			delete(s.links.codes, k)
		}
	}
	for len(s.links.codes) >= maxSignInLinks {
		var oldest [32]byte
		var at time.Time
		for k, l := range s.links.codes {
			if at.IsZero() || l.expires.Before(at) {
				oldest, at = k, l.expires
			}
		}
		delete(s.links.codes, oldest)
	}
	s.links.codes[sha256.Sum256([]byte(code))] = signInLink{claims: claims, expires: now.Add(ttl)}
	return code, nil
}

// redeem removes code and returns its claims, if it is known and not
// expired.
func (l *signInLinks) redeem(code string, now time.Time) (Claims, bool) {
	h := sha256.Sum256([]byte(code))
	l.mu.Lock()
	defer l.mu.Unlock()
	link, ok := l.codes[h]
	if !ok {
		return Claims{}, false
	}
	delete(l.codes, h) // once, even when expired
	return link.claims, now.Before(link.expires)
}

// linkRequest is POST LinkPath's body.
type linkRequest struct {
	Code string `json:"code"`
}

// serveLink redeems a sign-in link: from a loopback address and an allowed
// origin only, once.
func (s *Server) serveLink(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if !isLoopback(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "sign-in links work only from the machine changecast runs on (a loopback address); sign in with a username and password instead (changecast user add)")
		return
	}
	var req linkRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Code == "" {
		writeError(w, http.StatusBadRequest, `body must be JSON {"code": "..."} with the code from the sign-in link`)
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, `body must be one JSON object {"code": "..."}`)
		return
	}
	claims, ok := s.links.redeem(req.Code, s.cfg.now())
	if !ok {
		s.log.Info("sign-in link refused", "remote_addr", r.RemoteAddr)
		writeUnauthorized(w, "this sign-in link is unknown, already used or expired; restart changecast for a new one, or sign in with a username and password")
		return
	}
	tok, err := s.cfg.Auth.Mint(claims, s.cfg.LoginTTL)
	if err != nil {
		s.log.Error("sign-in link: mint token", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot issue a token")
		return
	}
	verified, err := s.cfg.Auth.Verify(tok)
	if err != nil {
		s.log.Error("sign-in link: verify token", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot issue a token")
		return
	}
	s.setLoginCookie(w, r, tok, verified)
	s.log.Info("signed in with a sign-in link", "user_id", verified.Subject, "role", string(verified.Role))
	writeJSONResponse(w, http.StatusOK, s.sessionInfo(verified))
}

// isLoopback reports whether a request's remote address is a loopback one.
func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
