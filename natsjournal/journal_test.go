package natsjournal_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/natsjournal/natstest"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

const slot = "changecast"

// txn builds a source transaction (or chunk) of n changes with indexes
// from first, alternating pool and instance creates.
func txn(commit, end entities.LSN, xid uint32, first, n int, final bool) entities.Transaction {
	ct := time.Date(2026, 11, 23, 10, 0, 0, int(xid)*1000, time.UTC)
	t := entities.Transaction{Xid: xid, CommitLSN: commit, CommitTime: ct, Final: final}
	if final {
		t.EndLSN = end
	}
	for i := first; i < first+n; i++ {
		id := fmt.Sprintf("%d-%d", xid, i)
		typ := "pool"
		if i%2 == 1 {
			typ = "instance"
		}
		t.Changes = append(t.Changes, entities.Change{
			EntityType: typ, Operation: entities.OpCreate, EntityID: id,
			Payload:   entities.RowOf(map[string]any{"id": id, "n": int64(i), "name": "<a&b>"}),
			CommitLSN: commit, EndLSN: end, Index: i, Xid: xid, CommitTime: ct,
		})
	}
	return t
}

// small is the k-th small Final transaction of n changes.
func small(k, n int) entities.Transaction {
	return txn(entities.LSN(0x1000*k), entities.LSN(0x1000*k+0x100), uint32(1000+k), 0, n, true)
}

// env is a journal on a NATS server with the events table and the writer
// lock in a throwaway PostgreSQL database.
type env struct {
	t   *testing.T
	db  *store.DB
	url string
	cfg natsjournal.Config
}

func newEnv(t *testing.T, url string) *env {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.MigrateOwn(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, url: url, cfg: natsjournal.Config{URL: url, Locker: natsjournal.PGLocker{DB: db}, Events: db, Source: "test-source"}}
}

func (e *env) open(mod ...func(*natsjournal.Config)) *natsjournal.Journal {
	e.t.Helper()
	cfg := e.cfg
	for _, m := range mod {
		m(&cfg)
	}
	j, err := natsjournal.Open(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(j.Close)
	return j
}

// commits records OnCommit calls.
type commits struct {
	mu  sync.Mutex
	all []pipeline.Committed
}

func (c *commits) add(x pipeline.Committed) { c.mu.Lock(); c.all = append(c.all, x); c.mu.Unlock() }
func (c *commits) endLSNs() []entities.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []entities.LSN
	for _, x := range c.all {
		if x.EndLSN != 0 {
			out = append(out, x.EndLSN)
		}
	}
	return out
}

