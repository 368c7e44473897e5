package wsapi

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
	"github.com/changecast/changecast/wire"
)

// This file tests catch-up from the journal and resume (?since=) against a
// real httptest server, real gorilla clients and the in-memory journal of
// helpers_test.go.

// cursorOf returns a change frame's cursor, failing the test if it has none.
func cursorOf(t testing.TB, f frame) int64 {
	t.Helper()
	s := f.Cursor
	if controlType(f) != "" {
		s, _ = f.Args["cursor"].(string)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("frame %+v: bad cursor %q", f, s)
	}
	return n
}

// controlType returns a control frame's type, or "" for other frames.
func controlType(f frame) string {
	if f.Namespace == "events" && f.Name == "control" {
		s, _ := f.Args["type"].(string)
		return s
	}
	return ""
}

// expectControl reads the next frame and checks it is a control frame of
// type want; it returns the frame.
func expectControl(t testing.TB, conn *websocket.Conn, want wire.ControlType) frame {
	t.Helper()
	f := readFrame(t, conn)
	if controlType(f) != string(want) {
		t.Fatalf("got frame %+v, want %s control", f, want)
	}
	return f
}

// dialSince dials with ?since=since and fails the test if the upgrade fails.
func (e *testEnv) dialSince(t testing.TB, token, since string) *websocket.Conn {
	t.Helper()
	conn, resp, body, err := e.dialRaw(t, e.wsURL()+"?since="+since, bearer(token))
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial since=%s: %v (status %d, body %s)", since, err, status, body)
	}
	return conn
}

// expectCursors reads change frames until it has len(want) of them and
// checks their cursors, in order; any control frame fails the test.
func expectCursors(t testing.TB, conn *websocket.Conn, want []int64) {
	t.Helper()
	for i, w := range want {
		f := readFrame(t, conn)
		if f.EntityType == "" {
			t.Fatalf("frame %d: got %+v, want the change with cursor %d", i, f, w)
		}
		if got := cursorOf(t, f); got != w {
			t.Fatalf("frame %d: got cursor %d, want %d", i, got, w)
		}
	}
}

// expectCursorsLagging is expectCursors for a client that may overflow on
// the way: lagging and caught-up frames are allowed (and skipped) between
// changes.
func expectCursorsLagging(t testing.TB, conn *websocket.Conn, want []int64) {
	t.Helper()
	for i := 0; i < len(want); {
		f := readFrame(t, conn)
		switch controlType(f) {
		case string(wire.ControlLagging), string(wire.ControlCaughtUp):
			continue
		case "":
		default:
			t.Fatalf("got frame %+v, want the change with cursor %d", f, want[i])
		}
		if got := cursorOf(t, f); got != want[i] {
			t.Fatalf("change %d: got cursor %d, want %d", i, got, want[i])
		}
		i++
	}
}

// cursorsWhere returns the cursors of changes that keep selects.
func cursorsWhere(changes []entities.Change, keep func(*entities.Change) bool) []int64 {
	var out []int64
	for i := range changes {
		if keep(&changes[i]) {
			out = append(out, changes[i].Cursor)
		}
	}
	return out
}

func ofType(types ...string) func(*entities.Change) bool {
	return func(c *entities.Change) bool { return slices.Contains(types, c.EntityType) }
}

// blobChanges returns n changes alternating over types, each carrying a
// payload of blobBytes so a client that stops reading fills its socket.
func blobChanges(from, n, blobBytes int, types ...string) []entities.Change {
	blob := strings.Repeat("x", blobBytes)
	out := make([]entities.Change, n)
	for i := range out {
		c := chg(types[(from+i)%len(types)], update, fmt.Sprint(from+i))
		if blobBytes > 0 {
			c.Payload = entitiestest.WithColumn(c.Payload, "blob", blob)
		}
		out[i] = c
	}
	return out
}

