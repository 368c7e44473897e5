package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/changecast/changecast/internal/testutil"
)

// TestServeFlags_Environment checks that every serve flag takes its
// default from CHANGECAST_<FLAG>, that the command line wins, and that a
// bad value names its variable.
func TestServeFlags_Environment(t *testing.T) {
	t.Setenv("CHANGECAST_ON_SLOT_LOSS", "stop")
	t.Setenv("CHANGECAST_MAX_CONNECTIONS", "7")
	t.Setenv("CHANGECAST_LOGIN_WINDOW", "3m")
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg serveConfig
	if err := cfg.register(fs); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if err := parseFlags(fs, []string{"--max-connections", "9"}); err != nil {
		t.Fatal(err)
	}
	if cfg.onSlotLoss != "stop" || cfg.maxConnections != 9 || cfg.loginWindow != 3*time.Minute {
		t.Fatalf("on-slot-loss %q, max-connections %d, login-window %s; want stop, 9 (flag wins), 3m", cfg.onSlotLoss, cfg.maxConnections, cfg.loginWindow)
	}
	// The README's configuration table names every flag with its variable.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	fs.VisitAll(func(f *flag.Flag) {
		row := "| `--" + f.Name + "` | `" + envName(f.Name) + "` |"
		if !strings.Contains(string(readme), row) {
			missing = append(missing, row)
		}
	})
	if len(missing) > 0 {
		t.Fatalf("README.md's configuration table lacks rows starting:\n%s", strings.Join(missing, "\n"))
	}
	t.Setenv("CHANGECAST_CHUNK_SIZE", "many")
	var bad serveConfig
	badFS := flag.NewFlagSet("serve", flag.ContinueOnError)
	if err := bad.register(badFS); err != nil {
		t.Fatal(err)
	}
	err = applyEnv(badFS)
	if err == nil || !strings.Contains(err.Error(), "CHANGECAST_CHUNK_SIZE") {
		t.Fatalf("bad CHANGECAST_CHUNK_SIZE: %v, want an error naming it", err)
	}
}

// TestFlags_UsageNeverShowsTheEnvironment: a database URL in the
// environment holds a password; a flag error or -h prints the usage, which
// must show the built-in defaults, not the environment's values. demo
// applies the environment once (a repeatable --table from it is not
// doubled).
func TestFlags_UsageNeverShowsTheEnvironment(t *testing.T) {
	t.Setenv(envDatabaseURL, "postgres://u:CANARY-pw@127.0.0.1:1/db")
	t.Setenv(envReadURL, "postgres://u:CANARY-pw@127.0.0.1:2/db")
	for _, cmd := range [][]string{{"serve", "--bogus"}, {"demo", "--bogus"}, {"inspect", "--bogus"}, {"user", "list", "--bogus"}} {
		var stdout, stderr testutil.SyncBuffer
		err := run(context.Background(), cmd, &stdout, &stderr)
		if err == nil || strings.Contains(stdout.String()+stderr.String()+err.Error(), "CANARY-pw") {
			t.Errorf("%v: error %v; the password reached the output:\n%s%s", cmd, err, stdout.String(), stderr.String())
		}
	}
	t.Setenv("CHANGECAST_TABLE", "order=public.orders")
	cfg, err := parseDemoFlags(nil, io.Discard)
	if err != nil || len(cfg.serve.tables) != 1 {
		t.Fatalf("demo with CHANGECAST_TABLE: %v, tables %v; want it once", err, cfg.serve.tables)
	}
}

// TestLoadSecret_ConcurrentCreate: processes started at the same moment
// with one data dir (two gateways) all get the same whole key; none reads
// the file while it is being written.
func TestLoadSecret_ConcurrentCreate(t *testing.T) {
	t.Setenv(envJWTSecret, "")
	t.Setenv(envJWTSecretFile, "")
	for round := range 200 {
		dir := filepath.Join(t.TempDir(), "data")
		const n = 8
		keys := make([][]byte, n)
		errs := make([]error, n)
		var start, wg sync.WaitGroup
		start.Add(1)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start.Wait()
				keys[i], errs[i] = loadSecret(dir, true)
			}()
		}
		start.Done()
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d: loadSecret %d: %v", round, i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) || len(keys[i]) < minSecretLen {
				t.Fatalf("round %d: process %d got another key (or a short one) than process 0", round, i)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "."+secretFile+"*")); len(left) != 0 {
			t.Fatalf("round %d: temporary files left behind: %q", round, left)
		}
	}
}
