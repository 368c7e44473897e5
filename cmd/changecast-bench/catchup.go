package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---- catch-up next to live clients (issue 17) ----

// catchUp measures what clients catching up from the journal cost live
// clients: the live p99 of a few send-everything clients under a steady
// writer, first alone (baseline), then while several clients resume with
// since=0 behind a large backlog, in the same run on the same server.
func (h *harness) catchUp(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "6. Live latency while clients catch up (issue 17)",
		setup: fmt.Sprintf("%s changes journaled (instances, %s-row transactions), then %d live send-everything clients under a writer at %s/s in %d-row transactions: "+
			"%s measured alone (after %s of warm-up), then again while %d clients resume with since=0 and replay the whole journal. %d run(s).",
			thousands(int64(c.catchupChanges)), thousands(int64(c.txRows)), c.catchupLive, thousands(int64(c.catchupRate)), c.liveTxRows,
			c.duration, c.warmup, c.catchupClients, c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioCatchUp, r, func(db, url string) error { return h.catchUpOnce(ctx, sec, r, db, url) })
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Latency is measured by the live clients only, as in scenario 2; the ratio is p99 with catch-up ÷ p99 alone, from the same run.",
		"Journal lag = journaled_at − committed_at of the writer's changes committed in the window (journaled_at is the journal transaction's start): how long the appender took to take a change, before any fan-out.",
		"Catch-up time runs from the resuming clients' connect until each holds every change journaled before it connected; every catching-up client must then also receive every change written during the measurement, once each, in order (checked).",
		"The catching-up clients run in the harness on the same cores as changecast and PostgreSQL: their CPU is in the harness's figure.")
	return sec
}

