package wsapi

import (
	"context"
	"errors"
	"fmt"
	"github.com/changecast/changecast/internal/backoff"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// client is one WebSocket connection: exactly one reader goroutine
// (readLoop) and one writer goroutine (writeLoop), as in gorilla's chat
// example. Every write, pings and pongs included, happens in writeLoop, and
// so does every journal read for catch-up: a client costs no goroutine
// beyond its two, and a slow one slows only itself.
//
// Other goroutines talk to a client only through tryEnqueue and feed
// (Publish, under the hub lock), reply (the reader), kick (overflow without
// a journal, Close, token expiry, resume errors), wakeWriter and the filter
// pointer.
type client struct {
	srv    *Server
	conn   *websocket.Conn
	log    *slog.Logger
	claims *Claims // immutable
	scope  scope
	expiry time.Time
	start  time.Time

	// filter is nil until the client sends one: a new connection receives
	// nothing. The reader stores, Publish and the writer load; never
	// mutated.
	filter atomic.Pointer[filter]

	// index is where the hub's fan-out index lists the client. Guarded
	// by srv.hub.mu.
	index indexEntry

	// feed is the client's place in the stream. Guarded by srv.hub.mu
	// (see hub's lock rules), not by a mutex of its own.
	feed feed
	// startPos is where the client's stream began (the head, or its
	// since cursor), for Resync. Set by register under srv.hub.mu.
	startPos int64
	// catchingUp mirrors feed.catchingUp for the writer's lock-free
	// check; stored under hub.mu together with it.
	catchingUp atomic.Bool
	// awaiting counts envelope requests whose response the writer has not
	// written yet (the reader adds before storing the new filter).
	awaiting atomic.Int32
	// systemState: the client subscribed to system_state frames. The
	// reader stores it before queuing the response; the writer starts or
	// stops the frames when it writes that response.
	systemState atomic.Bool
	// snapshotting is true from a snapshot request until its
	// snapshot-complete frame (snapshot.go); snapPending hands the
	// request's job from the reader to the writer, who takes it up once
	// the request's response is written.
	snapshotting atomic.Bool
	snapPending  atomic.Pointer[snapJob]

	queue   frameQueue    // live change frames, shared by every client they go to; bounded (QueueLen, QueueBytes), filled only by Publish, never blocking
	replies chan reply    // responses and error frames from the reader, who waits for room (back-pressure on its own client)
	pong    chan string   // pong payloads the writer owes; cap 1, extras dropped
	wake    chan struct{} // cap 1: "re-check catch-up" (switched to catch-up, filter set)

	// ctx ends when the connection does (kick or either loop exiting); it
	// bounds the writer's journal reads.
	ctx    context.Context
	cancel context.CancelFunc

	// stop is closed once, by kick, after reason is set; stopped mirrors
	// it for the publisher's fast path. reason is read only after
	// observing stop closed or stopped true.
	stop     chan struct{}
	stopOnce sync.Once
	stopped  atomic.Bool
	reason   stopReason

	readerDone chan struct{} // closed when readLoop returns
	writerDone chan struct{} // closed when writeLoop returns
	readErr    error         // readLoop's final error; read by exit after both loops end
	running    atomic.Int32  // loops still running; see exit

	w writerState // owned by the writer goroutine (writeLoop; one at a time)

	// The writer runs only while there is something to write (writer.go).
	wmu         sync.Mutex
	wstate      int         // writerNew, writerIdle, writerRunning, writerDone; guarded by wmu
	wruns       int         // writer runs started; guarded by wmu
	pingOwed    atomic.Bool // the ping timer fired; the writer writes a ping
	pingTimer   *time.Timer // armed by the writer after each ping
	expireTimer *time.Timer // kicks the client when its token expires
}

// reply is a frame for this client only: data as is, or (resp set) an
// envelope response, which the writer encodes when it writes it, because
// its cursor is the client's position at that moment.
type reply struct {
	data []byte
	resp *pendingResponse
}

// pendingResponse is an envelope response still to be encoded.
type pendingResponse struct {
	id     string
	filter *filter
}

// feed is a client's place in the stream (guarded by hub.mu).
type feed struct {
	// pos is the last cursor delivered (enqueued or written) or skipped as
	// unwanted: everything after it is still owed, nothing at or before
	// it will be sent again.
	pos int64
	// catchingUp: the writer serves the client from the journal and
	// Publish leaves it alone. Otherwise the client is live: Publish
	// enqueues what it wants and advances pos to the head.
	catchingUp bool
	// lagPending: the queue overflowed and the writer owes a lagging
	// frame (sent once the frames already queued are written).
	lagPending bool
	// frozen: a snapshot is under way (snapshot.go); the client stays
	// catching up and its position does not move until it is done.
	frozen bool
}

// writerState is the writer goroutine's own bookkeeping.
type writerState struct {
	lastCursor int64           // last change cursor written, for control frames
	lagSent    bool            // a lagging frame was sent; caught-up is owed on rejoining live
	failing    bool            // journal reads are failing (logged once per state change)
	backoff    backoff.Backoff // retry delay after a failed journal read (set up by newClient)
	retry      *time.Timer     // pending retry; nil when none
	slot       time.Time       // the catch-up token held while rest runs (see hub.slots)
	rest       *time.Timer     // runs until slot's time, then the page starts; nil when no token is held
	state      *time.Ticker    // system_state frames; nil when not subscribed
	snap       *snapJob        // the snapshot under way; nil when none
}

// outFrame is one queued change frame and its journal cursor. Publish makes
// one per change and every client's queue holds a pointer to it, so a
// queue slot costs 8 bytes per connection.
type outFrame struct {
	wire   []byte // the complete WebSocket frame (wireFrame); shared, never modified
	cursor int64
}

// stopReason says how the writer ends the connection: an optional control
// frame, then a close frame.
type stopReason struct {
	control   wire.ControlType // "" = no control frame
	frame     []byte           // a frame to send instead of a control frame (an error frame); nil = none
	message   string
	closeCode int
	closeText string
	why       string // for the disconnect log line
}

// resyncReason stops a client with resync-required: it cannot be served
// without a gap, so it must re-read the state.
func resyncReason(message string) stopReason {
	return stopReason{
		control:   wire.ControlResyncRequired,
		message:   message,
		closeCode: websocket.CloseTryAgainLater,
		closeText: "resync required",
		why:       "resync required",
	}
}

func newClient(srv *Server, conn *websocket.Conn, claims *Claims) *client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{
		srv:        srv,
		conn:       conn,
		claims:     claims,
		scope:      newScope(claims),
		expiry:     claims.ExpiresAt.Time,
		start:      time.Now(),
		queue:      frameQueue{maxN: srv.cfg.QueueLen, maxBytes: srv.cfg.QueueBytes, ready: make(chan struct{}, 1)},
		replies:    make(chan reply, 4),
		pong:       make(chan string, 1),
		wake:       make(chan struct{}, 1),
		ctx:        ctx,
		cancel:     cancel,
		stop:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.log = srv.log.With("user_id", claims.Subject, "remote_addr", conn.RemoteAddr().String())
	c.w.backoff = backoff.Backoff{Min: catchUpRetryMin, Max: catchUpRetryMax}
	return c
}

// wants reports whether c should receive ch: it has a filter selecting ch,
// its token allows ch's type (checked here again, not only when the filter
// was accepted), and it is not being stopped.
func (c *client) wants(ch *entities.Change) bool {
	return !c.stopped.Load() && c.maySee(ch) && c.filter.Load().matches(ch)
}

// maySee reports whether the token allows ch: its type is in scope, and a
// system event concerning a user goes only to that user and to admins
// (docs/events.md, "Who receives one").
func (c *client) maySee(ch *entities.Change) bool {
	if !c.scope.allows(ch.EntityType) {
		return false
	}
	if c.scope.admin {
		return true
	}
	if owner, ok := entities.OwnerOf(ch); ok {
		return owner == c.claims.Subject
	}
	return true
}

// tryEnqueue queues f without blocking and reports whether there was room.
func (c *client) tryEnqueue(f *outFrame) bool {
	ok, n := c.queue.push(f)
	if h := &c.srv.hub.queueHigh; ok && int64(n) > h.Load() {
		h.Store(int64(n)) // only Publish enqueues, from one goroutine
	}
	if n == 1 {
		// The queue was empty: its writer may have left. Otherwise the
		// writer, which leaves only with an empty queue, is running.
		c.ensureWriter()
	}
	return ok
}

// wakeWriter makes the writer re-check whether it has catch-up work.
func (c *client) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.ensureWriter()
}

