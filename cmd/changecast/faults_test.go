package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
	"github.com/changecast/changecast/wsapi"
)

// cursorOf returns a change frame's cursor.
func cursorOf(t testing.TB, f frame) int64 {
	t.Helper()
	var c struct {
		Cursor string `json:"cursor"`
	}
	if err := json.Unmarshal(f.raw, &c); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(c.Cursor, 10, 64)
	if err != nil {
		t.Fatalf("frame without a cursor: %s", f.raw)
	}
	return n
}

// dialSince connects with ?since=cursor.
func dialSince(t testing.TB, addr, token string, since int64) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}}
	c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/api/v1/ws/events?since=%d", addr, since), h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial since=%d: %v (status %d)", since, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readChange reads frames until an entity change, skipping control frames
// it is told to expect and changecast's own system events (entity type
// event, which send-everything includes); it returns the change and the
// control types seen.
func readChange(t testing.TB, c *websocket.Conn, within time.Duration) (frame, []string) {
	t.Helper()
	var controls []string
	for {
		f := readFrame(t, c, within)
		if f.EntityType == "event" {
			continue
		}
		if f.Namespace == "" {
			return f, controls
		}
		var ctl struct {
			Args struct {
				Type string `json:"type"`
			} `json:"args"`
		}
		_ = json.Unmarshal(f.raw, &ctl)
		if f.Namespace == "error" || ctl.Args.Type == "resync-required" || ctl.Args.Type == "shutdown" {
			t.Fatalf("unexpected frame: %s", f.raw)
		}
		controls = append(controls, ctl.Args.Type)
	}
}

