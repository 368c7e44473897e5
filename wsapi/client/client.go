// Package client follows changecast's WebSocket event stream
// (docs/protocol.md) for automation: it subscribes with a filter, hands each
// committed change to a Handler (or a channel) as an entities.Change,
// decodes payloads into the entity structs (Decode), and survives dropped
// connections and server restarts.
//
// Guarantees: a Subscription delivers changes in commit (cursor) order, one
// at a time, and resumes after the last cursor processed, so a reconnect
// misses nothing and repeats nothing; with a CursorStore, a restarted
// program resumes too (at least once across restarts). Errors say whether
// retrying helps (Retryable). The token travels only in the Authorization
// header. Subscription's methods are safe for concurrent use; the Handler
// is never called concurrently. Subscription states the details.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/changecast/changecast/internal/backoff"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// EventsPath is the server's WebSocket endpoint, appended to the URL given
// to Dial.
const EventsPath = wire.EventsPath

// Defaults for Options fields left zero.
const (
	DefaultMinBackoff       = 250 * time.Millisecond
	DefaultMaxBackoff       = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultSyncInterval     = 30 * time.Second
)

const (
	// writeWait bounds each write to the server.
	writeWait = 10 * time.Second
	// minReadTimeout is how long a connection may stay silent before it
	// is presumed dead; the server pings every 54 s.
	minReadTimeout = 90 * time.Second
	// closeGrace bounds the wait for the server's answer to our close.
	closeGrace = time.Second
	// maxPending bounds the changes buffered while waiting for the
	// filter's response (the server sends at most its queue length).
	maxPending = 1 << 16
)

// Filter is one GARM filter entry (docs/protocol.md): the entity type must
// match, the operation must be one of Operations (empty: create, update and
// delete), and every Match field must hold. Filters are OR-ed.
type Filter struct {
	// EntityType is a registered type name, e.g. "instance".
	EntityType string `json:"entity-type"`
	// Operations restricts the operations; empty selects create, update
	// and delete (truncate only when named).
	Operations []entities.Operation `json:"operations,omitempty"`
	// Match tests top-level payload fields (the deleted row for a
	// delete) for equality: each value is a string, number, bool, nil or
	// a non-empty slice of them (any of, i.e. IN). All must hold.
	Match map[string]any `json:"match,omitempty"`
}

// Options configures a Subscription. Zero values take the documented
// defaults.
type Options struct {
	// Filters selects the changes wanted. Exactly one of Filters and
	// SendEverything must be set.
	Filters []Filter
	// SendEverything selects every change the token may see.
	SendEverything bool
	// Since is the cursor to start after: a decimal cursor from a
	// previous change, or "" (or "now") to start with the changes
	// committed from now on. A cursor saved in CursorStore takes
	// precedence.
	Since string
	// CursorStore, if set, is loaded in Dial (a saved cursor overrides
	// Since) and saved after each change is processed. nil: the position
	// lives only as long as the Subscription.
	CursorStore CursorStore
	// Snapshot asks for the current rows first (docs/protocol.md,
	// "Snapshots"): the Handler (or Changes) gets each current row of
	// the filtered types as a Change with Operation entities.OpSnapshot
	// and no Cursor, then the changes those rows do not contain, then
	// the stream, with no gap and no duplicate; OnEvent is told
	// EventSnapshotComplete between the rows and the changes. Treat a
	// row as "this entity now is": if the connection drops before the
	// snapshot completes, the subscription asks for it again and the
	// rows come again from the start, after EventSnapshotRestarted:
	// discard what the incomplete attempt delivered then (an entity
	// deleted in between is in none of the new rows, and no delete
	// comes for it). Once complete, reconnects resume
	// from the cursor as usual. Not with Since; ignored when a
	// CursorStore holds a cursor (the program resumes instead).
	Snapshot bool
	// Handler processes each change, in order. A nil return marks the
	// change processed (its cursor is saved); an error ends the
	// subscription with an *Error (Op "handle") wrapping it, and the
	// change is not marked. nil: changes go to Changes() instead.
	Handler func(entities.Change) error
	// OnEvent, if set, is told about connections, reconnections and
	// lagging (for a status line). It must not block for long.
	OnEvent func(Event)
	// Registry maps entity types to their key column, for
	// Change.EntityID. Default: entities.DefaultRegistry().
	Registry *entities.Registry
	// MinBackoff is the first delay before reconnecting; each failed
	// attempt doubles it up to MaxBackoff, with jitter (each delay is
	// drawn from [d/2, d]). Defaults: 250ms and 30s.
	MinBackoff time.Duration
	// MaxBackoff caps the reconnect delay. Default: 30s.
	MaxBackoff time.Duration
	// HandshakeTimeout bounds each connection attempt: TCP and TLS,
	// the upgrade, and the server's acceptance of the filter. Default:
	// 10s.
	HandshakeTimeout time.Duration
	// SyncInterval is how often the subscription asks the server for its
	// position (a ping request). The answer moves the cursor past changes
	// the filter skipped, so a narrow filter does not resume from a
	// cursor that retention has removed, and it proves the connection
	// alive. Default: 30s; negative disables.
	SyncInterval time.Duration
	// TLSConfig configures TLS for https/wss URLs. nil: the system
	// roots.
	TLSConfig *tls.Config
	// Logger receives connection and reconnection lines (never the
	// token). Default: discard.
	Logger *slog.Logger
}

