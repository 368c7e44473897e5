package main

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
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
	err = bad.register(flag.NewFlagSet("serve", flag.ContinueOnError))
	if err == nil || !strings.Contains(err.Error(), "CHANGECAST_CHUNK_SIZE") {
		t.Fatalf("bad CHANGECAST_CHUNK_SIZE: %v, want an error naming it", err)
	}
}
