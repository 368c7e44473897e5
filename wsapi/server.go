// Package wsapi is changecast's HTTP face: JWT authentication, login and
// sessions, the WebSocket event stream (GARM-compatible filters, envelope
// requests, entity-change, control and error frames), the hub that fans
// committed changes out to connections, catch-up and resume from the
// journal, the system events REST API, the entities REST API (snapshots
// over HTTP) and the health endpoints. It is the only package that imports
// gorilla/websocket.
//
// Guarantees: each connection receives the changes its filter selects and
// its token allows, in commit order, once per cursor and with no gap, live
// or from the journal; a slow client is switched to catch-up and never
// blocks Publish or other clients (Server states the details). Server's
// methods are safe for concurrent use, except Publish, which one goroutine
// calls in commit order. The wire protocol is docs/protocol.md; delivery
// is docs/guarantees.md; tokens, login and sessions are docs/security.md.
package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
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

// Defaults for Config fields left zero. The keepalive numbers are those of
// docs/protocol.md, "Keepalive": the ping period is shorter than the pong wait.
const (
	DefaultQueueLen        = 8192
	DefaultQueueBytes      = 8 << 20
	DefaultPingInterval    = 54 * time.Second
	DefaultPongWait        = 60 * time.Second
	DefaultWriteWait       = 10 * time.Second
	DefaultMaxMessageBytes = 1 << 20
	DefaultCatchUpPage     = 100
	// DefaultCatchUpWorkers caps the default of Config.CatchUpWorkers,
	// which is also at most half of GOMAXPROCS (at least 1).
	DefaultCatchUpWorkers = 2
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Registry names the entity types clients may filter on. Required.
	Registry *entities.Registry
	// Auth verifies the bearer tokens presented at upgrade. Required.
	Auth *Auth
	// Logger receives connect, disconnect and overflow lines (user ids,
	// never tokens). Default: discard.
	Logger *slog.Logger
	// QueueLen is each client's live frame queue length; a client further
	// behind switches to catch-up from Journal (or, without one, is
	// disconnected with resync-required). The queue grows only as frames
	// wait and frames are shared between clients, so a long queue costs
	// nothing while a client keeps up; it lets a client ride out a stall
	// of a second or more at thousands of changes per second rather than
	// fall back to catch-up, whose pace is rationed. Default: 8192.
	QueueLen int
	// QueueBytes bounds each client's live frame queue in bytes as well
	// (the frames' sizes; one frame is always accepted into an empty
	// queue): a client of large rows falls behind after fewer frames.
	// Default: 8 MiB.
	QueueBytes int
	// Journal serves catch-up and resume (?since=). nil means neither:
	// an overflowing client is disconnected with resync-required and a
	// since is refused the same way.
	Journal Journal
	// CatchUpPage is how many changes a catching-up client reads from
	// Journal at a time; with QueueLen it bounds a client's memory. A
	// small page keeps each burst of catch-up work short, which is what
	// live delivery's p99 pays for (docs/benchmarks.md, scenario 6).
	// Default: 100.
	CatchUpPage int
	// CatchUpWorkers is how many catching-up clients, across the whole
	// server, may read a page from Journal and encode it at the same
	// time; the others wait for a slot (still answering pings) and each
	// client gives its slot up after every page, so slots rotate among
	// them. A slot rests after a page three times as long as the page's
	// read and encoding took, so catch-up takes at most CatchUpWorkers/4
	// processors and CatchUpWorkers database connections from the journal
	// appender and live delivery, which never wait for a slot. A page is
	// written to the socket after its slot is given back, so a client
	// that reads slowly holds none. Default (zero):
	// min(DefaultCatchUpWorkers, GOMAXPROCS/2), at least 1.
	CatchUpWorkers int
	// PingInterval is how often the server pings each client. Must be
	// less than PongWait. Default: 54s.
	PingInterval time.Duration
	// PongWait is how long the server waits for a pong (or the first
	// read) before dropping the connection. Default: 60s.
	PongWait time.Duration
	// WriteWait bounds each write, and the wait for a client's close
	// reply. Default: 10s.
	WriteWait time.Duration
	// MaxMessageBytes is the largest client message accepted; a larger
	// one gets an error frame saying so and the connection is closed
	// (1009). At most MaxMessageBytes+1 bytes of a message are read.
	// Default: 1 MiB.
	MaxMessageBytes int64
	// Ready reports whether the pipeline feeding Publish is streaming.
	// /readyz answers 200 only when it returns true and the server is not
	// closing. nil means always ready.
	Ready func() bool
	// AllowedOrigins lists browser origins ("https://dash.example.com")
	// allowed to connect besides the server's own. Empty: same origin
	// only. Requests without an Origin header (non-browsers) are always
	// allowed; they authenticate with a token anyway.
	AllowedOrigins []string
	// SecretField reports whether a column of an entity type is secret
	// beyond the type's declared secrets (EntityType.IsSecret, always
	// applied): a field filter ("match") naming such a column is refused.
	// cmd/changecast passes sanitize's rule, so a client can never learn a
	// stripped value by matching on it. nil: EntityType.IsSecret only.
	SecretField func(et entities.EntityType, column string) bool
	// Users enables POST /api/v1/auth/login and session checks: a token
	// whose user has been deleted, disabled or given a new password is
	// refused at connect, and its open sockets get token-expired and are
	// closed (the hub sees such changes in the user changes given to
	// Publish). nil: no login endpoint; tokens are checked by signature
	// and expiry only.
	Users Users
	// LoginTTL is the lifetime of tokens issued by login. Default: 12h.
	LoginTTL time.Duration
	// LoginFailuresPerUser is how many failed logins for one username
	// (known or not, counted alike) are free within LoginWindow; after
	// them, every further attempt for that username must wait a
	// lock-out of 1s doubling with each failure, up to LoginMaxDelay,
	// and is refused meanwhile with 429 and Retry-After, before any
	// password check. A successful login clears the username's count.
	// Default: 5. Negative: no per-username limit.
	LoginFailuresPerUser int
	// LoginFailuresPerAddr is the same allowance per remote address:
	// the host of the connection's remote address (IPv6 by /64),
	// whatever username is tried. X-Forwarded-For is not trusted: behind
	// a reverse proxy every client shares the proxy's address, so raise
	// this or disable it there. A successful login does not clear it.
	// Default: 20. Negative: no per-address limit.
	LoginFailuresPerAddr int
	// LoginWindow is how long failures are remembered: a key is
	// forgotten once it has seen no failure, and been under no
	// lock-out, for this long. Default: 15m. Negative is an error.
	LoginWindow time.Duration
	// LoginMaxDelay caps one lock-out. Default: 5m. Negative is an
	// error.
	LoginMaxDelay time.Duration
	// MaxConnections bounds concurrent WebSocket connections; an upgrade
	// beyond it gets 503 with a JSON error. Default: 10,000.
	MaxConnections int
	// SystemState, when set, offers the system-state subscription: a
	// client that subscribes to "system-state" gets a system_state frame
	// whose args are SystemState's result right away and then every
	// SystemStateInterval. It is called on client writer goroutines, so it
	// must be safe for concurrent use and quick; its result must encode
	// as a JSON object. nil: subscribing to system-state is an error.
	SystemState func() any
	// OnCursorExpired, when set, is told (subject of the client's token,
	// its cursor, the retention horizon) each time a client is sent
	// resync-required because retention removed changes it still needed.
	// It runs on the client's writer goroutine and must return quickly.
	OnCursorExpired func(subject string, cursor, horizon int64)
	// SystemStateInterval is the period of system_state frames.
	// Default: 5s.
	SystemStateInterval time.Duration
	// MaxFilters bounds the filter clauses one connection may hold; a
	// message asking for more gets an error frame and changes nothing.
	// Default: 100.
	MaxFilters int
	// Events serves the events REST API (/api/v1/events...) with the
	// same authentication and authorization as the stream. nil: no such
	// routes.
	Events EventStore
	// Snapshots serves snapshots: "snapshot": true on a subscribe or
	// filter request, and GET /api/v1/entities/{type}. They also need
	// Journal. nil: a snapshot request gets an error frame and the
	// route is absent.
	Snapshots Snapshots
	// MaxSnapshots bounds the snapshots open at once across the server
	// (each holds a database connection and a transaction while it reads
	// rows); further requests wait for one to finish, the connection
	// still served meanwhile. Default: 4.
	MaxSnapshots int
	// SnapshotPageTTL is how long a REST snapshot (GET
	// /api/v1/entities/{type}) stays open after a page for its next page
	// to be asked for; it then ends, giving its slot back, and a request
	// for its next page gets 410. Default: 30s.
	SnapshotPageTTL time.Duration
	// SnapshotMaxDuration bounds how long a snapshot holds its slot (a
	// database connection, and a transaction that holds back vacuum)
	// while its rows are read, however steadily its client reads: a
	// WebSocket snapshot still reading rows then ends its connection with
	// resync-required, a REST snapshot ends (410). Default: 10m.
	SnapshotMaxDuration time.Duration

	// now is the login throttle's clock (tests). nil: time.Now.
	now func() time.Time
}

