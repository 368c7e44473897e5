package wsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/changecast/changecast/internal/testutil"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// The load test of issue 4: a real Server behind httptest, 1,000 real
// gorilla/websocket clients with mixed filters, b.N published changes of
// mixed entity types. Every client checks that it receives exactly the
// changes its filter selects, in order; any gap, duplicate, reordering or
// extra frame fails the benchmark. It is a benchmark so that plain go test
// does not run it:
//
//	go test -run '^$' -bench Hub_1000Connections -benchmem ./wsapi
//
// Publishing runs as fast as the hub accepts it, so clients that fall more
// than QueueLen frames behind switch to catch-up from the (in-memory)
// journal, as in production; "overflows" reports how often.

// loadConns is the number of connections of BenchmarkHub_1000Connections.
const loadConns = 1000

// loadPublishBatch is how many changes one Publish carries (one journal
// commit).
const loadPublishBatch = 50

// loadWait bounds each wait of the load test.
const loadWait = 2 * time.Minute

var (
	loadTypes     = []string{"instance", "pool", "job", "repository"}
	loadOps       = []entities.Operation{entities.OpCreate, entities.OpUpdate, entities.OpDelete}
	loadStatuses  = []string{"pending_create", "running", "stopped", "error", "deleting"}
	loadProviders = []string{"lxd", "incus", "openstack"}
)

// loadSub is one client's filter: the message it sends, and an independent
// statement of what that message selects (not the package's filter code:
// the point is to check it).
type loadSub struct {
	msg   string
	wants func(ch *entities.Change) bool
}

// loadSubs returns the filter of client i: a quarter send everything, a
// quarter one entity type, a quarter a type with operations, a quarter a
// type with a field match.
func loadSubs(i int) loadSub {
	typ := loadTypes[(i/4)%len(loadTypes)]
	switch i % 4 {
	case 0:
		return loadSub{`{"send-everything": true}`, func(*entities.Change) bool { return true }}
	case 1:
		return loadSub{
			fmt.Sprintf(`{"send-everything": false, "filters": [{"entity-type": %q}]}`, typ),
			func(ch *entities.Change) bool { return ch.EntityType == typ },
		}
	case 2:
		ops := [][]entities.Operation{{entities.OpCreate}, {entities.OpUpdate, entities.OpDelete}, {entities.OpDelete}}[(i/16)%3]
		list := ""
		for k, op := range ops {
			if k > 0 {
				list += ", "
			}
			list += strconv.Quote(string(op))
		}
		return loadSub{
			fmt.Sprintf(`{"filters": [{"entity-type": %q, "operations": [%s]}]}`, typ, list),
			func(ch *entities.Change) bool {
				if ch.EntityType != typ {
					return false
				}
				for _, op := range ops {
					if ch.Operation == op {
						return true
					}
				}
				return false
			},
		}
	default:
		if (i/4)%2 == 0 {
			a, b := loadStatuses[i%len(loadStatuses)], loadStatuses[(i+2)%len(loadStatuses)]
			return loadSub{
				fmt.Sprintf(`{"filters": [{"entity-type": "instance", "match": {"status": [%q, %q]}}]}`, a, b),
				func(ch *entities.Change) bool {
					s, _ := ch.Payload.Text("status")
					return ch.EntityType == "instance" && (s == a || s == b)
				},
			}
		}
		p := loadProviders[i%len(loadProviders)]
		return loadSub{
			fmt.Sprintf(`{"filters": [{"entity-type": "pool", "operations": ["create", "update"], "match": {"provider_name": %q}}]}`, p),
			func(ch *entities.Change) bool {
				s, _ := ch.Payload.Text("provider_name")
				return ch.EntityType == "pool" && ch.Operation != entities.OpDelete && s == p
			},
		}
	}
}