func openWriter(t *testing.T, j *natsjournal.Journal, c *commits) pipeline.Writer {
	t.Helper()
	w, err := j.OpenWriter(context.Background(), pipeline.WriterConfig{Slot: slot, OnCommit: c.add, SanitizeEvent: sanitize.Event})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// run feeds txs to w.Run and waits until they are all committed (by their
// EndLSN reported), then stops Run.
func run(t *testing.T, w pipeline.Writer, c *commits, txs ...entities.Transaction) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan entities.Transaction, len(txs))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, in) }()
	var last entities.LSN
	for _, tx := range txs {
		in <- tx
		if tx.Final {
			last = tx.EndLSN
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ends := c.endLSNs()
		if len(ends) > 0 && ends[len(ends)-1] >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("transactions up to %s not committed; commits %v", last, ends)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// readAll reads the whole journal after 0, of types.
func readAll(t *testing.T, j *natsjournal.Journal, types []string) []entities.Change {
	t.Helper()
	var out []entities.Change
	var after int64
	for {
		page, err := j.ReadAfter(context.Background(), after, 7, types)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < 7 {
			return out
		}
		after = page[len(page)-1].Cursor
	}
}

// ids lists "cursor:entity id" of changes.
func ids(cs []entities.Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%d:%s", c.Cursor, c.EntityID))
	}
	return out
}

func TestJournal_WriteReadExactlyOnce(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open(func(c *natsjournal.Config) { c.MaxBatch = 4 })
	var c commits
	w := openWriter(t, j, &c)
	// Small transactions (grouped), one larger than a batch, one chunked.
	txs := []entities.Transaction{small(1, 2), small(2, 1), small(3, 9),
		txn(0x4000, 0x4100, 1004, 0, 3, false), txn(0x4000, 0x4100, 1004, 3, 3, false), txn(0x4000, 0x4100, 1004, 6, 2, true),
		small(5, 1)}
	run(t, w, &c, txs...)
	if w.Head() != 21 || w.Offset() != 0x5100 {
		t.Fatalf("head %d offset %s, want 21 and 0/5100", w.Head(), w.Offset())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	all := readAll(t, j, nil)
	if len(all) != 21 {
		t.Fatalf("read %d changes, want 21: %v", len(all), ids(all))
	}
	var want []entities.Change
	for _, tx := range txs {
		want = append(want, tx.Changes...)
	}
	for i, ch := range all {
		if ch.Cursor != int64(i+1) || ch.EntityID != want[i].EntityID || ch.CommitLSN != want[i].CommitLSN || ch.Index != want[i].Index {
			t.Fatalf("change %d = %d:%s@%s#%d, want %s@%s#%d", i, ch.Cursor, ch.EntityID, ch.CommitLSN, ch.Index, want[i].EntityID, want[i].CommitLSN, want[i].Index)
		}
		if string(ch.Payload.JSON()) != fmt.Sprintf(`{"id":"%s","n":%d,"name":"<a&b>"}`, want[i].EntityID, want[i].Index) {
			t.Fatalf("payload %s", ch.Payload.JSON())
		}
	}
	pools := readAll(t, j, []string{"pool"})
	for _, p := range pools {
		if p.EntityType != "pool" {
			t.Fatalf("filtered read returned %s", p.EntityType)
		}
	}
	if len(pools) != 12 {
		t.Fatalf("%d pools, want 12", len(pools))
	}

	// A new writer (a restart) starts from the stream's state and skips
	// a replay of everything.
	var c2 commits
	w2 := openWriter(t, j, &c2)
	if w2.Head() != 21 || w2.Offset() != 0x5100 {
		t.Fatalf("reopened: head %d offset %s", w2.Head(), w2.Offset())
	}
	run(t, w2, &c2, append(txs, small(6, 2))...)
	w2.Close()
	if n := len(readAll(t, j, nil)); n != 23 {
		t.Fatalf("after replay %d changes, want 23", n)
	}
	if off, err := j.Offset(context.Background(), slot); err != nil || off != 0x6100 {
		t.Fatalf("offset %s %v", off, err)
	}
}

// A large transaction cut short after some of its batches (the process
// died) is completed on restart without repeating a change.
func TestJournal_PartialTransactionCompleted(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open(func(c *natsjournal.Config) { c.MaxBatch = 3 })
	var c commits
	w := openWriter(t, j, &c)
	run(t, w, &c, small(1, 1))
	// Chunks of a big transaction; no final chunk arrives.
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan entities.Transaction, 4)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, in) }()
	in <- txn(0x2000, 0x2100, 2, 0, 4, false)
	in <- txn(0x2000, 0x2100, 2, 4, 4, false)
	deadline := time.Now().Add(5 * time.Second)
	for w.Head() < 7 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	w.Close()
	if w.Head() != 7 {
		t.Fatalf("head %d, want 7 (1 + two batches of 3)", w.Head())
	}
	if off, _ := j.Offset(context.Background(), slot); off != 0x1100 {
		t.Fatalf("offset moved to %s by a partial transaction", off)
	}
	// A restarted watcher announces itself before it replays: a system
	// event follows the partial transaction's parts in the stream, and
	// must not hide them from the next writer.
	wev := openWriter(t, j, &c)
	ectx, ecancel := context.WithCancel(context.Background())
	edone := make(chan error, 1)
	go func() { edone <- wev.Run(ectx, make(chan entities.Transaction)) }()
	ev := entities.NewEvent().FromSystem(uuidOf("sys")).WithCategory("server").WithAction("started").
		WithSeverity(entities.Informational).WithDescription("hello").WithMetadata(map[string]any{"k": "v"}).MustBuild()
	if err := wev.PersistEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	ecancel()
	<-edone
	wev.Close()
	// Restart: the watcher replays the whole transaction.
	var c2 commits
	w2 := openWriter(t, j, &c2)
	run(t, w2, &c2, txn(0x2000, 0x2100, 2, 0, 5, false), txn(0x2000, 0x2100, 2, 5, 5, true), small(3, 1))
	w2.Close()
	all := readAll(t, j, nil)
	var got []string
	for _, ch := range all {
		if ch.EntityType == entities.EventEntityType {
			continue
		}
		got = append(got, ch.EntityID)
	}
	want := "1001-0 2-0 2-1 2-2 2-3 2-4 2-5 2-6 2-7 2-8 2-9 1003-0"
	if strings.Join(got, " ") != want {
		t.Fatalf("journal %v, want %s", got, want)
	}
}

