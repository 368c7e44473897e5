package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/localpg"
)

// pgSettings are the benchmark cluster's postgresql.conf settings on top of
// localpg.Start's own (which already set wal_level=logical). Durability
// stays at PostgreSQL's defaults (fsync, synchronous_commit on): the
// figures include real WAL flushes.
var pgSettings = map[string]string{
	"wal_level":             "logical",
	"max_wal_senders":       "10",
	"max_replication_slots": "10",
	"max_connections":       "100",
}

// cluster is the benchmark's PostgreSQL.
type cluster struct {
	local *localpg.Cluster
}

func startCluster(ctx context.Context, dir string) (*cluster, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	l, err := localpg.Start(sctx, localpg.Config{Dir: dir, Settings: pgSettings})
	if err != nil {
		return nil, err
	}
	return &cluster{local: l}, nil
}

func (c *cluster) close() error { return c.local.Close() }

// version returns the server's version string.
func (c *cluster) version(ctx context.Context) string {
	conn, err := pgx.Connect(ctx, c.local.URL())
	if err != nil {
		return "unknown"
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "unknown"
	}
	return v
}

// createDB creates a fresh database and returns its URL.
func (c *cluster) createDB(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.local.URL())
	if err != nil {
		return "", fmt.Errorf("connect to the benchmark cluster: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.local.DatabaseURL(name), nil
}

// dropDB drops the replication slots of database name, then the database,
// releasing the WAL they held. Nothing may still be using them.
func (c *cluster) dropDB(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.local.URL())
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	// A walsender can take a moment to exit after its client: retry.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// pgRecvLogical streams slot from database db with pg_recvlogical and the
// pgoutput plugin (protocol 1, publication changecast, as changecast asks
// for), discarding the output, until it reaches endpos. It returns how long
// that took, from starting the process to its exit, and the CPU seconds
// pg_recvlogical itself used.
func (c *cluster) pgRecvLogical(ctx context.Context, db, slot, endpos string) (time.Duration, float64, error) {
	bin := filepath.Join(c.local.Config().BinDir, "pg_recvlogical")
	args := []string{
		"-d", c.local.DatabaseURL(db), "-S", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names=changecast",
		"-f", "/dev/null", "-F", "0", "-E", endpos, "--no-loop",
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = withoutPGEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("pg_recvlogical: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	took := time.Since(start)
	return took, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), nil
}

// withoutPGEnv is the environment minus PG* variables, which must not
// redirect the benchmark's tools to another server.
func withoutPGEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// postmasterPID returns the pid of the cluster's postmaster.
func (c *cluster) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.local.Dir(), "pgdata", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	var pid int
	if _, err := fmt.Sscan(first, &pid); err != nil || pid <= 0 {
		return 0, errors.New("bad postmaster.pid")
	}
	return pid, nil
}

// pgCPU returns the CPU seconds used so far by the PostgreSQL cluster: the
// postmaster, its live children, and the children it has reaped.
func (c *cluster) pgCPU() float64 {
	pid, err := c.postmasterPID()
	if err != nil {
		return 0
	}
	total := procCPU(pid, true)
	for _, child := range childPIDs(pid) {
		total += procCPU(child, false)
	}
	return total
}

// journalCounters returns how many journal commits (upserts of
// changecast.offsets: one per journal transaction) and journal rows
// PostgreSQL's statistics have counted in conn's database. Backends report
// statistics about once a second, so differences are approximate.
func journalCounters(ctx context.Context, conn *pgx.Conn) (commits, rows int64, err error) {
	err = conn.QueryRow(ctx, `SELECT
	COALESCE((SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'changecast' AND relname = 'offsets'), 0),
	COALESCE((SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = 'changecast' AND relname = 'journal'), 0)`).Scan(&commits, &rows)
	if err != nil {
		return 0, 0, fmt.Errorf("read journal statistics: %w", err)
	}
	return commits, rows, nil
}

// settledCPU returns pgCPU once the walsender that served slot has exited
// and been reaped (its CPU time then counts in the postmaster's children
// time): it waits until the slot is inactive and two readings 20 ms apart
// agree, at most a few seconds.
func (c *cluster) settledCPU(ctx context.Context, slot string) float64 {
	if conn, err := pgx.Connect(ctx, c.local.URL()); err == nil {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var active bool
			if err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil || !active {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		conn.Close(context.Background())
	}
	prev := c.pgCPU()
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond) // polling interval
		cur := c.pgCPU()
		if cur == prev {
			return cur
		}
		prev = cur
	}
	return prev
}