// loadChange returns the i-th published change: entity types, operations,
// statuses and providers in rotation, with rows of realistic size.
func loadChange(i int) entities.Change {
	typ := loadTypes[i%len(loadTypes)]
	op := loadOps[(i/len(loadTypes))%len(loadOps)]
	id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(strconv.Itoa(i)))
	var row *entities.Row
	switch typ {
	case "instance":
		m := testutil.InstanceValues(loadStatuses[(i/7)%len(loadStatuses)])
		m["id"] = id
		m["name"] = "garm-" + id.String()[:8]
		row = entities.RowOf(m)
	case "pool":
		row = entities.RowOf(map[string]any{
			"id": id, "provider_name": loadProviders[(i/5)%len(loadProviders)], "runner_prefix": "garm",
			"max_runners": int64(i % 50), "min_idle_runners": int64(1), "image": "ubuntu:24.04", "flavor": "default",
			"os_type": "linux", "os_arch": "amd64", "tags": []string{"self-hosted", "x64"}, "enabled": true,
			"extra_specs": json.RawMessage(`{"disk_size": 100}`), "created_at": time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		})
	case "job":
		row = entities.RowOf(map[string]any{
			"id": int64(i), "run_id": int64(i / 3), "action": "queued", "status": "queued", "name": "build",
			"runner_name": "garm-" + id.String()[:8], "repository_owner": "acme", "repository_name": "widgets",
			"labels": []string{"self-hosted", "linux"}, "created_at": time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		})
	default:
		row = entities.RowOf(map[string]any{"id": id, "owner": "acme", "name": "widgets-" + strconv.Itoa(i%100), "pool_balancer_type": "roundrobin"})
	}
	c := entities.Change{
		EntityType: typ, Operation: op, EntityID: rowID(row), Payload: row,
		CommitTime: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Microsecond),
	}
	if op == entities.OpUpdate {
		c.Previous = row
	}
	return c
}

// loadClient is one connection and what it must receive.
type loadClient struct {
	conn   *websocket.Conn
	expect []int64 // cursors, in order
	got    int     // how many of expect have arrived
	err    error
}

// receive reads frames until every expected change has arrived, checking
// each cursor against expect; it reports on done. Control frames (lagging,
// caught-up) are allowed in between.
func (c *loadClient) receive(done func()) {
	defer done()
	var buf bytes.Buffer // reused: no allocation per frame
	for c.got < len(c.expect) {
		_ = c.conn.SetReadDeadline(time.Now().Add(loadWait))
		_, r, err := c.conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			c.err = fmt.Errorf("after %d of %d changes: %w", c.got, len(c.expect), err)
			return
		}
		cur, ok, err := frameCursor(buf.Bytes())
		if err != nil {
			c.err = err
			return
		}
		if !ok {
			continue
		}
		if want := c.expect[c.got]; cur != want {
			c.err = fmt.Errorf("change %d: got cursor %d, want %d", c.got, cur, want)
			return
		}
		c.got++
	}
}

// expectQuiet checks that nothing but control frames arrives within d.
func (c *loadClient) expectQuiet(d time.Duration) error {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		_, data, err := c.conn.ReadMessage()
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if err != nil {
			return err
		}
		if cur, ok, _ := frameCursor(data); ok {
			return fmt.Errorf("extra change with cursor %d after all %d expected", cur, len(c.expect))
		}
	}
}

// frameCursor returns the cursor of an entity-change frame; ok is false for
// other frames. It scans rather than decodes, to keep the clients' cost
// small next to the server's (the benchmark's payloads never contain the
// key "cursor").
func frameCursor(data []byte) (cursor int64, ok bool, err error) {
	if !bytes.HasPrefix(data, []byte(`{"entity-type":`)) {
		if bytes.HasPrefix(data, []byte(`{"namespace":"error"`)) {
			return 0, false, fmt.Errorf("error frame: %s", data)
		}
		return 0, false, nil
	}
	const key = `,"cursor":"`
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false, fmt.Errorf("change frame without cursor: %.200s", data)
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false, fmt.Errorf("bad cursor in %.200s", data)
	}
	var n int64
	for _, d := range rest[:j] {
		if d < '0' || d > '9' || j > 18 {
			return 0, false, fmt.Errorf("bad cursor in %.200s", data)
		}
		n = n*10 + int64(d-'0')
	}
	if j == 0 {
		return 0, false, fmt.Errorf("bad cursor in %.200s", data)
	}
	return n, true, nil
}

// dialLoadClients connects n clients, each with its filter applied: a ping
// envelope after the filter is answered only once the filter is in force.
func dialLoadClients(b *testing.B, e *testEnv, n, readBuffer int) []*loadClient {
	b.Helper()
	tok := e.token(b, "load", RoleAdmin)
	clients := make([]*loadClient, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := websocket.Dialer{HandshakeTimeout: loadWait, ReadBufferSize: readBuffer}
			conn, _, err := d.Dial(e.wsURL(), bearer(tok))
			if err != nil {
				errs <- fmt.Errorf("dial client %d: %w", i, err)
				return
			}
			clients[i] = &loadClient{conn: conn}
			if err := applyFilter(conn, loadSubs(i).msg); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
	})
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return clients
}

