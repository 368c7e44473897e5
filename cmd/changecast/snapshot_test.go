package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/changecast/changecast/store/storetest"
)

// snapFrame is any frame a snapshot client reads.
type snapFrame struct {
	raw        []byte
	EntityType string          `json:"entity-type"`
	Operation  string          `json:"operation"`
	Payload    json.RawMessage `json:"payload"`
	Cursor     string          `json:"cursor"`
	Namespace  string          `json:"namespace"`
	Name       string          `json:"name"`
	ID         string          `json:"id"`
	Args       struct {
		Type    string `json:"type"`
		Cursor  string `json:"cursor"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"args"`
}

func readSnapFrame(t testing.TB, c *websocket.Conn, within time.Duration) (snapFrame, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, b, err := c.ReadMessage()
	if err != nil {
		return snapFrame{}, err
	}
	var f snapFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return snapFrame{}, fmt.Errorf("frame is not JSON: %v: %s", err, b)
	}
	f.raw = b
	return f, nil
}

// snapshotServer serves a fresh database holding shopSchema, watched
// through testdata/config/orders.yaml (a declared, non-garm schema).
func snapshotServer(t *testing.T, slot string, tweaks ...func(*serveConfig)) (url string, sql *pgx.Conn, srv *instance, dataDir string) {
	t.Helper()
	url = storetest.NewDatabase(t)
	sql = connect(t, url)
	exec1(t, sql, shopSchema)
	srv, _, dataDir = readyServerAt(t, url, slot, append([]func(*serveConfig){func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
	}}, tweaks...)...)
	return url, sql, srv, dataDir
}

const subscribeSnapshot = `{"namespace":"events","name":"subscribe","id":"s1","args":{"filters":["order","order_item"],"snapshot":true}}`

