package storetest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func count(t testing.TB, url, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestCluster_Shared(t *testing.T) {
	t.Parallel()
	a, b := storetest.Cluster(t), storetest.Cluster(t)
	if a != b {
		t.Fatal("Cluster returned two clusters")
	}
	fi, err := os.Stat(filepath.Dir(filepath.Join(a.Dir(), "x")))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o711 {
		t.Errorf("cluster dir mode %04o, want 0711", perm)
	}
}

// TestNewDatabase_Cleanup checks that the cleanup drops the database even
// while a walsender streams from a slot on it and a client is connected.
func TestNewDatabase_Cleanup(t *testing.T) {
	t.Parallel()
	l := storetest.Cluster(t)
	admin := l.DatabaseURL("postgres")
	var name string
	var recv *exec.Cmd
	t.Run("inner", func(t *testing.T) {
		url := storetest.NewDatabase(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		// Left open on purpose: DROP DATABASE WITH (FORCE) must end it.
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('idle_slot', 'test_decoding')"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('busy_slot', 'test_decoding')"); err != nil {
			t.Fatal(err)
		}
		recv = exec.Command(filepath.Join(l.Config().BinDir, "pg_recvlogical"), "-d", url, "--slot", "busy_slot", "--start", "--no-loop", "-f", os.DevNull)
		if err := recv.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for count(t, admin, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'busy_slot' AND active") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("pg_recvlogical never made busy_slot active")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	if recv != nil {
		// pg_recvlogical exits once its walsender is terminated.
		done := make(chan error, 1)
		go func() { done <- recv.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			recv.Process.Kill()
			<-done
			t.Error("pg_recvlogical still running after cleanup")
		}
	}
	if n := count(t, admin, "SELECT count(*) FROM pg_database WHERE datname = $1", name); n != 0 {
		t.Errorf("database %s still exists after cleanup", name)
	}
	if n := count(t, admin, "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('idle_slot', 'busy_slot')"); n != 0 {
		t.Errorf("%d slots left after cleanup", n)
	}
}

func TestNewDatabase_Unique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		url := storetest.NewDatabase(t)
		if seen[url] {
			t.Fatalf("NewDatabase returned %s twice", url)
		}
		seen[url] = true
	}
}

func TestNewCluster(t *testing.T) {
	t.Parallel()
	l := storetest.NewCluster(t)
	if l == storetest.Cluster(t) {
		t.Fatal("NewCluster returned the shared cluster")
	}
	if n := count(t, l.URL(), "SELECT 1"); n != 1 {
		t.Fatalf("SELECT 1 = %d", n)
	}
}
