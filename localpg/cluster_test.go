package localpg_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// queryOne runs a one-value query on url and returns the value as text.
func queryOne(t testing.TB, url, sql string, args ...any) string {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func exec1(t testing.TB, url, sql string) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitDown polls until nothing accepts connections on url.
func waitDown(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err != nil {
			return
		}
		conn.Close(context.Background())
		if time.Now().After(deadline) {
			t.Fatalf("server on %s still accepts connections", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCluster_Start(t *testing.T) {
	t.Parallel()
	l := storetest.Cluster(t)
	url := l.URL()
	if got := queryOne(t, url, "SELECT current_database()"); got != "changecast" {
		t.Errorf("current_database() = %q, want changecast", got)
	}
	if got := queryOne(t, url, "SELECT current_user"); got != "changecast" {
		t.Errorf("current_user = %q, want changecast", got)
	}
	settings := map[string]string{
		"wal_level":             "logical",
		"max_wal_senders":       "20", // storetest overrides the default 10
		"max_replication_slots": "20",
		"listen_addresses":      "127.0.0.1",
		"fsync":                 "off",
		"full_page_writes":      "off",
		"synchronous_commit":    "on",
		"port":                  strconv.Itoa(l.Port()),
	}
	for name, want := range settings {
		if got := queryOne(t, url, "SELECT current_setting($1)", name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got := queryOne(t, url, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"); got != "true" {
		t.Errorf("superuser = %s, want true", got)
	}
	if !strings.Contains(url, "host=") || strings.Contains(url, "127.0.0.1") {
		t.Errorf("URL() = %q, want a unix socket URL", url)
	}
}

func TestCluster_TCPAndReplication(t *testing.T) {
	t.Parallel()
	l := storetest.Cluster(t)
	// Host connections authenticate with scram through the pgpass file.
	if got := queryOne(t, l.TCPURL("changecast"), "SELECT inet_server_addr()::text"); got != "127.0.0.1/32" {
		t.Errorf("inet_server_addr() = %q, want 127.0.0.1/32", got)
	}
	fi, err := os.Stat(l.PassFile())
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("pgpass mode %04o, want 0600", perm)
	}
	// Logical replication connections are allowed over the socket and TCP.
	for _, url := range []string{l.URL(), l.TCPURL("changecast")} {
		ctx := testCtx(t)
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "database"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("replication connection over %s: %v", url, err)
		}
		res, err := conn.PgConn().Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
		conn.Close(context.Background())
		if err != nil {
			t.Fatalf("IDENTIFY_SYSTEM over %s: %v", url, err)
		}
		if len(res) != 1 || len(res[0].Rows) != 1 {
			t.Fatalf("IDENTIFY_SYSTEM returned %v", res)
		}
	}
}

func TestCluster_PsqlCommand(t *testing.T) {
	t.Parallel()
	l := storetest.Cluster(t)
	cmdline := l.PsqlCommand()
	t.Logf("PsqlCommand() = %s", cmdline)
	want := "PGPASSFILE=" + l.PassFile()
	if !strings.HasPrefix(cmdline, want) || !strings.Contains(cmdline, "@127.0.0.1:"+strconv.Itoa(l.Port())+"/changecast") {
		t.Fatalf("PsqlCommand() = %q, want PGPASSFILE=... psql \"postgres://changecast@127.0.0.1:%d/changecast\"", cmdline, l.Port())
	}
	pass, err := os.ReadFile(l.PassFile())
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(strings.Split(strings.Split(string(pass), "\n")[0], ":")[4])
	if pw == "" || strings.Contains(cmdline, pw) {
		t.Fatalf("PsqlCommand() %q reveals the password", cmdline)
	}
	// The command works as printed.
	if _, err := exec.LookPath("sh"); err == nil {
		psql := filepath.Join(l.Config().BinDir, "psql")
		if _, err := os.Stat(psql); err == nil {
			out, err := exec.Command("sh", "-c", strings.Replace(cmdline, " psql ", " "+psql+" ", 1)+" -Atc 'SELECT 42'").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "42" {
				t.Fatalf("running %q: %v: %s", cmdline, err, out)
			}
		}
	}
}

func TestCluster_RunsAsOSUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Log("not root: the server runs as the calling user")
	}
	l := storetest.Cluster(t)
	// Hold the connection so its backend lives while /proc is read.
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, l.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	st := procUID(t, pid)
	want := uint32(os.Geteuid())
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(u.Uid)
		want = uint32(n)
	}
	if st != want {
		t.Fatalf("backend %d runs as uid %d, want %d", pid, st, want)
	}
	// The socket directory is private to the server user.
	run := filepath.Join(l.Dir(), "run")
	fi, err := os.Stat(run)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("%s mode %04o, want 0700", run, perm)
	}
}