// TestServe_SnapshotThenStream: a snapshot request gets its response, the
// current rows (sanitized, in key order, as "snapshot" frames with no
// cursor), snapshot-complete, then the live stream; the rows are the
// bytes the same rows have when replicated.
func TestServe_SnapshotThenStream(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_basic")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note, updated_at) VALUES
		(2, 1, 5.50, 'new', 'CANARY-note', '2026-11-23 10:00:00+00'), (1, 1, 19.99, 'paid', 'CANARY-note', '2026-11-23 10:00:00+00')`)
	exec1(t, sql, `INSERT INTO shop.order_items VALUES (1, 2, 'SKU-2', 1, 2.00, 9.99), (1, 1, 'SKU-1', 2, 3.00, 9.99)`)

	// What the same row looks like replicated: a client without a
	// snapshot sees the update of order 1 that sets nothing new.
	live := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, live, `{"send-everything": false, "filters": [{"entity-type": "order", "operations": ["update"]}]}`)
	filterApplied(t, live)
	exec1(t, sql, `UPDATE orders SET status = status WHERE id = 1`)
	replicated := readFrame(t, live, 30*time.Second)

	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, subscribeSnapshot)
	var rows []snapFrame
	var complete snapFrame
	for complete.Args.Type == "" {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(f.raw, []byte("CANARY")) || bytes.Contains(f.raw, []byte("supplier_cost")) {
			t.Fatalf("a secret or a column outside the allow-list left changecast: %s", f.raw)
		}
		switch {
		case f.Name == "response":
			if len(rows) > 0 {
				t.Fatalf("response after rows")
			}
		case f.Name == "control":
			complete = f
		case f.Operation == "snapshot":
			if f.Cursor != "" {
				t.Errorf("snapshot row with a cursor: %s", f.raw)
			}
			rows = append(rows, f)
		default:
			t.Fatalf("unexpected frame before snapshot-complete: %s", f.raw)
		}
	}
	if complete.Args.Type != "snapshot-complete" || complete.Args.Cursor == "" {
		t.Fatalf("got %s, want snapshot-complete with a cursor", complete.raw)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.EntityType+" "+string(r.Payload))
	}
	if len(rows) != 4 || rows[0].EntityType != "order" || !strings.Contains(string(rows[0].Payload), `"id":1,`) ||
		!strings.Contains(string(rows[2].Payload), `"line_no":1,`) || !strings.Contains(string(rows[3].Payload), `"line_no":2,`) {
		t.Fatalf("rows:\n%s\nwant orders 1, 2 then items (1,1), (1,2)", strings.Join(got, "\n"))
	}
	var rep struct {
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(replicated.raw, &rep); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rows[0].Payload, rep.Payload) {
		t.Errorf("snapshot row %s\nreplicated    %s\nwant the same bytes", rows[0].Payload, rep.Payload)
	}

	exec1(t, sql, `DELETE FROM orders WHERE id = 2`)
	f, err := readSnapFrame(t, ws, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var after, at int64
	fmt.Sscan(f.Cursor, &after)
	fmt.Sscan(complete.Args.Cursor, &at)
	if f.Operation != "delete" || f.EntityType != "order" || after <= at {
		t.Fatalf("after snapshot-complete %s: got %s, want the delete of order 2 with a later cursor", complete.Args.Cursor, f.raw)
	}
}

// TestServe_SnapshotRefusals: a snapshot of an unknown type, with a bad
// match, or of a type outside the token's scope gets an error frame, and
// the connection stays usable.
func TestServe_SnapshotRefusals(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_refuse")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--data-dir", dataDir, "--user", "v", "--role", "viewer", "--scope", "order", "--config", "../../testdata/config/orders.yaml"}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	ws := dialWS(t, srv.addr, strings.TrimSpace(out.String()))
	for _, tc := range []struct{ req, code, want string }{
		{`{"namespace":"events","name":"subscribe","id":"a","args":{"filters":["orders"],"snapshot":true}}`, "400", `unknown entity type "orders"`},
		{`{"namespace":"events","name":"subscribe","id":"b","args":{"filters":[{"entity-type":"order","match":{"status":{"x":1}}}],"snapshot":true}}`, "400", `value must be a string, number`},
		{`{"namespace":"events","name":"filter","id":"c","args":{"filters":[{"entity-type":"customer"}],"snapshot":true}}`, "403", `not allowed for this token`},
		{`{"namespace":"events","name":"subscribe","id":"e","args":{"filters":["order"],"snapshot":"yes"}}`, "400", `"snapshot" must be true or false`},
	} {
		sendJSON(t, ws, tc.req)
		f, err := readSnapFrame(t, ws, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Namespace != "error" || f.Args.Code != tc.code || !strings.Contains(f.Args.Message, tc.want) {
			t.Errorf("%s: got %s, want error %s containing %q", tc.req, f.raw, tc.code, tc.want)
		}
	}
	admin := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, admin, `{"namespace":"events","name":"subscribe","id":"d","args":{"filters":["event"],"snapshot":true}}`)
	if f, err := readSnapFrame(t, admin, 10*time.Second); err != nil || f.Args.Code != "400" || !strings.Contains(f.Args.Message, "system events have none") {
		t.Errorf("snapshot of event: got %s (%v), want error 400 saying system events have no table", f.raw, err)
	}
	// Still usable: a valid snapshot request works on the same socket.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (1, 1, 1, 'new')`)
	sendJSON(t, ws, `{"namespace":"events","name":"filter","id":"f","args":{"filters":[{"entity-type":"order"}],"snapshot":true}}`)
	var kinds []string
	for {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, f.Name+f.Operation+f.Args.Type)
		if f.Args.Type == "snapshot-complete" {
			break
		}
	}
	if strings.Join(kinds, ",") != "response,snapshot,controlsnapshot-complete" {
		t.Errorf("frames %v, want response, one row, snapshot-complete", kinds)
	}
}

// snapClient is one consistency-test client: it takes a snapshot and
// rebuilds the tables from the rows and the changes after them.
type snapClient struct {
	rows     map[string]json.RawMessage // "type key" → payload
	last     int64                      // last change cursor
	complete bool
	err      error
	// counts: snapshot rows, changes before snapshot-complete (the
	// seam), changes after it.
	nRows, nSeam, nLive int
}

func (sc *snapClient) fail(format string, args ...any) {
	if sc.err == nil {
		sc.err = fmt.Errorf(format, args...)
	}
}

