package wsapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/xidsnap"
	"github.com/changecast/changecast/wire"
)

// This file holds snapshots on the WebSocket (docs/protocol.md,
// "Snapshots"; issue 14): a subscribe or filter request with "snapshot":
// true is answered with the current rows of the types it names
// ("operation": "snapshot"), then the changes those rows do not contain,
// then a snapshot-complete control frame, then the stream as usual.
//
// The seam (docs/guarantees.md, "Snapshots and the seam"): for a type the
// snapshot covers, a journaled change is sent after the rows if and only if
// its transaction is not visible in the snapshot; for every other type the
// connection continues from its position at the request, as without a
// snapshot. Changes are read from the journal, in cursor order, from the
// lower of that position and Snapshot.From up to Snapshot.Complete's cursor;
// after that cursor no change is visible in the snapshot, so the client
// continues with ordinary catch-up from it and rejoins live.
//
// The connection is frozen for the whole snapshot: it is switched to
// catch-up (Publish leaves it alone) and does not rejoin live, so its
// position does not move until the seam is done. Everything happens on the
// client's writer goroutine, one page per turn of its loop, so pings,
// replies and stops are served between pages; a disconnect cancels the
// read in progress and closes the snapshot.

// Snapshots opens snapshots of entity types' current rows (cmd/changecast
// passes package snapshot's Source). Begin may block while it connects and
// takes the snapshot; it must end promptly when ctx does.
type Snapshots interface {
	Begin(ctx context.Context, types []string) (Snapshot, error)
}

// Snapshot is one open snapshot (see package snapshot's Snapshot for the
// contract of each method). It is used by one goroutine.
type Snapshot interface {
	// Next returns the next page of sanitized rows (Operation
	// entities.OpSnapshot); nil once every row is read, the transaction
	// then being closed.
	Next(ctx context.Context) ([]entities.Change, error)
	// Visible reports whether a journaled transaction is visible in the
	// snapshot.
	Visible(xid uint32) bool
	// From is a cursor at or before every journaled change the snapshot
	// does not see.
	From() int64
	// Complete waits until the journal holds every change the snapshot
	// sees and returns the journal head then: no change after it is
	// visible in the snapshot. Called after Next returned nil.
	Complete(ctx context.Context) (int64, error)
	// Rows reads up to limit rows of one of its types after a key it
	// returned (nil: from the first), with each row's key; fewer than
	// limit means no more (GET /api/v1/entities/{type}).
	Rows(ctx context.Context, typ string, after [][]byte, limit int) ([]entities.Change, [][][]byte, error)
	// Release ends the transaction once every row wanted is read.
	Release(ctx context.Context) error
	// Bounds is the snapshot's xmin, xmax and transactions in progress,
	// for a snapshot cursor.
	Bounds() xidsnap.Snapshot
	// Close releases everything the snapshot holds.
	Close()
}

// DefaultMaxSnapshots is Config.MaxSnapshots's default.
const DefaultMaxSnapshots = 4

// DefaultSnapshotMaxDuration is Config.SnapshotMaxDuration's default:
// ample for a million rows to a client that keeps up (scenario 8 of
// docs/benchmarks.md reads 200,000 in seconds), short enough that a
// client reading a trickle cannot hold a slot and vacuum back for hours.
const DefaultSnapshotMaxDuration = 10 * time.Minute

// errSnapshotTooLong: a snapshot's rows were not all read within
// Config.SnapshotMaxDuration.
var errSnapshotTooLong = errors.New("snapshot rows not read within the server's snapshot-max-duration")

// snapPhase is where a snapshot job is.
type snapPhase int

const (
	snapWaiting    snapPhase = iota // for a snapshot token (hub.snaps)
	snapBeginning                   // Begin runs (snapWait)
	snapRows                        // sending rows
	snapCompleting                  // Complete runs (snapWait)
	snapSeam                        // sending the changes the rows do not contain
)

// snapWait is a blocking call of a snapshot job, Begin or Complete, which
// may wait up to the snapshot source's Wait (for transactions running when
// the snapshot starts, for the journal to reach the snapshot): it runs on
// a goroutine of its own, and the writer, which owns that goroutine,
// keeps writing pings, pongs and replies until done is closed
// (snapshotWaited), or, if the connection ends first, cancels the call and
// waits for it (endSnapshotJob).
type snapWait struct {
	done chan struct{} // closed when the call has returned
	snap Snapshot      // Begin's result
	end  int64         // Complete's result
	err  error
}