func procUID(t testing.TB, pid int) uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "Uid:" {
			n, _ := strconv.Atoi(f[2]) // effective uid
			return uint32(n)
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return 0
}

func TestCluster_RestartStopStart(t *testing.T) {
	t.Parallel()
	l := storetest.NewCluster(t)
	ctx := testCtx(t)
	exec1(t, l.URL(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
	before := queryOne(t, l.URL(), "SELECT pg_postmaster_start_time()::text")

	if err := l.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	after := queryOne(t, l.URL(), "SELECT pg_postmaster_start_time()::text")
	if after == before {
		t.Errorf("postmaster start time unchanged after Restart: %s", after)
	}

	port := l.Port()
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitDown(t, l.URL())
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := l.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if l.Port() != port {
		t.Errorf("port after Start = %d, want %d", l.Port(), port)
	}
	if got := queryOne(t, l.URL(), "SELECT v::text FROM kept"); got != "7" {
		t.Errorf("kept = %s, want 7", got)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitDown(t, l.URL())
}

func TestCluster_ReuseDataDir(t *testing.T) {
	t.Parallel()
	dir := storetest.TempDir(t)
	cfg := storetest.Config(dir)
	ctx := testCtx(t)
	l, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, l.URL(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
	port := l.Port()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	initdbMarker, err := os.Stat(filepath.Join(dir, "pgdata", "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}

	l2, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	t.Cleanup(func() { l2.Close() })
	if got := queryOne(t, l2.URL(), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("kept = %q, want %q", got, "still here")
	}
	if l2.Port() != port {
		t.Errorf("port = %d, want the previous start's %d", l2.Port(), port)
	}
	again, err := os.Stat(filepath.Join(dir, "pgdata", "PG_VERSION"))
	if err != nil || !again.ModTime().Equal(initdbMarker.ModTime()) {
		t.Errorf("PG_VERSION changed: initdb ran again?")
	}
	// TCP auth still works with the password written by the first start.
	if got := queryOne(t, l2.TCPURL("changecast"), "SELECT 'ok'"); got != "ok" {
		t.Errorf("TCP query = %q", got)
	}
}

func TestCluster_PassFileRecreated(t *testing.T) {
	t.Parallel()
	dir := storetest.TempDir(t)
	cfg := storetest.Config(dir)
	// Every statement logged: the new password must still not be.
	cfg.Settings["log_statement"] = "all"
	ctx := testCtx(t)
	l, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "pgpass")); err != nil {
		t.Fatal(err)
	}
	l2, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })
	if got := queryOne(t, l2.TCPURL("changecast"), "SELECT 'ok'"); got != "ok" {
		t.Errorf("TCP query = %q", got)
	}
	pass, err := os.ReadFile(l2.PassFile())
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Split(strings.TrimSpace(string(pass)), ":")
	password := fields[len(fields)-1]
	serverLog, err := os.ReadFile(l2.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if len(password) < 16 || strings.Contains(string(serverLog), password) {
		t.Fatalf("the regenerated password (%d chars) appears in the server log", len(password))
	}
	if !strings.Contains(string(serverLog), "statement:") {
		t.Fatal("log_statement=all logged nothing: the test proves nothing")
	}
}

func TestCluster_AlreadyRunning(t *testing.T) {
	t.Parallel()
	l := storetest.NewCluster(t)
	ctx := testCtx(t)
	_, err := localpg.Start(ctx, storetest.Config(l.Dir()))
	if !errors.Is(err, localpg.ErrAlreadyRunning) {
		t.Fatalf("second Start error = %v, want ErrAlreadyRunning", err)
	}
	want := "a PostgreSQL server is already running on " + l.Dir()
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "is another changecast using this data dir?") {
		t.Fatalf("error %q, want it to contain %q and the question", err, want)
	}
	// The first server is unharmed.
	if got := queryOne(t, l.URL(), "SELECT 'ok'"); got != "ok" {
		t.Fatalf("query = %q", got)
	}
}

func TestCluster_MissingBinaries(t *testing.T) {
	empty := t.TempDir()
	_, err := localpg.Start(testCtx(t), localpg.Config{Dir: storetest.TempDir(t), BinDir: empty})
	if !errors.Is(err, localpg.ErrNoServerBinaries) {
		t.Fatalf("error = %v, want ErrNoServerBinaries", err)
	}
	for _, want := range []string{"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in " + empty, "apt-get install -y postgresql", "CHANGECAST_PG_BIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want it to contain %q", err, want)
		}
	}

	t.Setenv("CHANGECAST_PG_BIN", empty)
	_, err = localpg.Start(testCtx(t), localpg.Config{Dir: storetest.TempDir(t)})
	if !errors.Is(err, localpg.ErrNoServerBinaries) || !strings.Contains(err.Error(), empty) {
		t.Fatalf("with CHANGECAST_PG_BIN: error = %v, want ErrNoServerBinaries naming %s", err, empty)
	}
}