// rowKey is the table key of a payload.
func rowKey(typ string, payload json.RawMessage) string {
	var m map[string]json.Number
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var raw map[string]any
	_ = d.Decode(&raw)
	m = map[string]json.Number{}
	for k, v := range raw {
		if n, ok := v.(json.Number); ok {
			m[k] = n
		}
	}
	if typ == "order_item" {
		return typ + " " + m["order_id"].String() + "/" + m["line_no"].String()
	}
	return typ + " " + m["id"].String()
}

// apply rebuilds from one frame; it reports whether the frame holds the
// sentinel row that ends the test: its create, or the row itself in a
// snapshot taken after it was written (a client whose snapshot waited
// that long on a loaded machine gets no create of it).
func (sc *snapClient) apply(f snapFrame) (sentinel bool) {
	key := rowKey(f.EntityType, f.Payload)
	switch {
	case f.Name == "response":
	case f.Args.Type == "snapshot-complete":
		if sc.complete {
			sc.fail("second snapshot-complete")
		}
		sc.complete = true
	case f.Namespace != "":
		sc.fail("unexpected frame %s", f.raw)
	case f.Operation == "snapshot":
		if sc.complete || sc.last != 0 {
			sc.fail("snapshot row after changes: %s", f.raw)
		}
		if _, dup := sc.rows[key]; dup {
			sc.fail("row %s twice in the snapshot", key)
		}
		sc.rows[key] = f.Payload
		sc.nRows++
		return key == "order -1"
	default:
		var cur int64
		fmt.Sscan(f.Cursor, &cur)
		if cur <= sc.last {
			sc.fail("cursor %d after %d: a duplicate or out of order", cur, sc.last)
		}
		sc.last = cur
		if sc.complete {
			sc.nLive++
		} else {
			sc.nSeam++
		}
		old, had := sc.rows[key]
		switch f.Operation {
		case "create":
			if had {
				sc.fail("create of %s, already present (in the snapshot or created twice): cursor %d", key, cur)
			}
			sc.rows[key] = f.Payload
			return key == "order -1"
		case "update":
			if !had {
				sc.fail("update of %s, missing (a change was lost): cursor %d", key, cur)
			} else if err := oneStep(f.EntityType, old, f.Payload); err != nil {
				sc.fail("update of %s at cursor %d: %v: an update the client already held came again, or one is missing", key, cur, err)
			}
			sc.rows[key] = f.Payload
		case "delete":
			if !had {
				sc.fail("delete of %s, missing (a change was lost): cursor %d", key, cur)
			}
			delete(sc.rows, key)
		default:
			sc.fail("unexpected operation in %s", f.raw)
		}
	}
	return false
}

// oneStep checks that an update of the consistency test's writers moved
// the row it applies to by exactly one step: every update they commit adds
// 1 to an order's total or an order item's quantity. An update already
// contained in the client's rows, sent again, is no step (or a step back);
// a missing one makes the next a step of 2. The final comparison alone
// would not see either when later changes overwrite the row.
func oneStep(typ string, held, next json.RawMessage) error {
	field := "total"
	if typ == "order_item" {
		field = "quantity"
	}
	a, err1 := numberField(held, field)
	b, err2 := numberField(next, field)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%s: %v, %v", field, err1, err2)
	}
	if want := new(big.Rat).Add(a, big.NewRat(1, 1)); b.Cmp(want) != 0 {
		return fmt.Errorf("%s %s after %s, want %s", field, b.RatString(), a.RatString(), want.RatString())
	}
	return nil
}

// numberField reads a numeric top-level field of a payload exactly.
func numberField(payload json.RawMessage, field string) (*big.Rat, error) {
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	n, ok := m[field].(json.Number)
	if !ok {
		return nil, fmt.Errorf("no number %q in %s", field, payload)
	}
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		return nil, fmt.Errorf("%q is not a number", n)
	}
	return r, nil
}

