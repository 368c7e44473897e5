package watcher

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store/storetest"
	"github.com/jackc/pgx/v5"
)

// clusterEnv is an env on a dedicated cluster, for tests that restart it.
type clusterEnv struct {
	local *localpg.Cluster
	env   *env
}

func newClusterEnv(t testing.TB) *clusterEnv {
	t.Helper()
	l := storetest.NewCluster(t)
	return &clusterEnv{local: l, env: setupEnv(t, l.URL())}
}

// restart restarts PostgreSQL (fast shutdown) and returns the env with a
// new connection.
func (c *clusterEnv) restart(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout*3)
	defer cancel()
	c.env.conn.Close(ctx)
	if err := c.local.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	conn, err := pgx.Connect(ctx, c.env.url)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	e := *c.env
	e.conn = conn
	c.env = &e
	return c.env
}

func TestCheck_OK(t *testing.T) {
	e := newEnv(t)
	if err := newWatcher(t, e.config(t)).Check(context.Background()); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
}

func TestCheck_WALLevelReplica(t *testing.T) {
	cfg := storetest.Config(storetest.TempDir(t))
	cfg.Settings["wal_level"] = "replica"
	ctx, cancel := context.WithTimeout(context.Background(), storetest.StartTimeout)
	defer cancel()
	l, err := localpg.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start cluster with wal_level=replica: %v", err)
	}
	t.Cleanup(func() { l.Close() })

	w := newWatcher(t, Config{URL: l.URL(), Slot: uniqueSlot(t), Registry: testRegistry(t), Logger: testLogger(t)})
	err = w.Check(ctx)
	want := "wal_level is replica; set wal_level=logical in postgresql.conf and restart PostgreSQL"
	if !errors.Is(err, ErrWALLevel) || err.Error() != want {
		t.Fatalf("Check = %v, want %q (ErrWALLevel)", err, want)
	}
	if Retryable(err) {
		t.Errorf("Retryable(%v) = true, want false", err)
	}
}

func TestCheck_MissingPublication(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	cfg.Publication = "nope"
	w := newWatcher(t, cfg)
	err := w.Check(context.Background())
	if !errors.Is(err, ErrPublicationMissing) || !strings.Contains(err.Error(), `publication "nope" does not exist`) || !strings.Contains(err.Error(), "CREATE PUBLICATION") {
		t.Fatalf("Check = %v, want ErrPublicationMissing saying what to do", err)
	}
	// Run says the same and creates no slot.
	if err := w.Run(context.Background(), make(chan Transaction)); !errors.Is(err, ErrPublicationMissing) {
		t.Fatalf("Run = %v, want ErrPublicationMissing", err)
	}
	if readSlot(t, e.conn, cfg.Slot).exists {
		t.Errorf("Run created the slot although the publication is missing")
	}
}

func TestCheck_NoReplicationPrivilege(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `CREATE ROLE plain_user LOGIN`)
	t.Cleanup(func() {
		// Roles are cluster-wide; the database is dropped by storetest.
		e.exec(t, `DROP OWNED BY plain_user`)
		e.exec(t, `DROP ROLE plain_user`)
	})
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("plain_user")
	cfg := e.config(t)
	cfg.URL = u.String()
	err = newWatcher(t, cfg).Check(context.Background())
	if !errors.Is(err, ErrReplicationPrivilege) || !strings.Contains(err.Error(), `ALTER ROLE "plain_user" REPLICATION`) {
		t.Fatalf("Check = %v, want ErrReplicationPrivilege with the fix", err)
	}
}

func TestCheck_SlotInUse(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	start(t, newWatcher(t, cfg), 1)

	second := newWatcher(t, cfg)
	err := second.Check(context.Background())
	if !errors.Is(err, ErrSlotInUse) || !strings.Contains(err.Error(), "is active for PID") {
		t.Fatalf("Check = %v, want ErrSlotInUse", err)
	}
	err = second.Run(context.Background(), make(chan Transaction))
	if !errors.Is(err, ErrSlotInUse) {
		t.Fatalf("second Run = %v, want ErrSlotInUse", err)
	}
	if !Retryable(err) {
		t.Errorf("Retryable(ErrSlotInUse) = false, want true: a standby retries")
	}
	if second.Streaming() {
		t.Errorf("second watcher reports streaming")
	}
}

func TestCheck_SlotMismatch(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	e.exec(t, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, cfg.Slot)
	err := newWatcher(t, cfg).Check(context.Background())
	if !errors.Is(err, ErrSlotMismatch) || !strings.Contains(err.Error(), `output plugin "test_decoding"`) {
		t.Fatalf("Check = %v, want ErrSlotMismatch naming the plugin", err)
	}
}

func TestNew_Validates(t *testing.T) {
	reg := testRegistry(t)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{Registry: reg}, "URL is empty"},
		{"no registry", Config{URL: "postgres://x@localhost/db"}, "registry is nil"},
		{"bad slot", Config{URL: "postgres://x@localhost/db", Registry: reg, Slot: "Bad-Slot"}, "slot name"},
		{"bad publication", Config{URL: "postgres://x@localhost/db", Registry: reg, Publication: "a'b"}, "publication name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, want error containing %q", err, c.want)
			}
		})
	}
	w, err := New(Config{URL: "postgres://x:secret@localhost/db", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Slot != DefaultSlot || w.cfg.Publication != DefaultPublication || w.cfg.StatusInterval != DefaultStatusInterval {
		t.Errorf("defaults not filled: %+v", w.cfg)
	}
	if strings.Contains(w.redactedURL(), "secret") {
		t.Errorf("redacted URL %q holds the password", w.redactedURL())
	}
	for _, u := range []string{
		"postgres://bob@localhost/db?password=hunter2&sslmode=disable",
		"postgres://bob@localhost/db?sslpassword=hunter2",
		"postgres://bob:hunter2@localhost/db?PASSWORD=hunter2",
	} {
		w, err := New(Config{URL: u, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		if got := w.redactedURL(); strings.Contains(got, "hunter2") || !strings.Contains(got, "localhost/db") {
			t.Errorf("redactedURL(%q) = %q: password kept or URL lost", u, got)
		}
	}
	// The redacted URL is what Check's errors carry.
	w, err = New(Config{URL: "postgres://bob@127.0.0.1:1/db?password=hunter2&connect_timeout=1", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Check(context.Background()); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Check on an unreachable server = %v: want an error without the password", err)
	}
}
