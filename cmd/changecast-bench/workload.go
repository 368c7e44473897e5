package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// table is a built-in entity table the workload writes, with one
// statement per operation. Each takes a key range ($1..$2, inclusive) and
// touches exactly one row per key: the workload inserts a range, updates
// it, deletes it.
type table struct {
	entity string // entity type name, as frames carry it
	insert string
	update string
	delete string
}

// benchPoolID is the pool every benchmark instance belongs to.
const benchPoolID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

// The tables: instances (uuid, text, int8, jsonb, bool, timestamptz, and
// the secret columns jit_configuration and callback_token, which sanitize
// strips), pools (text[], numeric, jsonb) and jobs (int8 key, text[]).
var (
	instancesTable = table{
		entity: "instance",
		insert: `INSERT INTO instances (name, agent_id, provider_id, addresses, status, runner_status, pool_id,
	callback_url, create_attempt, token_fetched, jit_configuration, callback_token, github_runner_group, heartbeat)
SELECT 'bench-' || g, g, 'lxd://bench-' || g,
	jsonb_build_array(jsonb_build_object('type', 'private', 'address', '10.0.' || (g % 250) || '.' || (g % 200)),
		jsonb_build_object('type', 'public', 'address', '203.0.113.' || (g % 250))),
	'pending_create', 'pending', '` + benchPoolID + `', 'https://garm.example.com/api/v1/callbacks', 1, false,
	'jit-' || md5(g::text), 'cbt-' || md5(g::text || 'x'), 'default', now()
FROM generate_series($1::bigint, $2::bigint) AS g`,
		update: `UPDATE instances SET status = 'running', runner_status = 'idle', heartbeat = now(), updated_at = now(),
	create_attempt = create_attempt + 1 WHERE agent_id BETWEEN $1 AND $2`,
		delete: `DELETE FROM instances WHERE agent_id BETWEEN $1 AND $2`,
	}
	poolsTable = table{
		entity: "pool",
		insert: `INSERT INTO pools (provider_name, max_runners, min_idle_runners, image, flavor, tags, cost_per_hour, extra_specs)
SELECT 'lxd', g, 1, 'ubuntu:24.04', 'default', ARRAY['self-hosted', 'x64', 'bench'], 0.0420,
	jsonb_build_object('disk_size', 100, 'network', jsonb_build_object('name', 'lxdbr0', 'vlan', g % 4096))
FROM generate_series($1::bigint, $2::bigint) AS g`,
		update: `UPDATE pools SET min_idle_runners = min_idle_runners + 1, enabled = NOT enabled, updated_at = now()
	WHERE max_runners BETWEEN $1 AND $2`,
		delete: `DELETE FROM pools WHERE max_runners BETWEEN $1 AND $2`,
	}
	jobsTable = table{
		entity: "job",
		insert: `INSERT INTO jobs (id, run_id, action, status, name, runner_name, repository_owner, repository_name, labels)
SELECT g, g / 3, 'queued', 'queued', 'build', 'bench-' || g, 'acme', 'widgets', ARRAY['self-hosted', 'linux']
FROM generate_series($1::bigint, $2::bigint) AS g`,
		update: `UPDATE jobs SET action = 'in_progress', status = 'in_progress', started_at = now(), updated_at = now()
	WHERE id BETWEEN $1 AND $2`,
		delete: `DELETE FROM jobs WHERE id BETWEEN $1 AND $2`,
	}
)

// benchIndexes make the workload's updates and deletes by key range cheap;
// the harness adds them after changecast has migrated the tables.
const benchIndexes = `
CREATE INDEX IF NOT EXISTS bench_instances_agent_id ON instances (agent_id);
CREATE INDEX IF NOT EXISTS bench_pools_max_runners ON pools (max_runners);`

// operations, in the order the workload cycles through them.
var operations = []string{"create", "update", "delete"}

// writer commits the workload's transactions on one connection: a cycle
// of three transactions (insert a key range, update it, delete it) per
// table, tables in rotation. Each statement is its own transaction.
type writer struct {
	conn   *pgx.Conn
	tables []table
	base   int64 // first key of this writer's key space
	rows   int   // rows per transaction
	step   int   // transactions committed
}

// commit commits the writer's next transaction with n rows (n <= rows)
// and returns its entity type, operation and the rows it changed.
func (w *writer) commit(ctx context.Context, n int) (entity, op string, changed int64, err error) {
	cycle, phase := w.step/3, w.step%3
	t := w.tables[cycle%len(w.tables)]
	lo := w.base + int64(cycle)*int64(w.rows)
	hi := lo + int64(n) - 1
	sql := [...]string{t.insert, t.update, t.delete}[phase]
	tag, err := w.conn.Exec(ctx, sql, lo, hi)
	if err != nil {
		return "", "", 0, fmt.Errorf("%s %s rows %d-%d: %w", operations[phase], t.entity, lo, hi, err)
	}
	w.step++
	return t.entity, operations[phase], tag.RowsAffected(), nil
}

// tally counts committed changes by entity type and operation.
type tally struct {
	mu sync.Mutex
	n  map[string]int64 // "type/op" → changes
}

func (t *tally) add(entity, op string, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int64{}
	}
	t.n[entity+"/"+op] += n
}

// get returns the count for one entity type and operation, or the total
// when entity is "".
func (t *tally) get(entity, op string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if entity == "" {
		var sum int64
		for _, v := range t.n {
			sum += v
		}
		return sum
	}
	return t.n[entity+"/"+op]
}

// pacedWrite commits transactions of rows rows on writers connections at
// rate changes/s, from start until start+length, and tallies what it
// committed. A transaction starts at its scheduled time, or at once when
// the writers are behind (so the offered load is kept when possible).
// committedIn counts changes whose commit returned within [from, to).
func pacedWrite(ctx context.Context, url string, tables []table, writers, rows, rate int, keyBase int64,
	start time.Time, length time.Duration, from, to time.Time) (t *tally, committedIn int64, err error) {
	ws := make([]*writer, writers)
	for i := range ws {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, 0, fmt.Errorf("connect writer: %w", err)
		}
		defer conn.Close(context.Background())
		ws[i] = &writer{conn: conn, tables: tables, base: keyBase + int64(i)*1_000_000_000, rows: rows}
	}
	interval := time.Duration(float64(time.Second) * float64(rows) / float64(rate))
	slots := make(chan struct{})
	t = &tally{}
	var inWindow int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range slots {
				entity, op, n, err := w.commit(ctx, rows)
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					continue
				}
				t.add(entity, op, n)
				if now := time.Now(); !now.Before(from) && now.Before(to) {
					mu.Lock()
					inWindow += n
					mu.Unlock()
				}
			}
		}()
	}
	end := start.Add(length)
	timer := time.NewTimer(time.Until(start))
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) || time.Now().After(end) {
			break
		}
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
	}
	timer.Stop()
	close(slots)
	wg.Wait()
	if ctx.Err() != nil {
		return t, inWindow, ctx.Err()
	}
	return t, inWindow, firstErr
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}