// sqlRows reads the consistency test's tables with SQL, sanitized as
// testdata/config/orders.yaml allows (its columns only), keyed as rowKey.
func sqlRows(ctx context.Context, t *testing.T, sql *pgx.Conn) map[string]json.RawMessage {
	t.Helper()
	rows, err := sql.Query(ctx, `SELECT 'order', to_jsonb(o)::text FROM (SELECT id, customer_id, total, status, updated_at FROM orders) o
		UNION ALL SELECT 'order_item', to_jsonb(i)::text FROM (SELECT order_id, line_no, sku, quantity, unit_price FROM shop.order_items) i`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var typ, row string
		if err := rows.Scan(&typ, &row); err != nil {
			t.Fatal(err)
		}
		out[rowKey(typ, json.RawMessage(row))] = json.RawMessage(row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameRow reports whether a row as changecast sends it and the same row
// as PostgreSQL's to_jsonb writes it hold the same fields and values:
// numbers compared exactly, timestamps as instants, the rest as JSON.
func sameRow(sent, sql json.RawMessage) bool {
	decode := func(b json.RawMessage) map[string]any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) != nil {
			return nil
		}
		return m
	}
	a, b := decode(sent), decode(sql)
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		switch x := va.(type) {
		case json.Number:
			y, ok := vb.(json.Number)
			ra, ok1 := new(big.Rat).SetString(x.String())
			rb, ok2 := new(big.Rat).SetString(y.String())
			if !ok || !ok1 || !ok2 || ra.Cmp(rb) != 0 {
				return false
			}
		case string:
			y, ok := vb.(string)
			if !ok {
				return false
			}
			if x == y {
				continue
			}
			ta, err1 := time.Parse(time.RFC3339Nano, x)
			tb, err2 := time.Parse(time.RFC3339Nano, y)
			if err1 != nil || err2 != nil || !ta.Equal(tb) {
				return false
			}
		default:
			if va != vb {
				return false
			}
		}
	}
	return true
}

// TestServe_SnapshotSeamUnderLoad is issue 14's consistency test: writers
// commit inserts, updates and deletes continuously, some in transactions
// that straddle the snapshots, while 20 clients each take a snapshot and
// follow the stream. Each rebuilds the tables from its rows and changes;
// at the end every copy equals the tables (sanitized), with no change seen
// twice (a create of a row already held, an update that is no step
// forward) and none missing (an update or delete of a row not held, an
// update that is two steps forward): see oneStep. The tables are read with
// SQL (sanitized: the allowed columns) and compared with a final snapshot,
// and every client's copy with that snapshot, byte for byte.
func TestServe_SnapshotSeamUnderLoad(t *testing.T) {
	url, sql, srv, dataDir := snapshotServer(t, "cc_snap_load")
	snapshotSeamUnderLoad(t, url, sql, srv, mintToken(t, dataDir, "admin"), 0)
}