func TestServe_PostgresRestartMidStream(t *testing.T) {
	cluster := storetest.NewCluster(t)
	url := cluster.URL()
	dataDir := t.TempDir()
	srv := startServe(t, serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_pgrestart"}, nil)
	srv.waitReady(t)
	ws := dialSince(t, srv.addr, mintToken(t, dataDir, "admin"), 0)
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "job"}]}`)

	insert := func(from, to int) {
		db := connect(t, url)
		for i := from; i < to; i += 100 {
			exec1(t, db, fmt.Sprintf("INSERT INTO jobs (id, status) SELECT g, 'queued' FROM generate_series(%d, %d) g", i, i+99))
		}
		db.Close(context.Background())
	}
	insert(1, 3001)
	// Restart while changecast is still working through the first batch.
	if err := cluster.Restart(context.Background()); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	insert(3001, 6001)

	var last int64
	for want := 1; want <= 6000; want++ {
		f, _ := readChange(t, ws, 60*time.Second)
		if got := fmt.Sprint(f.Payload["id"]); got != strconv.Itoa(want) {
			t.Fatalf("change %d: got job %s (%s)\nlogs:\n%s", want, got, f.raw, srv.logs.String())
		}
		cur := cursorOf(t, f)
		if cur <= last {
			t.Fatalf("cursor %d after %d", cur, last)
		}
		last = cur
	}
	if n := len(readJournal(t, url)); n != 6000 {
		t.Fatalf("journal holds %d changes, want 6000", n)
	}
	if !strings.Contains(srv.logs.String(), "replication interrupted") {
		t.Fatalf("the restart went unnoticed: the test did not exercise recovery\nlogs:\n%s", srv.logs.String())
	}
}

func TestServe_SlowClientCatchesUpFromJournal(t *testing.T) {
	const total = 50_000
	// A client may stop reading for up to the write timeout (10 s) before
	// the server gives up on it; it stalls for less than that.
	const maxStall = 6 * time.Second
	srv, url, dataDir := readyServer(t, "cc_slow")
	token := mintToken(t, dataDir, "admin")
	fast := dialWS(t, srv.addr, token)
	sendJSON(t, fast, `{"send-everything": true}`)
	filterApplied(t, fast)
	slow := dialWS(t, srv.addr, token)
	sendJSON(t, slow, `{"send-everything": true}`)
	filterApplied(t, slow)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// The fast client reads everything as it comes.
	fastDone := make(chan error, 1)
	go func() {
		for want := 1; want <= total; want++ {
			fast.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, b, err := fast.ReadMessage()
			if err != nil {
				fastDone <- fmt.Errorf("fast client after %d changes: %v", want-1, err)
				return
			}
			// Reading the id without decoding the frame keeps this
			// client faster than the server even under -race: a
			// decoding client falls behind a server that writes rows'
			// JSON as it is.
			if payloadID(b) != strconv.Itoa(want) {
				fastDone <- fmt.Errorf("fast client: change %d is %s", want, b)
				return
			}
		}
		fastDone <- nil
	}()

	stalled := time.Now()
	db := connect(t, url)
	for i := 1; i <= total; i += 1000 {
		exec1(t, db, fmt.Sprintf("INSERT INTO jobs (id, name) SELECT g, repeat('x', 1024) FROM generate_series(%d, %d) g", i, i+999))
	}
	committed := time.Now()
	fastFinished := false
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatal(err)
		}
		fastFinished = true
		t.Logf("fast client had all %d changes %v after the last commit", total, time.Since(committed).Round(time.Millisecond))
	case <-time.After(time.Until(stalled.Add(maxStall))):
	}
	metrics := scrape(t, srv.addr)
	if n := metricValue(t, metrics, "changecast_ws_overflows_total"); n < 1 {
		t.Fatalf("the stalled client never overflowed its queue; the test does not exercise catch-up:\n%s", grep(metrics, "ws_"))
	}

	// The stalled client's memory is bounded by construction: at most
	// QueueLen frames queued, then journal pages of bounded size.
	if n := metricValue(t, metrics, "changecast_ws_queue_high_water_frames"); n <= 0 || n > wsapi.DefaultQueueLen {
		t.Fatalf("a client had %v frames queued; the queue is bounded at %d", n, wsapi.DefaultQueueLen)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	// A coarse sanity bound on the whole process (server and test clients
	// share it): most of the growth is the pipeline's in-flight batch, not
	// the stalled client.
	if grew > 128<<20 {
		t.Fatalf("heap grew by %d MiB while a client was stalled", grew>>20)
	}
	t.Logf("heap grew by %.1f MiB with the client stalled %v (fast client finished: %v)", float64(grew)/(1<<20), time.Since(stalled).Round(time.Millisecond), fastFinished)

	var controls []string
	var last int64
	for want := 1; want <= total; want++ {
		f, ctl := readChange(t, slow, 60*time.Second)
		controls = append(controls, ctl...)
		if got := fmt.Sprint(f.Payload["id"]); got != strconv.Itoa(want) {
			t.Fatalf("slow client: change %d is job %s", want, got)
		}
		cur := cursorOf(t, f)
		if cur <= last {
			t.Fatalf("slow client: cursor %d after %d", cur, last)
		}
		last = cur
	}
	if !fastFinished {
		if err := <-fastDone; err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(controls, ","); !strings.HasPrefix(got, "lagging") {
		t.Fatalf("control frames %q: want lagging before the backlog", got)
	}
	// caught-up is sent when it rejoins live; it may follow the last change.
	if !strings.Contains(strings.Join(controls, ","), "caught-up") {
		exec1(t, db, "INSERT INTO controllers (hostname) VALUES ('marker')")
		_, ctl := readChange(t, slow, 30*time.Second)
		if !strings.Contains(strings.Join(append(controls, ctl...), ","), "caught-up") {
			t.Fatalf("no caught-up control frame after the backlog")
		}
	}
}

func scrape(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of an unlabelled metric in a scrape.
func metricValue(t testing.TB, scrape, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		t.Fatalf("no metric %s in /metrics", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("metric %s = %q: %v", name, m[1], err)
	}
	return v
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestServe_ResumeSince(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_resume")
	token := mintToken(t, dataDir, "admin")
	db := connect(t, url)
	first := dialSince(t, srv.addr, token, 0)
	sendJSON(t, first, `{"send-everything": true}`)
	var cursors []int64
	for i := 1; i <= 10; i++ {
		exec1(t, db, fmt.Sprintf("INSERT INTO controllers (hostname) VALUES ('h%d')", i))
		f, _ := readChange(t, first, 10*time.Second)
		cursors = append(cursors, cursorOf(t, f))
	}
	head := cursors[9]

	t.Run("at head", func(t *testing.T) {
		c := dialSince(t, srv.addr, token, head)
		sendJSON(t, c, `{"send-everything": true}`)
		filterApplied(t, c)
		exec1(t, db, "INSERT INTO controllers (hostname) VALUES ('after-head')")
		f, _ := readChange(t, c, 10*time.Second)
		if f.Payload["hostname"] != "after-head" || cursorOf(t, f) != head+1 {
			t.Fatalf("got %s, want the first change after the head (cursor %d)", f.raw, head+1)
		}
		head++
	})

	t.Run("in the middle", func(t *testing.T) {
		c := dialSince(t, srv.addr, token, cursors[4])
		sendJSON(t, c, `{"send-everything": false, "filters": [{"entity-type": "controller"}]}`)
		for want := cursors[4] + 1; want <= head; want++ {
			f, _ := readChange(t, c, 10*time.Second)
			if got := cursorOf(t, f); got != want {
				t.Fatalf("replay: cursor %d, want %d", got, want)
			}
		}
		exec1(t, db, "INSERT INTO controllers (hostname) VALUES ('live')")
		f, _ := readChange(t, c, 10*time.Second)
		if f.Payload["hostname"] != "live" || cursorOf(t, f) != head+1 {
			t.Fatalf("after replay got %s, want the live change at cursor %d (gap or duplicate at the seam)", f.raw, head+1)
		}
		head++
	})

	t.Run("before retention", func(t *testing.T) {
		sdb, err := store.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		if _, err := sdb.PruneJournal(context.Background(), store.RetentionConfig{MaxRows: 3, MaxAge: -1}); err != nil {
			t.Fatalf("prune: %v", err)
		}
		c := dialSince(t, srv.addr, token, cursors[2])
		sendJSON(t, c, `{"send-everything": true}`)
		f := readFrame(t, c, 10*time.Second)
		if !strings.Contains(string(f.raw), `"resync-required"`) {
			t.Fatalf("got %s, want a resync-required control frame", f.raw)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("connection still open after resync-required")
		}
		// The oldest resumable cursor still works.
		ok := dialSince(t, srv.addr, token, head-3)
		sendJSON(t, ok, `{"send-everything": true}`)
		f, _ = readChange(t, ok, 10*time.Second)
		if cursorOf(t, f) != head-2 {
			t.Fatalf("resume at the horizon: got %s, want cursor %d", f.raw, head-2)
		}
	})

	t.Run("not a cursor", func(t *testing.T) {
		h := http.Header{"Authorization": {"Bearer " + token}}
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.addr+"/api/v1/ws/events?since=abc", h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("since=abc: err %v, response %v; want 400", err, resp)
		}
	})
}

func TestServe_UnchangedToastKeepsValue(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_toast")
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "instance"}]}`)
	db := connect(t, url)
	// md5 text does not compress, so both values are stored out of line.
	exec1(t, db, `INSERT INTO instances (id, name, addresses)
		SELECT '00000000-0000-4000-8000-0000000000aa',
		       string_agg(md5(g::text), '' ORDER BY g),
		       jsonb_agg(jsonb_build_object('address', md5(g::text), 'n', g) ORDER BY g)
		FROM generate_series(1, 400) g`)
	created, _ := readChange(t, ws, 10*time.Second)
	exec1(t, db, `UPDATE instances SET status = 'running' WHERE id = '00000000-0000-4000-8000-0000000000aa'`)
	updated, _ := readChange(t, ws, 10*time.Second)
	if updated.Operation != "update" || updated.Payload["status"] != "running" {
		t.Fatalf("got %s", updated.raw)
	}
	for _, col := range []string{"name", "addresses"} {
		want, _ := json.Marshal(created.Payload[col])
		got, _ := json.Marshal(updated.Payload[col])
		if len(want) < 8000 || string(got) != string(want) {
			t.Fatalf("%s: update payload has %d bytes, created had %d: unchanged TOAST value lost", col, len(got), len(want))
		}
	}
}