// Defaults of the limits in Config.
const (
	DefaultMaxConnections      = 10_000
	DefaultMaxFilters          = 100
	DefaultSystemStateInterval = 5 * time.Second
)

// Server serves the WebSocket event stream and the health endpoints, and
// fans changes given to Publish out to connected clients.
//
// Delivery, given a Journal and a Publish caller that keeps its contract:
//
//   - A connection receives changes in cursor (commit) order, each at most
//     once per (connection, cursor), with no gap: every change after its
//     starting position that its filter selects and its token allows.
//     Authorization is checked when a filter is accepted and again for
//     every change delivered, live or from the journal; viewers never see
//     user. A filter applies from the next Publish (live) or the next
//     journal page (catching up).
//   - Each client has a position (the last cursor delivered or skipped as
//     unwanted) and is either live or catching up. Live clients get
//     Publish's changes through a bounded queue (Config.QueueLen). When the
//     queue would overflow, the client switches to catch-up from its
//     position, is told (lagging control frame), and the overflow is
//     counted (Server.Overflows); its writer then reads the journal a page
//     at a time (Config.CatchUpPage) at the client's own pace, and rejoins
//     live, with a caught-up frame, once it reaches the head. A commit too
//     large to hand over (Publish with a nil batch) sends every live client
//     that is behind to the journal silently. Memory per client is bounded
//     by QueueLen frames plus one page, however far behind it is.
//   - Resume: ?since=<cursor> starts the connection after that cursor; once
//     the filter is set, it replays the matching changes from the journal,
//     then continues live. A cursor beyond the head, or one whose changes
//     retention has removed, gets resync-required and a close. Without
//     since, the connection starts at the head when it connects; changes
//     published before its first filter are skipped.
//   - Without a Journal there is no catch-up: a client whose queue
//     overflows gets resync-required and is disconnected, and since is
//     refused the same way.
//   - Publish never blocks on a client, and nothing holds the hub lock
//     while reading the journal or writing to a socket.
//   - Each connection runs exactly one reader and one writer goroutine;
//     all writes, pings included, and all of its journal reads happen in
//     the writer, with a write deadline.
//   - Tokens never appear in logs, errors or URLs: they are accepted only in
//     the Authorization header, the changecast.v1 + bearer.<jwt>
//     subprotocol pair, or the changecast_token cookie set by login.
//   - With Config.Users, a token whose user is deleted, disabled or has a
//     new password is refused at connect, and the user's open sockets get
//     token-expired and are closed once the user change reaches Publish.
//     Login is throttled per username and per remote address
//     (Config.LoginFailuresPerUser and friends): a locked-out attempt gets
//     429 with Retry-After before any password check, with the same answer
//     for known and unknown usernames, in bounded memory and without a
//     goroutine of its own.
//
// Server's methods are safe for concurrent use, except that Publish must
// be called from one goroutine (the journal appender), in commit order. The
// lock rules are on the hub type (hub.go): one mutex guards the client
// set, the head and every client's position and mode.
type Server struct {
	cfg      Config
	log      *slog.Logger
	origins  map[string]bool // normalised AllowedOrigins
	upgrader websocket.Upgrader
	handler  http.Handler
	hub      *hub

	closeOnce sync.Once
	closed    chan struct{} // closed when every client goroutine has exited, after Close

	// messagesHandled counts client messages processed; tests poll it to
	// know a filter has been applied (a GARM filter gets no reply).
	messagesHandled atomic.Uint64
	// linger is how long a client's writer with nothing to do waits for
	// more before it leaves (writerLinger; tests lengthen it).
	linger time.Duration

	conns      atomic.Int64  // connections admitted (reserved before upgrade, released on exit)
	loginSlots chan struct{} // bounds concurrent password checks
	logins     *loginLimiter // throttles failed logins per username and address
	// loginsThrottled counts logins refused with 429.
	loginsThrottled atomic.Uint64
	// unavailable, when set, is why new connections get 503 (SetUnavailable).
	unavailable atomic.Pointer[string]

	// links are the unredeemed sign-in links (SignInLink).
	links signInLinks

	// rest holds the open REST snapshots (entities_http.go); nil
	// without Config.Snapshots and Config.Journal.
	rest *restSnapshots

	revoker     *revoker // nil without Config.Users
	stopRevoker context.CancelFunc
	revokerDone chan struct{}
}

