package wsapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/testutil"
	"github.com/changecast/changecast/wire"
)

// testSecret is a 38-byte HMAC secret used only by tests.
var testSecret = []byte("wsapi-test-secret-0123456789abcdefghij")

// waitTimeout bounds every wait in these tests; nothing sleeps.
const waitTimeout = 10 * time.Second

// testEnv is a Server behind a real httptest.Server, with its logs captured.
type testEnv struct {
	srv     *Server
	ts      *httptest.Server
	auth    *Auth
	logs    *syncBuffer
	journal *memJournal // nil unless the config has one
}

// syncBuffer is safe to read while other goroutines write to it.
type syncBuffer = testutil.SyncBuffer

// newTestEnv starts a server; mod, if non-nil, adjusts the config first.
// Cleanup closes the server (waiting for its goroutines) and the listener.
func newTestEnv(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	auth, err := NewAuth(testSecret)
	if err != nil {
		t.Fatalf("NewAuth: %v", err)
	}
	logs := &syncBuffer{}
	cfg := Config{
		Registry: entities.DefaultRegistry(),
		Auth:     auth,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		ts.Close()
	})
	j, _ := cfg.Journal.(*memJournal)
	return &testEnv{srv: srv, ts: ts, auth: auth, logs: logs, journal: j}
}

// newJournalEnv starts a server with an in-memory journal.
func newJournalEnv(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	return newTestEnv(t, func(c *Config) {
		c.Journal = &memJournal{}
		if mod != nil {
			mod(c)
		}
	})
}

// publish does what the journal appender does: it assigns the next cursors
// to batch (appending it to the journal, if there is one) and publishes
// it. It returns the batch with cursors set.
func (e *testEnv) publish(batch []entities.Change) []entities.Change {
	if e.journal != nil {
		head, b := e.journal.append(batch...)
		e.srv.Publish(head, b)
		return b
	}
	b := slices.Clone(batch)
	head := e.srv.Head()
	for i := range b {
		head++
		b[i].Cursor = head
	}
	e.srv.Publish(head, b)
	return b
}

// memJournal is an in-memory Journal: a slice of changes behind a mutex,
// with a retention horizon and a few counters and hooks for tests.
type memJournal struct {
	mu          sync.Mutex
	rows        []entities.Change // ascending cursors, all > horizon
	last        int64             // highest cursor assigned
	horizon     int64
	reads       int // ReadAfter calls
	maxLimit    int // largest limit asked for
	maxReturned int // most rows returned by one read
	failNext    int // fail this many coming reads
	failed      int // reads failed
	typesSeen   [][]string
	horizons    int // Horizon calls
}

// append assigns cursors to changes, stores them and returns the new head
// and the stored copies, as the appender hands them to Publish.
func (j *memJournal) append(changes ...entities.Change) (int64, []entities.Change) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]entities.Change, len(changes))
	for i, c := range changes {
		j.last++
		c.Cursor = j.last
		out[i] = c
	}
	j.rows = append(j.rows, out...)
	return j.last, out
}

// trim removes every change with cursor <= upTo, as retention does.
func (j *memJournal) trim(upTo int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.horizon = max(j.horizon, upTo)
	i := 0
	for i < len(j.rows) && j.rows[i].Cursor <= upTo {
		i++
	}
	j.rows = j.rows[i:]
}

func (j *memJournal) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reads++
	j.maxLimit = max(j.maxLimit, limit)
	if types != nil {
		j.typesSeen = append(j.typesSeen, types)
	}
	if j.failNext > 0 {
		j.failNext--
		j.failed++
		return nil, errors.New("journal unavailable (test)")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if after < j.horizon {
		// As store does (and the Journal contract requires): an expired
		// cursor is an error, whatever is left after it.
		return nil, fmt.Errorf("read journal after cursor %d: cursor expired (%d)", after, j.horizon)
	}
	i, _ := slices.BinarySearchFunc(j.rows, after+1, func(c entities.Change, cur int64) int { return cmp.Compare(c.Cursor, cur) })
	var out []entities.Change
	for ; i < len(j.rows) && len(out) < limit; i++ {
		if types == nil || slices.Contains(types, j.rows[i].EntityType) {
			out = append(out, j.rows[i])
		}
	}
	j.maxReturned = max(j.maxReturned, len(out))
	return out, nil
}

func (j *memJournal) Horizon(context.Context) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.horizons++
	return j.horizon, nil
}

// stats returns the read counters.
func (j *memJournal) stats() (reads, maxLimit, maxReturned, failed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.reads, j.maxLimit, j.maxReturned, j.failed
}

