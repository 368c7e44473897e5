package wsapi

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// Journal is what the hub needs from the journal: reads by cursor, for
// catch-up and resume. store implements it (cmd/changecast adapts it). Both
// methods must be safe for concurrent use; each client's writer goroutine
// calls them at its own pace.
type Journal interface {
	// ReadAfter returns up to limit changes with Cursor > after, in
	// ascending cursor order, of the given entity types (nil = all; the hub
	// never passes an empty non-nil slice). It must see every change whose
	// cursor is at or below a head already given to Server.Publish. It
	// must fail when after < Horizon at the time of the read (checked in
	// the same snapshot as the rows, as store's query does), so a
	// successful read never hides a gap and the hub asks for Horizon only
	// after an error: then it ends the client's stream with
	// resync-required if the cursor has expired, or retries otherwise.
	ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error)
	// Horizon returns the highest cursor removed by retention: resuming
	// after c is possible iff c >= Horizon. It must never decrease, and must
	// cover a row no later than the row stops being readable.
	Horizon(ctx context.Context) (int64, error)
}

// hub is the set of connected clients, the journal head, and the fan-out.
//
// Lock rules: mu guards clients, closing, head and every registered
// client's feed (the client's place in the stream). One mutex, not one per
// client, because the decisions that matter must see the head and a feed in
// one critical section: Publish (enqueue or switch to catch-up, then advance
// to head) and a writer rejoining live (position >= head). Nothing blocks
// or does I/O while holding mu: enqueue is a non-blocking channel send,
// journal reads and socket writes happen outside it. Functions that expect
// mu held end in Locked.
//
// wg counts every per-client goroutine; Add happens under mu while closing
// is false, so no Add can race with Close's Wait.
//
// slots is the catch-up budget (Config.CatchUpWorkers): that many tokens,
// each the earliest time its next page may start. A writer receives a
// token inside its select loop (so it still serves pings, replies and
// stops while it waits), waits in the same loop until the token's time,
// reads and encodes one page, and sends the token back, dated
// catchUpRest times as far ahead as the page took, before it writes the
// page to its socket: each token is busy at most a quarter of the time, and
// a slow socket holds none.
// Waiting receivers are served in arrival order, so tokens rotate among
// the catching-up clients. Publish never touches them.
type hub struct {
	log     *slog.Logger
	journal Journal // nil: no catch-up
	page    int     // CatchUpPage
	slots   chan time.Time
	// snaps holds Config.MaxSnapshots tokens: a snapshot holds one
	// while its transaction is open (snapshot.go).
	snaps chan struct{}

	// published is set by the first Publish: until then the head is not
	// known, and a resume cannot be judged (server.go answers 503).
	published atomic.Bool
	overflows atomic.Uint64
	catchUps  atomic.Uint64
	// queueHigh is the longest client queue seen right after an enqueue;
	// tests assert it never exceeds QueueLen.
	queueHigh atomic.Int64

	mu struct {
		sync.Mutex
		clients map[*client]struct{}
		closing bool
		head    int64 // highest cursor given to Publish

		// The fan-out index: every client with a filter is in exactly one
		// of everything (send-everything with no scope list) or byType
		// under each entity type its filter, narrowed by its scope, can
		// select. Publish visits only the clients indexed under a
		// change's type, so a change costs nothing for connections that
		// cannot want it. Maintained by setFilter and unregister.
		everything map[*client]struct{}
		byType     map[string]map[*client]struct{}

		// fellBehind collects clients switched to catch-up during a
		// publish, logged after the lock is released.
		fellBehind []*client
		// visits counts client visits by publish, so tests can check
		// that the index spares uninterested connections.
		visits uint64
	}
	wg sync.WaitGroup
}