// TestCatchUp_SlowClient checks a client that stops reading while 5,000
// changes are published: Publish never blocks, another client keeps
// receiving promptly, and when the slow one reads again it gets all 5,000 in
// order, once each, between a lagging and a caught-up frame, with its queue
// and reads bounded throughout.
func TestCatchUp_SlowClient(t *testing.T) {
	const total, batchLen, queueLen, page = 5000, 5, 8, 100
	e := newJournalEnv(t, func(c *Config) {
		c.QueueLen = queueLen
		c.CatchUpPage = page
		c.WriteWait = time.Minute // the slow client is not reading on purpose
	})
	slow := e.dialFilter(t, e.token(t, "slow", RoleAdmin), `{"send-everything": true}`)
	fast := e.dialFilter(t, e.token(t, "fast", RoleAdmin), `{"send-everything": true}`)

	var published []entities.Change
	for n := 0; n < total; n += batchLen {
		start := time.Now()
		b := e.publish(blobChanges(n, batchLen, 8<<10, "pool", "job"))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Publish took %s", d)
		}
		published = append(published, b...)
		expectCursors(t, fast, cursorsWhere(b, ofType("pool", "job")))
	}
	if e.srv.Overflows() == 0 {
		t.Fatal("the slow client never overflowed; the test does not test catch-up")
	}

	// The slow client reads again: queued frames, lagging, the journal,
	// caught-up, with every cursor exactly once, in order.
	want := int64(1)
	var lagging, caughtUp int
	for want <= total || caughtUp < lagging {
		f := readFrame(t, slow)
		switch controlType(f) {
		// Under load the writer may catch up while publishing still goes
		// on and then overflow again: episodes alternate, lagging first,
		// and each control frame names the cursor delivered so far.
		case string(wire.ControlLagging):
			lagging++
			if lagging != caughtUp+1 {
				t.Fatalf("lagging #%d after %d caught-up frames", lagging, caughtUp)
			}
			if got := cursorOf(t, f); got != want-1 {
				t.Fatalf("lagging at cursor %d after delivering %d", got, want-1)
			}
			continue
		case string(wire.ControlCaughtUp):
			caughtUp++
			if caughtUp != lagging {
				t.Fatalf("caught-up #%d after %d lagging frames", caughtUp, lagging)
			}
			if got := cursorOf(t, f); got != want-1 {
				t.Fatalf("caught-up at cursor %d after delivering %d", got, want-1)
			}
			continue
		case "":
		default:
			t.Fatalf("unexpected control frame %+v", f)
		}
		if got := cursorOf(t, f); got != want {
			t.Fatalf("slow client: got cursor %d, want %d", got, want)
		}
		if f.key() != published[want-1].EntityType+"/update/"+fmt.Sprint(want-1) {
			t.Fatalf("slow client: cursor %d is %s", want, f.key())
		}
		want++
	}
	// Live again.
	m := e.publish([]entities.Change{marker()})
	expectCursors(t, slow, []int64{m[0].Cursor})
	expectCursors(t, fast, []int64{m[0].Cursor})

	if got := e.srv.Overflows(); got != uint64(lagging) || lagging == 0 {
		t.Errorf("got %d overflows and %d lagging frames, want equal and non-zero", got, lagging)
	}
	if got := e.srv.CatchUps(); got != uint64(lagging) {
		t.Errorf("got %d catch-ups, want %d (one per lagging episode)", got, lagging)
	}
	if got := e.srv.hub.queueHigh.Load(); got > queueLen {
		t.Errorf("queue reached %d frames, want at most QueueLen %d", got, queueLen)
	}
	reads, maxLimit, maxReturned, _ := e.journal.stats()
	if reads == 0 || maxLimit > page || maxReturned > page {
		t.Errorf("got %d reads, max limit %d, max returned %d; want reads of at most %d", reads, maxLimit, maxReturned, page)
	}
	e.journal.mu.Lock()
	horizons := e.journal.horizons
	e.journal.mu.Unlock()
	if horizons != 0 {
		t.Errorf("catch-up asked for the horizon %d times with no failed read; one query per page is enough", horizons)
	}
	if got := e.srv.CatchingUp(); got != 0 {
		t.Errorf("got %d clients catching up, want 0", got)
	}
}

