package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/changecast/changecast/internal/backoff"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// This file holds login and sessions (docs/security.md, "Users, login and
// sessions"; docs/protocol.md, "Login"): POST /api/v1/auth/login,
// the changecast_token cookie, and revocation: a token tied to a user row
// stops working, and its open sockets are closed with token-expired, once
// the row is disabled, deleted or gets a new password. The hub learns of
// such changes from its own change stream: every committed change to the
// user entity type that Publish hands over.

// DefaultLoginTTL is the lifetime of tokens issued by login.
const DefaultLoginTTL = 12 * time.Hour

// maxLoginBody bounds a login request body.
const maxLoginBody = 64 << 10

// Errors a Users implementation returns (wrapped).
var (
	// ErrBadCredentials: unknown user, wrong password or disabled user;
	// one error, so a caller cannot tell which.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrSessionRevoked: the token's user was deleted, disabled or has a
	// new password since the token was issued. The wrapping message says
	// which and is safe to show to the client.
	ErrSessionRevoked = errors.New("session revoked")
)

// Users is what login and session checks need from the user table.
// cmd/changecast implements it over store's users; implementations must be
// safe for concurrent use.
type Users interface {
	// Authenticate checks username and password and returns the claims
	// to issue (Subject = the user's id, Name, Role, Gen = the password
	// generation), or an error wrapping ErrBadCredentials.
	Authenticate(ctx context.Context, username, password string) (Claims, error)
	// CheckSession reports whether c still names a valid session: nil;
	// an error wrapping ErrSessionRevoked when the user was deleted,
	// disabled or has a new password; any other error when it cannot
	// tell (the database is unreachable). Tokens not tied to a user row
	// (minted offline by "changecast token" for automation) are valid
	// until they expire.
	CheckSession(ctx context.Context, c *Claims) error
}

// loginRequest is GARM's login body.
type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// serveLogin answers POST /api/v1/auth/login with {"token": "..."} and sets
// the changecast_token cookie. The password never reaches a log or error.
func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	var req loginRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxLoginBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, loginBodyError(err))
		return
	}
	// Anything after the object (another value, a stray "}") is an error;
	// dec.More would miss a closing bracket.
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		writeError(w, http.StatusBadRequest, `login body must be one JSON object {"username": "...", "password": "..."}`)
		return
	}
	if req.Username == "" || req.Password == "" {
		writeError(w, http.StatusBadRequest, `"username" and "password" are required`)
		return
	}
	// A username or address with too many recent failures waits, and no
	// password is checked meanwhile (issue 17). Known and unknown
	// usernames are counted alike, so the answer reveals neither.
	addr := remoteKey(r.RemoteAddr)
	if s.throttled(w, r, req.Username, addr) {
		return
	}
	// bcrypt is deliberately slow; bound how many run at once so a burst
	// of logins cannot take every core from the stream.
	select {
	case s.loginSlots <- struct{}{}:
		defer func() { <-s.loginSlots }()
	case <-r.Context().Done():
		return
	}
	// Again: a burst of attempts passed the check above together, and
	// those that waited for a slot may since have been locked out by the
	// failures of those ahead of them.
	if s.throttled(w, r, req.Username, addr) {
		return
	}
	claims, err := s.cfg.Users.Authenticate(r.Context(), req.Username, req.Password)
	switch {
	case errors.Is(err, ErrBadCredentials):
		// No username: a password typed into the username field must
		// not reach the log.
		if d := s.logins.failed(req.Username, addr); d > 0 {
			s.log.Info("login refused; locked out", "remote_addr", r.RemoteAddr, "lockout", d)
		} else {
			s.log.Info("login refused", "remote_addr", r.RemoteAddr)
		}
		writeUnauthorized(w, ErrBadCredentials.Error())
		return
	case err != nil:
		s.log.Error("login: check credentials", "err", err)
		writeError(w, http.StatusServiceUnavailable, "cannot check credentials right now; try again")
		return
	}
	s.logins.succeeded(req.Username)
	tok, err := s.cfg.Auth.Mint(claims, s.cfg.LoginTTL)
	if err != nil {
		s.log.Error("login: mint token", "user_id", claims.Subject, "err", err)
		writeError(w, http.StatusInternalServerError, "cannot issue a token")
		return
	}
	s.log.Info("login", "user_id", claims.Subject, "name", claims.Name, "role", string(claims.Role))
	http.SetCookie(w, &http.Cookie{
		Name:     wire.CookieName,
		Value:    tok,
		Path:     "/api/",
		MaxAge:   int(s.cfg.LoginTTL / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	writeJSONResponse(w, http.StatusOK, map[string]string{"token": tok})
}

// throttled answers 429 when an attempt for user from addr must still wait,
// and reports whether it did. The answer is the same whichever key is
// locked and whether the user exists; Retry-After is in whole seconds,
// rounded up.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, user, addr string) bool {
	d := s.logins.wait(user, addr)
	if d <= 0 {
		return false
	}
	s.loginsThrottled.Add(1)
	secs := int64((d + time.Second - 1) / time.Second)
	s.log.Debug("login throttled", "remote_addr", r.RemoteAddr, "retry_after_seconds", secs)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins; try again in %d s", secs))
	return true
}

// loginBodyError describes a bad login body without quoting it (it holds a
// password).
func loginBodyError(err error) string {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return fmt.Sprintf("login body is larger than %d bytes", maxLoginBody)
	case errors.As(err, &ute):
		return fmt.Sprintf("%q must be a string", ute.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ") + `; a login body has only "username" and "password"`
	default:
		return `login body must be JSON {"username": "...", "password": "..."}`
	}
}

// serveLogout clears the login cookie. Tokens are stateless: one already
// copied elsewhere stays valid until it expires or the user's password
// changes.
func (s *Server) serveLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: wire.CookieName, Value: "", Path: "/api/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
}