// EventType names what an Event reports.
type EventType string

// The events a Subscription reports to Options.OnEvent.
const (
	// EventConnected: a connection is up and the filter in force;
	// delivery continues after Event.Cursor. Reconnect says whether it
	// replaced a lost one.
	EventConnected EventType = "connected"
	// EventDisconnected: the connection was lost (Err says why); the
	// next attempt follows after Delay.
	EventDisconnected EventType = "disconnected"
	// EventRetrying: a reconnection attempt failed (Err); the next one
	// follows after Delay.
	EventRetrying EventType = "retrying"
	// EventLagging: the client read too slowly; the server now reads the
	// journal for it (nothing is lost).
	EventLagging EventType = "lagging"
	// EventCaughtUp: after lagging, changes are live again.
	EventCaughtUp EventType = "caught-up"
	// EventSnapshotComplete: every snapshot row has been delivered;
	// changes follow, after Event.Cursor.
	EventSnapshotComplete EventType = "snapshot-complete"
	// EventSnapshotRestarted: the connection dropped after a snapshot had
	// delivered rows but before it completed; the subscription asked
	// for it again, and its rows now come again from the start. Drop
	// what the incomplete attempt delivered: an entity deleted since is
	// in none of the new rows and gets no delete. Reported on the
	// goroutine that calls the Handler, before the first new row.
	EventSnapshotRestarted EventType = "snapshot-restarted"
)

// Event is a change in a Subscription's connection, for status output.
type Event struct {
	Type EventType
	// Cursor: for connected, the position delivery continues after; for
	// disconnected and retrying, the last cursor processed; for lagging
	// and caught-up, the server's cursor. 0 when none is known yet.
	Cursor int64
	// Reconnect is set on connected when it replaces a lost connection.
	Reconnect bool
	// Attempt counts failed reconnection attempts (retrying).
	Attempt int
	// Delay is the wait before the next attempt (disconnected, retrying).
	Delay time.Duration
	// Err is why the connection was lost or the attempt failed.
	Err error
	// Message is the server's explanation, when it gave one.
	Message string
}

