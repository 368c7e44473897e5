package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/wsapi"
	"github.com/changecast/changecast/wsapi/client"
	"github.com/changecast/changecast/wsapi/client/clienttest"
)

// TestInstanceDeletes runs the program against a real changecast WebSocket
// server (clienttest: wsapi behind httptest, with a journal), restarts the
// server and cuts its connections mid-run, restarts the program itself,
// and fakes a crash that lost the last cursor save: every delete must be
// recorded exactly once, in order.
func TestInstanceDeletes(t *testing.T) {
	srv := clienttest.New(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "deletes.jsonl")
	tokenFile := filepath.Join(dir, "token")
	token := srv.Token("deletes-bot", wsapi.RoleViewer, "instance")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--server", srv.URL(), "--token-file", tokenFile, "--out", out, "--max-backoff", "50ms"}

	var deleted []string // ids, in publish order
	n := 0
	publish := func(k int) {
		var batch []entities.Change
		for range k {
			n++
			batch = append(batch, instance(entities.OpCreate, n), instance(entities.OpUpdate, n))
			if n%3 != 0 { // some instances survive
				batch = append(batch, instance(entities.OpDelete, n))
				deleted = append(deleted, instance(entities.OpDelete, n).EntityID)
			}
			batch = append(batch, entities.Change{EntityType: "pool", Operation: entities.OpDelete, Payload: entities.RowOf(map[string]any{"id": "p"}), CommitTime: time.Now()})
		}
		srv.Publish(batch...)
	}
	wait := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for len(readRecords(t, out)) < len(deleted) {
			if time.Now().After(deadline) {
				t.Fatalf("recorded %d deletes, want %d", len(readRecords(t, out)), len(deleted))
			}
			time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
		}
	}

	logs := &syncBuffer{}
	prog := start(t, args, logs)
	// With no cursor file yet, the program starts with the changes
	// committed once it is subscribed.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "following instance deletes"); {
		if time.Now().After(deadline) {
			t.Fatalf("the program did not subscribe:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	publish(4)
	wait()

	srv.Stop()
	publish(4) // while the server is down
	srv.Start()
	publish(4)
	wait()

	srv.DropConnections()
	publish(4)
	wait()

	// The program stops; deletes go on; a new one resumes from the
	// cursor file.
	prog.stop(t)
	publish(4)
	prog = start(t, args, logs)
	wait()
	prog.stop(t)

	// A crash between recording a delete and saving its cursor: the
	// cursor file is behind the output. Nothing is recorded twice.
	recs := readRecords(t, out)
	if err := client.FileCursorStore(out + ".cursor").Save(recs[len(recs)-3].Cursor); err != nil {
		t.Fatal(err)
	}
	publish(2)
	prog = start(t, args, logs)
	wait()
	prog.stop(t)

	recs = readRecords(t, out)
	var ids []string
	for i, r := range recs {
		ids = append(ids, r.ID.String())
		if i > 0 && r.Cursor <= recs[i-1].Cursor {
			t.Fatalf("record %d: cursor %d after %d", i, r.Cursor, recs[i-1].Cursor)
		}
		if r.Name == "" || r.Status != "running" || r.DeletedAt.IsZero() {
			t.Fatalf("record %d is incomplete: %+v", i, r)
		}
	}
	if !slices.Equal(ids, deleted) {
		t.Fatalf("recorded\n%v\nwant every delete exactly once, in order:\n%v", ids, deleted)
	}
	if strings.Contains(logs.String(), token) {
		t.Fatal("the program logged its token")
	}
	if !strings.Contains(logs.String(), "instance deleted") {
		t.Fatalf("the program did not log the deletes:\n%s", logs.String())
	}
}

// TestInstanceDeletes_TornLine checks that a partial last line (a crash
// mid-write) is dropped when the program opens its output again.
func TestInstanceDeletes_TornLine(t *testing.T) {
	out := filepath.Join(t.TempDir(), "deletes.jsonl")
	if err := os.WriteFile(out, []byte(`{"cursor":7,"id":"00000000-0000-4000-8000-000000000001"}`+"\n"+`{"cursor":9,"id":"0000`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := openRecorder(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if r.last != 7 {
		t.Fatalf("last cursor %d, want 7 (the torn line ignored)", r.last)
	}
	if err := r.append(record{Cursor: 8}); err != nil {
		t.Fatal(err)
	}
	if got := readRecords(t, out); len(got) != 2 || got[1].Cursor != 8 {
		t.Fatalf("after append: %+v", got)
	}
}

func instance(op entities.Operation, n int) entities.Change {
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	status := "running"
	if op == entities.OpCreate {
		status = "pending_create"
	}
	return entities.Change{
		EntityType: "instance",
		Operation:  op,
		EntityID:   id,
		Payload: entities.RowOf(map[string]any{
			"id": id, "name": fmt.Sprintf("runner-%d", n), "status": status, "provider_id": "lxd-" + id[len(id)-4:],
			"pool_id": "00000000-0000-4000-9000-000000000001", "agent_id": int64(n),
		}),
		CommitTime: time.Date(2026, 11, 23, 10, 0, n, 0, time.UTC),
	}
}

// proc is the program running in-process.
type proc struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, args []string, logs *syncBuffer) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, args, logs) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- nil // for the cleanup
		if err != nil {
			t.Fatalf("program returned %v, want nil after Ctrl-C", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("program did not stop within 10s")
	}
}

func readRecords(t testing.TB, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// A line still being written has no newline yet.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// syncBuffer is safe to read while other goroutines write to it.
type syncBuffer = testutil.SyncBuffer