// kick asks the writer to end the connection for r. Only the first call
// counts.
func (c *client) kick(r stopReason) {
	c.stopOnce.Do(func() {
		c.reason = r
		c.stopped.Store(true)
		close(c.stop)
		c.cancel()
	})
	c.ensureWriter()
}

// reply hands a frame for this client only (responses, error frames) to
// the writer. It waits for room rather than dropping or overflowing: only
// this client's reader waits, and only while the client is not reading its
// own replies.
func (c *client) reply(r reply) {
	select {
	case c.replies <- r:
		c.ensureWriter()
	case <-c.stop:
	case <-c.writerDone:
	}
}

// readLoop reads client messages until the connection fails or closes. It
// owns the connection's read side.
func (c *client) readLoop() {
	defer c.exit()
	defer c.ensureWriter() // the writer closes the connection
	defer close(c.readerDone)
	defer c.cancel()

	cfg := &c.srv.cfg
	// The size limit is enforced below, while reading (never more than
	// the limit plus one byte is read), so the client gets an error frame
	// saying why before the close; gorilla's own limit would close with
	// no explanation, so it is left off (0).
	c.conn.SetReadLimit(0)
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
		c.ensureWriter()
		return nil
	})
	c.conn.SetCloseHandler(func(int, string) error { return nil })

	for {
		mt, r, err := c.conn.NextReader()
		if err != nil {
			c.readErr = err
			return
		}
		// The message is read and applied on a goroutine of its own that
		// the reader waits for: parsing grows a goroutine's stack to
		// 8 KiB or more, which the runtime rarely gives back, and the
		// reader spends a connection's life parked in NextReader, so
		// keeping its stack at the minimum is most of what an idle
		// connection costs (docs/benchmarks.md, target 5).
		errc := make(chan error, 1)
		go func() { errc <- c.consume(mt, r) }()
		if err := <-errc; err != nil {
			c.readErr = err
			return
		}
	}
}

