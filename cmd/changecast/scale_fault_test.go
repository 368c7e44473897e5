package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/natsjournal/natstest"
	"github.com/changecast/changecast/store/storetest"
)

// follow is resumingClient.run across several servers: it sends filter
// after connecting and, when a connection drops, resumes with since on the
// next server of addrs.
func follow(ctx context.Context, c *resumingClient, addrs []string, filter string) {
	for i := 0; ctx.Err() == nil; i++ {
		c.mu.Lock()
		since := c.last
		c.mu.Unlock()
		addr := addrs[i%len(addrs)]
		h := http.Header{"Authorization": {"Bearer " + c.token}}
		d := websocket.Dialer{HandshakeTimeout: time.Second}
		conn, _, err := d.DialContext(ctx, "ws://"+addr+"/api/v1/ws/events?since="+strconv.FormatInt(since, 10), h)
		if err != nil {
			select { // that server is down: poll the next one
			case <-ctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		c.reconnects++
		c.mu.Unlock()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		if err := conn.WriteMessage(websocket.TextMessage, []byte(filter)); err == nil {
			c.read(conn)
		}
		stop()
		conn.Close()
	}
}

// waitAll waits until client holds n changes, or fails.
func waitAll(t *testing.T, client *resumingClient, n int, within time.Duration, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, problem := client.snapshot()
		if problem != nil {
			t.Fatalf("client: %v", problem)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client received %d of %d changes\n%s", got, n, diag())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// streamDiagnosis describes, for a stream that differs from the writer's
// record, the source position of every message whose (operation, id)
// appeared before, and of the messages around the first of them: enough
// to tell a republished batch from a reordered one.
func streamDiagnosis(t *testing.T, url string) string {
	t.Helper()
	j, err := natsjournal.Open(context.Background(), natsjournal.Config{URL: url})
	if err != nil {
		return "open the stream: " + err.Error()
	}
	defer j.Close()
	var all []entities.Change
	var after int64
	for {
		page, err := j.ReadAfter(context.Background(), after, 1000, nil)
		if err != nil {
			return "read the stream: " + err.Error()
		}
		all = append(all, page...)
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Cursor
	}
	line := func(c entities.Change) string {
		return fmt.Sprintf("cursor %d %s %s %s commit_lsn %s index %d xid %d", c.Cursor, c.EntityType, c.Operation, c.EntityID, c.CommitLSN, c.Index, c.Xid)
	}
	var b strings.Builder
	seen := map[string]int{}
	first := -1
	n := 0
	for i, c := range all {
		if c.EntityType == entities.EventEntityType {
			continue
		}
		k := fmt.Sprintf("%s/%d", c.CommitLSN, c.Index)
		if p, ok := seen[k]; ok {
			if first < 0 {
				first = i
			}
			if n++; n <= 5 {
				fmt.Fprintf(&b, "repeated source position: %s (first at cursor %d)\n", line(c), all[p].Cursor)
			}
		} else {
			seen[k] = i
		}
	}
	fmt.Fprintf(&b, "%d messages repeat a source position\n", n)
	if first >= 0 {
		for i := max(0, first-3); i < min(len(all), first+3); i++ {
			b.WriteString(line(all[i]) + "\n")
		}
	}
	return b.String()
}

// sameRecords fails unless got equals want.
func sameRecords(t *testing.T, what string, got, want []record) {
	t.Helper()
	if d := firstDifference(got, want); d != "" {
		t.Fatalf("%s: %s", what, d)
	}
}

// kill -9 of a real "changecast serve --journal-url nats://…" at random
// moments while a writer commits: the stream holds every change exactly
// once in commit order, and a resuming client receives each once.
func TestScale_SIGKILLLosesAndRepeatsNothing(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	url := storetest.NewDatabase(t)
	bin := changecastBinary(t)
	dataDir := t.TempDir()
	addr := freeAddr(t)
	logf, err := os.Create(filepath.Join(dataDir, "children.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"serve", "--database-url", url, "--journal-url", nurl, "--domain", "garm", "--listen", addr,
		"--data-dir", dataDir, "--slot", "cc_ncrash", "--log-level", "debug"}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	proc := startChild(t, bin, args, logf)
	t.Cleanup(func() { proc.kill() })
	waitUp(t, addr, logf)
	token := mintToken(t, dataDir, "admin")
	ctx, cancel := context.WithCancel(context.Background())
	client := &resumingClient{addr: addr, token: token}
	clientDone := make(chan struct{})
	go func() { defer close(clientDone); client.run(ctx) }()
	defer func() { cancel(); <-clientDone }()

	w := &writer{conn: connect(t, url), rng: rand.New(rand.NewPCG(seed, 1))}
	const minChanges, minKills = 12_000, 6
	writerErr := make(chan error, 1)
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for len(w.record) < minChanges {
			if err := w.commitOne(context.Background(), w.txSize()); err != nil {
				writerErr <- err
				return
			}
		}
	}()
	kills := 0
	for {
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond) // a random moment, not synchronisation
		proc.kill()
		kills++
		proc = startChild(t, bin, args, logf)
		if kills >= minKills && isClosed(writing) {
			break
		}
	}
	select {
	case err := <-writerErr:
		t.Fatalf("writer: %v", err)
	default:
	}
	t.Logf("%d kills; writer committed %d changes", kills, len(w.record))
	waitAll(t, client, len(w.record), 3*time.Minute, func() string {
		return firstDifference(readStream(t, nurl), w.record) + "\nchildren's log (tail):\n" + tail(logf.Name())
	})
	if d := firstDifference(readStream(t, nurl), w.record); d != "" {
		t.Fatalf("stream: %s\n%s\nchildren's log (tail):\n%s", d, streamDiagnosis(t, nurl), tail(logf.Name()))
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	sameRecords(t, "client", client.got, w.record)
	t.Logf("client reconnected %d times; received all %d changes once, in commit order", client.reconnects, len(w.record))
}

// Two watchers and two gateways (real processes) on a three-node NATS
// cluster, clients with mixed filters spread over both gateways while a
// writer commits: kill -9 of the active watcher (the standby takes over),
// kill -9 of a gateway (its clients resume on the other), loss of a NATS
// node (the stream continues). Every client ends with every matching
// change once, in commit order, and the stream equals the writer's
// record.
func TestScale_FaultsLoseAndRepeatNothing(t *testing.T) {
	nc := natstest.NewCluster(t)
	nurl := nc.URL()
	url := storetest.NewDatabase(t)
	bin := changecastBinary(t)
	dataDir := t.TempDir()
	logf, err := os.Create(filepath.Join(dataDir, "children.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	watcherAddrs := []string{freeAddr(t), freeAddr(t)}
	watcherArgs := func(addr string) []string {
		return []string{"serve", "--role", "watcher", "--database-url", url, "--journal-url", nurl, "--journal-replicas", "3",
			"--domain", "garm", "--listen", addr, "--data-dir", dataDir, "--slot", "cc_fault", "--log-level", "debug"}
	}
	watchers := []*child{startChild(t, bin, watcherArgs(watcherAddrs[0]), logf), nil}
	t.Cleanup(func() {
		for _, c := range watchers {
			if c != nil {
				c.kill()
			}
		}
	})
	waitReadyz(t, watcherAddrs[0], 60*time.Second, logf)
	watchers[1] = startChild(t, bin, watcherArgs(watcherAddrs[1]), logf)
	waitUp(t, watcherAddrs[1], logf)

	// The gateways are real processes too, so losing one is a kill -9:
	// its clients see their connection cut mid-frame, with no shutdown frame.
	gwAddrs := []string{freeAddr(t), freeAddr(t)}
	gateways := make([]*child, len(gwAddrs))
	for i, a := range gwAddrs {
		gateways[i] = startChild(t, bin, []string{"serve", "--role", "gateway", "--database-url", url, "--journal-url", nurl,
			"--journal-replicas", "3", "--domain", "garm", "--listen", a, "--data-dir", dataDir, "--log-level", "debug"}, logf)
	}
	t.Cleanup(func() {
		for _, c := range gateways {
			if c != nil {
				c.kill()
			}
		}
	})
	for _, a := range gwAddrs {
		waitReadyz(t, a, 60*time.Second, logf)
	}
	token := mintToken(t, dataDir, "admin")

	// Four clients, mixed filters, two on each gateway; each resumes on
	// the other gateway when its own goes away.
	const everythingFilter = `{"send-everything": true}`
	const jobsFilter = `{"send-everything": false, "filters": [{"entity-type": "job", "operations": ["create", "delete"]}]}`
	type follower struct {
		name   string
		c      *resumingClient
		addrs  []string
		filter string
		jobs   bool
	}
	followers := []follower{
		{"send-everything client on gateway 1", &resumingClient{token: token}, []string{gwAddrs[0], gwAddrs[1]}, everythingFilter, false},
		{"job create/delete client on gateway 1", &resumingClient{token: token}, []string{gwAddrs[0], gwAddrs[1]}, jobsFilter, true},
		{"send-everything client on gateway 2", &resumingClient{token: token}, []string{gwAddrs[1], gwAddrs[0]}, everythingFilter, false},
		{"job create/delete client on gateway 2", &resumingClient{token: token}, []string{gwAddrs[1], gwAddrs[0]}, jobsFilter, true},
	}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	for _, f := range followers {
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); follow(ctx, f.c, f.addrs, f.filter) }()
	}
	defer func() {
		cancel()
		for _, d := range done {
			<-d
		}
	}()

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	w := &writer{conn: connect(t, url), rng: rand.New(rand.NewPCG(seed, 1))}
	commitUntil := func(n int) {
		t.Helper()
		for len(w.record) < n {
			if err := w.commitOne(context.Background(), w.txSize()); err != nil {
				t.Fatalf("writer: %v", err)
			}
		}
	}
	commitUntil(2000)

	// kill -9 the active watcher while the writer commits.
	active := activeWatcher(t, watcherAddrs)
	watchers[active].kill()
	watchers[active] = nil
	killedAt := time.Now()
	took := make(chan time.Duration, 1)
	go func() {
		other := watcherAddrs[1-active]
		for time.Since(killedAt) < time.Minute {
			if readyz(other) {
				took <- time.Since(killedAt)
				return
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		took <- -1
	}()
	commitUntil(4000)
	gap := <-took
	if gap < 0 || gap > 10*time.Second {
		t.Fatalf("the standby took over after %s, want within 10s\n%s", gap, tail(logf.Name()))
	}
	t.Logf("takeover: the standby streamed %s after the active watcher was killed", gap.Round(time.Millisecond))

	// kill -9 a gateway while the writer commits: its clients resume on
	// the other with since.
	commitUntil(5000)
	gateways[0].kill()
	gateways[0] = nil
	commitUntil(6000)
	// Lose a NATS node: the stream continues on the other two.
	nc.Stop(2)
	commitUntil(8000)

	want := w.record
	var wantJobs []record
	for _, r := range want {
		if r.op != "update" {
			wantJobs = append(wantJobs, r)
		}
	}
	diag := func() string {
		var b strings.Builder
		b.WriteString(firstDifference(readStream(t, nurl), want) + "\n")
		for _, f := range followers {
			f.c.mu.Lock()
			fmt.Fprintf(&b, "%s: %d changes, last cursor %d, %d connections\n", f.name, len(f.c.got), f.c.last, f.c.reconnects)
			f.c.mu.Unlock()
		}
		b.WriteString("gateway 2 metrics:\n" + streamMetrics(gwAddrs[1]) + "children's log (tail):\n" + tail(logf.Name()))
		return b.String()
	}
	for _, f := range followers {
		n := len(want)
		if f.jobs {
			n = len(wantJobs)
		}
		waitAll(t, f.c, n, 2*time.Minute, diag)
	}
	sameRecords(t, "stream", readStream(t, nurl), want)
	for _, f := range followers {
		wantHere := want
		if f.jobs {
			wantHere = wantJobs
		}
		f.c.mu.Lock()
		got := append([]record(nil), f.c.got...)
		conns := f.c.reconnects
		f.c.mu.Unlock()
		sameRecords(t, f.name, got, wantHere)
		if f.addrs[0] == gwAddrs[0] && conns < 2 {
			t.Fatalf("%s: %d connection(s), want a resumption on gateway 2 after gateway 1 was killed", f.name, conns)
		}
		t.Logf("%s: all %d changes once, in commit order, over %d connections", f.name, len(wantHere), conns)
	}
}

// streamMetrics returns the stream and WebSocket lines of /metrics at addr.
func streamMetrics(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error() + "\n"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "changecast_stream") || strings.HasPrefix(l, "changecast_journal") || strings.HasPrefix(l, "changecast_ws") {
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

// readyz reports whether /readyz at addr answers 200.
func readyz(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReadyz waits for addr's /readyz to answer 200; on a timeout it
// fails with the last answer and the tail of the children's log.
func waitReadyz(t *testing.T, addr string, within time.Duration, log *os.File) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !readyz(addr) {
		if time.Now().After(deadline) {
			last := "no answer"
			if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				last = fmt.Sprintf("%s %s", resp.Status, body)
			} else {
				last = err.Error()
			}
			t.Fatalf("%s never became ready within %s (last /readyz: %s); children's log (last 32 KiB):\n%s", addr, within, last, childLog(log))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// childLog returns the end of the children's log.
func childLog(log *os.File) []byte {
	logs, _ := os.ReadFile(log.Name())
	if len(logs) > 32<<10 {
		logs = logs[len(logs)-32<<10:]
	}
	return logs
}

// activeWatcher returns which of the watchers at addrs is active.
func activeWatcher(t *testing.T, addrs []string) int {
	t.Helper()
	for i, a := range addrs {
		if readyz(a) {
			return i
		}
	}
	t.Fatal(fmt.Sprintf("no active watcher among %v", addrs))
	return -1
}
