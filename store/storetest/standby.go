package storetest

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/localpg"
)

// NewStandby makes a streaming hot standby of primary, for tests of reads
// from a replica: pg_basebackup -R copies primary (run as the server's OS
// user, as localpg runs its tools) into a new directory, and localpg.Start
// starts it there, on its own port and socket. It has primary's system
// identifier, databases and roles (and so its password file). t.Cleanup
// stops it and removes its directory.
func NewStandby(t testing.TB, primary *localpg.Cluster) *localpg.Cluster {
	t.Helper()
	pc := primary.Config()
	dir := TempDir(t)
	pgdata := filepath.Join(dir, "pgdata")
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, filepath.Join(pc.BinDir, "pg_basebackup"),
		"-D", pgdata, "-R", "-X", "stream", "-c", "fast", "--no-sync", "-d", primary.DatabaseURL("postgres"))
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") { // the caller's PGHOST etc. must not redirect it
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := os.Mkdir(pgdata, 0o700); err != nil {
		t.Fatalf("storetest: standby: %v", err)
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: the copy belongs to the
		// user the primary runs as.
		u, err := user.Lookup(pc.OSUser)
		if err != nil {
			t.Fatalf("storetest: standby: OS user %s: %v", pc.OSUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(pgdata, uid, gid); err != nil {
			t.Fatalf("storetest: standby: %v", err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(cmd.Env, "HOME="+dir)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("storetest: pg_basebackup of %s: %v\n%s", primary.Dir(), err, out)
	}
	// The roles are the primary's, passwords included: so is the file
	// that holds the superuser's (localpg would otherwise set a new one,
	// which a standby cannot).
	pass, err := os.ReadFile(filepath.Join(primary.Dir(), "pgpass"))
	if err != nil {
		t.Fatalf("storetest: standby: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pgpass"), pass, 0o600); err != nil {
		t.Fatalf("storetest: standby: %v", err)
	}
	l, err := localpg.Start(ctx, Config(dir))
	if err != nil {
		t.Fatalf("storetest: start the standby: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("storetest: stop the standby: %v", err)
		}
	})
	return l
}

// WaitReplayed waits (at most 30 s) until standby has replayed everything
// primary had written when it was called.
func WaitReplayed(t testing.TB, primary, standby *localpg.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lsn string
	if err := queryRow(ctx, primary.DatabaseURL("postgres"), `SELECT pg_current_wal_lsn()::text`, &lsn); err != nil {
		t.Fatalf("storetest: primary's WAL position: %v", err)
	}
	for {
		var done bool
		err := queryRow(ctx, standby.DatabaseURL("postgres"), `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, &done, lsn)
		if err == nil && done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("storetest: the standby did not replay up to %s within 30s (last error: %v)", lsn, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// queryRow runs one query on a new connection to url and scans its row.
func queryRow(ctx context.Context, url, sql string, dest any, args ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest)
}