// Subscription is a running subscription. Its methods are safe for
// concurrent use.
//
// Delivery: changes arrive in commit (cursor) order, one at a time. A
// Subscription tracks the last cursor processed: a change's cursor once
// the Handler returned nil for it (or, with Changes, once it was received
// from the channel), and the server's position when it reports having
// skipped past changes the filter did not select. On a dropped
// connection, a server restart or a shutdown frame it reconnects with
// capped, jittered backoff and resumes after that cursor (?since=), so
// nothing is missed and nothing is delivered twice. With a CursorStore the
// cursor is saved after each change is processed, so a restarted program
// resumes too; a crash between processing a change and saving its cursor
// re-delivers that change rather than losing it (at-least-once across
// restarts: make the Handler idempotent by cursor if that matters).
//
// Errors: transient failures are retried inside the Subscription; what
// retrying cannot fix ends it: a refused token (ErrUnauthorized,
// ErrTokenExpired), a forbidden or rejected filter (ErrForbidden,
// ErrBadFilter), a cursor the server can no longer resume from
// (ErrResyncRequired), or a Handler error. The token travels only in the
// Authorization header, never in a URL, a log line or an error.
//
// Concurrency: Dial starts one goroutine that owns the subscription and,
// per connection, one reader goroutine; Close stops both and waits. The
// Handler and Options.OnEvent are called from that one goroutine, never
// concurrently.
type Subscription struct {
	opts       Options
	url        string // WebSocket URL without query
	header     http.Header
	dialer     websocket.Dialer
	reg        *entities.Registry
	filterArgs json.RawMessage
	snapArgs   json.RawMessage // filterArgs asking for a snapshot; nil without Options.Snapshot
	log        *slog.Logger
	readWait   time.Duration

	changes chan entities.Change // nil with a Handler; closed when the subscription ends

	cancel context.CancelFunc
	done   chan struct{} // closed when every goroutine has exited; err is then set
	err    error

	// cursor mirrors st.last for Cursor(); -1 when none.
	cursor atomic.Int64

	// st is owned by the run goroutine (by Dial before it starts it).
	st struct {
		last        int64
		hasLast     bool
		snapDone    bool // the snapshot completed (or none was asked)
		snapPartial bool // changes of an incomplete snapshot were delivered
		nextID      uint64
		saveFailing bool
	}
}

// conn is one WebSocket connection and its reader goroutine.
type conn struct {
	ws         *websocket.Conn
	items      chan item     // frames in arrival order; an error is the last item
	stop       chan struct{} // closed when the run goroutine is done with the connection
	readerDone chan struct{}
	pending    []frame // read during the handshake, processed first
	snapshot   bool    // its filter request asked for the snapshot (again)
	stopOnce   sync.Once
}

type item struct {
	f   frame
	err error
}

