package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store/storetest"
)

// These tests cover what happens when the replication slot is lost
// (docs/guarantees.md, "When a replication slot is lost"): never a silent
// loss, a recorded gap, resync-required for everyone who needs it, and
// events that tell the truth.

// jobWriter inserts one job row at a time until stopped, so changes are
// committed before, during and after a fault.
type jobWriter struct {
	next   atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	errors []error
}

func startJobWriter(t testing.TB, url string, first int64) *jobWriter {
	t.Helper()
	w := &jobWriter{stop: make(chan struct{}), done: make(chan struct{})}
	w.next.Store(first)
	conn := connect(t, url)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(3 * time.Millisecond) // about 300 commits per second
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			id := w.next.Load()
			if _, err := conn.Exec(context.Background(), `INSERT INTO jobs (id, run_id, status) VALUES ($1, 1, 'queued')`, id); err != nil {
				w.mu.Lock()
				w.errors = append(w.errors, err)
				w.mu.Unlock()
				return
			}
			w.next.Add(1)
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *jobWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// control is a control frame's args.
type control struct {
	Type    string `json:"type"`
	Cursor  string `json:"cursor"`
	Message string `json:"message"`
}

// readUntilControl reads frames until a control frame of type want and
// returns it; it fails on any other stop.
func readUntilControl(t testing.TB, c *websocket.Conn, want string, within time.Duration) control {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c.SetReadDeadline(deadline)
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for a %s control frame: %v", want, err)
		}
		var f struct {
			Namespace string  `json:"namespace"`
			Name      string  `json:"name"`
			Args      control `json:"args"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame is not JSON: %s", b)
		}
		if f.Namespace == "events" && f.Name == "control" && f.Args.Type == want {
			return f.Args
		}
	}
}

// dropSlot terminates the walsender of slot and drops the slot, retrying
// while changecast reconnects in between.
func dropSlot(t testing.TB, conn *pgx.Conn, slot string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("drop slot %s: %v", slot, err)
		}
	}
}

// storedEvent is a row of changecast.events, as these tests check it.
type storedEvent struct {
	action, severity, description string
	metadata                      map[string]any
}

func storedEvents(t testing.TB, conn *pgx.Conn) []storedEvent {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT action, severity, description, metadata FROM changecast.events WHERE category = 'replication' ORDER BY created_at, id`)
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedEvent, error) {
		var e storedEvent
		return e, r.Scan(&e.action, &e.severity, &e.description, &e.metadata)
	})
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	return evs
}

func countAction(evs []storedEvent, action string) int {
	n := 0
	for _, e := range evs {
		if e.action == action {
			n++
		}
	}
	return n
}

// checkLossEvents checks the events of one slot loss: exactly one critical
// slot_lost naming the range, then exactly one end event (end: resumed, or
// started for a process whose first stream follows the loss) that is a
// warning naming the loss, and no event claiming nothing was lost after
// the loss.
func checkLossEvents(t testing.TB, conn *pgx.Conn, kind, end string) {
	t.Helper()
	var evs, after []storedEvent
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, after = storedEvents(t, conn), nil
		for i, e := range evs {
			if e.action == "slot_lost" {
				after = evs[i+1:]
			}
		}
		if countAction(after, end) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	if n := countAction(evs, "slot_lost"); n != 1 {
		t.Fatalf("%d slot_lost events, want 1: %+v", n, evs)
	}
	var lost storedEvent
	for _, e := range evs {
		if e.action == "slot_lost" {
			lost = e
		}
	}
	for _, e := range after {
		if strings.Contains(e.description, "nothing was lost") {
			t.Errorf("event %s says %q after the slot was lost", e.action, e.description)
		}
	}
	from, _ := lost.metadata["from_lsn"].(string)
	to, _ := lost.metadata["to_lsn"].(string)
	if lost.severity != "critical" || lost.metadata["kind"] != kind || from == "" || to == "" ||
		!strings.Contains(lost.description, from) || !strings.Contains(lost.description, to) || !strings.Contains(lost.description, "max_slot_wal_keep_size") {
		t.Errorf("slot_lost event %+v: want critical, kind %s, and a description naming %s..%s and the fix", lost, kind, from, to)
	}
	if n := countAction(after, end); n != 1 {
		t.Errorf("%d %s events after slot_lost, want exactly 1: %+v", n, end, after)
	}
	for _, e := range after {
		if e.action == end && (e.severity != "warning" || !strings.Contains(e.description, "were lost")) {
			t.Errorf("%s event %+v: want a warning that names the loss", end, e)
		}
	}
}