// consume reads one client message from r and applies it. An error ends
// the reader.
func (c *client) consume(mt int, r io.Reader) error {
	limit := c.srv.cfg.MaxMessageBytes
	// Read at most one byte past the limit: never more than that is
	// buffered, however large the message.
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > limit {
		c.log.Info("websocket message too large; closing", "limit_bytes", limit)
		msg := fmt.Sprintf("message too large: more than %d bytes; send smaller messages (a filter message is at most %d bytes)", limit, limit)
		c.kick(stopReason{
			frame:     encodeError("", 400, msg),
			closeCode: websocket.CloseMessageTooBig,
			closeText: "message too big",
			why:       "message too large",
		})
		return websocket.ErrReadLimit
	}
	c.handleMessage(mt, data)
	c.srv.messagesHandled.Add(1)
	return nil
}

// handleMessage applies one client message. A GARM filter replaces the whole
// filter and gets no reply; an envelope request gets exactly one reply with
// its id (a response, or an error frame); anything invalid gets an error
// frame and leaves the previous filter in place. A live client's new filter
// applies from the next Publish; a catching-up client's from its next
// journal page. The reader is the only goroutine that stores the filter, so
// reading it, deriving the next one and storing that is not racy.
func (c *client) handleMessage(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.reply(reply{data: encodeError("", 400, "binary messages are not supported; send filters as JSON text messages")})
		return
	}
	cur := c.filter.Load()
	msg, err := c.parseCtx().applyMessage(cur, data)
	if err != nil {
		code, text := codeBadRequest, "invalid message"
		var fe *filterError
		if errors.As(err, &fe) {
			code, text = fe.code, fe.msg
		}
		c.reply(reply{data: encodeError(msg.id, code, text)})
		return
	}
	if f := msg.next; f != nil && !f.all && len(f.clauses) > c.srv.cfg.MaxFilters {
		c.reply(reply{data: encodeError(msg.id, 400, fmt.Sprintf(
			"too many filters: %d; at most %d per connection (list several operations in one filter, or use send-everything)", len(f.clauses), c.srv.cfg.MaxFilters))})
		return
	}
	if msg.snapshot != nil && c.snapshotting.Load() {
		c.reply(reply{data: encodeError(msg.id, 400, "a snapshot is already under way on this connection; wait for its snapshot-complete control frame, then ask again")})
		return
	}
	changed := msg.next != cur
	if msg.envelope {
		// Counted before the filter is stored: a writer that sees the
		// new filter also sees a response owed, and starts no catch-up
		// page before it has written it.
		c.awaiting.Add(1)
	}
	if msg.snapshot != nil {
		// Frozen with the new filter in one step: nothing reaches the
		// client live until its snapshot is done.
		c.snapshotting.Store(true)
		c.snapPending.Store(&snapJob{id: msg.id, types: msg.snapshot, set: setOf(msg.snapshot)})
		c.srv.hub.setFilterSnapshot(c, msg.next)
		changed = true
	} else if changed {
		c.srv.hub.setFilter(c, msg.next)
		if f := msg.next; f != nil {
			c.log.Debug("websocket filter set", "send_everything", f.all, "clauses", len(f.clauses))
		}
	}
	if msg.systemState != nil {
		c.systemState.Store(*msg.systemState)
	}
	if msg.envelope {
		// Queued before the wake-up, and the writer starts no catch-up
		// page while a response is owed, so a resuming client gets the
		// response before the replay it starts.
		c.reply(reply{resp: &pendingResponse{id: msg.id, filter: msg.next}})
	}
	if changed {
		c.wakeWriter() // a resuming client starts reading the journal now
	}
}

