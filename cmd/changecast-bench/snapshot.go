package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
)

// ---- a large snapshot next to live clients (issue 14) ----

// snapshotReq asks for the current instances, then the stream.
const snapshotReq = `{"namespace":"events","name":"subscribe","id":"bench-snapshot","args":{"filters":["instance"],"snapshot":true}}`

// snapshots measures a snapshot of a large table over a real WebSocket:
// its rate, the server's memory while it runs, and what it costs live
// clients: their p99 under a steady writer, first alone, then while one
// client takes snapshots of the table back to back, in the same run on the
// same server.
func (h *harness) snapshots(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "8. A large snapshot next to live clients (issue 14)",
		setup: fmt.Sprintf("%s instances rows (journaled, then VACUUM ANALYZE and CHECKPOINT); %d live send-everything clients under a writer at %s/s in %d-row transactions: "+
			"%s measured alone (after %s of warm-up), then again while one more client takes snapshots of every instance, one after the other, each on a new connection "+
			"(subscribe with \"snapshot\": true, read to snapshot-complete). %d run(s).",
			thousands(int64(c.snapshotRows)), c.catchupLive, thousands(int64(c.catchupRate)), c.liveTxRows, c.duration, c.warmup, c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioSnapshot, r, func(db, url string) error { return h.snapshotsOnce(ctx, sec, r, db, url) })
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Snapshot time runs from sending the request to receiving snapshot-complete: taking the snapshot, every row written to the socket and read by the harness, the wait for the journal and the seam. The rate is rows ÷ that time, median of the snapshots of the run.",
		"Server RSS is changecast's VmRSS, sampled every 20 ms: before the snapshots (after the live clients connected), and the highest while they ran.",
		"Latency is measured by the live clients only, as in scenario 2; the ratio is p99 with snapshots ÷ p99 alone, from the same run.",
		"The snapshot client runs in the harness on the same cores as changecast and PostgreSQL.")
	return sec
}

