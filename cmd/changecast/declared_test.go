package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
)

// shopSchema is the application schema of testdata/config/orders.yaml: no
// table changecast knows, one in another schema, a composite key, a table
// with REPLICA IDENTITY DEFAULT.
const shopSchema = `
CREATE SCHEMA shop;
CREATE TABLE public.orders (
	id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2) NOT NULL,
	status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
	internal_note text, tags text[], details jsonb);
CREATE TABLE public.customers (
	id bigint PRIMARY KEY, email text NOT NULL, api_key text, password_reset_code text, balance numeric);
CREATE TABLE shop.order_items (
	order_id bigint NOT NULL, line_no int NOT NULL, sku text NOT NULL, quantity int NOT NULL,
	unit_price numeric(10,2) NOT NULL, supplier_cost numeric(10,2),
	PRIMARY KEY (order_id, line_no));
`

// shopServer serves a fresh database holding shopSchema, watched through
// testdata/config/orders.yaml, and returns a send-everything admin socket.
func shopServer(t *testing.T, slot string) (*pgx.Conn, *websocket.Conn) {
	t.Helper()
	return shopServerFiltered(t, slot, `{"send-everything": true}`)
}

// shopServerFiltered is shopServer with the client's filter request.
func shopServerFiltered(t *testing.T, slot, filter string) (*pgx.Conn, *websocket.Conn) {
	t.Helper()
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, shopSchema)
	srv, _, dataDir := readyServerAt(t, url, slot, func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
	})
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, filter)
	filterApplied(t, ws)
	return sql, ws
}

// TestServe_DeclaredTypesMatch: a WebSocket filter on a declared type's
// columns ("match", operations) selects exactly as on a built-in type, and
// a column outside the type's allow-list cannot be matched (its values
// would leak through what a filter selects).
func TestServe_DeclaredTypesMatch(t *testing.T) {
	sql, ws := shopServerFiltered(t, "cc_declared_match", `{"filters": [
		{"entity-type": "order", "match": {"status": "paid"}},
		{"entity-type": "order_item", "operations": ["delete"], "match": {"sku": ["SKU-2", "SKU-3"]}}]}`)

	exec1(t, sql, `INSERT INTO customers (id, email, balance) VALUES (1, 'ada@example.com', 1)`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (7, 1, 1, 'new'), (8, 1, 2, 'paid')`)
	exec1(t, sql, `INSERT INTO shop.order_items (order_id, line_no, sku, quantity, unit_price, supplier_cost) VALUES (7, 1, 'SKU-1', 1, 1, 1), (7, 2, 'SKU-2', 1, 1, 1)`)
	exec1(t, sql, `UPDATE orders SET status = 'paid' WHERE id = 7`)
	exec1(t, sql, `DELETE FROM shop.order_items WHERE line_no = 1`)
	exec1(t, sql, `UPDATE orders SET total = 3 WHERE id = 7`)
	// order_item has REPLICA IDENTITY DEFAULT: the delete's sku comes from
	// the journal's last state of the entity, so the filter can match it.
	exec1(t, sql, `DELETE FROM shop.order_items WHERE line_no = 2`)

	want := []string{"order create 8", "order update 7 paid", "order update 7 paid", "order_item delete SKU-2"}
	for i, w := range want {
		f, _ := readChange(t, ws, 30*time.Second)
		got := fmt.Sprintf("%s %s %v", f.EntityType, f.Operation, f.Payload["id"])
		switch f.EntityType {
		case "order":
			got += fmt.Sprintf(" %v", f.Payload["status"])
			if i == 0 {
				got = fmt.Sprintf("order %s %v", f.Operation, f.Payload["id"])
			}
		case "order_item":
			got = fmt.Sprintf("order_item %s %v", f.Operation, f.Payload["sku"])
		}
		if got != w {
			t.Fatalf("change %d: %s, want %s: %s", i, got, w, f.raw)
		}
	}
	// Nothing unselected arrived in between: the next change is a sentinel.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (9, 1, 1, 'paid')`)
	if f, _ := readChange(t, ws, 30*time.Second); f.EntityType != "order" || f.Payload["id"] != float64(9) {
		t.Fatalf("a change the filters do not select arrived: %s", f.raw)
	}

	// internal_note is a column of orders outside its allow-list.
	sendJSON(t, ws, `{"filters": [{"entity-type": "order", "match": {"internal_note": "x"}}]}`)
	var refusal struct {
		Namespace string `json:"namespace"`
		Args      struct {
			Message string `json:"message"`
		} `json:"args"`
	}
	f := readFrame(t, ws, 10*time.Second)
	if err := json.Unmarshal(f.raw, &refusal); err != nil || refusal.Namespace != "error" || !strings.Contains(refusal.Args.Message, "internal_note") {
		t.Errorf("matching a column outside the allow-list: %s, want an error frame naming it", f.raw)
	}
}

