package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---- 1. backlog drain ----

func (h *harness) drain(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "1. Backlog drain vs the physical limit",
		setup: fmt.Sprintf("%s changes (inserts, updates, deletes in %s-row transactions) committed to the instances table while nothing consumes; "+
			"then (a) pg_recvlogical drains a pgoutput slot created at the same point, (b) changecast drains its slot to the journal and one send-everything WebSocket client. %d run(s).",
			thousands(int64(c.changes)), thousands(int64(c.txRows)), c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioDrain, r, func(db, url string) error { return h.drainOnce(ctx, sec, r, db, url) })
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"pg_recvlogical's time runs from starting the process to its exit at the end LSN (pg_current_wal_flush_lsn() after the last commit), output to /dev/null.",
		"changecast's time runs from its \"serving on\" line (migrations done; the replication stream starts right after) until the client holds every change; the client resumes with since=0, so it misses nothing whether served from the journal or live.",
		"Both read the same WAL one after the other on the same machine; CPU figures are CPU-seconds per wall-clock second over each drain (2 cores = 2.00).")
	return sec
}

func (h *harness) drainOnce(ctx context.Context, sec *section, r int, db, url string) error {
	c := h.cfg
	slot, recvSlot := fmt.Sprintf("cc_drain_%d", r), fmt.Sprintf("recv_drain_%d", r)
	// First start: migrations, publication and changecast's slot. Then
	// nothing consumes while the backlog is written.
	s, err := h.startServer(ctx, db, url, slot)
	if err != nil {
		return err
	}
	if err := h.stopServer(s); err != nil {
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
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", recvSlot); err != nil {
		return fmt.Errorf("create slot %s: %w", recvSlot, err)
	}

	h.progress("drain %d/%d: committing %s changes", r, c.repeat, thousands(int64(c.changes)))
	w := &writer{conn: conn, tables: []table{instancesTable}, rows: c.txRows}
	start := time.Now()
	for done := 0; done < c.changes; {
		n := min(c.txRows, c.changes-done)
		_, _, got, err := w.commit(ctx, n)
		if err != nil {
			return err
		}
		if got != int64(n) {
			return fmt.Errorf("a workload transaction changed %d rows, want %d", got, n)
		}
		done += n
	}
	sec.add("workload commit rate (for reference)", unitRate, nil, float64(c.changes)/time.Since(start).Seconds())
	var endpos string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&endpos); err != nil {
		return fmt.Errorf("read the WAL end: %w", err)
	}
	conn.Close(context.Background())

	// (a) PostgreSQL's own consumer.
	h.progress("drain %d/%d: pg_recvlogical to %s", r, c.repeat, endpos)
	pg0, sys0 := h.cl.pgCPU(), systemCPU()
	took, recvCPU, err := h.cl.pgRecvLogical(ctx, db, recvSlot, endpos)
	if err != nil {
		return err
	}
	// CPU is read once the walsender has exited and been reaped, so it
	// counts in full; the window is then slightly longer than took.
	pgUsed := h.cl.settledCPU(ctx, recvSlot) - pg0
	sysUsed := systemCPU() - sys0
	recvRate := float64(c.changes) / took.Seconds()
	sec.add("(a) pg_recvlogical drain rate", unitRate, nil, recvRate)
	sec.add("(a) PostgreSQL CPU", unitCores, nil, pgUsed/took.Seconds())
	sec.add("(a) pg_recvlogical CPU", unitCores, nil, recvCPU/took.Seconds())
	sec.add("(a) other processes' CPU (noise)", unitCores, nil, max(0, sysUsed-pgUsed-recvCPU)/took.Seconds())

	// (b) changecast to the journal and one client.
	h.progress("drain %d/%d: changecast", r, c.repeat)
	s, err = h.startServer(ctx, db, url, slot)
	if err != nil {
		return err
	}
	defer func() { _ = h.stopServer(s) }()
	t0 := s.ready
	cc0, pg0, sys0, self0 := procCPU(s.pid(), false), h.cl.pgCPU(), systemCPU(), selfCPU()
	rec := &recording{}
	conn2, err := dialClient(ctx, s.addr, h.token, "since=0")
	if err != nil {
		return serverFailure(s, err)
	}
	cl, err := startClient(conn2, sendEverything, rec, int64(c.changes))
	if err != nil {
		conn2.Close()
		return serverFailure(s, err)
	}
	defer cl.close()
	prof := h.startProfile(r, scenarioDrain, s)

	// The journal's head, polled, says when everything is journaled: no
	// later than the client has it (the hub publishes after the commit),
	// so the poller runs until it has seen it.
	var journaled time.Time
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			if v, err := s.metric(pollCtx, "changecast_journal_head"); err == nil && v >= float64(c.changes) {
				journaled = time.Now()
				return
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(metricsPoll):
			}
		}
	}()
	err = waitFor(ctx, c.drainTimeout+time.Duration(c.changes/1000)*time.Second, func() (bool, error) {
		if err := cl.failed(); err != nil {
			return false, err
		}
		if s.exited() {
			return false, errors.New("changecast exited")
		}
		return cl.reachedAt.Load() != 0, nil
	})
	if err != nil {
		stopPoll()
	}
	select {
	case <-polled:
	case <-time.After(5 * time.Second):
		stopPoll()
		<-polled
	}
	h.stopProfile(prof, sec)
	if err != nil {
		return serverFailure(s, fmt.Errorf("the client received %s of %s changes: %w", thousands(cl.received.Load()), thousands(int64(c.changes)), err))
	}
	t1 := time.Unix(0, cl.reachedAt.Load())
	elapsed := t1.Sub(t0).Seconds()
	ccRate := float64(c.changes) / elapsed
	sec.add("(b) changecast drain rate (journal + 1 client)", unitRate, nil, ccRate)
	if !journaled.IsZero() {
		sec.add("(b) changecast journal rate (head reaches N, polled)", unitRate, nil, float64(c.changes)/journaled.Sub(t0).Seconds())
	}
	sec.add("ratio b/a", unitRatio, atLeast(0.5), ccRate/recvRate)
	ccUsed, pgUsed, sysUsed, selfUsed := procCPU(s.pid(), false)-cc0, h.cl.pgCPU()-pg0, systemCPU()-sys0, selfCPU()-self0
	sec.add("(b) changecast CPU", unitCores, nil, ccUsed/elapsed)
	sec.add("(b) changecast CPU per journaled change", unitMicros, atMost(8), ccUsed/float64(c.changes)*1e6)
	sec.add("(b) PostgreSQL CPU", unitCores, nil, pgUsed/elapsed)
	sec.add("(b) harness CPU (client)", unitCores, nil, selfUsed/elapsed)
	sec.add("(b) other processes' CPU (noise)", unitCores, nil, max(0, sysUsed-ccUsed-pgUsed-selfUsed)/elapsed)
	return nil
}

