package storetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/changecast/changecast/localpg"
)

func TestReapOrphans(t *testing.T) {
	dir, err := mkTemp()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	l, err := localpg.Start(ctx, Config(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// Hand the cluster to a process that has exited, as if its test
	// binary had been killed.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	pidText, err := os.ReadFile(filepath.Join(dir, "pgdata", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(pidText[:indexNL(pidText)]))

	// A cluster owned by a live process (this one) is left alone.
	mine := Cluster(t)
	reapOrphans()

	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("orphan dir %s still exists (err %v)", dir, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("orphan postmaster %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(mine.Dir()); err != nil {
		t.Fatalf("shared cluster dir removed: %v", err)
	}
}

func indexNL(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return len(b)
}