// snapshotSeamUnderLoad is TestServe_SnapshotSeamUnderLoad against srv,
// which serves url's shopSchema; each writer pauses for pause between
// transactions.
func snapshotSeamUnderLoad(t *testing.T, url string, sql *pgx.Conn, srv *instance, token string, pause time.Duration) {
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, g % 7, g, 'new' FROM generate_series(1, 300) g;
		INSERT INTO shop.order_items SELECT g, l, 'SKU', l, 1, 1 FROM generate_series(1, 100) g, generate_series(1, 3) l`)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// Writers: short transactions, and one writer whose transactions
	// stay open across several snapshots.
	stop := make(chan struct{})
	var writers sync.WaitGroup
	var nextID struct {
		sync.Mutex
		n int
	}
	nextID.n = 1000
	newID := func() int {
		nextID.Lock()
		defer nextID.Unlock()
		nextID.n++
		return nextID.n
	}
	writeErr := make(chan error, 8)
	writer := func(seed uint64, long bool) {
		defer writers.Done()
		r := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				n := 1 + r.IntN(3)
				for range n {
					id := 1 + r.IntN(300)
					var q string
					switch r.IntN(6) {
					case 0:
						nid := newID()
						q = fmt.Sprintf(`INSERT INTO orders (id, customer_id, total, status) VALUES (%d, 1, %d, 'new');
							INSERT INTO shop.order_items VALUES (%d, 1, 'SKU-N', 1, 1, 1)`, nid, nid, nid)
					case 1:
						q = fmt.Sprintf(`DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE id > 1000 ORDER BY id LIMIT 1 OFFSET %d)`, r.IntN(5))
					case 2:
						q = fmt.Sprintf(`DELETE FROM shop.order_items WHERE (order_id, line_no) = (SELECT order_id, line_no FROM shop.order_items ORDER BY order_id DESC LIMIT 1 OFFSET %d)`, r.IntN(5))
					case 3:
						q = fmt.Sprintf(`UPDATE shop.order_items SET quantity = quantity + 1 WHERE order_id = %d`, 1+r.IntN(100))
					default:
						q = fmt.Sprintf(`UPDATE orders SET total = total + 1, status = 's%d' WHERE id = %d`, r.IntN(9), id)
					}
					if _, err := tx.Exec(ctx, q); err != nil {
						return err
					}
				}
				if long {
					select {
					case <-stop:
					case <-time.After(time.Duration(200+r.IntN(600)) * time.Millisecond):
					}
				}
				return nil
			})
			if pause > 0 {
				select {
				case <-stop:
				case <-time.After(pause): // pacing the load, not synchronisation
				}
			}
			if err != nil && ctx.Err() == nil {
				var pe interface{ SQLState() string }
				if e, ok := err.(interface{ SQLState() string }); ok && e.SQLState() == "40P01" {
					continue // deadlock between writers: fine, retry
				}
				_ = pe
				select {
				case writeErr <- err:
				default:
				}
				return
			}
		}
	}
	for i := range 4 {
		writers.Add(1)
		go writer(uint64(i), i == 3)
	}

	// 20 clients join at different moments of the load.
	const clients = 20
	results := make([]*snapClient, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := &snapClient{rows: map[string]json.RawMessage{}}
			results[i] = sc
			select {
			case <-time.After(time.Duration(i) * 150 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+srv.addr+"/api/v1/ws/events",
				map[string][]string{"Authorization": {"Bearer " + token}})
			if err != nil {
				sc.fail("dial: %v", err)
				return
			}
			defer ws.Close()
			if err := ws.WriteMessage(websocket.TextMessage, []byte(subscribeSnapshot)); err != nil {
				sc.fail("send: %v", err)
				return
			}
			sentinel := false
			for sc.err == nil && !(sentinel && sc.complete) {
				f, err := readSnapFrame(t, ws, 90*time.Second)
				if err != nil {
					sc.fail("read: %v", err)
					return
				}
				if sc.apply(f) {
					sentinel = true
				}
			}
		}()
	}
	// Let the load run past the last client's snapshot, then stop it and
	// write the sentinel every client waits for.
	time.Sleep(clients*150*time.Millisecond + 1500*time.Millisecond) // load duration, not synchronisation
	close(stop)
	writers.Wait()
	select {
	case err := <-writeErr:
		t.Fatalf("writer: %v", err)
	default:
	}
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (-1, 0, 0, 'sentinel')`)
	wg.Wait()

	// The tables as a fresh snapshot reads them, and checked against SQL.
	want := &snapClient{rows: map[string]json.RawMessage{}}
	ws := dialWS(t, srv.addr, token)
	sendJSON(t, ws, subscribeSnapshot)
	for !want.complete {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want.apply(f)
	}
	if want.err != nil {
		t.Fatalf("final snapshot: %v", want.err)
	}
	tables := sqlRows(ctx, t, sql)
	if len(want.rows) != len(tables) {
		t.Fatalf("final snapshot holds %d rows, the tables %d", len(want.rows), len(tables))
	}
	for k, v := range tables {
		if !sameRow(want.rows[k], v) {
			t.Fatalf("final snapshot: %s = %s, SELECT reads %s", k, want.rows[k], v)
		}
	}
	defer func() {
		if t.Failed() {
			var lines []string
			for _, l := range strings.Split(srv.logs.String(), "\n") {
				if strings.Contains(l, "snapshot") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 200 {
				lines = lines[len(lines)-200:]
			}
			t.Logf("server log (snapshot lines):\n%s", strings.Join(lines, "\n"))
		}
	}()
	var nRows, nSeam, nLive int
	for _, sc := range results {
		nRows, nSeam, nLive = nRows+sc.nRows, nSeam+sc.nSeam, nLive+sc.nLive
	}
	t.Logf("%d clients: %d snapshot rows, %d changes before snapshot-complete, %d after; the tables hold %d rows", clients, nRows, nSeam, nLive, len(tables))
	for i, sc := range results {
		if sc.err != nil {
			t.Errorf("client %d: %v", i, sc.err)
			continue
		}
		if !sc.complete {
			t.Errorf("client %d: no snapshot-complete", i)
			continue
		}
		if len(sc.rows) != len(want.rows) {
			t.Errorf("client %d holds %d rows, the tables %d", i, len(sc.rows), len(want.rows))
		}
		for k, v := range want.rows {
			if !bytes.Equal(sc.rows[k], v) {
				t.Errorf("client %d: %s = %s, want %s", i, k, sc.rows[k], v)
				break
			}
		}
	}
}

