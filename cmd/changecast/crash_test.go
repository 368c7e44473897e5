package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// changecastBinary builds the command once per test run, for tests that need
// a real process to kill.
func changecastBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "changecast-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "changecast")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeAddr returns a loopback address whose port nobody listens on, for a
// child process to listen on.
//
// The port is drawn from below the kernel's ephemeral range, not from
// "127.0.0.1:0": a port from there is an ephemeral one, and between this
// check and the child's bind an outgoing connection (another child's to
// NATS or PostgreSQL) may be given it as its local port, making the
// child's listen fail with "address already in use" (seen: a standby
// watcher that never came up in the scale fault test).
func freeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(low-10000))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: draw again
		}
		ln.Close()
		return addr
	}
	t.Fatalf("no free port found below %d", low)
	return ""
}

// ephemeralLow returns the lowest port of the kernel's ephemeral range
// (32768 when it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 11000 {
		return 32768
	}
	return lo
}

// record is one change as the writer committed it or a client received it.
type record struct {
	op string
	id string
}

// child is a changecast process that the test kills with SIGKILL.
type child struct {
	cmd *exec.Cmd
}

func startChild(t testing.TB, bin string, args []string, log *os.File) *child {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start changecast: %v", err)
	}
	return &child{cmd: cmd}
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

// resumingClient follows the stream with send-everything, reconnecting with
// since=<last cursor> whenever the connection drops, and checks that
// cursors only ever increase.
type resumingClient struct {
	addr, token string

	mu         sync.Mutex
	got        []record
	last       int64
	reconnects int
	problem    error
}

func (c *resumingClient) snapshot() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got), c.problem
}

func (c *resumingClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		since := c.last
		c.mu.Unlock()
		h := http.Header{"Authorization": {"Bearer " + c.token}}
		d := websocket.Dialer{HandshakeTimeout: time.Second}
		conn, _, err := d.DialContext(ctx, "ws://"+c.addr+"/api/v1/ws/events?since="+strconv.FormatInt(since, 10), h)
		if err != nil {
			select { // the server is down: poll until it is back
			case <-ctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		c.reconnects++
		c.mu.Unlock()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"send-everything": true}`)); err == nil {
			c.read(conn)
		}
		stop()
		conn.Close()
	}
}

func (c *resumingClient) read(conn *websocket.Conn) {
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var f struct {
			EntityType string         `json:"entity-type"`
			Operation  string         `json:"operation"`
			Payload    map[string]any `json:"payload"`
			Cursor     string         `json:"cursor"`
			Namespace  string         `json:"namespace"`
			Args       struct {
				Type string `json:"type"`
			} `json:"args"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			c.fail(fmt.Errorf("bad frame %s: %v", b, err))
			return
		}
		if f.Namespace != "" {
			if f.Args.Type == "resync-required" || f.Namespace == "error" {
				c.fail(fmt.Errorf("unexpected frame %s", b))
			}
			continue // shutdown, lagging, caught-up
		}
		cur, err := strconv.ParseInt(f.Cursor, 10, 64)
		c.mu.Lock()
		switch {
		case err != nil:
			c.problem = fmt.Errorf("frame without cursor: %s", b)
		case cur <= c.last:
			c.problem = fmt.Errorf("cursor %d after %d: duplicate or reordered", cur, c.last)
		case f.EntityType == "event":
			c.last = cur // changecast's own events (started, resumed, shutdown) share the stream
		default:
			c.last = cur
			c.got = append(c.got, record{f.Operation, fmt.Sprint(f.Payload["id"])})
		}
		c.mu.Unlock()
	}
}

func (c *resumingClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.problem == nil {
		c.problem = err
	}
}

// writer commits transactions of varied size against jobs, keeping its own
// record of every committed change in commit order (one connection, so its
// commit order is the database's).
type writer struct {
	conn   *pgx.Conn
	rng    *rand.Rand
	nextID int64
	live   []int64
	record []record
}

func (w *writer) txSize() int {
	switch p := w.rng.IntN(100); {
	case p < 70:
		return 1 + w.rng.IntN(20)
	case p < 97:
		return 50 + w.rng.IntN(400)
	default:
		return 1500 + w.rng.IntN(1500) // larger than a chunk: journaled in pieces
	}
}