// TestCatchUp_OversizedCommit checks Publish(head, nil): live clients fetch
// the commit from the journal, in order, exactly once, without a lagging
// frame; a client with no filter yet skips it.
func TestCatchUp_OversizedCommit(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 7 })
	e.srv.Publish(0, nil)
	tok := e.token(t, "u1", RoleAdmin)
	idle := e.dial(t, tok)
	conn := e.dialFilter(t, tok, `{"filters": [{"entity-type": "pool"}, {"entity-type": "job", "operations": ["delete"]}]}`)
	first := e.publish(mixed())
	expectCursors(t, conn, cursorsWhere(first, func(c *entities.Change) bool {
		return c.EntityType == "pool" && c.Operation != entities.OpTruncate || c.EntityType == "job" && c.Operation == del
	}))

	var big []entities.Change
	for i := range 50 {
		big = append(big, chg([]string{"pool", "job", "instance"}[i%3], []entities.Operation{create, update, del}[i/3%3], fmt.Sprint(i)))
	}
	head, stored := e.journal.append(big...)
	e.srv.Publish(head, nil)
	expectCursors(t, conn, cursorsWhere(stored, func(c *entities.Change) bool {
		return c.EntityType == "pool" || c.EntityType == "job" && c.Operation == del
	}))
	m := e.publish([]entities.Change{marker()})
	expectCursors(t, conn, []int64{m[0].Cursor}) // no control frame, no repeat

	e.sendFilter(t, idle, `{"send-everything": true}`)
	m = e.publish([]entities.Change{marker()})
	expectCursors(t, idle, []int64{m[0].Cursor})
	if got := e.srv.CatchUps(); got != 1 {
		t.Errorf("got %d catch-ups, want 1", got)
	}
	if got := e.srv.Overflows(); got != 0 {
		t.Errorf("got %d overflows, want 0", got)
	}
}

func TestResume_AtHead(t *testing.T) {
	e := newJournalEnv(t, nil)
	e.publish(blobChanges(0, 10, 0, "pool"))
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "10")
	e.sendFilter(t, conn, `{"send-everything": true}`)
	m := e.publish([]entities.Change{marker()})
	expectCursors(t, conn, []int64{m[0].Cursor})
	waitFor(t, "the client to be live", func() bool { return e.srv.CatchingUp() == 0 })
}