func TestServe_Truncate(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_truncate")
	token := mintToken(t, dataDir, "admin")
	all := dialWS(t, srv.addr, token)
	sendJSON(t, all, `{"send-everything": true}`)
	onlyPools := dialWS(t, srv.addr, token)
	sendJSON(t, onlyPools, `{"send-everything": false, "filters": [{"entity-type": "pool", "operations": ["truncate"]}]}`)
	filterApplied(t, all)
	filterApplied(t, onlyPools)
	db := connect(t, url)
	exec1(t, db, "INSERT INTO jobs (id) VALUES (1)")
	exec1(t, db, "TRUNCATE jobs, pools")
	got := map[string]bool{}
	if f, _ := readChange(t, all, 10*time.Second); f.Operation != "create" {
		t.Fatalf("got %s", f.raw)
	}
	for range 2 {
		f, _ := readChange(t, all, 10*time.Second)
		if f.Operation != "truncate" {
			t.Fatalf("got %s, want a truncate", f.raw)
		}
		got[f.EntityType] = true
	}
	if !got["job"] || !got["pool"] {
		t.Fatalf("truncate frames for %v, want job and pool", got)
	}
	if f, _ := readChange(t, onlyPools, 10*time.Second); f.EntityType != "pool" || f.Operation != "truncate" {
		t.Fatalf("filtered client got %s, want only the pool truncate", f.raw)
	}
}

