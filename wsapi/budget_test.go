package wsapi

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// This file tests the catch-up budget (Config.CatchUpWorkers, issue 17):
// however many clients catch up, at most CatchUpWorkers journal reads are
// in flight, every client still gets everything exactly once and in order,
// and live clients are served while every slot is taken.

// countingJournal wraps the in-memory journal and counts the ReadAfter
// calls in flight, remembering the most seen at once. Reads can be made to
// wait for a gate (closed by the test) and to last at least hold, as a
// database round trip does, so reads that are allowed to overlap do.
type countingJournal struct {
	*memJournal
	gate     chan struct{} // nil: reads do not wait
	hold     time.Duration // 0: reads return at once
	inFlight atomic.Int64
	most     atomic.Int64
}

func (j *countingJournal) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	n := j.inFlight.Add(1)
	defer j.inFlight.Add(-1)
	for m := j.most.Load(); n > m && !j.most.CompareAndSwap(m, n); m = j.most.Load() {
	}
	if j.gate != nil {
		select {
		case <-j.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if j.hold > 0 {
		t := time.NewTimer(j.hold) // the read's own duration, not a wait for another goroutine
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return j.memJournal.ReadAfter(ctx, after, limit, types)
}

// newCountingEnv starts a server whose journal is a countingJournal.
func newCountingEnv(t testing.TB, j *countingJournal, mod func(*Config)) *testEnv {
	t.Helper()
	j.memJournal = &memJournal{}
	e := newTestEnv(t, func(c *Config) {
		c.Journal = j
		mod(c)
	})
	e.journal = j.memJournal // publish appends here, as the appender does
	return e
}

// cursorsUpTo returns 1..n.
func cursorsUpTo(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// TestCatchUp_WorkerBudget resumes twelve clients from the start of a
// 1,500-change journal with a budget of two workers: never more than two
// journal reads are in flight, and every client receives every change
// exactly once, in order, then rejoins live.
func TestCatchUp_WorkerBudget(t *testing.T) {
	const clients, workers, total, page = 12, 2, 1500, 25
	j := &countingJournal{hold: 2 * time.Millisecond}
	e := newCountingEnv(t, j, func(c *Config) {
		c.CatchUpWorkers = workers
		c.CatchUpPage = page
	})
	e.publish(blobChanges(0, total, 0, "pool", "job"))

	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = e.dialSince(t, e.token(t, "u", RoleAdmin), "0")
		e.sendFilter(t, conns[i], `{"send-everything": true}`)
	}
	for _, conn := range conns {
		expectCursors(t, conn, cursorsUpTo(total))
	}
	waitFor(t, "every client to rejoin live", func() bool { return e.srv.CatchingUp() == 0 })
	if most := j.most.Load(); most > workers {
		t.Fatalf("got %d journal reads in flight at once, want at most %d (CatchUpWorkers)", most, workers)
	}
	reads, _, _, _ := j.stats()
	if min := clients * total / page; reads < min {
		t.Fatalf("got %d journal reads, want at least %d (%d clients × %d pages)", reads, min, clients, total/page)
	}
	m := e.publish([]entities.Change{marker()})
	for _, conn := range conns {
		expectCursors(t, conn, []int64{m[0].Cursor})
	}
}

// TestCatchUp_LiveWhileBudgetTaken holds every catch-up slot with a
// journal read that cannot finish: Publish still returns and a live client
// receives every change, no more reads start than the budget allows, and
// once the journal answers again every catching-up client gets everything,
// the live changes included, exactly once and in order.
func TestCatchUp_LiveWhileBudgetTaken(t *testing.T) {
	const clients, workers, backlog = 6, 2, 100
	j := &countingJournal{gate: make(chan struct{})}
	e := newCountingEnv(t, j, func(c *Config) {
		c.CatchUpWorkers = workers
		c.CatchUpPage = 10
	})
	e.publish(blobChanges(0, backlog, 0, "pool", "job"))
	live := e.dialFilter(t, e.token(t, "live", RoleAdmin), `{"send-everything": true}`)
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = e.dialSince(t, e.token(t, "u", RoleAdmin), "0")
		e.sendFilter(t, conns[i], `{"send-everything": true}`)
	}
	waitFor(t, "every catch-up slot to be taken", func() bool { return j.inFlight.Load() >= workers })

	// The catch-up slots are all held by reads that wait for the gate:
	// live delivery must not need one.
	for i := range 20 {
		b := e.publish(blobChanges(backlog+i*5, 5, 0, "pool", "job"))
		expectCursors(t, live, cursorsWhere(b, ofType("pool", "job")))
	}
	if got := e.srv.CatchingUp(); got != clients {
		t.Fatalf("got %d clients catching up, want %d (the journal has not answered)", got, clients)
	}
	if most := j.most.Load(); most > workers {
		t.Fatalf("got %d journal reads in flight at once, want at most %d (CatchUpWorkers)", most, workers)
	}

	close(j.gate)
	head := e.srv.Head()
	for _, conn := range conns {
		expectCursors(t, conn, cursorsUpTo(head))
	}
	waitFor(t, "every client to rejoin live", func() bool { return e.srv.CatchingUp() == 0 })
	if most := j.most.Load(); most > workers {
		t.Fatalf("got %d journal reads in flight at once, want at most %d (CatchUpWorkers)", most, workers)
	}
	m := e.publish([]entities.Change{marker()})
	for _, conn := range append(conns, live) {
		expectCursors(t, conn, []int64{m[0].Cursor})
	}
}

// TestDefaultCatchUpWorkers checks the default budget: at most half the
// processors, at least one, at most DefaultCatchUpWorkers.
func TestDefaultCatchUpWorkers(t *testing.T) {
	for _, tc := range []struct{ procs, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {64, DefaultCatchUpWorkers}} {
		if got := defaultCatchUpWorkers(tc.procs); got != tc.want {
			t.Errorf("defaultCatchUpWorkers(%d) = %d, want %d", tc.procs, got, tc.want)
		}
	}
}

// TestCatchUp_RawFramesNeedNoCompression pins what catch-up's and the
// live path's raw frame writes rely on (they bypass gorilla's writer):
// the server never negotiates permessage-deflate, even when the client
// offers it, so the uncompressed frames written directly are what the
// client expects. A server that starts negotiating compression fails here
// and must revisit writeWire.
func TestCatchUp_RawFramesNeedNoCompression(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 4 })
	all := e.publish(blobChanges(0, 10, 0, "pool"))
	d := websocket.Dialer{HandshakeTimeout: waitTimeout, EnableCompression: true}
	conn, resp, err := d.Dial(e.wsURL()+"?since=0", bearer(e.token(t, "u1", RoleAdmin)))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("got Sec-WebSocket-Extensions %q, want none: catch-up and live frames are written uncompressed, around gorilla's writer", ext)
	}
	e.sendFilter(t, conn, `{"send-everything": true}`)
	expectCursors(t, conn, cursorsWhere(all, ofType("pool")))
	m := e.publish([]entities.Change{marker()})
	expectCursors(t, conn, []int64{m[0].Cursor})
}