// TestResume_Middle resumes in the middle of the journal while Publish keeps
// running: the client gets every matching change after since exactly once,
// in order, across the seam between replay and live.
func TestResume_Middle(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 16; c.QueueLen = 64 })
	all := e.publish(blobChanges(0, 300, 0, "pool", "job", "instance"))
	tok := e.token(t, "u1", RoleViewer)
	conn := e.dialSince(t, tok, "100")

	// Changes published before the filter is set are not skipped.
	all = append(all, e.publish(blobChanges(300, 30, 0, "pool", "job"))...)
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "pool"}, {"entity-type": "instance"}]}`)

	done := make(chan []entities.Change)
	go func() { // the one publishing goroutine, as the appender
		var out []entities.Change
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 200 {
			out = append(out, e.publish(blobChanges(1000+i*5, r.IntN(5), 0, "pool", "job", "instance"))...)
		}
		out = append(out, e.publish([]entities.Change{marker()})...)
		done <- out
	}()
	all = append(all, <-done...)
	want := cursorsWhere(all, func(c *entities.Change) bool {
		return c.Cursor > 100 && (c.EntityType == "pool" || c.EntityType == "instance")
	})
	expectCursorsLagging(t, conn, want)
	m := e.publish([]entities.Change{marker()})
	expectCursorsLagging(t, conn, []int64{m[0].Cursor})
}

// TestResume_Refused checks a since that cannot be honoured: outside
// retention or beyond the head (resync-required, close) and malformed (400,
// no upgrade).
func TestResume_Refused(t *testing.T) {
	e := newJournalEnv(t, nil)
	e.publish(blobChanges(0, 100, 0, "pool"))
	e.journal.trim(50)
	tok := e.token(t, "u1", RoleAdmin)

	t.Run("before horizon", func(t *testing.T) {
		conn := e.dialSince(t, tok, "10")
		e.sendFilter(t, conn, `{"send-everything": true}`)
		f := expectControl(t, conn, wire.ControlResyncRequired)
		if msg, _ := f.Args["message"].(string); !strings.Contains(msg, "retention") {
			t.Fatalf("got message %q, want it to mention retention", msg)
		}
		if code := expectClose(t, conn); code != websocket.CloseTryAgainLater {
			t.Fatalf("got close code %d, want %d", code, websocket.CloseTryAgainLater)
		}
	})
	t.Run("journal emptied by retention", func(t *testing.T) {
		e := newJournalEnv(t, nil)
		e.publish(blobChanges(0, 20, 0, "pool"))
		e.journal.trim(20) // reads after 10 now fail, as store's do
		conn := e.dialSince(t, tok, "10")
		e.sendFilter(t, conn, `{"send-everything": true}`)
		expectControl(t, conn, wire.ControlResyncRequired)
		expectClose(t, conn)
	})
	t.Run("at horizon", func(t *testing.T) {
		conn := e.dialSince(t, tok, "50")
		e.sendFilter(t, conn, `{"send-everything": true}`)
		expectCursors(t, conn, []int64{51, 52})
	})
	t.Run("beyond head", func(t *testing.T) {
		conn := e.dialSince(t, tok, "101")
		f := expectControl(t, conn, wire.ControlResyncRequired) // no filter needed
		if msg, _ := f.Args["message"].(string); !strings.Contains(msg, "unknown cursor 101") {
			t.Fatalf("got message %q, want it to mention the unknown cursor", msg)
		}
		if code := expectClose(t, conn); code != websocket.CloseTryAgainLater {
			t.Fatalf("got close code %d, want %d", code, websocket.CloseTryAgainLater)
		}
	})
	for _, bad := range []string{"abc", "-1", "1.5", "", "+3", "99999999999999999999"} {
		t.Run("malformed "+bad, func(t *testing.T) {
			conn, resp, body, err := e.dialRaw(t, e.wsURL()+"?since="+bad, bearer(tok))
			if err == nil || conn != nil {
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error"`) {
				t.Fatalf("got %v %s, want 400 with a JSON error", resp, body)
			}
		})
	}
}

// TestResume_NoJournal checks a server without a journal refuses since with
// resync-required.
func TestResume_NoJournal(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "0")
	expectControl(t, conn, wire.ControlResyncRequired)
	expectClose(t, conn)
}