// Dial connects to the changecast server at rawURL (http(s)://host:port, or
// a ws(s) URL; the path defaults to EventsPath), authenticates with token
// and applies the filter. It returns once the server has accepted the
// filter, or with the error that prevented it (see Retryable; Dial itself
// makes one attempt). From then on the subscription runs until ctx ends,
// Close is called, or an error retrying cannot fix. ctx bounds the whole
// subscription, not only the dial.
func Dial(ctx context.Context, rawURL, token string, opts Options) (*Subscription, error) {
	target, err := EventsURL(rawURL)
	if err != nil {
		return nil, &Error{Op: "dial", Err: err}
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, &Error{Op: "dial", URL: target, Kind: ErrUnauthorized, Message: "no token given"}
	}
	if err := opts.fill(); err != nil {
		return nil, &Error{Op: "dial", URL: target, Err: err}
	}
	args, err := filterArgs(opts, false)
	if err != nil {
		return nil, &Error{Op: "dial", URL: target, Err: err}
	}
	var snapArgs json.RawMessage
	if opts.Snapshot {
		if opts.Since != "" && opts.Since != "now" {
			return nil, &Error{Op: "dial", URL: target, Err: errors.New("Snapshot starts from the current rows: leave Since empty")}
		}
		if snapArgs, err = filterArgs(opts, true); err != nil {
			return nil, &Error{Op: "dial", URL: target, Err: err}
		}
	}
	s := &Subscription{
		opts:       opts,
		url:        target,
		header:     http.Header{"Authorization": {"Bearer " + token}},
		reg:        opts.Registry,
		filterArgs: args,
		snapArgs:   snapArgs,
		log:        opts.Logger.With("url", target),
		readWait:   max(minReadTimeout, 3*opts.SyncInterval),
		done:       make(chan struct{}),
	}
	s.dialer = websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: opts.HandshakeTimeout,
		TLSClientConfig:  opts.TLSConfig,
	}
	s.cursor.Store(-1)
	if opts.Since != "" && opts.Since != "now" {
		n, err := parseCursor(opts.Since)
		if err != nil {
			return nil, &Error{Op: "dial", URL: target, Err: fmt.Errorf("since: %w; use a cursor from a change, or \"now\"", err)}
		}
		s.setLast(n)
	}
	if opts.CursorStore != nil {
		n, ok, err := opts.CursorStore.Load()
		if err != nil {
			return nil, &Error{Op: "cursor", URL: target, Err: fmt.Errorf("load cursor: %w", err)}
		}
		if ok {
			if n < 0 {
				return nil, &Error{Op: "cursor", URL: target, Err: fmt.Errorf("load cursor: got %d, want a non-negative cursor", n)}
			}
			s.setLast(n)
			// Resuming from the saved cursor: Snapshot is ignored (see
			// Options.Snapshot), so nothing waits for snapshot-complete
			// before the cursor moves.
			s.snapArgs = nil
		}
	}
	if opts.Handler == nil {
		s.changes = make(chan entities.Change)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	c, err := s.connect(ctx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	go s.run(ctx, c)
	return s, nil
}

// fill validates o and sets its defaults.
func (o *Options) fill() error {
	if o.MinBackoff < 0 || o.MaxBackoff < 0 || o.HandshakeTimeout < 0 {
		return errors.New("MinBackoff, MaxBackoff and HandshakeTimeout must not be negative")
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.MaxBackoff < o.MinBackoff {
		return fmt.Errorf("MaxBackoff (%s) is less than MinBackoff (%s)", o.MaxBackoff, o.MinBackoff)
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.Registry == nil {
		o.Registry = defaultRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// filterArgs encodes the GARM filter object for o.
func filterArgs(o Options, snapshot bool) (json.RawMessage, error) {
	switch {
	case o.SendEverything && len(o.Filters) > 0:
		return nil, errors.New("set either Filters or SendEverything, not both")
	case !o.SendEverything && len(o.Filters) == 0:
		return nil, errors.New("no filter: set Filters (e.g. {EntityType: \"instance\"}) or SendEverything")
	}
	for i, f := range o.Filters {
		if f.EntityType == "" {
			return nil, fmt.Errorf("filters[%d]: EntityType is required", i)
		}
		for _, op := range f.Operations {
			if _, err := entities.ParseOperation(string(op)); err != nil {
				return nil, fmt.Errorf("filters[%d]: %w", i, err)
			}
		}
	}
	var b bytes.Buffer
	err := wire.WriteJSON(&b, struct {
		SendEverything bool     `json:"send-everything"`
		Filters        []Filter `json:"filters,omitempty"`
		Snapshot       bool     `json:"snapshot,omitempty"`
	}{o.SendEverything, o.Filters, snapshot})
	if err != nil {
		return nil, fmt.Errorf("encode filter: %w", err)
	}
	return b.Bytes(), nil
}

// EventsURL returns the WebSocket URL Dial connects to for rawURL: http
// becomes ws and https wss, and EventsPath is appended unless the path
// already ends with it (a path prefix, for a server behind a reverse
// proxy, is kept). A URL with credentials, a query or a fragment is an
// error.
func EventsURL(rawURL string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		// url.Error repeats the URL, which may carry a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("server URL is not a URL: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("server URL %q: want http(s)://host:port or ws(s)://host:port", u.Redacted())
	}
	if u.Host == "" {
		return "", fmt.Errorf("server URL %q has no host", u.Redacted())
	}
	if u.User != nil {
		return "", errors.New("server URL must not carry credentials; the token is sent in the Authorization header")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		// Not repeated: a query is where a misplaced token would be.
		return "", errors.New("server URL must not have a query or fragment; the token is sent in the Authorization header")
	}
	if !strings.HasSuffix(u.Path, EventsPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + EventsPath
	}
	u.RawPath = ""
	return u.String(), nil
}

// Changes returns the channel changes are delivered on when Options.Handler
// is nil (nil otherwise). A change counts as processed once received. The
// channel is closed when the subscription ends.
func (s *Subscription) Changes() <-chan entities.Change { return s.changes }

// Done is closed when the subscription has ended and its goroutines have
// exited.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns nil while the subscription runs and when Close or its context
// ended it; otherwise the *Error that ended it.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription (closing the connection cleanly) and waits for
// its goroutines, including a Handler call in progress. It returns Err().
// Close may be called more than once.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return s.err
}

// Cursor returns the last cursor processed; ok is false when there is none
// yet.
func (s *Subscription) Cursor() (cursor int64, ok bool) {
	n := s.cursor.Load()
	return n, n >= 0
}

// run owns the subscription: it streams from c, reconnects when the
// connection is lost, and stops on ctx or a terminal error.
func (s *Subscription) run(ctx context.Context, c *conn) {
	defer close(s.done)
	defer s.cancel()
	if s.changes != nil {
		defer close(s.changes)
	}
	reconnect := false
	for {
		err := s.stream(ctx, c, reconnect)
		s.drop(c)
		if ctx.Err() != nil {
			s.log.Debug("changecast subscription closed", "cursor", s.st.last)
			return
		}
		if !Retryable(err) {
			s.err = err
			s.log.Error("changecast subscription ended", "err", err)
			return
		}
		if c, err = s.reconnect(ctx, err); err != nil {
			if ctx.Err() == nil {
				s.err = err
				s.log.Error("changecast subscription ended", "err", err)
			}
			return
		}
		reconnect = true
	}
}

// reconnect waits with backoff and dials again until it succeeds, ctx ends
// or an attempt fails in a way retrying cannot fix.
func (s *Subscription) reconnect(ctx context.Context, cause error) (*conn, error) {
	retry := backoff.Backoff{Min: s.opts.MinBackoff, Max: s.opts.MaxBackoff}
	for attempt := 0; ; attempt++ {
		delay := retry.Next()
		ev := Event{Type: EventRetrying, Cursor: s.st.last, Attempt: attempt, Delay: delay, Err: cause}
		if attempt == 0 {
			ev.Type = EventDisconnected
			s.log.Warn("changecast connection lost; reconnecting", "err", cause, "cursor", s.st.last, "delay", delay)
		} else {
			s.log.Debug("changecast reconnection failed; retrying", "err", cause, "attempt", attempt, "delay", delay)
		}
		s.emit(ev)
		if !backoff.Sleep(ctx, delay) {
			return nil, ctx.Err()
		}
		c, err := s.connect(ctx)
		if err == nil {
			return c, nil
		}
		if !Retryable(err) {
			return nil, err
		}
		cause = err
	}
}

func (s *Subscription) emit(ev Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(ev)
	}
}

func (s *Subscription) setLast(n int64) {
	s.st.last, s.st.hasLast = n, true
	s.cursor.Store(n)
}

func (s *Subscription) newID() string {
	s.st.nextID++
	return "cc-" + strconv.FormatUint(s.st.nextID, 10)
}

// connect dials (resuming after the last cursor, if any), sends the filter
// and waits for the server to accept it. Frames that arrive before the
// acceptance (changes already queued for the connection) are kept in
// c.pending, with the acceptance last.
func (s *Subscription) connect(ctx context.Context) (*conn, error) {
	target := s.url
	if s.st.hasLast {
		target += "?since=" + strconv.FormatInt(s.st.last, 10)
	}
	args := s.filterArgs
	snapshot := s.snapArgs != nil && !s.st.snapDone && !s.st.hasLast
	if snapshot {
		args = s.snapArgs
	}
	hctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
	defer cancel()
	ws, resp, err := s.dialer.DialContext(hctx, target, s.header)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{Op: "dial", URL: s.url, Err: ctx.Err()}
		}
		return nil, s.dialError(resp, err)
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	c := &conn{ws: ws, items: make(chan item, 64), stop: make(chan struct{}), readerDone: make(chan struct{}), snapshot: snapshot}
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(s.readWait))
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		return nil
	})
	go s.readLoop(c)

	id := s.newID()
	timer := time.NewTimer(s.opts.HandshakeTimeout)
	defer timer.Stop()
	writeErr := s.writeRequest(c, id, wire.RequestFilter, args)
	if writeErr != nil {
		// The server may have closed first with a reason (resync-required
		// for an unknown cursor): read what it sent, briefly.
		timer.Reset(closeGrace)
	}
	for {
		select {
		case it := <-c.items:
			if it.err != nil {
				s.drop(c)
				return nil, s.streamError("filter", it.err)
			}
			f := it.f
			switch {
			case f.kind == kindError:
				s.drop(c)
				return nil, s.filterError(f)
			case f.kind == kindControl && f.ctl != wire.ControlLagging && f.ctl != wire.ControlCaughtUp:
				s.drop(c)
				if err := s.controlError(f); err != nil {
					return nil, err
				}
				return nil, &Error{Op: "filter", URL: s.url, Message: f.msg, Err: fmt.Errorf("unexpected %s control frame", f.ctl), retryable: true}
			}
			if len(c.pending) >= maxPending {
				s.drop(c)
				return nil, &Error{Op: "filter", URL: s.url, Err: fmt.Errorf("server sent more than %d frames before accepting the filter", maxPending), retryable: true}
			}
			c.pending = append(c.pending, f)
			if f.kind == kindResponse && f.id == id {
				return c, nil
			}
		case <-timer.C:
			s.drop(c)
			if writeErr != nil {
				return nil, s.streamError("filter", writeErr)
			}
			return nil, &Error{Op: "filter", URL: s.url, Err: fmt.Errorf("the server did not answer the filter within %s", s.opts.HandshakeTimeout), retryable: true}
		case <-ctx.Done():
			s.drop(c)
			return nil, &Error{Op: "filter", URL: s.url, Err: ctx.Err()}
		}
	}
}

