package localpg_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store/storetest"
)

func TestAttach(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := storetest.TempDir(t)
	owner, err := localpg.Start(ctx, storetest.Config(dir))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { owner.Close() })

	att, err := localpg.Attach(ctx, localpg.Config{Dir: dir})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if att.Port() != owner.Port() {
		t.Errorf("attached port %d, want %d", att.Port(), owner.Port())
	}
	if att.URL() != owner.URL() {
		t.Errorf("attached URL %s, want %s", att.URL(), owner.URL())
	}
	if att.PassFile() != owner.PassFile() {
		t.Errorf("attached PassFile %s, want %s", att.PassFile(), owner.PassFile())
	}
	// The attached handle reaches the server over the socket and, with
	// the launcher's pass file, over TCP; changes are visible to the owner.
	exec1(t, att.URL(), "CREATE TABLE attached (x int)")
	if got := queryOne(t, att.TCPURL("changecast"), "SELECT inet_server_addr()::text"); got != "127.0.0.1/32" {
		t.Errorf("TCP via attached handle: inet_server_addr() = %q", got)
	}
	if got := queryOne(t, owner.URL(), "SELECT (to_regclass('attached') IS NOT NULL)::text"); got != "true" {
		t.Errorf("table created through the attached handle not seen by the owner")
	}

	// The attached handle neither stops nor (re)starts the server.
	if err := att.Stop(ctx); err != nil {
		t.Errorf("attached Stop: %v", err)
	}
	if err := att.Restart(ctx); err == nil {
		t.Errorf("attached Restart succeeded, want an error")
	}
	if err := att.Close(); err != nil {
		t.Errorf("attached Close: %v", err)
	}
	if got := queryOne(t, owner.URL(), "SELECT 'still up'"); got != "still up" {
		t.Errorf("after closing the attached handle: %q", got)
	}
	// Start still refuses while the owner runs.
	if _, err := localpg.Start(ctx, localpg.Config{Dir: dir}); !errors.Is(err, localpg.ErrAlreadyRunning) {
		t.Errorf("Start while running: got %v, want ErrAlreadyRunning", err)
	}

	url := owner.URL()
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	waitDown(t, url)
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: dir}); !errors.Is(err, localpg.ErrNotRunning) {
		t.Errorf("Attach on a stopped cluster: got %v, want ErrNotRunning", err)
	}
}

func TestAttach_NotRunning(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)

	// Never started.
	empty := t.TempDir()
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: empty}); !errors.Is(err, localpg.ErrNotRunning) {
		t.Errorf("empty dir: got %v, want ErrNotRunning", err)
	}
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: filepath.Join(empty, "missing")}); !errors.Is(err, localpg.ErrNotRunning) {
		t.Errorf("missing dir: got %v, want ErrNotRunning", err)
	}

	// A stale postmaster.pid left by a server that died.
	stale := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stale, "pgdata"), 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile := strconv.Itoa(dead.Process.Pid) + "\n" + stale + "/pgdata\n1700000000\n5432\n" + stale + "/run\n127.0.0.1\n0\nready\n"
	if err := os.WriteFile(filepath.Join(stale, "pgdata", "postmaster.pid"), []byte(pidFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: stale}); !errors.Is(err, localpg.ErrNotRunning) {
		t.Errorf("stale pid file: got %v, want ErrNotRunning", err)
	}

	if _, err := localpg.Attach(context.Background(), localpg.Config{}); err == nil {
		t.Errorf("empty Dir: got nil error")
	}
}
