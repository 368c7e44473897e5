package wsapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// client is one WebSocket connection: exactly one reader goroutine
// (readLoop) and one writer goroutine (writeLoop), as in gorilla's chat
// example. Every write, pings and pongs included, happens in writeLoop.
//
// Other goroutines talk to a client only through enqueue (Publish and the
// reader), kick (overflow, Close, token expiry) and the filter pointer.
type client struct {
	srv    *Server
	conn   *websocket.Conn
	log    *slog.Logger
	scope  scope
	expiry time.Time
	start  time.Time

	// filter is nil until the client sends one: a new connection receives
	// nothing. The reader stores, the publisher loads; never mutated.
	filter atomic.Pointer[filter]

	send chan outFrame // bounded; enqueue never blocks
	pong chan string   // pong payloads the writer owes; cap 1, extras dropped

	// stop is closed once, by kick, after reason is set; stopped mirrors
	// it for the publisher's fast path. reason is read only after
	// observing stop closed or stopped true.
	stop     chan struct{}
	stopOnce sync.Once
	stopped  atomic.Bool
	reason   stopReason

	readerDone chan struct{} // closed when readLoop returns
	readErr    error         // readLoop's final error; read by exit after both loops end
	running    atomic.Int32  // loops still running; see exit
}

// outFrame is one queued frame; cursor is the change's journal position (0
// for non-change frames and before the journal exists).
type outFrame struct {
	msg    *websocket.PreparedMessage
	cursor int64
}

// stopReason says how the writer ends the connection: an optional control
// frame, then a close frame.
type stopReason struct {
	control   ControlType // "" = no control frame
	message   string
	closeCode int
	closeText string
	why       string // for the disconnect log line
}

func newClient(srv *Server, conn *websocket.Conn, claims *Claims) *client {
	c := &client{
		srv:        srv,
		conn:       conn,
		scope:      newScope(claims),
		expiry:     claims.ExpiresAt.Time,
		start:      time.Now(),
		send:       make(chan outFrame, srv.cfg.QueueLen),
		pong:       make(chan string, 1),
		stop:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.log = srv.log.With("user_id", claims.Subject, "remote_addr", conn.RemoteAddr().String())
	return c
}

// wants reports whether c should receive ch: it has a filter selecting ch,
// its token allows ch's type (checked here again, not only when the filter
// was accepted), and it is not being stopped.
func (c *client) wants(ch *entities.Change) bool {
	if c.stopped.Load() || !c.scope.allows(ch.EntityType) {
		return false
	}
	return c.filter.Load().matches(ch)
}

// enqueue queues f without blocking. A full queue means the client is more
// than QueueLen frames behind: it is counted and stopped with
// resync-required, and nobody else waits for it.
func (c *client) enqueue(f outFrame) {
	select {
	case c.send <- f:
	default:
		if c.stopped.Load() {
			return
		}
		c.srv.hub.overflows.Add(1)
		c.log.Warn("websocket client fell behind; disconnecting", "queue_len", c.srv.cfg.QueueLen)
		c.kick(stopReason{
			control:   ControlResyncRequired,
			message:   fmt.Sprintf("client fell more than %d frames behind; reconnect and send the filter again", c.srv.cfg.QueueLen),
			closeCode: websocket.CloseTryAgainLater,
			closeText: "fell behind",
			why:       "queue overflow",
		})
	}
}

// kick asks the writer to end the connection for r. Only the first call
// counts.
func (c *client) kick(r stopReason) {
	c.stopOnce.Do(func() {
		c.reason = r
		c.stopped.Store(true)
		close(c.stop)
	})
}

// reply queues a frame for this client only (error frames).
func (c *client) reply(data []byte) {
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, data)
	if err != nil {
		c.log.Error("prepare reply", "err", err)
		return
	}
	c.enqueue(outFrame{msg: pm})
}

// readLoop reads client messages until the connection fails or closes. It
// owns the connection's read side.
func (c *client) readLoop() {
	defer c.exit()
	defer close(c.readerDone)

	cfg := &c.srv.cfg
	c.conn.SetReadLimit(cfg.MaxMessageBytes)
	_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	// gorilla's default ping and close handlers write from the reader;
	// these hand the write to the writer instead.
	c.conn.SetPingHandler(func(data string) error {
		select {
		case c.pong <- data:
		default:
		}
		return nil
	})
	c.conn.SetCloseHandler(func(int, string) error { return nil })

	for {
		mt, data, err := c.conn.ReadMessage()
		if err != nil {
			c.readErr = err
			return
		}
		c.handleMessage(mt, data)
		c.srv.messagesHandled.Add(1)
	}
}