// startWait runs call on a goroutine of its own as j's wait.
func (j *snapJob) startWait(call func(w *snapWait)) {
	w := &snapWait{done: make(chan struct{})}
	j.wait = w
	go func() {
		defer close(w.done)
		call(w)
	}()
}

// snapJob is one snapshot request on a connection. The reader creates it;
// from pickup on only the writer touches it.
type snapJob struct {
	id    string          // the request's id, for logs
	types []string        // the types snapshotted, sorted
	set   map[string]bool // the same, as a set
	phase snapPhase
	token bool      // holds a hub.snaps token
	began time.Time // when it took its token (Config.SnapshotMaxDuration counts from here)
	snap  Snapshot
	p     int64       // the connection's position when the writer took the job
	pos   int64       // the seam's read position
	end   int64       // Complete's cursor
	rows  int         // rows sent, for the log
	rest  *time.Timer // runs while the job rests between pages of rows (snapshotRest), or until its seam token's time
	wait  *snapWait   // Begin or Complete under way; nil when none
	// seamHeld: the job holds a catch-up token (hub.slots) for its next
	// seam page, dated seamTok.
	seamHeld bool
	seamTok  time.Time
}

// snapshotRest is how many times as long as a page of rows took (read,
// sanitized, encoded, written) a snapshot rests before the next page, so
// one snapshot keeps the server and the database busy at most a quarter
// of the time and live clients keep their latency (docs/benchmarks.md,
// scenario 8). Catch-up rests the same way (catchUpRest).
const snapshotRest = 3

// ready is always ready: a select case that runs the next snapshot step.
var ready = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// snapshotTypes returns the types a snapshot request covers for the
// filter after it, f: for a filter request (add nil) every type f can
// select, for a subscribe the types of its clauses, add. System events
// have no table: their clauses continue from the response's cursor.
func (pc parseCtx) snapshotTypes(f *filter, add []clause) ([]string, error) {
	if !pc.snapshots {
		return nil, filterErrorf(`"snapshot" is not available on this server (it needs the journal and a snapshot source)`)
	}
	var types []string
	switch {
	case add != nil:
		for _, cl := range add {
			types = append(types, cl.entityType)
		}
	case f != nil && f.all:
		types = pc.reg.Names()
	case f != nil:
		for _, cl := range f.clauses {
			types = append(types, cl.entityType)
		}
	}
	types = slices.DeleteFunc(types, func(t string) bool { return t == entities.EventEntityType || !pc.sc.allows(t) })
	slices.Sort(types)
	types = slices.Compact(types)
	if len(types) == 0 {
		return nil, filterErrorf(`"snapshot" needs at least one entity type with a table (system events have none; read them with GET /api/v1/events)`)
	}
	return types, nil
}

// freezeLocked stops c's position from moving (see the file comment). A
// live client's implicit position is made explicit first.
func (h *hub) freezeLocked(c *client) {
	c.feed.pos = h.posLocked(c)
	c.feed.frozen = true
	if !c.feed.catchingUp {
		c.feed.catchingUp = true
		c.catchingUp.Store(true)
	}
}

// setFilterSnapshot is setFilter for a snapshot request: the new filter
// and the freeze take effect in one critical section with Publish.
func (h *hub) setFilterSnapshot(c *client, f *filter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.filter.Store(f)
	h.freezeLocked(c)
	if _, ok := h.mu.clients[c]; !ok {
		return
	}
	h.unindexLocked(c)
	h.indexLocked(c, f)
}

// takeSnapshotJob returns c's position for a job the writer takes up now:
// every change up to it was delivered or skipped.
func (h *hub) takeSnapshotJob(c *client) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return c.feed.pos
}

// endSnapshot moves c past the seam (every change up to end is dealt with)
// and unfreezes it: it continues with ordinary catch-up from there.
func (h *hub) endSnapshot(c *client, end int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.feed.pos = max(c.feed.pos, end)
	c.feed.frozen = false
}

// snapshotStep runs one step of the writer's snapshot job: take the
// snapshot (holding a token), send a page of rows, wait for the journal,
// or send a page of the seam. Only a write error is returned; a failed
// snapshot stops the client with resync-required (the types it covers
// cannot continue consistently).
func (c *client) snapshotStep() error {
	j := c.w.snap
	switch j.phase {
	case snapRows:
		return c.snapshotRows(j)
	case snapSeam:
		return c.snapshotSeam(j)
	}
	return nil
}