// dialError classifies a failed upgrade.
func (s *Subscription) dialError(resp *http.Response, err error) error {
	if resp == nil {
		return &Error{Op: "dial", URL: s.url, Err: err, retryable: retryableCause(err) || errors.Is(err, context.DeadlineExceeded)}
	}
	e := &Error{Op: "dial", URL: s.url, Status: resp.StatusCode, Message: responseMessage(resp), retryable: statusRetryable(resp.StatusCode)}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
		if strings.HasPrefix(e.Message, ErrTokenExpired.Error()) {
			e.Kind, e.also = ErrTokenExpired, ErrUnauthorized
		}
	case http.StatusForbidden:
		e.Kind = ErrForbidden
	case http.StatusBadRequest:
		e.Kind = ErrBadRequest
	case http.StatusSwitchingProtocols:
		// Upgraded, but not acceptably (e.g. a bad handshake header).
		e.Err = err
	}
	return e
}

// responseMessage reads a refused upgrade's {"error": "..."} body (or the
// start of a non-JSON one).
func responseMessage(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	return text
}

// filterError classifies an error frame answering the filter.
func (s *Subscription) filterError(f frame) error {
	e := &Error{Op: "filter", URL: s.url, Message: f.msg, Cursor: s.st.last, Kind: ErrBadFilter}
	// The server answers code 403 for a type the token may not see and
	// 400 for a malformed filter. Older servers (before issue 17) answered
	// 400 for both; their refusals are told apart by the message.
	if f.code == "403" || strings.Contains(f.msg, "not allowed for this token") {
		e.Kind = ErrForbidden
	}
	return e
}

