package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ---- single-row transactions: latency and CPU per transaction (issue 18) ----

// single measures single-row transactions, the shape where the journal's
// cost per source transaction shows most (each is a journal commit unless
// group commit finds others queued): first with one send-everything
// client, whose CPU per transaction is changecast's own cost (decoding,
// journal, one delivery), then with the scenario's clients, whose p99 is
// the latency target and whose CPU adds the fan-out.
func (h *harness) single(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "2b. Single-row transactions: latency and CPU per transaction",
		setup: fmt.Sprintf("A writer commits single-row instance transactions on %d connections at %s/s for %s after %s of warm-up, first to 1 send-everything client, then to %d. %d run(s).",
			c.writers, thousands(int64(c.singleRate)), c.duration, c.warmup, c.latencyClients, c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		err := h.withDatabase(ctx, scenarioSingle, r, func(db, url string) error { return h.singleOnce(ctx, sec, r, db, url) })
		if err != nil {
			sec.fail(ctx, r, err)
		}
	}
	sec.notes = append(sec.notes,
		"Latency as in scenario 2. CPU per transaction = CPU-seconds over the measured window ÷ transactions committed in it.",
		"The journal connection is the PostgreSQL backend whose application_name is \"changecast journal appender\": the PostgreSQL CPU the journal adds. The walsender decodes the WAL for changecast's slot (any logical-replication consumer costs it); the rest of PostgreSQL's CPU is the writers' own transactions.")
	return sec
}

func (h *harness) singleOnce(ctx context.Context, sec *section, r int, db, url string) error {
	c := h.cfg
	s, err := h.startServer(ctx, db, url, fmt.Sprintf("cc_%s_%d", scenarioSingle, r))
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
	all := func(int) subscription { return sendEverything }
	clients, err := h.connectClients(ctx, s, 1, all, rec, 1)
	if err != nil {
		return err
	}
	defer func() { closeClients(clients) }()
	for phase, n := range []int{1, c.latencyClients} {
		if more := n - len(clients); more > 0 {
			h.progress("%s %d/%d: connecting %d more clients", scenarioSingle, r, c.repeat, more)
			extra, err := h.connectClients(ctx, s, more, all, rec, 32)
			if err != nil {
				return err
			}
			clients = append(clients, extra...)
		}
		h.progress("%s %d/%d: %d client(s), writing %s single-row transactions/s for %s", scenarioSingle, r, c.repeat, len(clients), thousands(int64(c.singleRate)), c.warmup+c.duration)
		var prof *perfRecorder
		if phase == 1 {
			prof = h.startProfile(r, scenarioSingle, s)
		}
		res, err := h.liveRun(ctx, fleet{servers: []*server{s}}, url, clients, rec, []table{instancesTable}, c.singleRate, 1, int64(phase+1)*100_000_000_000)
		h.stopProfile(prof, sec)
		if err != nil {
			return err
		}
		perTx := func(cores float64) float64 {
			if res.committed == 0 {
				return 0
			}
			return cores / res.committed * 1e6
		}
		prefix := fmt.Sprintf("%d client(s): ", len(clients))
		if phase == 0 {
			sec.add(prefix+"changecast CPU per transaction", unitMicros, atMost(100), perTx(res.ccCores))
			sec.add(prefix+"PostgreSQL CPU per transaction, journal connection", unitMicros, atMost(100), perTx(res.journalCores))
			latencyFigures(sec, prefix, res, nil, false)
		} else {
			latencyFigures(sec, prefix, res, atMost(2.5), true)
			sec.add(prefix+"changecast CPU per transaction", unitMicros, nil, perTx(res.ccCores))
			sec.add(prefix+"PostgreSQL CPU per transaction, journal connection", unitMicros, nil, perTx(res.journalCores))
		}
		sec.add(prefix+"PostgreSQL CPU per transaction, walsender (decoding)", unitMicros, nil, perTx(res.walsenderCores))
		sec.add(prefix+"PostgreSQL CPU per transaction, all (writers' backends too)", unitMicros, nil, perTx(res.pgCores))
		sec.add(prefix+"commit rate achieved (transactions)", unitRate, nil, res.committed)
		sec.add(prefix+"journal commits (approx.)", unitRate, nil, res.journalCommits)
		sec.add(prefix+"changes per journal commit (approx.)", unitRatio, nil, res.groupSize)
		sec.add(prefix+"changecast CPU", unitCores, nil, res.ccCores)
		sec.add(prefix+"PostgreSQL CPU", unitCores, nil, res.pgCores)
		sec.add(prefix+"harness CPU (clients, writer)", unitCores, nil, res.harnessCores)
		sec.add(prefix+"other processes' CPU (noise)", unitCores, nil, res.otherCores)
	}
	return nil
}

// changecastBackends finds, in conn's database, the PostgreSQL backend of
// changecast's journal connection and its walsender (0 for one not
// found).
func changecastBackends(ctx context.Context, conn *pgx.Conn) (appender, walsender int, err error) {
	rows, err := conn.Query(ctx, `SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '')
		FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		return 0, 0, fmt.Errorf("list backends: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		var typ, app string
		if err := rows.Scan(&pid, &typ, &app); err != nil {
			return 0, 0, fmt.Errorf("list backends: %w", err)
		}
		switch {
		case app == "changecast journal appender":
			appender = pid
		case typ == "walsender":
			walsender = pid
		}
	}
	return appender, walsender, rows.Err()
}

// backendCPU returns the CPU seconds a backend has used, 0 for pid 0.
func backendCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	return procCPU(pid, false)
}