// TestCatchUp_RandomSeams publishes many random batches (and some commits
// handed over without their changes) while a client overflows again and
// again and catches up; it must receive exactly the matching cursors,
// strictly increasing.
func TestCatchUp_RandomSeams(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed>>1))
	e := newJournalEnv(t, func(c *Config) { c.QueueLen = 4; c.CatchUpPage = 1 + r.IntN(20) })
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin),
		`{"filters": [{"entity-type": "pool"}, {"entity-type": "job", "operations": ["create", "delete"]}]}`)
	keep := func(c *entities.Change) bool {
		return c.EntityType == "pool" || c.EntityType == "job" && (c.Operation == create || c.Operation == del)
	}

	type result struct {
		cursors  []int64
		controls []string
	}
	got := make(chan result, 1)
	go func() { // the client: reads until the final marker
		var res result
		defer func() { got <- res }()
		for {
			_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
			_, data, err := conn.ReadMessage()
			if err != nil {
				res.controls = append(res.controls, "error: "+err.Error())
				return
			}
			f, err := decodeFrame(data)
			if err != nil {
				res.controls = append(res.controls, "error: "+err.Error())
				return
			}
			if c := controlType(f); c != "" {
				res.controls = append(res.controls, c)
				continue
			}
			n, _ := strconv.ParseInt(f.Cursor, 10, 64)
			res.cursors = append(res.cursors, n)
			if id, _ := f.Payload["id"].(string); id == "final" {
				return
			}
		}
	}()

	types := []string{"pool", "job", "instance"}
	ops := []entities.Operation{create, update, del}
	var all []entities.Change
	for round := range 30 {
		for range r.IntN(30) {
			b := make([]entities.Change, r.IntN(25))
			for i := range b {
				b[i] = chg(types[r.IntN(3)], ops[r.IntN(3)], fmt.Sprintf("%d-%d", round, i))
			}
			if r.IntN(10) == 0 {
				head, stored := e.journal.append(b...)
				e.srv.Publish(head, nil)
				all = append(all, stored...)
			} else {
				all = append(all, e.publish(b)...)
			}
		}
		if r.IntN(2) == 0 { // sometimes let it rejoin live before the next round
			waitFor(t, "the client to rejoin live", func() bool { return e.srv.CatchingUp() == 0 })
		}
	}
	all = append(all, e.publish([]entities.Change{chg("pool", create, "final")})...)
	res := <-got
	want := cursorsWhere(all, keep)
	if !slices.Equal(res.cursors, want) {
		t.Fatalf("got %d cursors, want %d; first difference at %d\ngot  %v\nwant %v",
			len(res.cursors), len(want), firstDiff(res.cursors, want), prefix(res.cursors, 50), prefix(want, 50))
	}
	for _, c := range res.controls {
		if c != string(wire.ControlLagging) && c != string(wire.ControlCaughtUp) {
			t.Fatalf("unexpected control or error %q", c)
		}
	}
	t.Logf("%d changes, %d delivered, %d overflows, %d catch-ups, controls %d",
		len(all), len(want), e.srv.Overflows(), e.srv.CatchUps(), len(res.controls))
	if e.srv.Overflows() < 2 {
		t.Errorf("got %d overflows, want several", e.srv.Overflows())
	}
	if got := e.srv.hub.queueHigh.Load(); got > 4 {
		t.Errorf("queue reached %d frames, want at most 4", got)
	}
}

func firstDiff(a, b []int64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func prefix(s []int64, n int) []int64 { return s[:min(n, len(s))] }

// TestCatchUp_FilterChange changes the filter while the client catches up:
// the new filter applies from the next page, so what arrives is every pool
// change up to some page boundary B and every job change after it.
func TestCatchUp_FilterChange(t *testing.T) {
	const total = 3000
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 10; c.WriteWait = time.Minute })
	e.publish(blobChanges(0, total, 8<<10, "pool", "job"))
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "0")
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "pool"}]}`)
	first := readFrame(t, conn) // catch-up has started; the socket fills behind it
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "job"}]}`)
	m := e.publish([]entities.Change{chg("job", create, "final")})

	isPool := map[int64]bool{}
	got := []int64{}
	for f := first; ; f = readFrame(t, conn) {
		c := cursorOf(t, f)
		got = append(got, c)
		isPool[c] = f.EntityType == "pool"
		if c == m[0].Cursor {
			break
		}
	}
	if !slices.IsSorted(got) {
		t.Fatalf("cursors out of order: %v", got)
	}
	lastPool, firstJob := int64(0), int64(0)
	for _, c := range got {
		if isPool[c] {
			lastPool = c
		} else if firstJob == 0 {
			firstJob = c
		}
	}
	if lastPool == 0 || firstJob == 0 || firstJob < lastPool {
		t.Fatalf("got pool changes up to %d and job changes from %d", lastPool, firstJob)
	}
	if lastPool >= total-1 {
		t.Fatalf("the filter change landed after catch-up (last pool %d); the test needs it during", lastPool)
	}
	// blobChanges alternates pool (odd cursors) and job (even cursors); the
	// marker is a job.
	for b := lastPool; b < firstJob; b++ {
		var want []int64
		for c := int64(1); c <= m[0].Cursor; c++ {
			pool := c%2 == 1 && c <= total
			if pool && c <= b || !pool && c > b {
				want = append(want, c)
			}
		}
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("no page boundary explains what arrived: pools up to %d, jobs from %d, %d frames", lastPool, firstJob, len(got))
}