// startSnapshot begins j's snapshot; the caller has just taken a token.
func (c *client) startSnapshot(j *snapJob) {
	j.token, j.began = true, time.Now()
	j.p = c.srv.hub.takeSnapshotJob(c)
	j.phase = snapBeginning
	ctx, snaps, types := c.ctx, c.srv.cfg.Snapshots, j.types
	j.startWait(func(w *snapWait) { w.snap, w.err = snaps.Begin(ctx, types) })
}

// snapshotWaited takes the result of j's Begin or Complete.
func (c *client) snapshotWaited(j *snapJob) {
	w := j.wait
	j.wait = nil
	if w.err != nil {
		if w.snap != nil {
			w.snap.Close()
		}
		c.failSnapshot(j, w.err)
		return
	}
	switch j.phase {
	case snapBeginning:
		j.snap = w.snap
		j.phase = snapRows
		c.log.Debug("websocket snapshot started", "id", j.id, "types", strings.Join(j.types, ","), "position", j.p, "from", j.snap.From())
	case snapCompleting:
		j.end = w.end
		j.pos = min(j.p, j.snap.From())
		j.phase = snapSeam
	}
}

// snapshotRows sends one page of rows, then rests (snapshotRest); after
// the last, it gives the token back, waits for the journal and starts the
// seam.
func (c *client) snapshotRows(j *snapJob) error {
	began := time.Now()
	if began.Sub(j.began) > c.srv.cfg.SnapshotMaxDuration {
		c.failSnapshot(j, errSnapshotTooLong)
		return nil
	}
	defer func() {
		if j.phase == snapRows {
			j.rest = time.NewTimer(snapshotRest * time.Since(began))
		}
	}()
	rows, err := j.snap.Next(c.ctx)
	if err != nil {
		c.failSnapshot(j, err)
		return nil
	}
	if rows == nil {
		c.releaseSnapshotToken(j)
		j.phase = snapCompleting
		ctx, snap := c.ctx, j.snap
		j.startWait(func(w *snapWait) { w.end, w.err = snap.Complete(ctx) })
		return nil
	}
	f := c.filter.Load()
	bp := pagePool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 16*maxBatchBytes {
			*bp = (*bp)[:0]
			pagePool.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	for i := range rows {
		ch := &rows[i]
		if !c.maySee(ch) || !f.selectsRow(ch) {
			continue
		}
		data := encodeChange(ch)
		if len(buf) > 0 && len(buf)+len(data) > maxBatchBytes {
			if err := c.writeRaw(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = appendWireFrame(buf, data)
		j.rows++
	}
	*bp = buf
	if len(buf) > 0 {
		return c.writeRaw(buf)
	}
	return nil
}

// selectsRow reports whether the filter selects a snapshot row: a clause
// for its type whose match holds (operations do not apply to rows).
func (f *filter) selectsRow(ch *entities.Change) bool {
	if f == nil {
		return false
	}
	if f.all {
		return true
	}
	for i := range f.clauses {
		cl := &f.clauses[i]
		if cl.entityType == ch.EntityType && matchFields(cl.match, ch) {
			return true
		}
	}
	return false
}

// snapshotSeam sends one page of the changes after j.pos up to j.end that
// the client is owed: for a snapshotted type those the snapshot does not
// see, for other types those after the connection's position. After the
// last page it sends snapshot-complete and hands the client to ordinary
// catch-up.
func (c *client) snapshotSeam(j *snapJob) error {
	h := c.srv.hub
	if !j.seamHeld {
		return nil // the next turn waits for a catch-up token
	}
	f := c.filter.Load()
	types, none := readTypes(f, c.scope)
	var rows []entities.Change
	began := time.Now()
	if !none && j.pos < j.end {
		var err error
		rows, err = h.journal.ReadAfter(c.ctx, j.pos, h.page, types)
		if err != nil {
			c.failSnapshot(j, fmt.Errorf("read the journal after cursor %d: %w", j.pos, err))
			return nil
		}
	}
	// The token goes back dated as catch-up's are (catchUpPage): seam
	// pages of any number of clients read the journal within the same
	// budget as catch-up, and the live stream keeps the rest.
	h.slots <- time.Now().Add(catchUpRest * time.Since(began)) // never blocks: the token came from there
	j.seamHeld = false
	buf := pagePool.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= 16*maxBatchBytes {
			*buf = (*buf)[:0]
			pagePool.Put(buf)
		}
	}()
	out := (*buf)[:0]
	done := none || len(rows) < h.page
	for i := range rows {
		ch := &rows[i]
		if ch.Cursor > j.end {
			done = true
			break
		}
		if ch.Cursor <= j.pos {
			continue
		}
		j.pos = ch.Cursor
		if c.stopped.Load() || !c.maySee(ch) || !f.matches(ch) {
			continue
		}
		if j.set[ch.EntityType] {
			if j.snap.Visible(ch.Xid) {
				continue // in the rows already
			}
		} else if ch.Cursor <= j.p {
			continue // delivered before the request
		}
		data := encodeChange(ch)
		if len(out) > 0 && len(out)+len(data) > maxBatchBytes {
			if err := c.writeWire(out, c.w.lastCursor); err != nil {
				return err
			}
			out = out[:0]
		}
		out = appendWireFrame(out, data)
		c.w.lastCursor = ch.Cursor
	}
	*buf = out
	if len(out) > 0 {
		if err := c.writeWire(out, c.w.lastCursor); err != nil {
			return err
		}
	}
	if j.pos >= j.end {
		done = true
	}
	if !done {
		return nil
	}
	h.endSnapshot(c, j.end)
	c.log.Info("websocket snapshot complete", "id", j.id, "types", strings.Join(j.types, ","), "rows", j.rows, "cursor", j.end)
	c.endSnapshotJob(j)
	c.wakeWriter()
	return c.writeText(encodeControl(wire.ControlSnapshotComplete, j.end,
		fmt.Sprintf("snapshot of %s complete; changes after cursor %d follow", strings.Join(j.types, ", "), j.end)))
}

// writeRaw writes complete frames that carry no cursor (snapshot rows).
func (c *client) writeRaw(b []byte) error {
	nc := c.conn.NetConn()
	_ = nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
	_, err := nc.Write(b)
	return err
}

// failSnapshot ends the connection with resync-required: the rows sent
// so far cannot be completed, and the stream of the types they cover
// cannot continue without them.
func (c *client) failSnapshot(j *snapJob, err error) {
	// Whatever happens next, the job holds nothing more: its slot and
	// its database connections go back at once, and the writer takes no
	// further slot for it.
	c.endSnapshotJob(j)
	if c.ctx.Err() != nil {
		return // the connection is ending anyway
	}
	c.log.Warn("websocket snapshot failed", "id", j.id, "types", strings.Join(j.types, ","), "err", err)
	msg := "snapshot failed"
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, errSnapshotTooLong):
		msg = fmt.Sprintf("snapshot failed: its rows were not all read within %s (the server's snapshot-max-duration), while it held a database transaction; read faster or narrow the snapshot with match", c.srv.cfg.SnapshotMaxDuration)
	case errors.As(err, &te) && te.Timeout():
		msg = "snapshot failed: a database wait or statement timed out"
	}
	c.kick(resyncReason(msg + "; reconnect and request the snapshot again"))
}

// releaseSnapshotToken gives j's token back (once).
func (c *client) releaseSnapshotToken(j *snapJob) {
	if j.token {
		j.token = false
		c.srv.hub.snaps <- struct{}{}
	}
}

// endSnapshotJob releases what j holds; the writer calls it when the job
// ends, and on its way out.
func (c *client) endSnapshotJob(j *snapJob) {
	if w := j.wait; w != nil {
		// The connection is ending during Begin or Complete: stop the
		// call and wait for it, then close what Begin opened.
		j.wait = nil
		c.cancel()
		<-w.done
		if j.snap == nil && w.snap != nil {
			j.snap = w.snap
		}
	}
	if j.rest != nil {
		j.rest.Stop()
		j.rest = nil
	}
	c.releaseSnapshotToken(j)
	if j.seamHeld {
		j.seamHeld = false
		c.srv.hub.slots <- j.seamTok // unused: back as it came
	}
	if j.snap != nil {
		j.snap.Close()
		j.snap = nil
	}
	c.w.snap = nil
	c.snapshotting.Store(false)
}