// controlError returns the error a control frame ends the connection with:
// terminal for resync-required and token-expired, retryable for shutdown;
// nil for the others.
func (s *Subscription) controlError(f frame) error {
	switch f.ctl {
	case wire.ControlResyncRequired:
		return &Error{Op: "stream", URL: s.url, Kind: ErrResyncRequired, Message: f.msg, Cursor: s.st.last}
	case wire.ControlTokenExpired:
		return &Error{Op: "stream", URL: s.url, Kind: ErrTokenExpired, Message: f.msg, Cursor: s.st.last}
	case wire.ControlShutdown:
		return &Error{Op: "stream", URL: s.url, Message: f.msg, Cursor: s.st.last, Err: errShutdown, retryable: true}
	}
	return nil
}

var errShutdown = errors.New("server shutting down")

// streamError wraps a read error.
func (s *Subscription) streamError(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Op: op, URL: s.url, Err: err, Cursor: s.st.last, retryable: retryableCause(err)}
}

// readLoop reads frames until the connection fails, handing them to the run
// goroutine in order; the last item is the error that ended it.
func (s *Subscription) readLoop(c *conn) {
	defer close(c.readerDone)
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(s.readWait))
		mt, data, err := c.ws.ReadMessage()
		var it item
		switch {
		case err != nil:
			it.err = err
		case mt != websocket.TextMessage:
			continue
		default:
			f, perr := parseFrame(data, s.reg)
			if perr != nil {
				// Resuming would read the same frame again.
				it.err = &Error{Op: "stream", URL: s.url, Err: perr}
			} else if f.kind == 0 {
				s.log.Debug("changecast: skipping an unknown frame")
				continue
			}
			it.f = f
		}
		select {
		case c.items <- it:
		case <-c.stop:
			return
		}
		if it.err != nil {
			return
		}
	}
}