func (e *testEnv) wsURL() string {
	return "ws" + strings.TrimPrefix(e.ts.URL, "http") + wire.EventsPath
}

// token mints a one-hour token for user id sub.
func (e *testEnv) token(t testing.TB, sub string, role Role, scope ...string) string {
	t.Helper()
	tok, err := e.auth.Mint(Claims{Name: sub + "-name", Role: role, Scope: scope, RegisteredClaims: regClaims(sub)}, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// dialRaw dials with the given headers and subprotocols and returns what the
// dialer returned, with the response body read.
func (e *testEnv) dialRaw(t testing.TB, url string, h http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, []byte, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: waitTimeout, Subprotocols: subprotocols}
	conn, resp, err := d.Dial(url, h)
	var body []byte
	if resp != nil && resp.Body != nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if conn != nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, resp, body, err
}

// dial connects with "Authorization: Bearer token" and fails the test if
// the upgrade does not succeed.
func (e *testEnv) dial(t testing.TB, token string) *websocket.Conn {
	t.Helper()
	conn, resp, body, err := e.dialRaw(t, e.wsURL(), bearer(token))
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d, body %s)", err, status, body)
	}
	return conn
}

// dialFilter dials and applies filter (a GARM filter message).
func (e *testEnv) dialFilter(t testing.TB, token, filter string) *websocket.Conn {
	t.Helper()
	conn := e.dial(t, token)
	e.sendFilter(t, conn, filter)
	return conn
}

// sendFilter sends msg and waits until the server has processed it (a valid
// filter gets no reply, so the test polls the server's message counter).
// Only one client may send at a time.
func (e *testEnv) sendFilter(t testing.TB, conn *websocket.Conn, msg string) {
	t.Helper()
	before := e.srv.messagesHandled.Load()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("send filter: %v", err)
	}
	waitFor(t, "filter to be processed", func() bool { return e.srv.messagesHandled.Load() > before })
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// readRaw returns the next data frame, failing after waitTimeout.
func readRaw(t testing.TB, conn *websocket.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	mt, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("got message type %d, want text", mt)
	}
	return data
}

// frame is any server frame, decoded loosely.
type frame struct {
	EntityType string         `json:"entity-type"`
	Operation  string         `json:"operation"`
	Payload    map[string]any `json:"payload"`
	Cursor     string         `json:"cursor"`
	Namespace  string         `json:"namespace"`
	Name       string         `json:"name"`
	ID         *string        `json:"id"`
	Args       map[string]any `json:"args"`
}

// key names a change frame by type, operation and payload id, e.g.
// "pool/create/p1"; other frames by namespace and name.
func (f frame) key() string {
	if f.EntityType != "" {
		id, _ := f.Payload["id"].(string)
		return f.EntityType + "/" + f.Operation + "/" + id
	}
	return f.Namespace + "." + f.Name
}

func readFrame(t testing.TB, conn *websocket.Conn) frame {
	t.Helper()
	data := readRaw(t, conn)
	f, err := decodeFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func decodeFrame(data []byte) (frame, error) {
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("decode frame %s: %w", data, err)
	}
	return f, nil
}

// expectKeys reads len(want) frames and compares their keys in order.
func expectKeys(t testing.TB, conn *websocket.Conn, want ...string) {
	t.Helper()
	for i, w := range want {
		if got := readFrame(t, conn).key(); got != w {
			t.Fatalf("frame %d: got %s, want %s", i, got, w)
		}
	}
}

// expectClose reads until the connection closes and returns the close
// code, failing if a data frame arrives first.
func expectClose(t testing.TB, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	_, data, err := conn.ReadMessage()
	if err == nil {
		t.Fatalf("got frame %s, want close", data)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("got read error %v, want a close frame", err)
	}
	return ce.Code
}

// chg builds a change whose payload id is id.
func chg(entityType string, op entities.Operation, id string) entities.Change {
	return entities.Change{
		EntityType: entityType,
		Operation:  op,
		EntityID:   id,
		Payload:    entities.RowOf(map[string]any{"id": id}),
		CommitTime: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
	}
}

// marker is a pool create with id "marker": publishing it after changes
// that must not arrive proves they did not, if it is the first frame read.
func marker() entities.Change { return chg("pool", entities.OpCreate, "marker") }

// parseFilter parses a GARM filter message for an admin-free context with
// the default secret rule (EntityType.IsSecret only).
func parseFilter(data []byte, reg *entities.Registry, sc scope) (*filter, error) {
	return parseCtx{reg: reg, sc: sc}.parseFilter(data)
}
