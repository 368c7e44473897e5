package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---- 7. WAL changecast adds to the watched database ----

// walTable is the one table the WAL scenario writes, declared to
// changecast with --table (no domain: nothing else is created).
const walTable = `CREATE TABLE wal_items (id bigint PRIMARY KEY, name text NOT NULL, qty int NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`

// walModes are the three ways the watched database runs, in report order.
var walModes = []struct{ name, label string }{
	{"none", "no changecast (baseline)"},
	{"same", "journal in the watched database (default)"},
	{"apart", "journal in another cluster (--journal-url local)"},
}

func (h *harness) walBytes(ctx context.Context) *section {
	c := h.cfg
	sec := &section{
		title: "7. WAL written in the watched database per change",
		setup: fmt.Sprintf("%s single-row INSERT transactions into a 4-column table, after a CHECKPOINT, in each mode: no changecast; changecast with its journal in the watched database; changecast with --journal-url local (the journal in a PostgreSQL cluster of its own). %d run(s).",
			thousands(int64(c.walChanges)), c.repeat),
	}
	for r := 1; r <= c.repeat && ctx.Err() == nil; r++ {
		per := map[string]float64{}
		for _, m := range walModes {
			err := h.withDatabase(ctx, scenarioWAL+"_"+m.name, r, func(db, url string) error {
				b, err := h.walOnce(ctx, m.name, r, db, url)
				per[m.name] = b
				return err
			})
			if err != nil {
				sec.fail(ctx, r, fmt.Errorf("%s: %w", m.label, err))
				per = nil
				break
			}
		}
		if per == nil {
			continue
		}
		for _, m := range walModes {
			sec.add("WAL bytes per change, "+m.label, unitCount, nil, per[m.name])
		}
		sec.add("added by changecast, journal in the watched database", unitCount, nil, per["same"]-per["none"])
		sec.add("added by changecast, journal apart", unitCount, nil, per["apart"]-per["none"])
	}
	sec.notes = append(sec.notes,
		"WAL bytes are pg_current_wal_lsn() differences in the watched database's cluster, from just before the first insert until changecast has journaled the last one (its journal head metric), divided by the number of inserts.",
		"The CHECKPOINT before each measurement makes each mode pay the same full-page images for the first change of every page; a real server pays them after each checkpoint.",
		"With the journal apart, what remains is the slot and the publication: logical decoding reads the WAL the inserts already wrote; the offset and journal writes go to the other cluster.")
	return sec
}

// walOnce measures one mode on database db and returns WAL bytes per
// change.
func (h *harness) walOnce(ctx context.Context, mode string, r int, db, url string) (float64, error) {
	c := h.cfg
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, walTable); err != nil {
		return 0, fmt.Errorf("create table: %w", err)
	}

	var s *server
	if mode != "none" {
		dataDir := filepath.Join(h.dir, fmt.Sprintf("wal-%s-%d", mode, r)) // own embedded journal per run
		defer os.RemoveAll(dataDir)
		args := []string{"--database-url", url, "--table", "item=public.wal_items", "--listen", "127.0.0.1:0",
			"--data-dir", dataDir, "--slot", "cc_" + db}
		if mode == "apart" {
			args = append(args, "--journal-url", "local")
		}
		s, err = startServer(ctx, h.cfg.changecast, filepath.Join(h.dir, "logs", db+".log"), args...)
		if err != nil {
			return 0, err
		}
		h.mu.Lock()
		h.servers[s] = true
		h.mu.Unlock()
		defer func() { _ = h.stopServer(s) }()
		if err := s.waitReady(ctx); err != nil {
			return 0, serverFailure(s, err)
		}
	}
	var head0 float64
	if s != nil {
		if head0, err = s.metric(ctx, "changecast_journal_head"); err != nil {
			return 0, serverFailure(s, err)
		}
	}

	h.progress("wal %d/%d %s: %s single-row inserts", r, c.repeat, mode, thousands(int64(c.walChanges)))
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	var before, after int64
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&before); err != nil {
		return 0, fmt.Errorf("read the WAL position: %w", err)
	}
	for i := 1; i <= c.walChanges; i++ {
		if _, err := conn.Exec(ctx, "INSERT INTO wal_items (id, name, qty) VALUES ($1::bigint, 'item-' || $1::text, $1::int % 100)", i); err != nil {
			return 0, fmt.Errorf("insert: %w", err)
		}
	}
	if s != nil {
		deadline := time.Now().Add(c.drainTimeout)
		for {
			head, err := s.metric(ctx, "changecast_journal_head")
			if err != nil {
				return 0, serverFailure(s, err)
			}
			if head-head0 >= float64(c.walChanges) {
				break
			}
			if time.Now().After(deadline) {
				return 0, serverFailure(s, fmt.Errorf("changecast journaled %.0f of %d inserts within %s", head-head0, c.walChanges, c.drainTimeout))
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(50 * time.Millisecond): // polling interval
			}
		}
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&after); err != nil {
		return 0, fmt.Errorf("read the WAL position: %w", err)
	}
	return float64(after-before) / float64(c.walChanges), nil
}