// writeRequest sends an envelope request.
func (s *Subscription) writeRequest(c *conn, id, name string, args json.RawMessage) error {
	data, err := json.Marshal(wire.Request{Namespace: wire.NamespaceEvents, Name: name, ID: id, Args: args})
	if err != nil {
		return err
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	return c.ws.WriteMessage(websocket.TextMessage, data)
}

// drop closes c cleanly (close frame, a short wait for the server's answer)
// and waits for its reader. Safe to call more than once.
func (s *Subscription) drop(c *conn) {
	c.stopOnce.Do(func() {
		close(c.stop)
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeGrace))
		t := time.NewTimer(closeGrace)
		select {
		case <-c.readerDone:
		case <-t.C:
		}
		t.Stop()
		c.ws.Close()
		<-c.readerDone
	})
}

// stream processes c's frames until the connection ends, ctx ends or a frame
// ends the subscription. It returns why.
func (s *Subscription) stream(ctx context.Context, c *conn, reconnect bool) error {
	if c.snapshot && s.st.snapPartial {
		// An earlier connection delivered part of the snapshot; this
		// one asked for it again, and its rows start over.
		s.st.snapPartial = false
		s.log.Info("changecast snapshot restarted: its rows come again from the start")
		s.emit(Event{Type: EventSnapshotRestarted})
	}
	for _, f := range c.pending {
		if err := s.process(ctx, f); err != nil {
			return err
		}
	}
	c.pending = nil
	if reconnect {
		s.log.Info("changecast stream resumed", "cursor", s.st.last)
	} else {
		s.log.Debug("changecast stream connected", "cursor", s.st.last)
	}
	s.emit(Event{Type: EventConnected, Cursor: s.st.last, Reconnect: reconnect})

	var tick <-chan time.Time
	if s.opts.SyncInterval > 0 {
		t := time.NewTicker(s.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case it := <-c.items:
			if it.err != nil {
				return s.streamError("stream", it.err)
			}
			if err := s.process(ctx, it.f); err != nil {
				return err
			}
		case <-tick:
			if err := s.writeRequest(c, s.newID(), wire.RequestPing, nil); err != nil {
				// Frames already read may say why (a control frame
				// before the close): process them, briefly.
				return s.drain(ctx, c, s.streamError("stream", err))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// drain processes the frames c's reader still delivers, for at most
// closeGrace, after a failed write; it returns the error that ends them,
// or cause.
func (s *Subscription) drain(ctx context.Context, c *conn, cause error) error {
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	for {
		select {
		case it := <-c.items:
			if it.err != nil {
				return cause
			}
			if err := s.process(ctx, it.f); err != nil {
				return err
			}
		case <-t.C:
			return cause
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// process handles one frame in stream order.
func (s *Subscription) process(ctx context.Context, f frame) error {
	switch f.kind {
	case kindChange:
		return s.deliver(ctx, f.change)
	case kindResponse:
		// Every change up to the response's cursor that the filter
		// selects was sent before it, and has been processed.
		// While a snapshot is under way, the position is the seam's,
		// not the response's: a reconnect asks for the snapshot again.
		if f.hasCur && (s.snapArgs == nil || s.st.snapDone) {
			s.advance(f.cursor)
		}
	case kindError:
		s.log.Warn("changecast server refused a request", "message", f.msg)
	case kindControl:
		switch f.ctl {
		case wire.ControlLagging:
			s.log.Info("changecast client lagging; the server is catching it up from the journal", "cursor", f.cursor)
			s.emit(Event{Type: EventLagging, Cursor: f.cursor, Message: f.msg})
		case wire.ControlCaughtUp:
			s.log.Info("changecast client caught up", "cursor", f.cursor)
			s.emit(Event{Type: EventCaughtUp, Cursor: f.cursor, Message: f.msg})
		case wire.ControlSnapshotComplete:
			// Every change up to the cursor is in the rows or was
			// delivered after them.
			s.st.snapDone = true
			if f.hasCur {
				s.advance(f.cursor)
			}
			s.log.Debug("changecast snapshot complete", "cursor", f.cursor)
			s.emit(Event{Type: EventSnapshotComplete, Cursor: f.cursor, Message: f.msg})
		default:
			if err := s.controlError(f); err != nil {
				return err
			}
			s.log.Debug("changecast: ignoring an unknown control frame", "type", f.ctl)
		}
	}
	return nil
}

// deliver hands ch to the Handler or the channel and, once processed, moves
// the cursor to it.
func (s *Subscription) deliver(ctx context.Context, ch entities.Change) error {
	if ch.Cursor != 0 && s.st.hasLast && ch.Cursor <= s.st.last {
		s.log.Warn("changecast: skipping a change at or before the last cursor processed", "cursor", ch.Cursor, "last", s.st.last)
		return nil
	}
	if s.opts.Handler != nil {
		if err := s.opts.Handler(ch); err != nil {
			return &Error{Op: "handle", URL: s.url, Cursor: s.st.last, Err: fmt.Errorf("%s %s %s (cursor %d): %w", ch.EntityType, ch.Operation, ch.EntityID, ch.Cursor, err), retryable: false}
		}
	} else {
		select {
		case s.changes <- ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Until snapshot-complete, the changes after the rows are the seam:
	// resuming from one of them would skip nothing the rows lack but
	// repeat what they hold, so the cursor moves (and is saved) only
	// once the snapshot is complete, and a reconnect before that asks
	// for the snapshot again.
	if s.snapArgs != nil && !s.st.snapDone {
		s.st.snapPartial = true
	} else if ch.Cursor != 0 {
		s.advance(ch.Cursor)
	}
	return nil
}

// advance moves the cursor forward to n and saves it.
func (s *Subscription) advance(n int64) {
	if s.st.hasLast && n <= s.st.last {
		return
	}
	s.setLast(n)
	if s.opts.CursorStore == nil {
		return
	}
	if err := s.opts.CursorStore.Save(n); err != nil {
		if !s.st.saveFailing {
			s.st.saveFailing = true
			s.log.Warn("changecast: saving the cursor failed; a restart will re-deliver changes", "err", err, "cursor", n)
		}
		return
	}
	if s.st.saveFailing {
		s.st.saveFailing = false
		s.log.Info("changecast: saving the cursor works again", "cursor", n)
	}
}