func newHub(log *slog.Logger, journal Journal, page, workers, snapshots int) *hub {
	h := &hub{log: log, journal: journal, page: page, slots: make(chan time.Time, workers), snaps: make(chan struct{}, snapshots)}
	for range workers {
		h.slots <- time.Time{}
	}
	for range snapshots {
		h.snaps <- struct{}{}
	}
	h.mu.clients = map[*client]struct{}{}
	h.mu.everything = map[*client]struct{}{}
	h.mu.byType = map[string]map[*client]struct{}{}
	return h
}

// setFilter stores c's new filter and re-indexes c, in one critical section
// with Publish: the filter applies from the next Publish, exactly.
func (h *hub) setFilter(c *client, f *filter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.filter.Store(f)
	if _, ok := h.mu.clients[c]; !ok {
		return // not registered yet, or gone: nothing to index
	}
	h.unindexLocked(c)
	h.indexLocked(c, f)
}

// indexLocked adds c to the index for filter f (nil: nowhere).
func (h *hub) indexLocked(c *client, f *filter) {
	switch {
	case f == nil:
	case f.all && c.scope.types == nil:
		h.mu.everything[c] = struct{}{}
		c.index.all = true
	default:
		types, none := readTypes(f, c.scope)
		if none {
			return
		}
		for _, t := range types {
			set := h.mu.byType[t]
			if set == nil {
				set = map[*client]struct{}{}
				h.mu.byType[t] = set
			}
			set[c] = struct{}{}
		}
		c.index.types = types
	}
}

// unindexLocked removes c from the index.
func (h *hub) unindexLocked(c *client) {
	if c.index.all {
		delete(h.mu.everything, c)
	}
	for _, t := range c.index.types {
		if set := h.mu.byType[t]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(h.mu.byType, t)
			}
		}
	}
	c.index = indexEntry{}
}

// indexEntry records where a client is in the hub's index (guarded by
// hub.mu).
type indexEntry struct {
	all   bool
	types []string
}

// resume says where a new connection starts: after since if set, otherwise
// at the head.
type resume struct {
	set   bool
	since int64
	seam  *seamCursor // since was a snapshot cursor (since is its end)
}

// register adds c at its starting position and starts its reader and
// writer goroutines. It returns false, starting nothing, once the hub is
// closing. A resume that cannot be honoured (no journal, or a cursor beyond
// the head) still registers, already stopped with resync-required, so the
// writer tells the client why before closing.
func (h *hub) register(c *client, r resume) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closing {
		return false
	}
	c.feed.pos = h.mu.head
	if r.set {
		switch {
		case h.journal == nil:
			c.kick(resyncReason("this server keeps no journal, so it cannot resume; re-read the state and reconnect without since"))
		case r.since > h.mu.head:
			c.kick(resyncReason(fmt.Sprintf("unknown cursor %d: this server's newest cursor is %d (another server or a reset journal?); re-read the state and reconnect without since", r.since, h.mu.head)))
		default:
			// Catching up from since, but nothing is read until the
			// filter is set (the writer waits for it), and Publish
			// leaves catching-up clients alone: nothing is skipped.
			c.feed.pos = r.since
			c.feed.catchingUp = true
			c.catchingUp.Store(true)
			h.catchUps.Add(1)
		}
	}
	c.startPos = c.feed.pos
	h.mu.clients[c] = struct{}{}
	h.indexLocked(c, c.filter.Load())
	h.wg.Add(2)
	c.running.Store(2)
	go c.readLoop()
	c.startWriter()
	return true
}

// unregister removes c; the last of its goroutines calls it on the way out.
func (h *hub) unregister(c *client) {
	h.mu.Lock()
	delete(h.mu.clients, c)
	h.unindexLocked(c)
	h.mu.Unlock()
}

// count returns the number of registered clients.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.mu.clients)
}

// countCatchingUp returns the number of registered clients catching up.
func (h *hub) countCatchingUp() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for c := range h.mu.clients {
		if c.feed.catchingUp {
			n++
		}
	}
	return n
}

// position returns c's position: the last cursor delivered or skipped.
func (h *hub) position(c *client) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.posLocked(c)
}