// TestServe_DeclaredTypes watches a schema no built-in type knows, from a
// configuration in testdata: every change arrives typed and sanitized, the
// allow-list hides the rest, a composite key becomes an object id, and
// changecast creates nothing in the application's schema.
func TestServe_DeclaredTypes(t *testing.T) {
	sql, ws := shopServer(t, "cc_declared")

	exec1(t, sql, `INSERT INTO customers (id, email, api_key, password_reset_code, balance) VALUES (1, 'ada@example.com', 'CANARY-api-key', 'CANARY-reset', 12.5)`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note, tags, details) VALUES (7, 1, 19.99, 'new', 'CANARY-internal', '{a,b}', '{"n": 9007199254740993}')`)
	exec1(t, sql, `INSERT INTO shop.order_items (order_id, line_no, sku, quantity, unit_price, supplier_cost) VALUES (7, 1, 'SKU-1', 2, 9.99, 4.00)`)
	exec1(t, sql, `UPDATE orders SET status = 'paid', internal_note = 'CANARY-internal-2' WHERE id = 7`)
	exec1(t, sql, `DELETE FROM shop.order_items WHERE order_id = 7 AND line_no = 1`)

	var got []frame
	for len(got) < 5 {
		f, _ := readChange(t, ws, 30*time.Second)
		got = append(got, f)
		if strings.Contains(string(f.raw), "CANARY") {
			t.Fatalf("a secret or a column outside the allow-list left changecast: %s", f.raw)
		}
	}
	want := []struct{ typ, op string }{{"customer", "create"}, {"order", "create"}, {"order_item", "create"}, {"order", "update"}, {"order_item", "delete"}}
	for i, w := range want {
		if got[i].EntityType != w.typ || got[i].Operation != w.op {
			t.Fatalf("change %d is %s %s, want %s %s: %s", i, got[i].EntityType, got[i].Operation, w.typ, w.op, got[i].raw)
		}
	}
	// customer: secrets (declared and by name) stripped, the rest typed.
	if c := got[0].Payload; c["email"] != "ada@example.com" || c["balance"] != 12.5 || c["id"] != float64(1) {
		t.Errorf("customer payload %v", c)
	}
	// order: only the allow-list leaves.
	var keys []string
	for k := range got[1].Payload {
		keys = append(keys, k)
	}
	if len(keys) != 5 || got[1].Payload["total"] != 19.99 || got[1].Payload["status"] != "new" {
		t.Errorf("order payload %v, want exactly id, customer_id, total, status, updated_at", got[1].Payload)
	}
	if got[3].Previous["status"] != "new" || got[3].Payload["status"] != "paid" {
		t.Errorf("order update: previous %v, payload %v; want status new → paid (REPLICA IDENTITY FULL by consent)", got[3].Previous, got[3].Payload)
	}
	// order_item (REPLICA IDENTITY DEFAULT): the delete carries the key.
	if d := got[4].Payload; d["order_id"] != float64(7) || d["line_no"] != float64(1) {
		t.Errorf("order_item delete payload %v, want the key columns", d)
	}
	if _, ok := got[2].Payload["supplier_cost"]; ok {
		t.Errorf("order_item payload %v: supplier_cost is not in the allow-list", got[2].Payload)
	}
	var id string
	if err := sql.QueryRow(context.Background(), `SELECT entity_id FROM changecast.journal WHERE entity_type = 'order_item' ORDER BY seq LIMIT 1`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	var idObj map[string]any
	if err := json.Unmarshal([]byte(id), &idObj); err != nil || idObj["order_id"] != float64(7) || idObj["line_no"] != float64(1) {
		t.Errorf("composite entity id %q, want {\"order_id\":7,\"line_no\":1}", id)
	}

	// Consent: orders asked for FULL, the others are untouched; no
	// built-in table was created.
	for table, want := range map[string]string{"public.orders": "f", "public.customers": "d", "shop.order_items": "d"} {
		var ident string
		if err := sql.QueryRow(context.Background(), `SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass`, table).Scan(&ident); err != nil || ident != want {
			t.Errorf("replica identity of %s = %q (%v), want %q", table, ident, err, want)
		}
	}
	var builtin bool
	if err := sql.QueryRow(context.Background(), `SELECT to_regclass('public.repositories') IS NOT NULL`).Scan(&builtin); err != nil || builtin {
		t.Errorf("a built-in table was created in the application's schema")
	}
}

// TestServe_RefusesWhatItCannotWatch: an external database without a
// configuration or domain, and a configuration naming a missing table,
// are refused with what to do.
func TestServe_RefusesWhatItCannotWatch(t *testing.T) {
	url := storetest.NewDatabase(t)
	var stdout, stderr syncBuffer
	// A refusal comes at once; the deadline makes a broken one fail
	// rather than serve until the test binary's timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, []string{"serve", "--database-url", url, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "changecast inspect") || !strings.Contains(err.Error(), "--table") || !strings.Contains(err.Error(), "--domain garm") {
		t.Fatalf("serve without a configuration: %v, want the three ways forward", err)
	}
	err = run(ctx, []string{"serve", "--database-url", url, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--config", "testdata/declared/missing-table.yaml"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "missing-table.yaml:3") || !strings.Contains(err.Error(), "public.no_such_orders does not exist") {
		t.Fatalf("serve with a missing table: %v, want file:line and the table", err)
	}
	sql := connect(t, url)
	var n int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tables created (%v), want none: a refused start changes nothing", n, err)
	}
}

// TestServe_RenamedSecretStopsItsType: a declared secret column renamed
// while changes stream stops that type (with an error event naming it),
// so the secret never flows out under its new name; other types go on.
func TestServe_RenamedSecretStopsItsType(t *testing.T) {
	sql, ws := shopServer(t, "cc_renamed")

	exec1(t, sql, `INSERT INTO customers (id, email, api_key) VALUES (1, 'ada@example.com', 'CANARY-before')`)
	if f, _ := readChange(t, ws, 30*time.Second); f.EntityType != "customer" {
		t.Fatalf("first change %s, want the customer", f.raw)
	}
	// The column keeps its values under a name no rule recognises.
	exec1(t, sql, `ALTER TABLE customers RENAME COLUMN api_key TO contact_hint`)
	exec1(t, sql, `INSERT INTO customers (id, email, contact_hint) VALUES (2, 'bob@example.com', 'CANARY-renamed')`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status) VALUES (8, 2, 5.00, 'new')`)

	var sawEvent, sawOrder bool
	for !sawEvent || !sawOrder {
		f := readFrame(t, ws, 30*time.Second)
		if strings.Contains(string(f.raw), "CANARY") {
			t.Fatalf("the renamed secret left changecast: %s", f.raw)
		}
		if f.EntityType == "event" && f.Payload["action"] == "secret_column_missing" {
			meta, _ := f.Payload["metadata"].(map[string]any)
			if f.Payload["severity"] != "error" || meta["entity_type"] != "customer" || meta["column"] != "api_key" {
				t.Fatalf("event %s, want an error naming customer and api_key", f.raw)
			}
			sawEvent = true
			continue
		}
		if f.EntityType == "customer" {
			t.Fatalf("a customer change was delivered after its secret column was renamed: %s", f.raw)
		}
		if f.EntityType == "order" {
			sawOrder = true // other types go on
		}
	}
	// Nor was it journaled, where resuming clients and snapshots' seams
	// would read it.
	var leaked, customers int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE coalesce(payload::text, '') || coalesce(previous::text, '') LIKE '%CANARY%'),
		count(*) FILTER (WHERE entity_type = 'customer') FROM changecast.journal`).Scan(&leaked, &customers); err != nil || leaked != 0 || customers != 1 {
		t.Fatalf("journal: %d rows hold a canary, %d customer rows (%v); want none and the one from before the rename", leaked, customers, err)
	}
}

// TestServe_PartitionedTableThroughItsRoot: a partitioned table is
// declared by its root (testdata/declared/measurements.yaml); rows
// written to any partition, or through the root, arrive as the root's
// entity type.
func TestServe_PartitionedTableThroughItsRoot(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, `CREATE TABLE measurements (id bigint, taken_on date, value numeric, PRIMARY KEY (id, taken_on)) PARTITION BY RANGE (taken_on);
		CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`)
	srv, _, dataDir := readyServerAt(t, url, "cc_partitioned", func(cfg *serveConfig) {
		cfg.configPath = "testdata/declared/measurements.yaml"
	})
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"filters": [{"entity-type": "measurement"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO measurements VALUES (1, '2025-06-01', 1.5), (2, '2026-06-01', 2.5)`)
	exec1(t, sql, `UPDATE measurements_2026 SET value = 3.5 WHERE id = 2`)
	exec1(t, sql, `DELETE FROM measurements WHERE id = 1`)
	want := []string{"create 1", "create 2", "update 2", "delete 1"}
	for _, w := range want {
		f, _ := readChange(t, ws, 30*time.Second)
		if got := fmt.Sprintf("%s %v", f.Operation, f.Payload["id"]); f.EntityType != "measurement" || got != w {
			t.Fatalf("got %s %s, want measurement %s: %s", f.EntityType, got, w, f.raw)
		}
	}
	var viaRoot bool
	if err := sql.QueryRow(context.Background(), `SELECT pubviaroot FROM pg_publication WHERE pubname = 'changecast'`).Scan(&viaRoot); err != nil || !viaRoot {
		t.Fatalf("publish_via_partition_root = %t (%v), want true", viaRoot, err)
	}
}