func TestCluster_UntraversableDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to another OS user")
	}
	base := t.TempDir() // 0700, owned by root: postgres cannot enter it
	_, err := localpg.Start(testCtx(t), storetest.Config(filepath.Join(base, "data")))
	if err == nil {
		t.Fatal("Start under a 0700 root-owned dir succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "chmod o+x") || !strings.Contains(err.Error(), "postgres") {
		t.Fatalf("error %q, want it to explain chmod o+x for the postgres user", err)
	}
	t.Logf("error: %v", err)
}

func TestCluster_StartFailureShowsLog(t *testing.T) {
	t.Parallel()
	dir := storetest.TempDir(t)
	cfg := storetest.Config(dir)
	cfg.Settings["shared_buffers"] = "nonsense"
	_, err := localpg.Start(testCtx(t), cfg)
	if err == nil {
		t.Fatal("Start with shared_buffers=nonsense succeeded")
	}
	if !strings.Contains(err.Error(), "postgres.log") || !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("error %q, want the end of the server log naming shared_buffers", err)
	}
	t.Logf("error: %v", err)
}

func TestCluster_ContextDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := localpg.Start(ctx, storetest.Config(storetest.TempDir(t)))
	if err == nil {
		t.Fatal("Start with a cancelled context succeeded")
	}
}

// TestCluster_InterruptedInitdbLeavesNoHalfCluster cancels a first start
// while initdb runs (Ctrl-C on the first "changecast serve"): the error says
// so, and the next start on the same directory makes a working cluster
// instead of failing on a half-initialised one.
func TestCluster_InterruptedInitdbLeavesNoHalfCluster(t *testing.T) {
	t.Parallel()
	dir := storetest.TempDir(t)
	cfg := storetest.Config(dir)
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel as soon as initdb has started writing.
	go func() {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(dir, "pgdata.initdb", "global")); err == nil {
				break
			}
			time.Sleep(time.Millisecond) // polling interval
		}
		cancel()
	}()
	if l, err := localpg.Start(ctx, cfg); err == nil {
		l.Close()
		t.Log("initdb finished before the cancel; only the restart is checked")
	} else if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted start: got %v, want context.Canceled", err)
	} else if _, err := os.Stat(filepath.Join(dir, "pgdata", "PG_VERSION")); err == nil {
		t.Fatal("an interrupted initdb left a cluster behind in pgdata")
	}
	l, err := localpg.Start(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("start after an interrupted initdb: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	if got := queryOne(t, l.URL(), "SELECT current_database()"); got == "" {
		t.Fatal("no database")
	}
}