func (w *writer) commitOne(ctx context.Context, size int) error {
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	live := append([]int64(nil), w.live...)
	var recs []record
	batch := &pgx.Batch{}
	for range size {
		switch p := w.rng.IntN(10); {
		case p < 7 || len(live) < 10:
			w.nextID++
			id := w.nextID
			batch.Queue("INSERT INTO jobs (id, status, name) VALUES ($1, 'queued', $2)", id, fmt.Sprintf("job-%d", id))
			live = append(live, id)
			recs = append(recs, record{"create", strconv.FormatInt(id, 10)})
		case p < 9:
			id := live[w.rng.IntN(len(live))]
			batch.Queue("UPDATE jobs SET status = $2, run_id = run_id + 1 WHERE id = $1", id, fmt.Sprintf("s%d", w.rng.IntN(1000)))
			recs = append(recs, record{"update", strconv.FormatInt(id, 10)})
		default:
			i := w.rng.IntN(len(live))
			id := live[i]
			live = append(live[:i], live[i+1:]...)
			batch.Queue("DELETE FROM jobs WHERE id = $1", id)
			recs = append(recs, record{"delete", strconv.FormatInt(id, 10)})
		}
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	w.live = live
	w.record = append(w.record, recs...)
	return nil
}

func TestCrash_SIGKILLLosesAndRepeatsNothing(t *testing.T) {
	url := storetest.NewDatabase(t)
	crashTest(t, url, url, 20_000, 10)
}

// crashTest kills a real "changecast serve" watching url, with its
// journal in journalURL (--journal-url unless it is url), at random
// moments at least minKills times while a writer commits minChanges, and
// checks that the journal and a resuming client hold every committed
// change exactly once, in commit order.
func crashTest(t *testing.T, url, journalURL string, minChanges, minKills int) {
	bin := changecastBinary(t)
	dataDir := t.TempDir()
	addr := freeAddr(t)
	logf, err := os.Create(filepath.Join(dataDir, "children.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"serve", "--database-url", url, "--domain", "garm", "--listen", addr, "--data-dir", dataDir, "--slot", "cc_crash", "--log-level", "debug"}
	if journalURL != url {
		args = append(args, "--journal-url", journalURL)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// The first start migrates; the writer needs the tables.
	proc := startChild(t, bin, args, logf)
	t.Cleanup(func() { proc.kill() })
	waitHTTP(t, addr) // serve answers only once the slot exists
	token := mintToken(t, dataDir, "admin")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &resumingClient{addr: addr, token: token}
	clientDone := make(chan struct{})
	go func() { defer close(clientDone); client.run(ctx) }()
	defer func() { cancel(); <-clientDone }()

	w := &writer{conn: connect(t, url), rng: rand.New(rand.NewPCG(seed, 1))}
	kills := 0
	writerErr := make(chan error, 1)
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		wctx := context.Background()
		for len(w.record) < minChanges {
			if err := w.commitOne(wctx, w.txSize()); err != nil {
				writerErr <- err
				return
			}
		}
	}()

	// Kill at random moments while the writer runs (and at least minKills
	// times), restarting after each kill.
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

	// The last process stays up: everything must arrive, exactly once.
	want := w.record
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n, problem := client.snapshot()
		if problem != nil {
			t.Fatalf("client: %v", problem)
		}
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client received %d of %d changes\n%s%s\nchildren's log (tail):\n%s", n, len(want), replicationState(t, url, journalURL), firstDifference(readJournal(t, journalURL), want), tail(logf.Name()))
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}

	if d := firstDifference(readJournal(t, journalURL), want); d != "" {
		t.Fatal(d)
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	if len(client.got) != len(want) {
		t.Fatalf("client received %d, want %d", len(client.got), len(want))
	}
	for i := range want {
		if client.got[i] != want[i] {
			t.Fatalf("client[%d] = %v, want %v", i, client.got[i], want[i])
		}
	}
	t.Logf("client reconnected %d times; received all %d changes once, in commit order", client.reconnects, len(want))
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitHTTP waits until the changecast at addr answers /healthz.
func waitHTTP(t testing.TB, addr string) {
	t.Helper()
	waitUp(t, addr, nil)
}

// waitUp waits until the changecast at addr answers /healthz; if it does
// not within a minute, the test fails showing the end of log (the
// children's output), when given.
func waitUp(t testing.TB, addr string, log *os.File) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("changecast at %s did not come up within a minute (%v)", addr, err)
			if log != nil {
				msg += fmt.Sprintf("; children's log (last 32 KiB):\n%s", childLog(log))
			}
			t.Fatal(msg)
		}
		time.Sleep(25 * time.Millisecond) // polling interval
	}
}

func readJournal(t testing.TB, url string) []record {
	t.Helper()
	c := connect(t, url)
	rows, err := c.Query(context.Background(), "SELECT seq, entity_type, operation, entity_id FROM changecast.journal ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	var prev int64
	for rows.Next() {
		var seq int64
		var typ string
		var r record
		if err := rows.Scan(&seq, &typ, &r.op, &r.id); err != nil {
			t.Fatal(err)
		}
		if seq != prev+1 {
			t.Fatalf("journal seq %d after %d: not dense", seq, prev)
		}
		prev = seq
		if typ == "event" {
			continue // changecast's own system events share the journal
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// replicationState describes the slot and WAL of the watched database at
// url, the stored offset and the journal at journalURL, for a failure
// message.
func replicationState(t testing.TB, url, journalURL string) string {
	t.Helper()
	c, jc := connect(t, url), connect(t, journalURL)
	var b bytes.Buffer
	for _, q := range []struct {
		c   *pgx.Conn
		sql string
	}{
		{c, "SELECT slot_name || ' active=' || active || ' restart_lsn=' || coalesce(restart_lsn::text, '') || ' confirmed_flush_lsn=' || coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE database = current_database()"},
		{jc, "SELECT 'offset ' || slot || ' ' || pg_lsn('0/0') + lsn FROM changecast.offsets"},
		{jc, "SELECT 'journal head ' || coalesce(max(seq), 0) || ' last commit_lsn ' || coalesce(pg_lsn('0/0') + max(commit_lsn), '0/0') FROM changecast.journal"},
		{c, "SELECT 'wal now ' || pg_current_wal_lsn()"},
	} {
		var line string
		if err := q.c.QueryRow(context.Background(), q.sql).Scan(&line); err != nil {
			line = fmt.Sprintf("%s: %v", q.sql, err)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// firstDifference compares the journal with the writer's record and
// describes where they first differ, or returns "".
func firstDifference(journal, want []record) string {
	for i := range min(len(journal), len(want)) {
		if journal[i] != want[i] {
			return fmt.Sprintf("journal[%d] = %v, writer committed %v (a change lost, repeated or reordered here; journal has %d, writer %d)\n", i, journal[i], want[i], len(journal), len(want))
		}
	}
	if len(journal) != len(want) {
		return fmt.Sprintf("journal holds %d changes, writer committed %d; they agree on the first %d\n", len(journal), len(want), min(len(journal), len(want)))
	}
	return ""
}