func TestJournal_SingleWriterAndStandby(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open()
	var c commits
	w := openWriter(t, j, &c)
	_, err := j.OpenWriter(context.Background(), pipeline.WriterConfig{Slot: slot})
	if err == nil || !j.Standby(err) {
		t.Fatalf("second writer: %v, want a standby error", err)
	}
	w.Close()
	w2 := openWriter(t, j, &c)
	w2.Close()
}

// Every batch expects the stream's last sequence: a writer that lost the
// race cannot publish out of order.
func TestJournal_StaleWriterRefused(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open()
	var c commits
	w := openWriter(t, j, &c)
	run(t, w, &c, small(1, 1))
	w.Close()
	w2 := openWriter(t, j, &c)
	run(t, w2, &c, small(2, 1))
	w2.Close()
	// w's head is stale (1); a system write through a new Run fails.
	stale, err := j.OpenWriter(context.Background(), pipeline.WriterConfig{Slot: slot, SanitizeEvent: sanitize.Event})
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	nc, _ := nats.Connect(e.url)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// Someone else publishes behind the writer's back.
	m := nats.NewMsg("changecast.pool.create")
	m.Data = []byte(`{"entity_type":"pool","operation":"create","entity_id":"x","committed_at":"2026-01-01T00:00:00Z"}`)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan entities.Transaction, 1)
	done := make(chan error, 1)
	go func() { done <- stale.Run(ctx, in) }()
	in <- small(3, 1)
	select {
	case err := <-done:
		if !errors.Is(err, natsjournal.ErrConflict) {
			t.Fatalf("Run: %v, want ErrConflict", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stale writer published")
	}
}

func TestJournal_EventsAndGap(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open()
	var c commits
	w := openWriter(t, j, &c)
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, in) }()
	ev := entities.NewEvent().FromSystem(uuidOf("sys")).WithCategory("server").WithAction("started").
		WithSeverity(entities.Informational).WithDescription("hello").WithMetadata(map[string]any{"password": "hunter2", "k": "v"}).MustBuild()
	for range 2 { // idempotent
		if err := w.PersistEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetEventStatus(context.Background(), nil, []uuidT{ev.ID}, entities.StatusRead); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	all := readAll(t, j, []string{entities.EventEntityType})
	if len(all) != 2 || all[0].Operation != entities.OpCreate || all[1].Operation != entities.OpUpdate {
		t.Fatalf("events journaled: %v", ids(all))
	}
	if strings.Contains(string(all[0].Payload.JSON()), "hunter2") {
		t.Fatal("a secret reached the journal")
	}
	marker := entities.NewEvent().FromSystem(uuidOf("sys")).WithCategory("replication").WithAction("slot_lost").
		WithSeverity(entities.Critical).WithDescription("lost").WithMetadata(map[string]any{"err": "slot dropped"}).MustBuild()
	gap, err := w.RecordGap(context.Background(), pipeline.Gap{FromLSN: 0x10, ToLSN: 0x9000, Reason: "replication slot dropped"}, marker)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if gap.Seq != 3 {
		t.Fatalf("gap at %d, want 3", gap.Seq)
	}
	var ge *store.GapError
	if _, err := j.ReadAfter(context.Background(), 1, 10, nil); !errors.As(err, &ge) || ge.Gap.ToLSN != 0x9000 {
		t.Fatalf("read before the gap: %v", err)
	}
	if h, err := j.Horizon(context.Background()); err != nil || h != 3 {
		t.Fatalf("horizon %d %v, want 3", h, err)
	}
	if off, _ := j.Offset(context.Background(), slot); off != 0x9000 {
		t.Fatalf("offset after gap %s", off)
	}
	// A journal opened afresh (another gateway) knows the gap too.
	j2 := e.open()
	if _, err := j2.ReadAfter(context.Background(), 0, 10, []string{"pool"}); !errors.As(err, &ge) {
		t.Fatalf("fresh journal read before the gap: %v", err)
	}
	if page, err := j2.ReadAfter(context.Background(), 3, 10, nil); err != nil || len(page) != 0 {
		t.Fatalf("read at the gap: %v %v", page, err)
	}
}