func TestServe_HugeTransactionBoundedMemory(t *testing.T) {
	const rows = 200_000
	srv, url, dataDir := readyServer(t, "cc_huge", func(c *serveConfig) { c.chunkSize = 1000 })
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "job", "operations": ["create"]}]}`)
	filterApplied(t, ws)
	db := connect(t, url)
	exec1(t, db, fmt.Sprintf("INSERT INTO jobs (id, status) SELECT g, 'queued' FROM generate_series(1, %d) g", rows))
	for want := 1; want <= rows; want++ {
		f, _ := readChange(t, ws, 60*time.Second)
		if got := fmt.Sprint(f.Payload["id"]); got != strconv.Itoa(want) {
			t.Fatalf("change %d is job %s", want, got)
		}
	}
	hw := metricValue(t, scrape(t, srv.addr), "changecast_journal_appender_high_water_changes")
	// The bound is the appender's inline limit plus a chunk, whatever the
	// transaction's size: far below the 200,000 rows.
	if limit := float64(store.DefaultInlineMax + 2*1000); hw <= 0 || hw > limit {
		t.Fatalf("appender held %v changes at once for a %d-row transaction; want at most %v", hw, rows, limit)
	}
	t.Logf("appender high-water mark: %v changes for a %d-row transaction", hw, rows)
}

func TestServe_SecondInstanceWaitsAsStandby(t *testing.T) {
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_standby"}
	first := startServe(t, cfg, nil)
	first.waitReady(t)
	second := startServe(t, cfg, nil)

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(second.logs.String(), "waiting") {
		if time.Now().After(deadline) {
			t.Fatalf("the second instance did not say it is waiting\nlogs:\n%s", second.logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if !strings.Contains(second.logs.String(), "waiting as a standby") {
		t.Fatalf("the standby should say why it waits\nlogs:\n%s", second.logs.String())
	}
	resp, err := http.Get("http://" + second.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("standby /readyz: %d, want 503", resp.StatusCode)
	}

	first.stop(t)
	second.waitReady(t)
	ws := dialWS(t, second.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": true}`)
	filterApplied(t, ws)
	exec1(t, connect(t, url), "INSERT INTO controllers (hostname) VALUES ('after-takeover')")
	if f, _ := readChange(t, ws, 30*time.Second); f.Payload["hostname"] != "after-takeover" {
		t.Fatalf("got %s", f.raw)
	}
}

func TestServe_ExplainsMissingLogicalReplication(t *testing.T) {
	cfg := storetest.Config(storetest.TempDir(t))
	cfg.Settings["wal_level"] = "replica"
	ctx, cancel := context.WithTimeout(context.Background(), storetest.StartTimeout)
	defer cancel()
	l, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start cluster with wal_level=replica: %v", err)
	}
	t.Cleanup(func() { l.Close() })

	var out, errb strings.Builder
	err = run(ctx, []string{"serve", "--database-url", l.URL(), "--domain", "garm", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, &out, &errb)
	want := "wal_level is replica; set wal_level=logical in postgresql.conf and restart PostgreSQL"
	if err == nil || err.Error() != want {
		t.Fatalf("serve = %v, want exactly %q", err, want)
	}
	if strings.Contains(out.String(), "serving on") {
		t.Fatalf("serve announced itself on a server it cannot watch:\n%s", out.String())
	}
}

// payloadID returns the digits of a change frame's payload "id" (the jobs
// table's integer key), "" if it has none: the first `"id":` after
// "payload":{ that opens the object or follows a comma. In the rows this
// test writes no value before "id" holds that text.
func payloadID(b []byte) string {
	_, rest, ok := bytes.Cut(b, []byte(`"payload":{`))
	if !ok {
		return ""
	}
	for {
		i := bytes.Index(rest, []byte(`"id":`))
		if i < 0 {
			return ""
		}
		if i == 0 || rest[i-1] == ',' {
			rest = rest[i+len(`"id":`):]
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			return string(rest[:n])
		}
		rest = rest[i+1:]
	}
}