// authenticateHTTP authenticates a REST request by its Authorization header
// or, failing that, the login cookie (then only from an allowed origin, as
// browsers send cookies cross-site), and checks the session. On failure it
// answers the request itself and returns false.
func (s *Server) authenticateHTTP(w http.ResponseWriter, r *http.Request) (*Claims, bool) {
	tok, err := headerToken(r)
	if err == nil && tok == "" {
		if !s.originAllowed(r) {
			writeError(w, http.StatusForbidden, "origin not allowed")
			return nil, false
		}
		tok = cookieToken(r)
		if tok == "" {
			err = errors.New("missing token; send \"Authorization: Bearer <token>\" or log in at " + wire.LoginPath)
		}
	}
	if err != nil {
		writeUnauthorized(w, err.Error())
		return nil, false
	}
	return s.verify(w, r, tok)
}

// verify checks a token's signature and expiry, then its session. On
// failure it answers the request itself (401, or 503 when the session
// cannot be checked) and returns false.
func (s *Server) verify(w http.ResponseWriter, r *http.Request, tok string) (*Claims, bool) {
	claims, err := s.cfg.Auth.Verify(tok)
	if err != nil {
		writeUnauthorized(w, err.Error())
		return nil, false
	}
	if s.cfg.Users != nil {
		err := s.cfg.Users.CheckSession(r.Context(), claims)
		switch {
		case errors.Is(err, ErrSessionRevoked):
			writeUnauthorized(w, err.Error()+"; log in again")
			return nil, false
		case err != nil:
			s.log.Error("check session", "user_id", claims.Subject, "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the session right now; try again")
			return nil, false
		}
	}
	return claims, true
}

// headerToken returns the bearer token of the Authorization header, "" if
// there is no such header. Its errors never contain the token.
func headerToken(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", nil
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", errors.New("the Authorization header must be \"Bearer <token>\"")
	}
	return tok, nil
}