// NewServer validates cfg, fills its defaults and returns a Server. Besides
// the two goroutines per connection, it starts one to check sessions when
// cfg.Users is set; Close stops it.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("new wsapi server: Registry is required")
	}
	if cfg.Auth == nil {
		return nil, errors.New("new wsapi server: Auth is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueLen < 0 || cfg.QueueBytes < 0 || cfg.CatchUpPage < 0 || cfg.CatchUpWorkers < 0 || cfg.PingInterval < 0 || cfg.PongWait < 0 || cfg.WriteWait < 0 || cfg.MaxMessageBytes < 0 {
		return nil, errors.New("new wsapi server: QueueLen, QueueBytes, CatchUpPage, CatchUpWorkers, PingInterval, PongWait, WriteWait and MaxMessageBytes must not be negative")
	}
	if cfg.CatchUpPage == 0 {
		cfg.CatchUpPage = DefaultCatchUpPage
	}
	if cfg.CatchUpWorkers == 0 {
		cfg.CatchUpWorkers = defaultCatchUpWorkers(runtime.GOMAXPROCS(0))
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PongWait == 0 {
		cfg.PongWait = DefaultPongWait
	}
	if cfg.WriteWait == 0 {
		cfg.WriteWait = DefaultWriteWait
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.LoginTTL < 0 || cfg.MaxConnections < 0 || cfg.MaxFilters < 0 || cfg.SystemStateInterval < 0 {
		return nil, errors.New("new wsapi server: LoginTTL, MaxConnections, MaxFilters and SystemStateInterval must not be negative")
	}
	if cfg.SystemStateInterval == 0 {
		cfg.SystemStateInterval = DefaultSystemStateInterval
	}
	if cfg.LoginTTL == 0 {
		cfg.LoginTTL = DefaultLoginTTL
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxFilters == 0 {
		cfg.MaxFilters = DefaultMaxFilters
	}
	if cfg.MaxSnapshots < 0 {
		return nil, errors.New("new wsapi server: MaxSnapshots must not be negative")
	}
	if cfg.MaxSnapshots == 0 {
		cfg.MaxSnapshots = DefaultMaxSnapshots
	}
	if cfg.SnapshotPageTTL < 0 {
		return nil, errors.New("new wsapi server: SnapshotPageTTL must not be negative")
	}
	if cfg.SnapshotPageTTL == 0 {
		cfg.SnapshotPageTTL = DefaultSnapshotPageTTL
	}
	if cfg.SnapshotMaxDuration < 0 {
		return nil, errors.New("new wsapi server: SnapshotMaxDuration must not be negative")
	}
	if cfg.SnapshotMaxDuration == 0 {
		cfg.SnapshotMaxDuration = DefaultSnapshotMaxDuration
	}
	if cfg.LoginWindow < 0 || cfg.LoginMaxDelay < 0 {
		return nil, errors.New("new wsapi server: LoginWindow and LoginMaxDelay must not be negative")
	}
	if cfg.LoginFailuresPerUser == 0 {
		cfg.LoginFailuresPerUser = DefaultLoginFailuresPerUser
	}
	if cfg.LoginFailuresPerAddr == 0 {
		cfg.LoginFailuresPerAddr = DefaultLoginFailuresPerAddr
	}
	if cfg.LoginWindow == 0 {
		cfg.LoginWindow = DefaultLoginWindow
	}
	if cfg.LoginMaxDelay == 0 {
		cfg.LoginMaxDelay = DefaultLoginMaxDelay
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.PingInterval >= cfg.PongWait {
		return nil, fmt.Errorf("new wsapi server: PingInterval (%s) must be less than PongWait (%s)", cfg.PingInterval, cfg.PongWait)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		origins: map[string]bool{},
		hub:     newHub(cfg.Logger, cfg.Journal, cfg.CatchUpPage, cfg.CatchUpWorkers, cfg.MaxSnapshots),
		closed:  make(chan struct{}),
		linger:  writerLinger,

		loginSlots: make(chan struct{}, defaultLoginSlots()),
		logins:     newLoginLimiter(cfg.LoginFailuresPerUser, cfg.LoginFailuresPerAddr, cfg.LoginWindow, cfg.LoginMaxDelay, cfg.now),
	}
	for _, o := range cfg.AllowedOrigins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("new wsapi server: allowed origin %q: %w", o, err)
		}
		s.origins[n] = true
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.WriteWait,
		// Write buffers are taken from a pool for each write and given
		// back, instead of 4 KiB held by every idle connection.
		WriteBufferPool: &sync.Pool{},
		// A small read buffer of its own instead of keeping the HTTP
		// server's 4 KiB one: client messages are small and rare.
		ReadBufferSize: 512,
		Subprotocols:   []string{wire.Subprotocol},
		// Origin is checked before authentication, in serveEvents.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.EventsPath, s.serveEvents)
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	mux.HandleFunc("POST "+wire.LogoutPath, s.serveLogout)
	if cfg.Users != nil {
		mux.HandleFunc("POST "+wire.LoginPath, s.serveLogin)
	}
	if cfg.Events != nil {
		s.registerEventRoutes(mux)
	}
	if cfg.Snapshots != nil && cfg.Journal != nil {
		// Owned by the Server: Close stops its janitor and waits.
		s.rest = newRestSnapshots(s, cfg.SnapshotPageTTL)
		mux.HandleFunc("GET "+entitiesAPIPath+"{type}", s.serveEntities)
	}
	s.registerBrowserRoutes(mux)
	s.handler = mux
	if cfg.Users != nil {
		// Owned by the Server: Close stops it and waits.
		ctx, cancel := context.WithCancel(context.Background())
		s.revoker, s.stopRevoker, s.revokerDone = newRevoker(s), cancel, make(chan struct{})
		go func() {
			defer close(s.revokerDone)
			s.revoker.run(ctx)
		}()
	}
	return s, nil
}

// defaultCatchUpWorkers is Config.CatchUpWorkers's default for procs
// GOMAXPROCS: at most half the processors go to catch-up, so the appender
// and the live writers always find one free.
func defaultCatchUpWorkers(procs int) int {
	return max(1, min(DefaultCatchUpWorkers, procs/2))
}

// Handler returns the server's routes: GET /api/v1/ws/events, GET /healthz
// (200 while the process runs) and GET /readyz (200 only when Config.Ready
// says so and the server is not closing).
func (s *Server) Handler() http.Handler { return s.handler }

// Publish announces a journal commit: head is the journal's highest cursor
// after it, and batch the changes it committed, sanitized, with Cursor set,
// ascending, each above the previous head and at most head. Every live
// client gets the changes its filter and token select, in batch order, and
// its position moves to head.
//
// batch may be nil when the commit was too large to hand over inline: live
// clients behind head then fetch it from the journal (catch-up, no lagging
// frame). Call Publish(head, nil) once at start-up, before serving, to set
// the head new connections start from and resume cursors are checked
// against. A batch that breaks the contract is logged and treated as nil.
//
// Publish must be called from a single goroutine, after the journal commit
// is visible to Journal.ReadAfter, in commit order. It never blocks on a
// client and does not keep batch after it returns. After Close it does
// nothing.
func (s *Server) Publish(head int64, batch []entities.Change) {
	s.hub.publish(head, batch)
	if s.revoker != nil {
		s.revoker.note(batch)
	}
}

// LoginsThrottled returns how many login attempts have been refused with
// 429 (too many failures for their username or address) since the server
// was created.
func (s *Server) LoginsThrottled() uint64 { return s.loginsThrottled.Load() }

// Head returns the highest cursor given to Publish (0 before the first).
func (s *Server) Head() int64 { return s.hub.head() }

// Clients returns the number of connected clients.
func (s *Server) Clients() int { return s.hub.count() }

// CatchingUp returns the number of connected clients currently served from
// the journal rather than live (including resuming clients).
func (s *Server) CatchingUp() int { return s.hub.countCatchingUp() }

// QueueHighWater returns the most frames any client has had queued at once
// since the server was created: never more than QueueLen, which is what
// bounds a slow client's memory.
func (s *Server) QueueHighWater() int64 { return s.hub.queueHigh.Load() }

// Overflows returns how many times a client's queue has overflowed (it fell
// more than QueueLen frames behind), since the server was created. With a
// Journal each overflow starts a catch-up; without one it disconnects the
// client.
func (s *Server) Overflows() uint64 { return s.hub.overflows.Load() }

// CatchUps returns how many catch-up episodes have started since the server
// was created: overflows, commits handed over without their changes
// (Publish with a nil batch) that found a client behind, and resumes.
func (s *Server) CatchUps() uint64 { return s.hub.catchUps.Load() }

// Close stops accepting connections (new upgrades get 503), sends every
// client a shutdown control frame and a close frame, and waits for every
// per-client goroutine to exit. If ctx ends first, it closes the remaining
// connections outright and returns ctx's error; the goroutines then exit
// promptly. Close may be called more than once.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		for _, c := range s.hub.beginClose() {
			c.kick(stopReason{
				control:   wire.ControlShutdown,
				message:   "server shutting down; reconnect later",
				closeCode: websocket.CloseGoingAway,
				closeText: "server shutting down",
				why:       "server shutdown",
			})
		}
		// Owned by the Server: it ends once every client goroutine
		// has, which the forced close below guarantees.
		go func() {
			if s.revoker != nil {
				s.stopRevoker()
				<-s.revokerDone
			}
			if s.rest != nil {
				s.rest.close()
			}
			s.hub.wg.Wait()
			close(s.closed)
		}()
	})
	select {
	case <-s.closed:
		return nil
	case <-ctx.Done():
		for _, c := range s.hub.snapshot() {
			_ = c.conn.Close()
		}
		return fmt.Errorf("close wsapi server: %w", ctx.Err())
	}
}