func (c *client) parseCtx() parseCtx {
	return parseCtx{reg: c.srv.cfg.Registry, sc: c.scope, secret: c.srv.cfg.SecretField, systemState: c.srv.cfg.SystemState != nil,
		snapshots: c.srv.cfg.Snapshots != nil && c.srv.hub.journal != nil}
}

// writeResponse writes an envelope response. Its cursor is the client's
// position, read now: the new filter was stored before the request was
// queued, so every change after the position goes through it (Publish and
// catch-up pages load the filter after this point, and a catch-up page
// never runs concurrently with this, the writer's own code). Frames already
// queued (all at or below the position) are written first, so every change
// frame after the response has a cursor above the response's.
func (c *client) writeResponse(r *pendingResponse) error {
	pos := c.srv.hub.position(c)
	if n := c.queue.len(); n > 0 {
		if err := c.writeQueued(n); err != nil {
			return err
		}
	}
	on := c.systemState.Load()
	if err := c.writeText(encodeResponse(r.id, r.filter, on, pos)); err != nil {
		return err
	}
	switch {
	case on && c.w.state == nil:
		c.w.state = time.NewTicker(c.srv.cfg.SystemStateInterval)
		return c.writeSystemState()
	case !on && c.w.state != nil:
		c.w.state.Stop()
		c.w.state = nil
	}
	return nil
}

// writeSystemState writes one system_state frame.
func (c *client) writeSystemState() error {
	return c.writeText(encodeSystemState(c.srv.cfg.SystemState()))
}

// writeLoop writes queued frames, replies, pongs and pings, and serves
// catch-up from the journal one page per catch-up token (hub.slots), until
// the client is stopped or its reader ends. It owns every write and, at
// the end, closes the connection, which ends the reader if it is still
// running. It also returns, leaving the connection open, once it has had
// nothing to do for writerLinger (writer.go): the next thing to write
// starts another.
func (c *client) writeLoop() {
	if !c.writeUntilIdle() {
		return
	}
	// The connection is over (in the order the loop's defers had).
	if c.w.retry != nil {
		c.w.retry.Stop()
	}
	if c.w.rest != nil {
		c.w.rest.Stop()
		c.srv.hub.slots <- c.w.slot // never blocks: the token came from there
	}
	if c.w.state != nil {
		c.w.state.Stop()
	}
	if c.w.snap != nil {
		c.endSnapshotJob(c.w.snap)
	}
	c.writerEnded()
	c.cancel()
	c.conn.Close()
	close(c.writerDone)
	c.exit()
}