// posLocked returns c's position. A live client has been served every
// change up to the head (Publish hands it all it wants, and the rest it
// does not want), so its position is at least the head; Publish does not
// store that for every client on every commit, which would cost work per
// connection rather than per interested connection.
func (h *hub) posLocked(c *client) int64 {
	if c.feed.catchingUp {
		return c.feed.pos
	}
	return max(c.feed.pos, h.mu.head)
}

// head returns the highest cursor given to Publish.
func (h *hub) head() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.head
}

// beginClose marks the hub closing and returns the clients to shut down. It
// returns nil if the hub was already closing.
func (h *hub) beginClose() []*client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closing {
		return nil
	}
	h.mu.closing = true
	return h.clientsLocked()
}

// snapshot returns the registered clients.
func (h *hub) snapshot() []*client {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clientsLocked()
}

func (h *hub) clientsLocked() []*client {
	out := make([]*client, 0, len(h.mu.clients))
	for c := range h.mu.clients {
		out = append(out, c)
	}
	return out
}

func (h *hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.closing
}

// publish records the new head and fans batch out to every live client that
// may and wants to see each change, in batch order. Only the clients the
// index lists under a change's entity type are visited. Each change is
// encoded at most once, lazily (only if some client wants it), and the
// prepared frame is shared. A nil batch (or one that breaks the contract)
// sends every live client that is behind head to the journal instead.
func (h *hub) publish(head int64, batch []entities.Change) {
	h.published.Store(true)
	h.mu.Lock()
	behind := h.publishLocked(head, batch)
	h.mu.Unlock()
	for _, c := range behind {
		if h.journal == nil {
			c.log.Warn("websocket client fell behind; disconnecting", "queue_len", c.srv.cfg.QueueLen, "queue_bytes", c.srv.cfg.QueueBytes)
		} else {
			c.log.Info("websocket client fell behind; catching up from the journal", "queue_len", c.srv.cfg.QueueLen, "queue_bytes", c.srv.cfg.QueueBytes)
		}
	}
}

// publishLocked is publish under h.mu. It returns the clients whose queue
// overflowed, for logging after the lock is released.
func (h *hub) publishLocked(head int64, batch []entities.Change) []*client {
	if h.mu.closing {
		return nil
	}
	prev := h.mu.head
	if head < prev {
		h.log.Error("publish: head went backwards; ignoring the regression", "head", head, "previous_head", prev)
		head = prev
	}
	h.mu.head = head
	if batch != nil && !validBatch(prev, head, batch) {
		h.log.Error("publish: batch cursors are not ascending within (previous head, head]; sending clients to the journal instead",
			"head", head, "previous_head", prev, "len", len(batch))
		batch = nil
	}
	h.mu.fellBehind = h.mu.fellBehind[:0]
	if batch == nil {
		for c := range h.mu.clients {
			if c.feed.catchingUp {
				continue
			}
			c.feed.pos = max(c.feed.pos, prev)
			switch {
			case c.feed.pos >= head:
			case c.filter.Load() == nil:
				// Wants nothing yet: skip, as a live batch would.
				c.feed.pos = head
			default:
				h.fallBehindLocked(c, false)
			}
		}
		return h.takeFellBehindLocked()
	}
	fan := fanout{before: prev}
	for i := range batch {
		fan.ch, fan.frame = &batch[i], nil
		for c := range h.mu.everything {
			h.visitLocked(c, &fan)
		}
		for c := range h.mu.byType[fan.ch.EntityType] {
			h.visitLocked(c, &fan)
		}
		fan.before = fan.ch.Cursor
	}
	return h.takeFellBehindLocked()
}

// fanout is publish's state while it hands one change to the clients.
type fanout struct {
	ch     *entities.Change
	frame  *outFrame // ch's frame, encoded on first need
	before int64     // cursor of the change before ch (or the previous head)
}