// ---- 2. live latency and 3. fan-out ----

// liveResult is one paced run.
type liveResult struct {
	lat          []int32 // microseconds, sorted
	deliveries   float64 // per second, within the window
	committed    float64 // changes per second committed within the window
	offered      float64 // deliveries per second the committed changes called for
	overflows    float64
	ccCores      float64
	pgCores      float64
	harnessCores float64
	natsCores    float64 // the NATS server (JetStream journal only)
	otherCores   float64 // other processes on the machine: noise
	// PostgreSQL CPU of changecast's journal connection and of its
	// walsender (both within pgCores)
	journalCores, walsenderCores float64
	// journal transactions per second and changes per journal
	// transaction, from PostgreSQL's statistics (approximate)
	journalCommits, groupSize float64
	latencySample             int
	win                       window // the measured window (commit times)
}

// connectClients opens n clients with the subscriptions sub(i) and waits
// until each has its filter in force.
func (h *harness) connectClients(ctx context.Context, s *server, n int, sub func(int) subscription, rec *recording, parallel int) ([]*wsClient, error) {
	clients := make([]*wsClient, n)
	errc := make(chan error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range clients {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := dialClient(ctx, s.addr, h.token, "")
			if err != nil {
				errc <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			c, err := startClient(conn, sub(i), rec, 0)
			if err != nil {
				conn.Close()
				errc <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			clients[i] = c
			select {
			case <-c.acked:
			case <-c.done:
				errc <- fmt.Errorf("client %d: connection ended before its filter was applied: %v", i, c.failed())
			case <-time.After(time.Minute):
				errc <- fmt.Errorf("client %d: no response to the ping after the filter within a minute", i)
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	close(errc)
	err := <-errc
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		closeClients(clients)
		return nil, serverFailure(s, err)
	}
	return clients, nil
}

// closeClients closes every client, in parallel.
func closeClients(clients []*wsClient) {
	var wg sync.WaitGroup
	for _, c := range clients {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
}

// liveRun writes at rate changes/s to tables for warmup+duration, measures
// over the last duration, and waits until every client has received every
// change its subscription selects.
func (h *harness) liveRun(ctx context.Context, s fleet, url string, clients []*wsClient, rec *recording, tables []table, rate, txRows int, keyBase int64) (liveResult, error) {
	c := h.cfg
	var res liveResult
	before := make([]int64, len(clients))
	for i, cl := range clients {
		before[i] = cl.received.Load()
		cl.takeLatencies()
	}
	ov0, err := s.metricSum(ctx, "changecast_ws_overflows_total")
	if err != nil {
		return res, err
	}
	start := time.Now().Add(100 * time.Millisecond)
	win := window{from: start.Add(c.warmup), to: start.Add(c.warmup + c.duration)}
	res.win = win
	rec.window.Store(&win)
	defer rec.window.Store(nil)

	// At the window's edges: deliveries so far, CPU used, journal commits.
	statConn, err := pgx.Connect(ctx, url)
	if err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	defer statConn.Close(context.Background())
	// The journal's backend and the walsender, whose CPU is what
	// changecast adds to PostgreSQL (0 when not found).
	appender, walsender, err := changecastBackends(ctx, statConn)
	if err != nil {
		return res, err
	}
	type mark struct {
		deliveries        int64
		cc, pg, self, sys float64
		journal, wal      float64
		commits, rows     int64
		others            float64 // the fleet's other processes (NATS)
	}
	marks := make(chan mark, 2)
	go func() {
		for _, at := range []time.Time{win.from, win.to} {
			time.Sleep(time.Until(at))
			m := mark{rec.deliveries.Load(), s.cpu(), h.cl.pgCPU(), selfCPU(), systemCPU(), backendCPU(appender), backendCPU(walsender), 0, 0, s.otherCPU()}
			m.commits, m.rows, _ = journalCounters(ctx, statConn)
			marks <- m
		}
	}()
	t, committedIn, err := pacedWrite(ctx, url, tables, c.writers, txRows, rate, keyBase, start, c.warmup+c.duration, win.from, win.to)
	m0, m1 := <-marks, <-marks
	if err != nil {
		return res, err
	}
	secs := c.duration.Seconds()
	res.deliveries = float64(m1.deliveries-m0.deliveries) / secs
	res.committed = float64(committedIn) / secs
	res.ccCores, res.pgCores, res.harnessCores = (m1.cc-m0.cc)/secs, (m1.pg-m0.pg)/secs, (m1.self-m0.self)/secs
	res.natsCores = (m1.others - m0.others) / secs
	res.otherCores = max(0, (m1.sys-m0.sys)/secs-res.ccCores-res.pgCores-res.harnessCores-res.natsCores)
	res.journalCores, res.walsenderCores = (m1.journal-m0.journal)/secs, (m1.wal-m0.wal)/secs
	res.journalCommits = float64(m1.commits-m0.commits) / secs
	if m1.commits > m0.commits {
		res.groupSize = float64(m1.rows-m0.rows) / float64(m1.commits-m0.commits)
	}

	// Every client must get everything its subscription selects.
	want := make([]int64, len(clients))
	var total int64
	for i, cl := range clients {
		want[i] = before[i] + t.get(cl.sub.entityType, cl.sub.operation)
		total += want[i] - before[i]
	}
	res.offered = float64(total) / (c.warmup + c.duration).Seconds()
	err = waitFor(ctx, c.drainTimeout, func() (bool, error) {
		if s.exited() {
			return false, errors.New("changecast exited")
		}
		for i, cl := range clients {
			if err := cl.failed(); err != nil {
				return false, fmt.Errorf("client %d: %w", i, err)
			}
			if got := cl.received.Load(); got < want[i] {
				return false, nil
			} else if got > want[i] {
				return false, fmt.Errorf("client %d received %d changes, more than the %d its filter selects", i, got-before[i], want[i]-before[i])
			}
		}
		return true, nil
	})
	if err != nil {
		var behind []string
		for i, cl := range clients {
			if got := cl.received.Load(); got != want[i] && len(behind) < 5 {
				behind = append(behind, fmt.Sprintf("client %d: %d of %d", i, got-before[i], want[i]-before[i]))
			}
		}
		return res, s.failure(fmt.Errorf("waiting for every change to arrive: %w (%s)", err, strings.Join(behind, "; ")))
	}
	for _, cl := range clients {
		res.lat = append(res.lat, cl.takeLatencies()...)
	}
	slices.Sort(res.lat)
	res.latencySample = len(res.lat)
	ov1, err := s.metricSum(ctx, "changecast_ws_overflows_total")
	if err != nil {
		return res, err
	}
	res.overflows = ov1 - ov0
	return res, nil
}

// latencyFigures adds p50/p95/p99 of res in milliseconds, prefixed.
func latencyFigures(sec *section, prefix string, res liveResult, p99Target *target, p95 bool) {
	ms := func(p float64) float64 { return percentile(res.lat, p) / 1000 }
	sec.add(prefix+"latency samples (deliveries in the window)", unitCount, nil, float64(res.latencySample))
	sec.add(prefix+"p50 latency", unitMillis, nil, ms(50))
	if p95 {
		sec.add(prefix+"p95 latency", unitMillis, nil, ms(95))
	}
	sec.add(prefix+"p99 latency", unitMillis, p99Target, ms(99))
}

func (h *harness) latency(ctx context.Context) *section {
	c := h.cfg
	var rates []string
	for _, r := range c.rates {
		rates = append(rates, thousands(int64(r))+"/s")
	}
	sec := &section{
		title: "2. Live latency (commit → client)",
		setup: fmt.Sprintf("%d send-everything clients; a writer commits instance changes in %d-row transactions on %d connections at %s, each for %s after %s of warm-up. %d run(s).",
			c.latencyClients, c.liveTxRows, c.writers, strings.Join(rates, " and "), c.duration, c.warmup, c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioLatency, r, func(db, url string) error {
			return h.liveScenario(ctx, sec, db, url, r, scenarioLatency, c.latencyClients, func(int) subscription { return sendEverything },
				[]table{instancesTable}, c.rates, c.liveTxRows, func(rate int, res liveResult) {
					prefix := thousands(int64(rate)) + "/s: "
					var t *target
					if rate == 5000 {
						t = atMost(20)
					}
					latencyFigures(sec, prefix, res, t, true)
					sec.add(prefix+"commit rate achieved", unitRate, nil, res.committed)
					sec.add(prefix+"deliveries", unitRate, nil, res.deliveries)
					sec.add(prefix+"queue overflows", unitCount, nil, res.overflows)
					sec.add(prefix+"journal commits (approx.)", unitRate, nil, res.journalCommits)
					sec.add(prefix+"changes per journal commit (approx.)", unitRatio, nil, res.groupSize)
					sec.add(prefix+"changecast CPU", unitCores, nil, res.ccCores)
					sec.add(prefix+"PostgreSQL CPU", unitCores, nil, res.pgCores)
					sec.add(prefix+"harness CPU (clients, writer)", unitCores, nil, res.harnessCores)
					sec.add(prefix+"other processes' CPU (noise)", unitCores, nil, res.otherCores)
				})
		})
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Latency = the client's receive time minus the frame's committed-at (PostgreSQL's commit timestamp, same clock); it includes the WAL flush, decoding, sanitizing, the journal commit, fan-out and the client's own scheduling on the shared cores.",
		"Only changes committed inside the measured window count; every client must receive every change (checked) before the next rate starts.")
	return sec
}

func (h *harness) fanout(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "3. Fan-out",
		setup: fmt.Sprintf("%d clients: %d send-everything, %d with one entity type and one operation (instance, pool, job × create, update, delete); "+
			"a writer commits instance, pool and job changes at %s/s in %d-row transactions for %s after %s of warm-up. %d run(s).",
			c.fanoutClients, (c.fanoutClients+1)/2, c.fanoutClients/2, thousands(int64(c.fanoutRate)), c.liveTxRows, c.duration, c.warmup, c.repeat),
	}
	sub := func(i int) subscription {
		if i%2 == 0 {
			return sendEverything
		}
		k := (i / 2) % 9
		return narrow([]string{"instance", "pool", "job"}[k/3], operations[k%3])
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioFanout, r, func(db, url string) error {
			return h.liveScenario(ctx, sec, db, url, r, scenarioFanout, c.fanoutClients, sub,
				[]table{instancesTable, poolsTable, jobsTable}, []int{c.fanoutRate}, c.liveTxRows, func(_ int, res liveResult) {
					sec.add("deliveries", unitRate, atLeast(600_000), res.deliveries)
					latencyFigures(sec, "", res, atMost(100), false)
					sec.add("deliveries offered (what the commits called for)", unitRate, nil, res.offered)
					sec.add("commit rate achieved", unitRate, nil, res.committed)
					sec.add("queue overflows (clients sent to catch-up)", unitCount, nil, res.overflows)
					sec.add("journal commits (approx.)", unitRate, nil, res.journalCommits)
					sec.add("changes per journal commit (approx.)", unitRatio, nil, res.groupSize)
					sec.add("changecast CPU", unitCores, nil, res.ccCores)
					sec.add("PostgreSQL CPU", unitCores, nil, res.pgCores)
					sec.add("harness CPU (clients, writer)", unitCores, nil, res.harnessCores)
					sec.add("other processes' CPU (noise)", unitCores, nil, res.otherCores)
				})
		})
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Deliveries = change frames received by all clients per second of the measured window; every client must receive exactly what its filter selects (checked).",
		"The clients run in the harness on the same cores as changecast and PostgreSQL: their CPU is listed.")
	return sec
}

// liveScenario starts changecast on db, connects n clients, and runs a
// paced write at each rate, calling record with each result.
func (h *harness) liveScenario(ctx context.Context, sec *section, db, url string, r int, name string, n int, sub func(int) subscription,
	tables []table, rates []int, txRows int, record func(rate int, res liveResult)) error {
	s, err := h.startServer(ctx, db, url, fmt.Sprintf("cc_%s_%d", name, r))
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
	_, err = conn.Exec(ctx, benchIndexes)
	conn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("create indexes: %w", err)
	}
	rec := &recording{}
	h.progress("%s %d/%d: connecting %d clients", name, r, h.cfg.repeat, n)
	clients, err := h.connectClients(ctx, s, n, sub, rec, 32)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	for k, rate := range rates {
		h.progress("%s %d/%d: writing %s changes/s for %s", name, r, h.cfg.repeat, thousands(int64(rate)), h.cfg.warmup+h.cfg.duration)
		var prof *perfRecorder
		if k == len(rates)-1 {
			prof = h.startProfile(r, name, s)
		}
		res, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, clients, rec, tables, rate, txRows, int64(k+1)*100_000_000_000)
		h.stopProfile(prof, sec)
		if err != nil {
			return err
		}
		record(rate, res)
	}
	return nil
}

// ---- 4. connections ----

func (h *harness) connections(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "4. Memory per idle connection",
		setup: fmt.Sprintf("%s authenticated connections, each with a filter in force (send-everything, a type with operations, a type, a field match, in rotation), then idle; changecast's VmRSS before and after. %d run(s).",
			thousands(int64(c.conns)), c.repeat),
	}
	subs := []subscription{
		sendEverything,
		{filter: `{"filters": [{"entity-type": "instance", "operations": ["create", "delete"]}]}`},
		{filter: `{"filters": [{"entity-type": "pool"}]}`},
		{filter: `{"filters": [{"entity-type": "instance", "match": {"status": ["running", "error"]}}]}`},
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioConns, r, func(db, url string) error {
			s, err := h.startServer(ctx, db, url, fmt.Sprintf("cc_conns_%d", r))
			if err != nil {
				return err
			}
			defer func() { _ = h.stopServer(s) }()
			if err := s.waitReady(ctx); err != nil {
				return err
			}
			m0, err := h.settledMemory(ctx, s)
			if err != nil {
				return err
			}
			h.progress("conns %d/%d: opening %s connections", r, c.repeat, thousands(int64(c.conns)))
			start := time.Now()
			clients, err := h.connectClients(ctx, s, c.conns, func(i int) subscription { return subs[i%len(subs)] }, &recording{}, 64)
			if err != nil {
				return err
			}
			defer closeClients(clients)
			connectRate := float64(c.conns) / time.Since(start).Seconds()
			if n, err := s.metric(ctx, "changecast_ws_clients"); err != nil || int(n) != c.conns {
				return serverFailure(s, fmt.Errorf("changecast counts %v connected clients (%v), want %d", n, err, c.conns))
			}
			m1, err := h.settledMemory(ctx, s)
			if err != nil {
				return err
			}
			n := float64(c.conns)
			sec.add("RSS per idle connection", unitKB, atMost(20), float64(m1.rss-m0.rss)/n/1024)
			addMemorySplit(sec, "", m0, m1, n)
			sec.add("goroutines per connection", unitRatio, nil, (m1.goroutines-m0.goroutines)/n)
			sec.add("RSS with every connection open", unitKB, nil, float64(m1.rss)/1024)
			if c.connsIdle > 0 {
				h.progress("conns %d/%d: idle for %s", r, c.repeat, c.connsIdle)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(c.connsIdle): // the measured idle period
				}
				m2, err := h.settledMemory(ctx, s)
				if err != nil {
					return err
				}
				after := fmt.Sprintf(" after %s idle", c.connsIdle)
				sec.add("RSS per idle connection"+after, unitKB, nil, float64(m2.rss-m0.rss)/n/1024)
				addMemorySplit(sec, after, m0, m2, n)
			}
			sec.add("connections opened (dial, upgrade, filter, ping)", unitRate, nil, connectRate)
			return nil
		})
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"RSS per connection = (VmRSS with every connection open − VmRSS before any) / connections, each read once memory has settled (two readings 1 s apart within 1%). It includes whatever the Go runtime has not yet returned to the OS.",
		"Go heap figures come from changecast's /metrics: heap in use is go_memstats_heap_inuse_bytes, stacks go_memstats_stack_inuse_bytes (including stacks freed but kept by the runtime until its next collection), free heap not yet returned go_memstats_heap_idle_bytes − go_memstats_heap_released_bytes.")
	return sec
}