// writeUntilIdle is writeLoop's loop. It returns true when the connection
// is over, false when the writer leaves an idle connection.
func (c *client) writeUntilIdle() (over bool) {
	cfg := &c.srv.cfg
	linger := time.NewTimer(c.srv.linger)
	defer linger.Stop()
	lastWork := time.Now()
	// answered: this run has written a reply, a pong or a ping;
	// delivering: it has written changes, a catch-up page, a snapshot step
	// or a system_state frame. A run that has only answered leaves as soon
	// as nothing is owed instead of lingering: the linger is for clients
	// that receive a stream, and without this every connection of a
	// reconnect storm would hold a writer goroutine (and its stack, until
	// the runtime's next collection) for writerLinger after its filter's
	// response, and every idle connection one after each ping.
	answered, delivering := false, false
	for {
		// A stop wins over queued frames: after a stop the client will
		// get them again after it reconnects.
		select {
		case <-c.stop:
			c.finish(c.w.lastCursor)
			return true
		default:
		}
		if c.pingOwed.Swap(false) {
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait)); err != nil {
				if !c.stopped.Load() {
					c.log.Debug("websocket write failed", "err", err)
				}
				return true
			}
			c.pingTimer.Reset(cfg.PingInterval)
			answered = true
		}
		if answered && !delivering && c.leaveIfIdle() {
			return false
		}
		var slot, retry, state, rest <-chan time.Time
		if c.w.state != nil {
			state = c.w.state.C
		}
		// A snapshot job starts once its request's response is written
		// (a since=<snapshot cursor> seam: once the first filter is
		// set), and runs a step per turn while nothing else is owed.
		if c.w.snap == nil && c.awaiting.Load() == 0 && c.filter.Load() != nil {
			c.w.snap = c.snapPending.Swap(nil)
		}
		var snapSlot, snapStep, snapWaited <-chan struct{}
		var snapRest, seamSlot <-chan time.Time
		if j := c.w.snap; j != nil && j.wait != nil {
			// Begin or Complete runs on its own goroutine
			// (snapWait) while this one serves everything else.
			snapWaited = j.wait.done
		} else if j != nil && c.queue.len() == 0 && len(c.replies) == 0 && c.awaiting.Load() == 0 {
			switch {
			case j.phase == snapWaiting:
				snapSlot = c.srv.hub.snaps
			case j.rest != nil:
				snapRest = j.rest.C
			case j.phase == snapSeam && !j.seamHeld:
				// Each page of the seam is a journal read like
				// catch-up's, under the same budget.
				seamSlot = c.srv.hub.slots
			default:
				snapStep = ready
			}
		}
		if c.w.rest != nil {
			rest = c.w.rest.C
		} else if c.w.retry != nil {
			retry = c.w.retry.C
		} else if c.catchingUp.Load() && !c.snapshotting.Load() && c.queue.len() == 0 && len(c.replies) == 0 && c.awaiting.Load() == 0 && c.filter.Load() != nil {
			// Catching up, the frames queued before the switch are
			// written (Publish queues nothing more), no reply is
			// waiting, and the client has said what it wants: wait
			// for a catch-up token, still serving everything else.
			slot = c.srv.hub.slots
		}
		var err error
		select {
		case <-c.queue.ready:
			err = c.writeQueued(c.srv.cfg.QueueLen)
			delivering = true
		case r := <-c.replies:
			if r.resp != nil {
				err = c.writeResponse(r.resp)
				c.awaiting.Add(-1)
			} else {
				err = c.writeText(r.data)
			}
			answered = true
		case data := <-c.pong:
			err = c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(cfg.WriteWait))
			answered = true
		case <-state:
			err = c.writeSystemState()
			delivering = true
		case <-c.stop:
			// handled at the top of the loop
		case <-c.wake:
			// re-evaluate work at the top of the loop
		case <-retry:
			c.w.retry = nil
		case tok := <-slot:
			if d := time.Until(tok); d > 0 {
				c.w.slot, c.w.rest = tok, time.NewTimer(d)
				break
			}
			err = c.catchUpPage()
			delivering = true
		case <-rest:
			c.w.rest = nil
			err = c.catchUpPage()
			delivering = true
		case <-snapSlot:
			if j := c.w.snap; j == nil || j.token {
				c.srv.hub.snaps <- struct{}{} // not needed: give it back
				break
			}
			c.startSnapshot(c.w.snap)
			delivering = true
		case <-snapWaited:
			c.snapshotWaited(c.w.snap)
			delivering = true
		case tok := <-seamSlot:
			j := c.w.snap
			j.seamHeld, j.seamTok = true, tok
			if d := time.Until(tok); d > 0 {
				j.rest = time.NewTimer(d) // the token's time has not come
				break
			}
			err = c.snapshotStep()
			delivering = true
		case <-snapStep:
			err = c.snapshotStep()
			delivering = true
		case <-snapRest:
			c.w.snap.rest = nil
			err = c.snapshotStep()
			delivering = true
		case <-c.readerDone:
			// The client closed (or the connection broke): answer
			// its close frame, best effort.
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(cfg.WriteWait))
			return true
		case <-linger.C:
			if d := c.srv.linger - time.Since(lastWork); d > 0 {
				linger.Reset(d)
				continue
			}
			if c.leaveIfIdle() {
				return false
			}
			linger.Reset(c.srv.linger)
			continue
		}
		if err != nil {
			if !c.stopped.Load() {
				c.log.Debug("websocket write failed", "err", err)
			}
			return true
		}
		lastWork = time.Now()
	}
}

