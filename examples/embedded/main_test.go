package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/store/storetest"
)

// TestEmbedded runs the example: its own entity type on the embedded
// PostgreSQL, the pipeline and the hub in-process, and the change it made
// itself received through the Go client, without the secret field.
func TestEmbedded(t *testing.T) {
	var stdout, stderr testutil.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"--data-dir", storetest.TempDir(t), "-v"}, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`^create note (\S+) cursor=(\d+) payload=(\{.*\})\n$`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("stdout %q, want one line 'create note <id> cursor=<n> payload=<json>'", stdout.String())
	}
	var payload map[string]any
	if err := json.Unmarshal([]byte(m[3]), &payload); err != nil {
		t.Fatalf("payload %s: %v", m[3], err)
	}
	if payload["id"] != m[1] || payload["title"] != "hello from an embedded changecast" {
		t.Errorf("payload %v: want the note it wrote", payload)
	}
	if _, ok := payload["share_token"]; ok || strings.Contains(stdout.String()+stderr.String(), "never-leaves-") {
		t.Errorf("the secret share token left changecast:\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
	}
}