// handleMessage applies one client message. A GARM filter replaces the whole
// filter and gets no reply; anything invalid gets an error frame and leaves
// the previous filter in place.
func (c *client) handleMessage(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.reply(encodeError("", 400, "binary messages are not supported; send filters as JSON text messages"))
		return
	}
	f, err := parseFilter(data, c.srv.cfg.Registry, c.scope)
	if err != nil {
		msg := "invalid message"
		var fe *filterError
		if errors.As(err, &fe) {
			msg = fe.msg
		}
		c.reply(encodeError("", 400, msg))
		return
	}
	c.filter.Store(f)
	c.log.Debug("websocket filter set", "send_everything", f.all, "clauses", len(f.clauses))
}

// writeLoop writes queued frames, pongs and pings until the client is
// stopped or its reader ends. It owns every write and, on exit, closes the
// connection, which ends the reader if it is still running.
func (c *client) writeLoop() {
	defer c.exit()
	defer c.conn.Close()
	cfg := &c.srv.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	expire := time.NewTimer(time.Until(c.expiry))
	defer expire.Stop()
	var lastCursor int64 // last change cursor written, for resume hints

	for {
		// A stop wins over queued frames: after an overflow the queue
		// holds frames the client will get again after resync.
		select {
		case <-c.stop:
			c.finish(lastCursor)
			return
		default:
		}
		var err error
		select {
		case f := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(cfg.WriteWait))
			if err = c.conn.WritePreparedMessage(f.msg); err == nil && f.cursor != 0 {
				lastCursor = f.cursor
			}
		case data := <-c.pong:
			err = c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(cfg.WriteWait))
		case <-ping.C:
			err = c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait))
		case <-expire.C:
			c.kick(stopReason{
				control:   ControlTokenExpired,
				message:   "token expired; reconnect with a new token",
				closeCode: websocket.ClosePolicyViolation,
				closeText: "token expired",
				why:       "token expired",
			})
		case <-c.stop:
			// handled at the top of the loop
		case <-c.readerDone:
			// The client closed (or the connection broke): answer
			// its close frame, best effort.
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(cfg.WriteWait))
			return
		}
		if err != nil {
			if !c.stopped.Load() {
				c.log.Debug("websocket write failed", "err", err)
			}
			return
		}
	}
}

// exit is deferred by both loops. The last one out unregisters the client
// and logs the disconnect, so a registered client is one with a goroutine
// still running (Close's forced path relies on this to reach them all).
func (c *client) exit() {
	defer c.srv.hub.wg.Done()
	if c.running.Add(-1) != 0 {
		return
	}
	c.srv.hub.unregister(c)
	why := describeReadError(c.readErr)
	if c.stopped.Load() {
		why = c.reason.why
	}
	c.log.Info("websocket disconnected", "reason", why, "duration", time.Since(c.start).Round(time.Millisecond))
}

// closeGrace bounds how long finish waits for the client's answer to our
// close frame. A client that is not reading never answers; waiting the full
// WriteWait for each would stretch every shutdown by that much.
const closeGrace = time.Second

// finish sends the stop reason's control frame and a close frame, then
// waits (at most closeGrace) for the client to answer the close so the
// closing handshake completes before the TCP connection goes.
func (c *client) finish(lastCursor int64) {
	r := c.reason
	deadline := time.Now().Add(c.srv.cfg.WriteWait)
	wait := min(closeGrace, c.srv.cfg.WriteWait)
	if r.control != "" {
		_ = c.conn.SetWriteDeadline(deadline)
		if err := c.conn.WriteMessage(websocket.TextMessage, encodeControl(r.control, lastCursor, r.message)); err != nil {
			return
		}
	}
	if err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(r.closeCode, r.closeText), deadline); err != nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
}

// describeReadError turns the reader's final error into a short log reason.
func describeReadError(err error) string {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case err == nil:
		return "unknown"
	case errors.As(err, &ce):
		return fmt.Sprintf("client closed (%d)", ce.Code)
	case errors.Is(err, websocket.ErrReadLimit):
		return "message too large"
	case errors.As(err, &ne) && ne.Timeout():
		return "pong timeout"
	default:
		return "connection closed"
	}
}