// writeText writes data as a text message, with the write deadline.
func (c *client) writeText(data []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
	return c.conn.WriteMessage(websocket.TextMessage, data)
}

// maxBatchBytes bounds how many bytes of queued frames one write sends.
const maxBatchBytes = 64 << 10

// batchPool holds the buffers writeFrames gathers frames in, so an idle
// connection holds none.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatchBytes); return &b }}

// writeQueued writes the frames queued now, at most limit of them, in as
// few writes as maxBatchBytes allows: a client that has fallen behind
// costs one syscall per batch instead of one per change. The frames are
// complete WebSocket frames (wireFrame) written to the connection directly;
// gorilla keeps nothing buffered between its own writes, all of which
// happen on this goroutine too, so frames never interleave.
func (c *client) writeQueued(limit int) error {
	var frames [64]*outFrame
	k, left := c.queue.take(frames[:min(limit, len(frames))])
	if k == 0 {
		return nil
	}
	if k == 1 && left == 0 {
		return c.writeWire(frames[0].wire, frames[0].cursor)
	}
	bp := batchPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 2*maxBatchBytes {
			*bp = buf[:0]
			batchPool.Put(bp)
		}
	}()
	var last int64
	for {
		limit -= k
		for _, f := range frames[:k] {
			if len(buf) > 0 && len(buf)+len(f.wire) > maxBatchBytes {
				if err := c.writeWire(buf, last); err != nil {
					return err
				}
				buf = buf[:0]
			}
			buf = append(buf, f.wire...)
			last = f.cursor
		}
		clear(frames[:k])
		if limit <= 0 || left == 0 {
			break
		}
		if k, left = c.queue.take(frames[:min(limit, len(frames))]); k == 0 {
			break
		}
	}
	return c.writeWire(buf, last)
}

// writeWire writes complete frames ending with the change at cursor.
func (c *client) writeWire(b []byte, cursor int64) error {
	nc := c.conn.NetConn()
	_ = nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
	if _, err := nc.Write(b); err != nil {
		return err
	}
	c.w.lastCursor = cursor
	return nil
}

// Backoff between failed journal reads: doubling from catchUpRetryMin to
// catchUpRetryMax, with jitter so clients do not retry in step.
const (
	catchUpRetryMin = 50 * time.Millisecond
	catchUpRetryMax = 5 * time.Second
)