// cookieToken returns the login cookie's token, "" if none.
func cookieToken(r *http.Request) string {
	c, err := r.Cookie(wire.CookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// revoker closes the sockets of sessions that end while connected. Publish
// notes which users changed (note); its goroutine, owned by the Server,
// checks those users' connections with Users.CheckSession and kicks the
// revoked ones with token-expired. Publish never waits for it.
type revoker struct {
	srv  *Server
	wake chan struct{} // cap 1
	// epoch counts notes of user changes. A connection reads it before
	// its session check and again once registered: if it moved, a change
	// may have been checked against the clients before this one was
	// among them, so the connection asks for its own re-check.
	epoch atomic.Uint64

	mu struct {
		sync.Mutex
		subjects map[string]bool // users whose rows changed
		all      bool            // re-check every connection
	}
}

func newRevoker(s *Server) *revoker {
	r := &revoker{srv: s, wake: make(chan struct{}, 1)}
	r.mu.subjects = map[string]bool{}
	return r
}

// note records the users a published batch changed. A nil batch (a commit
// too large to hand over) or a truncate of user may have changed any user,
// so every connection is re-checked.
func (r *revoker) note(batch []entities.Change) {
	all := batch == nil
	var subjects []string
	for i := range batch {
		ch := &batch[i]
		if ch.EntityType != userEntityType || ch.Operation == entities.OpCreate {
			continue
		}
		if ch.Operation == entities.OpTruncate || ch.EntityID == "" {
			all = true
		} else {
			subjects = append(subjects, ch.EntityID)
		}
	}
	if !all && len(subjects) == 0 {
		return
	}
	// The epoch moves before the users are recorded: a connection that
	// registers after the revoker took them still sees the epoch move
	// (and asks for its own re-check), and one that registered before
	// the move is in the snapshot the revoker takes after recording.
	r.epoch.Add(1)
	r.mu.Lock()
	if all {
		r.mu.all = true
	}
	for _, s := range subjects {
		r.mu.subjects[s] = true
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// RecheckSessions has every connected session checked again against
// Config.Users, as after a change to any user, and closes the revoked
// ones with token-expired. It returns at once. The hub learns of user
// changes from its own stream; a program whose users live where that
// stream does not reach (changecast's journal database) calls it when
// they may have changed. Without Config.Users it does nothing.
func (s *Server) RecheckSessions() {
	if s.revoker != nil {
		s.revoker.note(nil)
	}
}

// recheck asks for the sessions of subject to be checked again.
func (r *revoker) recheck(subject string) {
	r.mu.Lock()
	r.mu.subjects[subject] = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take returns and clears what note recorded.
func (r *revoker) take() (map[string]bool, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	subs, all := r.mu.subjects, r.mu.all
	r.mu.subjects, r.mu.all = map[string]bool{}, false
	return subs, all
}

// run checks sessions until ctx ends. A check that fails for another reason
// than revocation (the database is down) is retried with backoff: the
// connection stays open meanwhile, as it would if the change had not been
// seen yet.
func (r *revoker) run(ctx context.Context) {
	wait := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	failing := false
	for {
		var retry <-chan time.Time
		var t *time.Timer
		if failing {
			t = time.NewTimer(wait.Next())
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		subs, all := r.take()
		if !all && len(subs) == 0 {
			continue
		}
		if err := r.check(ctx, subs, all); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				r.srv.log.Warn("session check failed; retrying", "err", err)
				failing = true
			}
			continue
		}
		if failing {
			r.srv.log.Info("session checks recovered")
			failing = false
		}
		wait.Reset()
	}
}

// check re-checks the sessions of the connected clients of subs (every
// client if all). Clients whose check could not be made are noted again
// and the first error returned.
func (r *revoker) check(ctx context.Context, subs map[string]bool, all bool) error {
	var firstErr error
	// One check per distinct session, not per socket: CheckSession's
	// answer depends only on these claims.
	type session struct {
		sub  string
		gen  int64
		role Role
	}
	checked := map[session]error{}
	for _, c := range r.srv.hub.snapshot() {
		if c.stopped.Load() || (!all && !subs[c.claims.Subject]) {
			continue
		}
		key := session{c.claims.Subject, c.claims.Gen, c.claims.Role}
		err, ok := checked[key]
		if !ok {
			err = r.srv.cfg.Users.CheckSession(ctx, c.claims)
			checked[key] = err
		}
		switch {
		case errors.Is(err, ErrSessionRevoked):
			c.log.Info("session revoked; closing connection", "reason", err.Error())
			c.kick(stopReason{
				control:   wire.ControlTokenExpired,
				message:   err.Error() + "; log in again",
				closeCode: websocket.ClosePolicyViolation,
				closeText: "session revoked",
				why:       "session revoked",
			})
		case err != nil:
			r.mu.Lock()
			r.mu.subjects[c.claims.Subject] = true
			r.mu.Unlock()
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// defaultLoginSlots bounds concurrent bcrypt checks.
func defaultLoginSlots() int { return max(2, runtime.GOMAXPROCS(0)) }