// visitLocked hands f.ch to c if c is live, has not had it, and wants it.
// A live client that does not want it needs no bookkeeping: its position
// covers it implicitly (posLocked).
func (h *hub) visitLocked(c *client, f *fanout) {
	h.mu.visits++
	if c.feed.catchingUp || f.ch.Cursor <= c.feed.pos || !c.wants(f.ch) {
		return
	}
	if f.frame == nil {
		f.frame = &outFrame{wire: prepareChange(f.ch), cursor: f.ch.Cursor}
	}
	if !c.tryEnqueue(f.frame) {
		// Everything before ch was delivered or unwanted.
		c.feed.pos = max(c.feed.pos, f.before)
		h.fallBehindLocked(c, true)
		return
	}
	c.feed.pos = f.ch.Cursor
}

// takeFellBehindLocked returns the clients that overflowed during this
// publish (a copy: the buffer is reused).
func (h *hub) takeFellBehindLocked() []*client {
	if len(h.mu.fellBehind) == 0 {
		return nil
	}
	return slices.Clone(h.mu.fellBehind)
}

// validBatch reports whether batch's cursors ascend strictly within
// (prev, head].
func validBatch(prev, head int64, batch []entities.Change) bool {
	last := prev
	for i := range batch {
		if batch[i].Cursor <= last {
			return false
		}
		last = batch[i].Cursor
	}
	return last <= head
}

// fallBehindLocked handles a live client that cannot be served from the
// batch: its queue overflowed (overflow) or the commit was not handed over
// inline. With a journal it switches the client to catch-up from its
// position, which the writer serves once the frames already queued are
// written; without one the client is stopped with resync-required, as it
// cannot be served without a gap.
func (h *hub) fallBehindLocked(c *client, overflow bool) {
	if c.stopped.Load() {
		return
	}
	if overflow {
		h.overflows.Add(1)
		h.mu.fellBehind = append(h.mu.fellBehind, c)
	}
	if h.journal == nil {
		msg := "a commit was too large to deliver and this server keeps no journal; re-read the state and reconnect"
		if overflow {
			msg = fmt.Sprintf("client fell %s; reconnect and send the filter again", c.srv.cfg.behind())
		}
		r := resyncReason(msg)
		r.why = "queue overflow"
		c.kick(r)
		return
	}
	c.feed.catchingUp = true
	c.catchingUp.Store(true)
	h.catchUps.Add(1)
	if overflow {
		c.feed.lagPending = true
	}
	c.wakeWriter()
}

// startPage returns what the writer needs to read the next catch-up page:
// the client's position, the head (every change at or below it is
// readable), and whether a lagging frame is owed (cleared: the caller sends
// it).
func (h *hub) startPage(c *client) (pos, head int64, lagging bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	lagging = c.feed.lagPending
	c.feed.lagPending = false
	return c.feed.pos, h.mu.head, lagging
}

// endPage records the writer's progress after a catch-up page. If the page
// was the journal's last (short) and the client has reached the head, the
// client rejoins live in the same critical section, so the next Publish
// serves it and nothing is skipped or repeated at the seam. It reports
// whether the client rejoined.
func (h *hub) endPage(c *client, pos int64, short bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.feed.pos = max(c.feed.pos, pos)
	if !short || c.feed.pos < h.mu.head || c.feed.frozen {
		// frozen: a snapshot request arrived during the page; the
		// client stays off live until the snapshot is done.
		return false
	}
	c.feed.catchingUp = false
	c.catchingUp.Store(false)
	return true
}

// prepareChange encodes ch once as the complete wire frame every client it
// goes to is sent.
//
// The frame is written in one buffer: the change's JSON after room for
// the longest frame header, then the header right before it.
func prepareChange(ch *entities.Change) []byte {
	const room = maxFrameHeader
	b := wire.AppendChange(make([]byte, room, room+wire.ChangeSizeHint(ch)), ch)
	var hdr [maxFrameHeader]byte
	h := appendFrameHeader(hdr[:0], len(b)-room)
	start := room - len(h)
	copy(b[start:], h)
	return b[start:len(b):len(b)]
}