// applyFilter sends filter, then a ping envelope, and waits for the ping's
// response.
func applyFilter(conn *websocket.Conn, filter string) error {
	if err := conn.WriteMessage(websocket.TextMessage, []byte(filter)); err != nil {
		return fmt.Errorf("send filter: %w", err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "ping", "id": "load"}`)); err != nil {
		return fmt.Errorf("send ping: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(loadWait))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("wait for the ping response: %w", err)
		}
		if bytes.HasPrefix(data, []byte(`{"namespace":"error"`)) {
			return fmt.Errorf("filter %s refused: %s", filter, data)
		}
		if bytes.Contains(data, []byte(`"name":"response"`)) {
			return nil
		}
	}
}

// BenchmarkHub_1000Connections publishes b.N changes to 1,000 connections
// with mixed filters and waits until each has received exactly what its
// filter selects. It reports deliveries/s (frames written to and read by
// clients, per second of the whole run) and queue overflows.
func BenchmarkHub_1000Connections(b *testing.B) {
	e := newJournalEnv(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	// Large read buffers: a client reads many queued frames per read(2),
	// so the clients' share of the two cores stays small next to the
	// server's.
	clients := dialLoadClients(b, e, loadConns, 64<<10)

	changes := make([]entities.Change, b.N)
	for i := range changes {
		changes[i] = loadChange(i)
	}
	deliveries := 0
	for i, c := range clients {
		sub := loadSubs(i)
		for k := range changes {
			if sub.wants(&changes[k]) {
				c.expect = append(c.expect, int64(k+1)) // the journal numbers from 1
			}
		}
		deliveries += len(c.expect)
	}

	var pending sync.WaitGroup
	pending.Add(len(clients))
	for _, c := range clients {
		go c.receive(pending.Done)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for k := 0; k < len(changes); k += loadPublishBatch {
		batch := e.publish(changes[k:min(k+loadPublishBatch, len(changes))])
		if got, want := batch[0].Cursor, int64(k+1); got != want {
			b.Fatalf("journal numbered change %d as %d, want %d", k, got, want)
		}
	}
	// A receiver that stops getting frames ends at its read deadline.
	pending.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for i, c := range clients {
		if c.err != nil {
			b.Fatalf("client %d (filter %s): %v", i, loadSubs(i).msg, c.err)
		}
	}
	var quiet sync.WaitGroup
	quietErrs := make([]error, len(clients))
	for i, c := range clients {
		quiet.Add(1)
		go func() { defer quiet.Done(); quietErrs[i] = c.expectQuiet(200 * time.Millisecond) }()
	}
	quiet.Wait()
	for i, err := range quietErrs {
		if err != nil {
			b.Fatalf("client %d (filter %s): %v", i, loadSubs(i).msg, err)
		}
	}
	b.ReportMetric(float64(deliveries)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(deliveries)/float64(b.N), "deliveries/op")
	b.ReportMetric(float64(e.srv.Overflows()), "overflows")
}

// idleHeapProfile, when set, is where BenchmarkServer_IdleConnections
// writes a heap profile while its connections are open (go test's
// -memprofile is written after they have closed).
var idleHeapProfile = flag.String("idle-heap-profile", "", "BenchmarkServer_IdleConnections: write a heap profile with every connection open to this file")

// BenchmarkServer_IdleConnections opens b.N authenticated connections, each
// with a filter in force, and keeps them open and idle until the end. It
// reports the Go heap and goroutine stack memory per connection, of the
// server and its (gorilla/websocket) clients together, which share the
// process; with -idle-heap-profile FILE, pprof's inuse_space separates the
// two (server allocations are under wsapi and the upgrader, client ones
// under websocket.(*Dialer)). The benchmark suite's "conns" scenario measures the
// real server's RSS alone.
func BenchmarkServer_IdleConnections(b *testing.B) {
	e := newTestEnv(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	clients := dialLoadClients(b, e, b.N, 0)
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := e.srv.Clients(); got != b.N {
		b.Fatalf("server counts %d clients, want %d", got, b.N)
	}
	n := float64(len(clients))
	if *idleHeapProfile != "" {
		f, err := os.Create(*idleHeapProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/conn")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
}

// rowID is the id column's text (Row.Text).
func rowID(r *entities.Row) string {
	s, _ := r.Text("id")
	return s
}