// catchUpPage serves one page of catch-up. The caller holds one of the
// hub's catch-up tokens, and its time has come; catchUpPage reads the
// changes after the client's position (of the types the current filter
// can select) and encodes those the filter and the token select, then
// gives the token back, dated as far ahead as the read and encoding took,
// yields, and only then writes: a client whose socket is slow holds no
// token. It then advances the position over the whole page and rejoins
// live when the journal has nothing more up to the head. Only a write
// error is returned; journal errors schedule a retry.
//
// The dating makes each token rest after a page catchUpRest times as long
// as the page took, so it is busy at most a quarter of the time: with
// CatchUpWorkers tokens, catch-up reads and encodes on at most
// CatchUpWorkers/4 processors' worth of time, however many clients catch up, and the appender, the watcher
// and the live writers keep the rest (issue 17: on a 2-core machine a
// token that never rested still delayed live changes by hundreds of
// milliseconds).
//
// Why the position may jump to the head after a short page: every change at
// or below the head was committed before Publish announced it, which was
// before the read began, so a short read returned all of them that match.
func (c *client) catchUpPage() error {
	h := c.srv.hub
	if c.awaiting.Load() > 0 || c.snapshotting.Load() {
		// A response is owed (it arrived while this writer waited for
		// the token): write it first; the token goes back unused. A
		// snapshot under way decides where catch-up resumes.
		h.slots <- time.Now()
		return nil
	}
	began := time.Now()
	pos, head, lagging := h.startPage(c)
	p := c.readPage(pos)
	h.slots <- time.Now().Add(catchUpRest * time.Since(began)) // never blocks: the token came from there
	runtime.Gosched()
	defer p.free()

	if lagging {
		if err := c.writeText(encodeControl(wire.ControlLagging, pos, fmt.Sprintf(
			"client fell %s; catching up from the journal after cursor %d", c.srv.cfg.behind(), pos))); err != nil {
			return err
		}
		c.w.lagSent = true
	}
	if !p.ok {
		return nil // retry scheduled, or stopped with resync-required
	}
	from := 0
	for _, b := range p.batches {
		if err := c.writeWire((*p.wire)[from:b.end], b.cursor); err != nil {
			return err
		}
		from = b.end
	}
	next := p.next
	short := p.rows < h.page
	if short {
		next = max(next, head)
	}
	if h.endPage(c, next, short) && c.w.lagSent {
		c.w.lagSent = false
		c.log.Info("websocket client caught up", "cursor", next)
		return c.writeText(encodeControl(wire.ControlCaughtUp, next, "caught up; changes are live again"))
	}
	return nil
}

// catchUpRest is how many times as long as a page took its token rests
// before the next page: with 3, a token is busy at most a quarter of the
// time. Measured on 2 cores (docs/benchmarks.md, scenario 6, ten clients
// replaying 311,000 changes each): resting as long as the page let live
// p99 grow 20×, twice as long 2.1×, three times 1.6×, while the ten
// still finished in under five minutes.
const catchUpRest = 3

// page is one catch-up page, read and encoded under a catch-up slot and
// written after it is given back.
type page struct {
	ok      bool    // the read succeeded; otherwise nothing to write
	rows    int     // rows the journal returned
	next    int64   // the position after the page: its last row's cursor
	wire    *[]byte // the selected changes as complete frames (pagePool)
	batches []batch // wire split into writes of about maxBatchBytes
}

// batch is one write of a page: wire[previous end:end], ending with the
// change at cursor.
type batch struct {
	end    int
	cursor int64
}

// pagePool holds page buffers, so catching-up clients reuse them instead
// of allocating a page of frames each time.
var pagePool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatchBytes); return &b }}

// free returns the page's buffer to pagePool (an unusually large one is
// left to the garbage collector).
func (p *page) free() {
	if p.wire != nil && cap(*p.wire) <= 16*maxBatchBytes {
		*p.wire = (*p.wire)[:0]
		pagePool.Put(p.wire)
	}
	p.wire = nil
}