// expectResync dials with since and expects resync-required naming the
// loss.
func expectResync(t testing.TB, addr, token string, since int64) control {
	t.Helper()
	ws := dialSince(t, addr, token, since)
	sendJSON(t, ws, `{"send-everything": true}`)
	ctl := readUntilControl(t, ws, "resync-required", 30*time.Second)
	if !strings.Contains(ctl.Message, "were lost") {
		t.Errorf("resync-required for since=%d says %q; want it to say changes were lost", since, ctl.Message)
	}
	return ctl
}

// expectLiveChange connects without since and sees a job inserted now.
func expectLiveChange(t testing.TB, addr, token string, conn *pgx.Conn, id int64) {
	t.Helper()
	ws := dialWS(t, addr, token)
	sendJSON(t, ws, `{"filters": [{"entity-type": "job"}]}`)
	filterApplied(t, ws)
	exec1(t, conn, fmt.Sprintf(`INSERT INTO jobs (id, run_id, status) VALUES (%d, 1, 'queued')`, id))
	for {
		f, _ := readChange(t, ws, 30*time.Second)
		if f.Payload["id"] == float64(id) {
			return
		}
	}
}

func TestServe_SlotDroppedWhileStreaming(t *testing.T) {
	const slot = "cc_dropped"
	srv, url, dataDir := readyServer(t, slot)
	token := mintToken(t, dataDir, "admin")
	sql := connect(t, url)

	live := dialWS(t, srv.addr, token)
	sendJSON(t, live, `{"filters": [{"entity-type": "job"}]}`)
	filterApplied(t, live)
	writer := startJobWriter(t, url, 1)
	first, _ := readChange(t, live, 30*time.Second)
	before := cursorOf(t, first)

	dropSlot(t, sql, slot)
	ctl := readUntilControl(t, live, "resync-required", 60*time.Second)
	if !strings.Contains(ctl.Message, "were lost") {
		t.Errorf("connected client's resync-required says %q; want it to say changes were lost", ctl.Message)
	}
	writer.halt()
	if len(writer.errors) > 0 {
		t.Fatalf("writer: %v", writer.errors)
	}

	srv.waitReady(t)
	expectResync(t, srv.addr, token, before)
	checkLossEvents(t, sql, "missing", "resumed")
	expectLiveChange(t, srv.addr, token, sql, 1_000_000)

	var gaps int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM changecast.journal_gaps`).Scan(&gaps); err != nil || gaps != 1 {
		t.Fatalf("journal_gaps has %d rows (%v), want 1", gaps, err)
	}
}

func TestServe_SlotInvalidatedWhileStopped(t *testing.T) {
	const slot = "cc_invalidated"
	cluster := storetest.NewCluster(t)
	url := cluster.URL()
	dataDir := t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: slot}
	srv := startServe(t, cfg, nil)
	srv.waitReady(t)
	token := mintToken(t, dataDir, "admin")
	sql := connect(t, url)

	ws := dialWS(t, srv.addr, token)
	sendJSON(t, ws, `{"filters": [{"entity-type": "job"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO jobs (id, run_id, status) VALUES (1, 1, 'queued')`)
	f, _ := readChange(t, ws, 30*time.Second)
	before := cursorOf(t, f)
	srv.stop(t)

	// With changecast stopped, PostgreSQL may keep at most 1 MB of WAL
	// for the slot; then writes and checkpoints invalidate it.
	exec1(t, sql, `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	exec1(t, sql, `SELECT pg_reload_conf()`)
	deadline := time.Now().Add(60 * time.Second)
	for id := 2; ; id++ {
		exec1(t, sql, fmt.Sprintf(`INSERT INTO jobs (id, run_id, status) VALUES (%d, 1, 'queued')`, id))
		exec1(t, sql, `SELECT pg_switch_wal()`)
		exec1(t, sql, `CHECKPOINT`)
		var status string
		if err := sql.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status); err != nil {
			t.Fatalf("slot status: %v", err)
		}
		if status == "lost" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never invalidated (wal_status %q)", status)
		}
	}

	srv = startServe(t, cfg, nil)
	srv.waitReady(t)
	expectResync(t, srv.addr, token, before)
	checkLossEvents(t, sql, "invalidated", "started")
	expectLiveChange(t, srv.addr, token, sql, 1_000_000)
	var status string
	if err := sql.QueryRow(context.Background(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status); err != nil || status == "lost" {
		t.Fatalf("slot after recovery: wal_status %q (%v), want a new, usable slot", status, err)
	}
}

// TestServe_OnSlotLossStop checks that --on-slot-loss stop exits with the
// fix instead of continuing, whether the slot is lost while serve is down
// or while it streams, and records nothing.
func TestServe_OnSlotLossStop(t *testing.T) {
	const slot = "cc_lossstop"
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: slot, onSlotLoss: string(pipeline.SlotLossStop)}
	srv := startServe(t, cfg, nil)
	srv.waitReady(t)
	sql := connect(t, url)
	exec1(t, sql, `INSERT INTO jobs (id, run_id, status) VALUES (1, 1, 'queued')`)
	waitOffset(t, sql, slot)

	// While streaming.
	dropSlot(t, sql, slot)
	select {
	case <-srv.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop after the slot was dropped\nlogs:\n%s", srv.logs.String())
	}
	checkStopError(t, srv.err)

	// At start, through the command line: the slot is still missing.
	var stdout, stderr syncBuffer
	err := run(context.Background(), []string{"serve", "--database-url", url, "--domain", "garm", "--data-dir", dataDir, "--slot", slot,
		"--listen", "127.0.0.1:0", "--on-slot-loss", "stop"}, &stdout, &stderr)
	checkStopError(t, err)
	if err := run(context.Background(), []string{"serve", "--database-url", url, "--domain", "garm", "--data-dir", dataDir, "--on-slot-loss", "maybe"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), `use "resync" or "stop"`) {
		t.Fatalf("--on-slot-loss maybe: %v, want an error naming the choices", err)
	}

	var gaps int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM changecast.journal_gaps`).Scan(&gaps); err != nil || gaps != 0 {
		t.Fatalf("journal_gaps has %d rows (%v), want none under --on-slot-loss stop", gaps, err)
	}
	var exists bool
	if err := sql.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil || exists {
		t.Fatalf("slot exists = %t (%v), want no new slot under --on-slot-loss stop", exists, err)
	}
}

func checkStopError(t testing.TB, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "no longer exists") || !strings.Contains(err.Error(), "--on-slot-loss resync") {
		t.Fatalf("serve returned %v; want the lost slot and the fix", err)
	}
	if code := exitCode(err, io.Discard); code == 0 {
		t.Fatalf("exit code %d for %v, want non-zero", code, err)
	}
}

// waitOffset waits until an offset is stored for slot.
func waitOffset(t testing.TB, sql *pgx.Conn, slot string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var lsn int64
		err := sql.QueryRow(context.Background(), `SELECT lsn FROM changecast.offsets WHERE slot = $1`, slot).Scan(&lsn)
		if err == nil && lsn > 0 {
			return
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("read offset: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no offset stored within 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// TestServe_UpgradesRefusedWhileSlotUnusable checks that while a lost slot
// is being replaced, new connections get 503 with the reason, /readyz is
// 503, and connected clients keep their socket with a lagging frame; once
// streaming resumes, connections are accepted again.
func TestServe_UpgradesRefusedWhileSlotUnusable(t *testing.T) {
	const slot = "cc_unusable"
	hold := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	srv, url, dataDir := readyServer(t, slot, func(cfg *serveConfig) {
		var once sync.Once
		cfg.slotLost = func() {
			if calls.Add(1) > 1 {
				t.Logf("slot recovery retried: the first attempt failed")
			}
			once.Do(func() {
				close(hold)
				<-release
			})
		}
	})
	token := mintToken(t, dataDir, "admin")
	sql := connect(t, url)
	live := dialWS(t, srv.addr, token)
	sendJSON(t, live, `{"filters": [{"entity-type": "job"}]}`)
	filterApplied(t, live)

	dropSlot(t, sql, slot)
	select {
	case <-hold:
	case <-time.After(60 * time.Second):
		t.Fatalf("the pipeline never started to recover the slot\nlogs:\n%s", srv.logs.String())
	}
	ctl := readUntilControl(t, live, "lagging", 30*time.Second)
	if !strings.Contains(ctl.Message, "was lost") {
		t.Errorf("lagging frame says %q; want the reason", ctl.Message)
	}
	h := http.Header{"Authorization": {"Bearer " + token}}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.addr+"/api/v1/ws/events", h)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial while the slot is unusable: %v, %v; want 503", err, resp)
	}
	var body struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if !strings.Contains(body.Error, "was lost") {
		t.Errorf("503 body %+v; want the reason", body)
	}
	if r, err := http.Get("http://" + srv.addr + "/readyz"); err != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while the slot is unusable: %v, %v; want 503", r, err)
	}
	close(release)
	readUntilControl(t, live, "resync-required", 30*time.Second)
	srv.waitReady(t)
	dialWS(t, srv.addr, token)
}

// TestServe_OutageRaisesOneBeginAndOneEnd checks that an outage with many
// reconnection attempts raises exactly one postgres_unreachable and one
// resumed event, that the resumed event says nothing was lost (the slot
// survived), and that a second outage raises its own pair.
func TestServe_OutageRaisesOneBeginAndOneEnd(t *testing.T) {
	cluster := storetest.NewCluster(t)
	url := cluster.URL()
	srv := startServe(t, serveConfig{common: common{dataDir: t.TempDir()}, databaseURL: url, slot: "cc_outage"}, nil)
	srv.waitReady(t)
	ctx := context.Background()
	for outage := 1; outage <= 2; outage++ {
		before := strings.Count(srv.logs.String(), "replication interrupted; reconnecting")
		if err := cluster.Stop(ctx); err != nil {
			t.Fatalf("stop PostgreSQL: %v", err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for strings.Count(srv.logs.String(), "replication interrupted; reconnecting") < before+3 {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than 3 reconnection attempts within 60s\nlogs:\n%s", srv.logs.String())
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		if err := cluster.Start(ctx); err != nil {
			t.Fatalf("start PostgreSQL: %v", err)
		}
		srv.waitReady(t)
		sql := connect(t, url)
		var evs []storedEvent
		for deadline := time.Now().Add(30 * time.Second); ; {
			evs = storedEvents(t, sql)
			if countAction(evs, "resumed") >= outage || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		if got := countAction(evs, "postgres_unreachable"); got != outage {
			t.Errorf("after outage %d: %d postgres_unreachable events, want %d: %+v", outage, got, outage, evs)
		}
		if got := countAction(evs, "resumed"); got != outage {
			t.Errorf("after outage %d: %d resumed events, want %d: %+v", outage, got, outage, evs)
		}
		for _, e := range evs {
			if e.action == "resumed" && (e.severity != "success" || !strings.Contains(e.description, "nothing was lost")) {
				t.Errorf("resumed event %+v: want success, nothing lost", e)
			}
		}
		sql.Close(ctx)
	}
}

// TestServe_StopsOnAFaultThatCannotHeal checks that a fault retrying
// cannot fix (here: the role's password changed, so every reconnect gets
// SQLSTATE 28P01) stops serve with its fix instead of retrying forever.
func TestServe_StopsOnAFaultThatCannotHeal(t *testing.T) {
	admin := storetest.NewDatabase(t)
	sql := connect(t, admin)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	exec1(t, sql, `CREATE ROLE cc_rotate LOGIN REPLICATION PASSWORD 'old-password'`)
	t.Cleanup(func() {
		c := connect(t, admin)
		_, _ = c.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cc_rotate'`)
	})
	exec1(t, sql, `GRANT ALL ON SCHEMA public TO cc_rotate`)
	exec1(t, sql, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO cc_rotate`, strings.TrimPrefix(u.Path, "/")))
	// Over TCP, where the password is checked (the unix socket trusts).
	tcp := fmt.Sprintf("postgres://cc_rotate:old-password@127.0.0.1:%s%s?sslmode=disable", q.Get("port"), u.Path)
	srv := startServe(t, serveConfig{common: common{dataDir: t.TempDir()}, databaseURL: tcp, slot: "cc_rotate"}, nil)
	srv.waitReady(t)

	exec1(t, sql, `ALTER ROLE cc_rotate PASSWORD 'new-password'`)
	exec1(t, sql, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cc_rotate'`)
	select {
	case <-srv.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve kept retrying with a wrong password\nlogs:\n%s", srv.logs.String())
	}
	if srv.err == nil || !strings.Contains(srv.err.Error(), "refused the credentials") || !strings.Contains(srv.err.Error(), "28P01") {
		t.Fatalf("serve returned %v; want the authentication failure and its fix", srv.err)
	}
	if strings.Contains(srv.err.Error(), "old-password") || strings.Contains(srv.logs.String(), "old-password") {
		t.Fatalf("the password leaked into the error or the logs")
	}
}