// TestServe_LoginUsersWithoutTheGarmDomain: on an application's database
// watched through a configuration, "changecast user" keeps login users in
// changecast.users (no users table appears in the application's schema),
// they log in, and disabling one ends its open sessions.
func TestServe_LoginUsersWithoutTheGarmDomain(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, shopSchema)
	srv, _, _ := readyServerAt(t, url, "cc_ownusers", func(cfg *serveConfig) {
		cfg.configPath = "../../testdata/config/orders.yaml"
	})
	userCmd(t, "user", "add", "--database-url", url, "--username", "ada", "--password-file", writeTemp(t, "correct horse battery\n"))
	var inOwn int
	var appUsers bool
	if err := sql.QueryRow(context.Background(), `SELECT count(*), to_regclass('public.users') IS NOT NULL FROM changecast.users WHERE username = 'ada'`).Scan(&inOwn, &appUsers); err != nil || inOwn != 1 || appUsers {
		t.Fatalf("ada in changecast.users: %d, public.users created: %v (%v); want 1 and false", inOwn, appUsers, err)
	}
	status, token, _ := login(t, srv.addr, "ada", "correct horse battery")
	if status != 200 || token == "" {
		t.Fatalf("login: status %d", status)
	}
	ws := dialWS(t, srv.addr, token)
	sendJSON(t, ws, `{"filters": [{"entity-type": "order"}]}`)
	filterApplied(t, ws)
	userCmd(t, "user", "disable", "--database-url", url, "--username", "ada")
	if d := expectRevoked(t, ws, "user disabled"); d > 5*time.Second {
		t.Errorf("revoked %s after the user was disabled", d)
	}
}