func (h *harness) snapshotsOnce(ctx context.Context, sec *section, r int, db, url string) error {
	c := h.cfg
	s, err := h.startServer(ctx, db, url, fmt.Sprintf("cc_snapshot_%d", r))
	if err != nil {
		return err
	}
	defer func() { _ = h.stopServer(s) }()
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, benchIndexes); err != nil {
		return fmt.Errorf("create indexes: %w", err)
	}

	h.progress("snapshot %d/%d: inserting and journaling %s instances", r, c.repeat, thousands(int64(c.snapshotRows)))
	for done := 0; done < c.snapshotRows; {
		n := min(10_000, c.snapshotRows-done)
		if _, err := conn.Exec(ctx, instancesTable.insert, done+1, done+n); err != nil {
			return fmt.Errorf("insert instances: %w", err)
		}
		done += n
	}
	err = waitFor(ctx, c.drainTimeout+time.Duration(c.snapshotRows/1000)*time.Second, func() (bool, error) {
		if s.exited() {
			return false, errors.New("changecast exited")
		}
		n, err := journaledChanges(ctx, conn)
		return n >= int64(c.snapshotRows), err
	})
	if err != nil {
		return serverFailure(s, fmt.Errorf("journaling the rows: %w", err))
	}
	for _, stmt := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("settle after the load (%s): %w", stmt, err)
		}
	}

	rec := &recording{}
	h.progress("snapshot %d/%d: connecting %d live clients", r, c.repeat, c.catchupLive)
	live, err := h.connectClients(ctx, s, c.catchupLive, func(int) subscription { return sendEverything }, rec, 32)
	if err != nil {
		return err
	}
	defer closeClients(live)

	h.progress("snapshot %d/%d: live alone, %s changes/s for %s", r, c.repeat, thousands(int64(c.catchupRate)), c.warmup+c.duration)
	alone, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, live, rec, []table{instancesTable}, c.catchupRate, c.liveTxRows, 100_000_000_000)
	if err != nil {
		return err
	}
	rss0, err := vmRSS(s.pid())
	if err != nil {
		return err
	}

	// Snapshots back to back, and the RSS sampler, until the measurement
	// ends; both goroutines are owned here and waited for.
	h.progress("snapshot %d/%d: snapshots of %s rows back to back, live at %s changes/s for %s", r, c.repeat,
		thousands(int64(c.snapshotRows)), thousands(int64(c.catchupRate)), c.warmup+c.duration)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var took []time.Duration
	var rates []float64
	var snapErr error
	var ended time.Time
	var peak int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			start := time.Now()
			rows, err := h.takeSnapshot(sctx, s)
			if sctx.Err() != nil {
				return // cut short by the end of the measurement: not counted
			}
			if err != nil {
				snapErr = err
				return
			}
			d := time.Since(start)
			took = append(took, d)
			rates = append(rates, float64(rows)/d.Seconds())
			ended = time.Now()
			if rows < int64(c.snapshotRows) {
				snapErr = fmt.Errorf("a snapshot held %d rows, want at least %d", rows, c.snapshotRows)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if v, err := vmRSS(s.pid()); err == nil {
					peak = max(peak, v)
				}
			}
		}
	}()
	busy, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, live, rec, []table{instancesTable}, c.catchupRate, c.liveTxRows, 200_000_000_000)
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	if snapErr != nil {
		return serverFailure(s, fmt.Errorf("snapshot: %w", snapErr))
	}
	if len(took) == 0 {
		return errors.New("no snapshot completed within the measurement; lengthen --duration")
	}

	p99Alone, p99Busy := percentile(alone.lat, 99)/1000, percentile(busy.lat, 99)/1000
	sec.add("snapshot rate (rows/s, median of the run's snapshots)", unitRate, nil, median(rates))
	sec.add("snapshot time (request to snapshot-complete, median)", unitSeconds, nil, median(durationsSeconds(took)))
	sec.add("snapshots completed during the measurement", unitCount, nil, float64(len(took)))
	sec.add("server RSS before the snapshots", unitMiB, nil, float64(rss0)/(1<<20))
	sec.add("server peak RSS while snapshots ran", unitMiB, nil, float64(peak)/(1<<20))
	sec.add("live p99 latency, alone", unitMillis, nil, p99Alone)
	sec.add("live p99 latency, while snapshots run", unitMillis, nil, p99Busy)
	sec.add("ratio (with ÷ without snapshots)", unitRatio, atMost(2), p99Busy/p99Alone)
	sec.add("live p50 latency, alone", unitMillis, nil, percentile(alone.lat, 50)/1000)
	sec.add("live p50 latency, while snapshots run", unitMillis, nil, percentile(busy.lat, 50)/1000)
	sec.add("share of the measured window with a snapshot running", unitRatio, nil,
		min(1, max(0, ended.Sub(busy.win.from).Seconds()/busy.win.to.Sub(busy.win.from).Seconds())))
	sec.add("queue overflows of live clients, while snapshots run", unitCount, nil, busy.overflows)
	for _, p := range []struct {
		name string
		res  liveResult
	}{{"alone", alone}, {"while snapshots run", busy}} {
		sec.add("changecast CPU, "+p.name, unitCores, nil, p.res.ccCores)
		sec.add("PostgreSQL CPU, "+p.name, unitCores, nil, p.res.pgCores)
		sec.add("harness CPU (all clients, writer), "+p.name, unitCores, nil, p.res.harnessCores)
		sec.add("other processes' CPU (noise), "+p.name, unitCores, nil, p.res.otherCores)
	}
	return nil
}

// takeSnapshot connects, asks for a snapshot of every instance and reads
// until snapshot-complete, returning how many rows it held.
func (h *harness) takeSnapshot(ctx context.Context, s *server) (int64, error) {
	wc, err := dialClient(ctx, s.addr, h.token, "")
	if err != nil {
		return 0, err
	}
	defer wc.Close()
	stop := context.AfterFunc(ctx, func() { _ = wc.Close() })
	defer stop()
	if err := wc.WriteMessage(websocket.TextMessage, []byte(snapshotReq)); err != nil {
		return 0, fmt.Errorf("send the snapshot request: %w", err)
	}
	var rows int64
	buf := make([]byte, 0, 4096)
	for {
		_ = wc.SetReadDeadline(time.Now().Add(time.Minute))
		_, r, err := wc.NextReader()
		if err != nil {
			return rows, fmt.Errorf("after %d rows: %w", rows, err)
		}
		if buf, err = readAllInto(buf[:0], r); err != nil {
			return rows, err
		}
		switch {
		case bytes.Contains(buf, []byte(`"operation":"snapshot"`)):
			rows++
		case bytes.Contains(buf, []byte(`"snapshot-complete"`)):
			return rows, nil
		case bytes.HasPrefix(buf, []byte(`{"namespace":"error"`)), bytes.Contains(buf, []byte(`"resync-required"`)):
			return rows, fmt.Errorf("after %d rows: %s", rows, buf)
		}
	}
}

// readAllInto appends r's bytes to buf.
func readAllInto(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 4096)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// median returns the middle value of vs (the mean of the two middle ones
// for an even count).
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func durationsSeconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}