func (s *Server) closing() bool { return s.hub.isClosing() }

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSONResponse(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if s.closing() || s.unavailable.Load() != nil || (s.cfg.Ready != nil && !s.cfg.Ready()) {
		writeJSONResponse(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSONResponse(w, http.StatusOK, map[string]string{"status": "ready"})
}

// serveEvents authenticates and upgrades a WebSocket connection. Order:
// closing (503), token in URL (400), bad since (400), origin (403), token
// (401; 503 if its session cannot be checked), connection limit (503),
// upgrade.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if s.closing() {
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	q := r.URL.Query()
	if q.Has("token") || q.Has("access_token") {
		// Never in the URL: URLs end up in proxy and access logs.
		writeError(w, http.StatusBadRequest, "tokens are not accepted in the URL; send the header \"Authorization: Bearer <token>\" (browsers: subprotocols \"changecast.v1\" and \"bearer.<token>\", or log in at "+wire.LoginPath+" for a cookie)")
		return
	}
	if s.refuseUnavailable(w) {
		return
	}
	res, err := s.parseResume(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if res.set && s.hub.journal != nil && !s.hub.published.Load() {
		// Just started: the journal's head is not known yet, so a
		// cursor cannot be told from one of another server's.
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "starting: the journal is being opened; retry in a moment")
		return
	}
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	token, err := requestToken(r)
	if err != nil {
		writeUnauthorized(w, err.Error())
		return
	}
	var epoch uint64
	if s.revoker != nil {
		epoch = s.revoker.epoch.Load()
	}
	claims, ok := s.verify(w, r, token)
	if !ok {
		return
	}
	if res.seam != nil && !s.seamAllowed(w, claims, res.seam) {
		return
	}
	if n := s.conns.Add(1); n > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.log.Warn("websocket connection refused: limit reached", "max_connections", s.cfg.MaxConnections)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("connection limit reached (%d connections); try again later", s.cfg.MaxConnections))
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.conns.Add(-1)
		return // the upgrader has answered
	}
	c := newClient(s, conn, claims)
	c.log.Info("websocket connected", "name", claims.Name, "role", string(claims.Role))
	if res.seam != nil {
		c.resumeSeam(res.seam)
	}
	if !s.hub.register(c, res) {
		// Close began between the check above and now.
		s.conns.Add(-1)
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(s.cfg.WriteWait))
		_ = conn.Close()
		c.log.Info("websocket disconnected", "reason", "server shutdown")
		return
	}
	if s.revoker != nil && s.revoker.epoch.Load() != epoch {
		// A user change was published while this connection was being
		// checked and registered: the revoker may have missed it.
		s.revoker.recheck(claims.Subject)
	}
}

