// Package storetest gives tests a real PostgreSQL: one cluster shared by
// every test of a test binary (started lazily, stopped by Main), a fresh
// database per test (NewDatabase), or a dedicated cluster for tests that
// stop and restart PostgreSQL (NewCluster).
//
// Every package whose tests use it declares
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// Clusters run with fsync=off and full_page_writes=off (synchronous_commit
// stays on, so commit ordering and durability semantics as seen by clients
// are unchanged). When the server binaries are missing, tests fail with an
// install hint; they are never skipped.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/localpg"
)

// StartTimeout bounds the start of a test cluster.
const StartTimeout = 90 * time.Second

// Settings are the postgresql.conf settings of test clusters.
var Settings = map[string]string{
	"fsync":                 "off",
	"full_page_writes":      "off",
	"max_wal_senders":       "20",
	"max_replication_slots": "20",
	"max_connections":       "100",
	"shared_buffers":        "32MB",
}

var shared struct {
	once  sync.Once
	mu    sync.Mutex
	local *localpg.Cluster
	dir   string
	err   error
}

var dbCounter atomic.Int64

// Main runs the tests, stops the shared cluster and removes its directory,
// then exits with the tests' exit code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	if shared.local != nil {
		if err := shared.local.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "storetest: stop shared cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// TempDir creates a directory for a cluster that the server's OS user can
// reach (mode 0711; t.TempDir is 0700 and, as root, unreachable by the
// postgres user) and removes it in t.Cleanup.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := mkTemp()
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// tempPrefix names the directories of test clusters in os.TempDir().
const tempPrefix = "changecast-pg-"

// ownerFile, in a test cluster's directory, holds the pid of the test
// process that owns it.
const ownerFile = "owner.pid"

func mkTemp() (string, error) {
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// reapOrphans stops the servers and removes the directories of test
// clusters whose test process died without cleaning up (a test binary
// killed by -timeout or a signal never runs Main's cleanup), so they do not
// pile up on a small machine. Directories of live processes are left alone.
func reapOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner <= 0 || alive(owner) {
			continue
		}
		if pidText, err := os.ReadFile(filepath.Join(dir, "pgdata", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(pidText), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 {
				// SIGQUIT: immediate shutdown; the cluster is thrown away.
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				deadline := time.Now().Add(10 * time.Second)
				for alive(pid) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if alive(pid) {
					continue
				}
			}
		}
		os.RemoveAll(dir)
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// Config returns the localpg.Config of a test cluster in dir.
func Config(dir string) localpg.Config {
	s := make(map[string]string, len(Settings))
	for k, v := range Settings {
		s[k] = v
	}
	return localpg.Config{Dir: dir, Settings: s}
}

// Cluster returns the cluster shared by the tests of this binary, starting
// it on first use. It fails the test (with the install hint when the
// server binaries are missing) if the cluster cannot start.
func Cluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	shared.once.Do(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		reapOrphans()
		dir, err := mkTemp()
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		defer cancel()
		shared.local, shared.err = localpg.Start(ctx, Config(dir))
		if shared.err != nil {
			os.RemoveAll(dir)
			shared.dir = ""
		}
	})
	if shared.err != nil {
		t.Fatalf("storetest: start shared PostgreSQL: %v", shared.err)
	}
	return shared.local
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates a database with a unique name in the shared cluster
// and returns its URL (unix socket, superuser). t.Cleanup drops the
// replication slots on it, terminating their walsenders, then drops it
// WITH (FORCE).
func NewDatabase(t testing.TB) string {
	t.Helper()
	l := Cluster(t)
	name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 63 {
		name = name[:63]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, l.DatabaseURL("postgres"))
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	defer conn.Close(context.Background())
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if major, _, _ := strings.Cut(conn.PgConn().ParameterStatus("server_version"), "."); len(major) >= 2 && major >= "15" {
		// With fsync off, copying template1's files is about ten times
		// faster than WAL-logging them (PostgreSQL 15's default).
		create += " STRATEGY FILE_COPY"
	}
	if _, err := conn.Exec(ctx, create); err != nil {
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := DropDatabase(l, name); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})
	return l.DatabaseURL(name)
}

// DropDatabase drops database name in l after dropping its replication
// slots (terminating the walsenders that hold them).
func DropDatabase(l *localpg.Cluster, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, l.DatabaseURL("postgres"))
	if err != nil {
		return fmt.Errorf("drop database %s: connect: %w", name, err)
	}
	defer conn.Close(context.Background())
	for {
		rows, err := conn.Query(ctx, "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1", name)
		if err != nil {
			return fmt.Errorf("drop database %s: list slots: %w", name, err)
		}
		type slot struct {
			name string
			pid  *int32
		}
		var slots []slot
		for rows.Next() {
			var s slot
			if err := rows.Scan(&s.name, &s.pid); err != nil {
				rows.Close()
				return fmt.Errorf("drop database %s: list slots: %w", name, err)
			}
			slots = append(slots, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("drop database %s: list slots: %w", name, err)
		}
		if len(slots) == 0 {
			break
		}
		for _, s := range slots {
			if s.pid != nil {
				_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *s.pid)
				continue
			}
			// A slot may have become active again or been dropped
			// since the listing; the next round sorts it out.
			_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop database %s: replication slots still held: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// NewCluster starts a dedicated cluster, for tests that stop or restart
// PostgreSQL. t.Cleanup closes it and removes its directory.
func NewCluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	dir := TempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	l, err := localpg.Start(ctx, Config(dir))
	if err != nil {
		t.Fatalf("storetest: start PostgreSQL: %v", err)
	}
	// Registered after TempDir's cleanup, so it runs first.
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("storetest: stop PostgreSQL: %v", err)
		}
	})
	return l
}