// TestCatchUp_Scope checks catch-up frames are authorized like live ones:
// viewers never see user, scoped tokens see only their types.
func TestCatchUp_Scope(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 3 })
	e.publish([]entities.Change{
		chg("user", create, "u1"), chg("pool", create, "p1"), chg("job", create, "j1"),
		chg("user", update, "u1"), chg("github_credentials", create, "c1"), chg("job", update, "j1"),
	})
	noScope := e.dialSince(t, e.token(t, "v1", RoleViewer), "0")
	e.sendFilter(t, noScope, `{"send-everything": true}`)
	scoped := e.dialSince(t, e.token(t, "v2", RoleViewer, "job", "user"), "0")
	e.sendFilter(t, scoped, `{"send-everything": true}`)
	adminScoped := e.dialSince(t, e.token(t, "a2", RoleAdmin, "user"), "0")
	e.sendFilter(t, adminScoped, `{"send-everything": true}`)
	e.publish([]entities.Change{chg("job", create, "marker"), chg("user", create, "marker")})
	expectKeys(t, noScope, "pool/create/p1", "job/create/j1", "github_credentials/create/c1", "job/update/j1", "job/create/marker")
	expectKeys(t, scoped, "job/create/j1", "job/update/j1", "job/create/marker")
	expectKeys(t, adminScoped, "user/create/u1", "user/update/u1", "user/create/marker")
}

// TestCatchUp_JournalErrors checks failed journal reads are retried with
// backoff, logged once, and lose nothing.
func TestCatchUp_JournalErrors(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpPage = 4 })
	all := e.publish(blobChanges(0, 20, 0, "pool"))
	e.journal.mu.Lock()
	e.journal.failNext = 3
	e.journal.mu.Unlock()
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "5")
	e.sendFilter(t, conn, `{"send-everything": true}`)
	expectCursors(t, conn, cursorsWhere(all, func(c *entities.Change) bool { return c.Cursor > 5 }))
	if _, _, _, failed := e.journal.stats(); failed != 3 {
		t.Fatalf("got %d failed reads, want 3", failed)
	}
	waitFor(t, "the recovery to be logged", func() bool { return strings.Contains(e.logs.String(), "journal reads recovered") })
	if n := strings.Count(e.logs.String(), "read journal failed"); n != 1 {
		t.Fatalf("read failure logged %d times, want once:\n%s", n, e.logs.String())
	}
}

// TestReadTypes checks the entity types a catch-up read asks the journal for.
func TestReadTypes(t *testing.T) {
	viewer := newScope(&Claims{Role: RoleViewer})
	scoped := newScope(&Claims{Role: RoleViewer, Scope: []string{"user", "pool", "job"}})
	cases := []struct {
		name  string
		f     *filter
		sc    scope
		types []string
		none  bool
	}{
		{"no filter", nil, viewer, nil, true},
		{"everything", &filter{all: true}, viewer, nil, false},
		{"everything scoped", &filter{all: true}, scoped, []string{"job", "pool"}, false},
		{"nothing", &filter{}, viewer, nil, true},
		{"clauses", &filter{clauses: []clause{{entityType: "pool", ops: opAll}, {entityType: "job", ops: opCreate}, {entityType: "pool", ops: opDelete}}}, viewer, []string{"job", "pool"}, false},
		{"clause out of scope", &filter{clauses: []clause{{entityType: "user", ops: opAll}}}, scoped, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			types, none := readTypes(c.f, c.sc)
			if !slices.Equal(types, c.types) || none != c.none {
				t.Fatalf("got %v, %v, want %v, %v", types, none, c.types, c.none)
			}
		})
	}
}