// parseSince reads the optional since=<cursor> query parameter (a
// snapshot cursor is parseResume's).
func parseSince(q url.Values) (resume, error) {
	if !q.Has("since") {
		return resume{}, nil
	}
	if len(q["since"]) > 1 {
		return resume{}, errors.New("since must be given at most once")
	}
	v := q.Get("since")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strings.HasPrefix(v, "+") {
		return resume{}, fmt.Errorf("since must be a cursor (a non-negative integer from a frame's \"cursor\", or the \"cursor\" of the last page of GET /api/v1/entities/{type}), got %s", quote(v))
	}
	return resume{set: true, since: n}, nil
}

// requestToken returns the bearer token from the Authorization header,
// failing that from the changecast.v1 + bearer.<jwt> subprotocol pair, and
// failing that from the login cookie (the origin check has run). Its errors
// never contain the token.
func requestToken(r *http.Request) (string, error) {
	if tok, err := headerToken(r); tok != "" || err != nil {
		return tok, err
	}
	var tok string
	var hasV1 bool
	bearers := 0
	for _, p := range websocket.Subprotocols(r) {
		switch {
		case p == wire.Subprotocol:
			hasV1 = true
		case strings.HasPrefix(p, wire.BearerSubprotocolPrefix):
			bearers++
			tok = strings.TrimPrefix(p, wire.BearerSubprotocolPrefix)
		}
	}
	switch {
	case bearers == 0:
		if tok := cookieToken(r); tok != "" {
			return tok, nil
		}
		return "", errors.New("missing token; send \"Authorization: Bearer <token>\" (browsers: subprotocols \"changecast.v1\" and \"bearer.<token>\", or the " + wire.CookieName + " cookie from " + wire.LoginPath + ")")
	case bearers > 1:
		return "", errors.New("more than one bearer.<token> subprotocol")
	case tok == "":
		return "", errors.New("empty bearer.<token> subprotocol")
	case !hasV1:
		return "", errors.New("the bearer.<token> subprotocol must be offered together with \"changecast.v1\"")
	}
	return tok, nil
}

// originAllowed implements Config.AllowedOrigins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	n, err := normalizeOrigin(origin)
	return err == nil && s.origins[n]
}

// normalizeOrigin returns scheme://host[:port], lowercased, or an error if o
// is not an origin.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("want scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSONResponse(w, status, map[string]string{"error": msg})
}

func writeUnauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="changecast", error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, msg)
}

func writeJSONResponse(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON for programs: "<token>", not "\u003ctoken\u003e"
	_ = enc.Encode(v)
}