// readPage reads and encodes the page after pos (see catchUpPage). On a
// failed read it asks for the horizon to tell an expired cursor (the
// client is stopped with resync-required) from an unavailable journal (a
// retry is scheduled), and returns a page that is not ok.
func (c *client) readPage(pos int64) page {
	h := c.srv.hub
	f := c.filter.Load()
	types, none := readTypes(f, c.scope)
	var rows []entities.Change
	var readErr error
	if !none {
		rows, readErr = h.journal.ReadAfter(c.ctx, pos, h.page, types)
	}
	// A successful read saw no gap (Journal.ReadAfter fails for an
	// expired cursor), so the horizon is read only after a failure, to
	// tell an expired cursor (resync) from a journal that is unavailable
	// (retry).
	if readErr != nil {
		var lost resyncReasoner
		if errors.As(readErr, &lost) {
			c.journalRecovered()
			c.log.Warn("websocket client's cursor cannot be resumed", "cursor", pos, "reason", lost.ResyncReason())
			c.kick(resyncReason(lost.ResyncReason()))
			return page{}
		}
		horizon, err := h.journal.Horizon(c.ctx)
		switch {
		case err == nil && pos < horizon:
			c.journalRecovered()
			c.log.Warn("websocket client's cursor fell out of journal retention", "cursor", pos, "horizon", horizon)
			if hook := c.srv.cfg.OnCursorExpired; hook != nil {
				hook(c.claims.Subject, pos, horizon)
			}
			c.kick(resyncReason(fmt.Sprintf(
				"cursor %d is no longer in the journal (retention removed everything up to %d); re-read the state and reconnect without since", pos, horizon)))
		case err != nil:
			c.journalFailed("read journal horizon", err)
		default:
			c.journalFailed("read journal", readErr)
		}
		return page{}
	}
	c.journalRecovered()
	p := page{ok: true, rows: len(rows), next: pos, wire: pagePool.Get().(*[]byte)}
	buf := (*p.wire)[:0]
	cut := 0       // where the current batch starts
	var last int64 // cursor of the last frame in buf
	for i := range rows {
		ch := &rows[i]
		if ch.Cursor <= p.next {
			continue // not ascending: already delivered or skipped
		}
		p.next = ch.Cursor
		if c.stopped.Load() || !c.maySee(ch) || !f.matches(ch) {
			continue
		}
		data := encodeChange(ch)
		if len(buf) > cut && len(buf)-cut+len(data) > maxBatchBytes {
			p.batches = append(p.batches, batch{end: len(buf), cursor: last})
			cut = len(buf)
		}
		buf = appendWireFrame(buf, data)
		last = ch.Cursor
	}
	if len(buf) > cut {
		p.batches = append(p.batches, batch{end: len(buf), cursor: last})
	}
	*p.wire = buf
	return p
}

// journalFailed schedules a retry after a failed journal read, logging only
// the first failure of a run.
func (c *client) journalFailed(step string, err error) {
	if c.ctx.Err() != nil {
		return // the connection is ending
	}
	if !c.w.failing {
		c.w.failing = true
		c.log.Warn("websocket catch-up: "+step+" failed; retrying", "err", err)
	}
	c.w.retry = time.NewTimer(c.w.backoff.Next())
}

// journalRecovered logs the end of a run of failed reads.
func (c *client) journalRecovered() {
	if c.w.failing {
		c.w.failing = false
		c.log.Info("websocket catch-up: journal reads recovered")
	}
	c.w.backoff.Reset()
}

// readTypes returns the entity types a catch-up read needs for filter f and
// scope sc: nil for every type, or a sorted list. none reports that nothing
// can match, so no read is needed.
func readTypes(f *filter, sc scope) (types []string, none bool) {
	if f == nil {
		return nil, true
	}
	if f.all {
		if sc.types == nil {
			return nil, false // the scope check after the read drops user for viewers
		}
		for t := range sc.types {
			if sc.allows(t) {
				types = append(types, t)
			}
		}
	} else {
		for _, cl := range f.clauses {
			if sc.allows(cl.entityType) && !slices.Contains(types, cl.entityType) {
				types = append(types, cl.entityType)
			}
		}
	}
	slices.Sort(types)
	return types, len(types) == 0
}

// exit is deferred by both loops. The last one out unregisters the client
// and logs the disconnect, so a registered client is one with a goroutine
// still running (Close's forced path relies on this to reach them all).
func (c *client) exit() {
	defer c.srv.hub.wg.Done()
	if c.running.Add(-1) != 0 {
		return
	}
	// The slot is freed before the client leaves Clients(), so a caller
	// that sees the count drop can connect again.
	c.srv.conns.Add(-1)
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
	frame := r.frame
	if r.control != "" {
		frame = encodeControl(r.control, lastCursor, r.message)
	}
	if frame != nil {
		_ = c.conn.SetWriteDeadline(deadline)
		if err := c.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
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