// addMemorySplit adds where the memory per connection between readings
// from and to goes, by the runtime's figures; suffix ends each name.
func addMemorySplit(sec *section, suffix string, from, to memory, conns float64) {
	perConn := func(a, b float64) float64 { return (b - a) / conns / 1024 }
	sec.add("Go heap in use per connection"+suffix, unitKB, nil, perConn(from.heapInuse, to.heapInuse))
	sec.add("goroutine stacks per connection"+suffix, unitKB, nil, perConn(from.stackInuse, to.stackInuse))
	sec.add("free heap not yet returned to the OS, per connection"+suffix, unitKB, nil, perConn(from.heapRetainedFree, to.heapRetainedFree))
}

// memory is one reading of the server's memory: its VmRSS and where the
// Go runtime says it goes.
type memory struct {
	rss              int64
	heapInuse        float64
	stackInuse       float64
	heapRetainedFree float64 // free heap spans still mapped (idle − released)
	goroutines       float64
}

// settledMemory waits until the server's RSS is stable (two readings a
// second apart within 1%, at most 10 s) and returns it with the runtime's
// own figures.
func (h *harness) settledMemory(ctx context.Context, s *server) (memory, error) {
	var rss int64
	prev := int64(-1)
	for i := 0; i < 10; i++ {
		select {
		case <-ctx.Done():
			return memory{}, ctx.Err()
		case <-time.After(time.Second): // sampling interval
		}
		var err error
		if rss, err = vmRSS(s.pid()); err != nil {
			return memory{}, err
		}
		if prev > 0 && abs(rss-prev) <= prev/100 {
			break
		}
		prev = rss
	}
	m, err := s.metrics(ctx)
	if err != nil {
		return memory{}, err
	}
	return memory{
		rss:              rss,
		heapInuse:        m["go_memstats_heap_inuse_bytes"],
		stackInuse:       m["go_memstats_stack_inuse_bytes"],
		heapRetainedFree: m["go_memstats_heap_idle_bytes"] - m["go_memstats_heap_released_bytes"],
		goroutines:       m["go_goroutines"],
	}, nil
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// ---- helpers ----

// fail records that run r could not be measured.
func (s *section) fail(ctx context.Context, r int, err error) {
	if ctx.Err() != nil {
		s.failed = append(s.failed, fmt.Sprintf("run %d: interrupted", r))
		return
	}
	s.failed = append(s.failed, fmt.Sprintf("run %d: %v", r, err))
}

// waitFor polls cond every 10 ms until it holds, fails, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling interval
		}
	}
}

// startProfile records the server with perf during the first run of a
// scenario, when --server-profile is set.
func (h *harness) startProfile(r int, name string, s *server) *perfRecorder {
	if h.cfg.serverProfile == "" || r != 1 {
		return nil
	}
	return startPerf(h.cfg.serverProfile, name, s.pid(), h.log)
}

// stopProfile ends a recording and adds its top entries to sec's notes.
func (h *harness) stopProfile(p *perfRecorder, sec *section) {
	if p == nil {
		return
	}
	top := p.stop(12)
	h.progress("server profile written to %s", filepath.Dir(p.data))
	if sec != nil && len(top) > 0 {
		sec.notes = append(sec.notes, "changecast server profile (perf, self time): "+strings.Join(top, "; "))
	}
}