// TestCatchUp_SlowSocketHoldsNoSlot resumes a client that does not read
// behind 16 MiB of changes, with a single catch-up slot: its writer blocks
// on a full socket, yet a second resuming client still catches up in
// full, because a page is written only after its slot is given back.
func TestCatchUp_SlowSocketHoldsNoSlot(t *testing.T) {
	const total = 2000
	e := newJournalEnv(t, func(c *Config) {
		c.CatchUpWorkers = 1
		c.CatchUpPage = 50
		c.WriteWait = time.Minute // the slow client is not reading on purpose
	})
	all := e.publish(blobChanges(0, total, 8<<10, "pool"))
	slow := e.dialSince(t, e.token(t, "slow", RoleAdmin), "0")
	e.sendFilter(t, slow, `{"send-everything": true}`)
	fast := e.dialSince(t, e.token(t, "fast", RoleAdmin), "0")
	e.sendFilter(t, fast, `{"send-everything": true}`)

	expectCursors(t, fast, cursorsWhere(all, ofType("pool")))
	waitFor(t, "the fast client to rejoin live", func() bool { return e.srv.CatchingUp() == 1 })
	if got := e.srv.hub.position(slowClient(t, e)); got >= int64(total) {
		t.Fatalf("the slow client reached cursor %d of %d without reading; the test does not fill its socket", got, total)
	}
}

// slowClient returns the one registered client still catching up.
func slowClient(t testing.TB, e *testEnv) *client {
	t.Helper()
	for _, c := range e.srv.hub.snapshot() {
		if c.catchingUp.Load() {
			return c
		}
	}
	t.Fatal("no client is catching up")
	return nil
}