func (h *harness) catchUpOnce(ctx context.Context, sec *section, r int, db, url string) error {
	c := h.cfg
	s, err := h.startServer(ctx, db, url, fmt.Sprintf("cc_catchup_%d", r))
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

	// The backlog, journaled before anyone listens.
	h.progress("catchup %d/%d: committing and journaling %s changes", r, c.repeat, thousands(int64(c.catchupChanges)))
	w := &writer{conn: conn, tables: []table{instancesTable}, rows: c.txRows, base: 900_000_000_000}
	for done := 0; done < c.catchupChanges; {
		n := min(c.txRows, c.catchupChanges-done)
		if _, _, _, err := w.commit(ctx, n); err != nil {
			return err
		}
		done += n
	}
	err = waitFor(ctx, c.drainTimeout+time.Duration(c.catchupChanges/1000)*time.Second, func() (bool, error) {
		if s.exited() {
			return false, errors.New("changecast exited")
		}
		n, err := journaledChanges(ctx, conn)
		return n >= int64(c.catchupChanges), err
	})
	if err != nil {
		return serverFailure(s, fmt.Errorf("journaling the backlog: %w", err))
	}
	// Settle the database after the bulk load, so that the maintenance it
	// provokes (autovacuum of the new rows, a checkpoint of their WAL)
	// falls in neither measured window: the scenario measures what
	// catching-up clients cost live delivery, not what the load did.
	for _, stmt := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("settle after the backlog (%s): %w", stmt, err)
		}
	}

	rec := &recording{}
	h.progress("catchup %d/%d: connecting %d live clients", r, c.repeat, c.catchupLive)
	live, err := h.connectClients(ctx, s, c.catchupLive, func(int) subscription { return sendEverything }, rec, 32)
	if err != nil {
		return err
	}
	defer closeClients(live)

	h.progress("catchup %d/%d: live alone, %s changes/s for %s", r, c.repeat, thousands(int64(c.catchupRate)), c.warmup+c.duration)
	alone, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, live, rec, []table{instancesTable}, c.catchupRate, c.liveTxRows, 100_000_000_000)
	if err != nil {
		return err
	}

	// The resuming clients: each must replay everything journaled so far
	// (reachedAt marks that), then follow live like the others.
	backlog, err := journaledChanges(ctx, conn)
	if err != nil {
		return err
	}
	h.progress("catchup %d/%d: %d clients resuming behind %s changes, live at %s changes/s for %s", r, c.repeat,
		c.catchupClients, thousands(backlog), thousands(int64(c.catchupRate)), c.warmup+c.duration)
	catching := make([]*wsClient, 0, c.catchupClients)
	defer func() { closeClients(catching) }()
	started := time.Now()
	for i := 0; i < c.catchupClients; i++ {
		wc, err := dialClient(ctx, s.addr, h.token, "since=0")
		if err != nil {
			return serverFailure(s, fmt.Errorf("catching-up client %d: %w", i, err))
		}
		cl, err := startClient(wc, sendEverything, &recording{}, backlog) // no window: their latency is not the point
		if err != nil {
			wc.Close()
			return serverFailure(s, fmt.Errorf("catching-up client %d: %w", i, err))
		}
		catching = append(catching, cl)
	}
	prof := h.startProfile(r, scenarioCatchUp, s)
	busy, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, live, rec, []table{instancesTable}, c.catchupRate, c.liveTxRows, 200_000_000_000)
	h.stopProfile(prof, sec)
	if err != nil {
		return err
	}

	// Every catching-up client must reach the head: every workload change
	// journaled, which is everything written, since the live clients were
	// checked to hold every change of both measurements.
	want, err := journaledChanges(ctx, conn)
	if err != nil {
		return err
	}
	h.progress("catchup %d/%d: waiting for %d clients to reach %s changes", r, c.repeat, c.catchupClients, thousands(want))
	timeout := c.drainTimeout + time.Duration(int64(c.catchupClients)*want/10_000)*time.Second
	err = waitFor(ctx, timeout, func() (bool, error) {
		if s.exited() {
			return false, errors.New("changecast exited")
		}
		for i, cl := range catching {
			if err := cl.failed(); err != nil {
				return false, fmt.Errorf("catching-up client %d: %w", i, err)
			}
			if got := cl.received.Load(); got > want {
				return false, fmt.Errorf("catching-up client %d received %d changes, more than the %d journaled", i, got, want)
			} else if got < want {
				return false, nil
			}
		}
		return true, nil
	})
	reached := 0
	var last time.Time
	for _, cl := range catching {
		if cl.received.Load() == want {
			reached++
		}
		if at := time.Unix(0, cl.reachedAt.Load()); cl.reachedAt.Load() != 0 && at.After(last) {
			last = at
		}
	}
	lagAlone, err1 := journalLagP99(ctx, conn, alone.win)
	lagBusy, err2 := journalLagP99(ctx, conn, busy.win)
	if lagErr := errors.Join(err1, err2); lagErr != nil {
		return errors.Join(err, lagErr) // err: whether every client reached the head
	}

	p99Alone, p99Busy := percentile(alone.lat, 99)/1000, percentile(busy.lat, 99)/1000
	sec.add("live p99 latency, alone", unitMillis, nil, p99Alone)
	sec.add("live p99 latency, while clients catch up", unitMillis, nil, p99Busy)
	sec.add("ratio (with ÷ without catch-up)", unitRatio, atMost(2), p99Busy/p99Alone)
	sec.add("catching-up clients that reached the head (every change once, in order)", unitCount, atLeast(float64(c.catchupClients)), float64(reached))
	sec.add("live p50 latency, alone", unitMillis, nil, percentile(alone.lat, 50)/1000)
	sec.add("live p50 latency, while clients catch up", unitMillis, nil, percentile(busy.lat, 50)/1000)
	sec.add("journal lag p99, alone", unitMillis, nil, lagAlone)
	sec.add("journal lag p99, while clients catch up", unitMillis, nil, lagBusy)
	if !last.IsZero() {
		took := last.Sub(started)
		sec.add("catch-up time (backlog to every resuming client)", unitSeconds, nil, took.Seconds())
		sec.add("catch-up deliveries", unitRate, nil, float64(int64(c.catchupClients)*backlog)/took.Seconds())
		sec.add("share of the measured window with catch-up running", unitRatio, nil,
			min(1, max(0, last.Sub(busy.win.from).Seconds()/busy.win.to.Sub(busy.win.from).Seconds())))
	}
	sec.add("live samples, alone", unitCount, nil, float64(alone.latencySample))
	sec.add("live samples, while catching up", unitCount, nil, float64(busy.latencySample))
	sec.add("commit rate achieved, while catching up", unitRate, nil, busy.committed)
	sec.add("queue overflows of live clients, while catching up", unitCount, nil, busy.overflows)
	for _, p := range []struct {
		name string
		res  liveResult
	}{{"alone", alone}, {"while catching up", busy}} {
		sec.add("changecast CPU, "+p.name, unitCores, nil, p.res.ccCores)
		sec.add("PostgreSQL CPU, "+p.name, unitCores, nil, p.res.pgCores)
		sec.add("harness CPU (all clients, writer), "+p.name, unitCores, nil, p.res.harnessCores)
		sec.add("other processes' CPU (noise), "+p.name, unitCores, nil, p.res.otherCores)
	}
	if err != nil {
		return serverFailure(s, fmt.Errorf("%d of %d catching-up clients reached the head: %w", reached, c.catchupClients, err))
	}
	return nil
}

// journaledChanges counts the workload's changes in the journal (system
// events excluded).
func journaledChanges(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT count(*) FROM changecast.journal WHERE entity_type IN ('instance', 'pool', 'job')`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count journaled changes: %w", err)
	}
	return n, nil
}

// journalLagP99 returns the 99th percentile of journaled_at − committed_at,
// in milliseconds, of the workload changes committed within w.
func journalLagP99(ctx context.Context, conn *pgx.Conn, w window) (float64, error) {
	var ms *float64
	err := conn.QueryRow(ctx, `SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM journaled_at - committed_at) * 1000)
		FROM changecast.journal WHERE entity_type IN ('instance', 'pool', 'job') AND committed_at >= $1 AND committed_at < $2`, w.from, w.to).Scan(&ms)
	if err != nil {
		return 0, fmt.Errorf("journal lag: %w", err)
	}
	if ms == nil {
		return 0, errors.New("journal lag: no change committed in the window")
	}
	return *ms, nil
}