// TestTail_Snapshot: changecast tail --snapshot prints the current rows
// (through the Go client's Snapshot option), then follows.
func TestTail_Snapshot(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_tail")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (1, 1, 1, 'new'), (2, 1, 2, 'new')`)
	tl := startTail(t, []string{"tail", "--server", "http://" + srv.addr, "--token-file", writeTokenFile(t, mintToken(t, dataDir, "admin")),
		"--filter", "order", "--snapshot", "--output", "json"})
	tl.waitStderr(t, "current rows printed")
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 2`)
	lines := tl.waitLines(t, 3)
	if !strings.HasPrefix(lines[0], `{"entity-type":"order","operation":"snapshot","payload":{"customer_id":1,"id":1,`) ||
		!strings.Contains(lines[1], `"operation":"snapshot"`) || !strings.Contains(lines[1], `"id":2,`) ||
		!strings.Contains(lines[2], `"operation":"update"`) || !strings.Contains(lines[2], `"status":"paid"`) {
		t.Errorf("tail --snapshot printed:\n%s\nwant orders 1 and 2 as snapshot rows, then the update", strings.Join(lines, "\n"))
	}
}

// TestServe_SnapshotViewerScope: a viewer scoped to one type that asks
// for a snapshot of everything (send-everything) gets the rows of its type
// only, then only its type's changes; a GARM client connected meanwhile,
// which never asks for a snapshot, never sees a snapshot row or
// snapshot-complete.
func TestServe_SnapshotViewerScope(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_scope")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (1, 1, 1, 'new'), (2, 1, 2, 'new'), (3, 1, 3, 'new');
		INSERT INTO shop.order_items VALUES (1, 1, 'SKU-1', 1, 1, 1), (1, 2, 'SKU-2', 1, 1, 1);
		INSERT INTO customers (id, email, api_key) VALUES (1, 'a@example.com', 'CANARY-key')`)
	garm := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, garm, `{"send-everything": true}`)
	filterApplied(t, garm)

	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--data-dir", dataDir, "--user", "v", "--role", "viewer", "--scope", "order", "--config", "../../testdata/config/orders.yaml"}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	ws := dialWS(t, srv.addr, strings.TrimSpace(out.String()))
	got := snapshotRowKeys(t, ws, `{"namespace":"events","name":"filter","id":"all","args":{"send-everything":true,"snapshot":true}}`)
	if want := "order 1, order 2, order 3"; strings.Join(got, ", ") != want {
		t.Fatalf("a viewer scoped to order, snapshot of everything: rows %v, want %s only", got, want)
	}
	exec1(t, sql, `INSERT INTO customers (id, email) VALUES (2, 'b@example.com'); INSERT INTO shop.order_items VALUES (2, 1, 'SKU-3', 1, 1, 1)`)
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 1`)
	if f, err := readSnapFrame(t, ws, 30*time.Second); err != nil || f.Operation != "update" || rowKey(f.EntityType, f.Payload) != "order 1" {
		t.Fatalf("after the snapshot: %s (%v), want the update of order 1 and nothing of another type", f.raw, err)
	}

	// The GARM client got every change, as changes, and nothing else.
	var ops []string
	for len(ops) == 0 || ops[len(ops)-1] != "update order 1" {
		f, err := readSnapFrame(t, garm, 30*time.Second)
		if err != nil {
			t.Fatalf("GARM client after %v: %v", ops, err)
		}
		if f.Namespace != "" || f.Operation == "snapshot" || bytes.Contains(f.raw, []byte("CANARY")) {
			t.Fatalf("GARM client got %s", f.raw)
		}
		ops = append(ops, f.Operation+" "+rowKey(f.EntityType, f.Payload))
	}
	want := "create order 1, create order 2, create order 3, create order_item 1/1, create order_item 1/2, create customer 1, " +
		"create customer 2, create order_item 2/1, update order 1"
	if strings.Join(ops, ", ") != want {
		t.Errorf("GARM client: %v, want %s", ops, want)
	}
}

// snapshotRowKeys sends req, a snapshot request, and returns the keys
// (rowKey) of the rows readSnapshot reads.
func snapshotRowKeys(t *testing.T, ws *websocket.Conn, req string) []string {
	t.Helper()
	rows, _ := readSnapshot(t, ws, req)
	keys := make([]string, len(rows))
	for i, f := range rows {
		keys[i] = rowKey(f.EntityType, f.Payload)
	}
	return keys
}

// TestServe_SnapshotMatch: a snapshot sends the rows its filter's match
// selects, per clause: paid orders only, every order item.
func TestServe_SnapshotMatch(t *testing.T) {
	_, sql, srv, dataDir := snapshotServer(t, "cc_snap_match")
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'new' END FROM generate_series(1, 6) g;
		INSERT INTO shop.order_items VALUES (1, 1, 'SKU-1', 1, 1, 1), (2, 1, 'SKU-2', 1, 1, 1)`)
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	got := snapshotRowKeys(t, ws, `{"namespace":"events","name":"subscribe","id":"m","args":{"filters":[{"entity-type":"order","match":{"status":"paid"}},"order_item"],"snapshot":true}}`)
	if want := "order 2, order 4, order 6, order_item 1/1, order_item 2/1"; strings.Join(got, ", ") != want {
		t.Errorf("rows %v, want %s", got, want)
	}
}