func TestJournal_RetentionExpiresCursors(t *testing.T) {
	e := newEnv(t, natstest.URL(natstest.Server(t)))
	j := e.open(func(c *natsjournal.Config) { c.MaxMsgs = 5 })
	var c commits
	w := openWriter(t, j, &c)
	run(t, w, &c, small(1, 4), small(2, 4))
	w.Close()
	if _, err := j.ReadAfter(context.Background(), 1, 10, nil); !errors.Is(err, store.ErrCursorExpired) {
		t.Fatalf("read after an expired cursor: %v", err)
	}
	if h, _ := j.Horizon(context.Background()); h != 3 {
		t.Fatalf("horizon %d, want 3", h)
	}
	page, err := j.ReadAfter(context.Background(), 3, 10, nil)
	if err != nil || len(page) != 5 {
		t.Fatalf("read at the horizon: %d %v", len(page), err)
	}
	// A writer after retention emptied nothing still knows the offset.
	if off, _ := j.Offset(context.Background(), slot); off != 0x2100 {
		t.Fatalf("offset %s", off)
	}
}

func TestJournal_BadConfigurationRefused(t *testing.T) {
	srv := natstest.Server(t)
	url := natstest.URL(srv)
	ctx := context.Background()
	if _, err := natsjournal.Open(ctx, natsjournal.Config{URL: "nats://user:s3cret@127.0.0.1:1"}); err == nil ||
		!strings.Contains(err.Error(), "connect to NATS") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("unreachable NATS: %v", err)
	}
	if _, err := natsjournal.Open(ctx, natsjournal.Config{URL: url, Replicas: 3}); err == nil || !strings.Contains(err.Error(), "3 replicas need") {
		t.Fatalf("three replicas on one server: %v", err)
	}
	nc, _ := nats.Connect(url)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := natsjournal.Open(ctx, natsjournal.Config{URL: url, Stream: "OTHER"}); err == nil || !strings.Contains(err.Error(), "has subjects") {
		t.Fatalf("stream with other subjects: %v", err)
	}
	j, err := natsjournal.Open(ctx, natsjournal.Config{URL: url, Source: "db-a"})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := natsjournal.Open(ctx, natsjournal.Config{URL: url, Source: "db-b"}); err == nil || !strings.Contains(err.Error(), "another database") {
		t.Fatalf("stream of another database: %v", err)
	}
}

type uuidT = uuid.UUID

func uuidOf(s string) uuid.UUID { return uuid.NewSHA1(uuid.NameSpaceURL, []byte(s)) }