// TestServe_SnapshotDisconnectCostsNothing: a client that goes away in
// the middle of a snapshot's rows leaves nothing behind: the snapshot's
// database connection (and its transaction) ends at once, and its slot
// (--max-snapshots 1) is free for the next snapshot. The client stops
// reading first, so the server is held in a write of rows, not in a query
// (which a cancelled context would end anyway), when the client goes.
func TestServe_SnapshotDisconnectCostsNothing(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, shopSchema)
	// 20,000 rows of 2 KB, written before the server starts (nothing to
	// replicate): far more than the sockets' buffers hold.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) SELECT g, 1, g, repeat('x', 2000) FROM generate_series(1, 20000) g`)
	srv, _, dataDir := readyServerAt(t, url, "cc_snap_gone", func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
		cfg.maxSnapshots = 1
	})
	snapshotBackends := func() int {
		var n int
		if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'changecast-snapshot' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	token := mintToken(t, dataDir, "admin")
	ws := dialWS(t, srv.addr, token)
	sendJSON(t, ws, `{"namespace":"events","name":"subscribe","id":"gone","args":{"filters":["order"],"snapshot":true}}`)
	for {
		f, err := readSnapFrame(t, ws, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Operation == "snapshot" {
			break
		}
	}
	// The client reads nothing more: the server's writes fill the sockets
	// and block, and the snapshot's connection waits, idle in its
	// transaction, between pages.
	blocked := time.Now().Add(30 * time.Second)
	for {
		var held bool
		if err := sql.QueryRow(context.Background(), `SELECT count(*) = 1 AND bool_and(state = 'idle in transaction'
				AND clock_timestamp() - state_change > interval '500 ms')
			FROM pg_stat_activity WHERE application_name = 'changecast-snapshot' AND datname = current_database()`).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(blocked) {
			t.Fatalf("the snapshot never waited on the unread client: %d snapshot connections", snapshotBackends())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	ws.UnderlyingConn().Close()
	deadline := time.Now().Add(10 * time.Second)
	for snapshotBackends() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the snapshot's database connection outlived its client by 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if strings.Contains(srv.logs.String(), "websocket snapshot complete") {
		t.Error("the snapshot of the client that went away ran to its end")
	}
	// The only slot is free: the next snapshot starts at once.
	next := dialWS(t, srv.addr, token)
	sendJSON(t, next, `{"namespace":"events","name":"subscribe","id":"next","args":{"filters":["order"],"snapshot":true}}`)
	for {
		f, err := readSnapFrame(t, next, 10*time.Second)
		if err != nil {
			t.Fatalf("the next snapshot: %v", err)
		}
		if f.Operation == "snapshot" {
			break
		}
	}
}
