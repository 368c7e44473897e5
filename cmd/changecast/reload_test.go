package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store/storetest"
)

// reloadSchema is shopSchema plus a table a reload adds and one whose
// replica identity cannot publish updates and deletes.
const reloadSchema = shopSchema + `
CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL);
CREATE TABLE public.nokey (id bigint NOT NULL, v text);
`

// reloadBase is the configuration the reload tests start with: orders
// (no secret yet) and customers.
const reloadBase = `entities:
  - name: order
    table: public.orders
    replica_identity: full
  - name: customer
    table: customers
    secrets: [api_key]
`

// reloadServer serves a fresh database holding reloadSchema, watched
// through a configuration file holding reloadBase, and returns the file's
// path, the server, its data directory and a send-everything admin socket.
func reloadServer(t *testing.T, slot string) (sql *pgx.Conn, cfgPath string, srv *instance, dataDir string, ws *websocket.Conn) {
	t.Helper()
	url := storetest.NewDatabase(t)
	sql = connect(t, url)
	exec1(t, sql, reloadSchema)
	cfgPath = filepath.Join(t.TempDir(), "changecast.yaml")
	writeConfig(t, cfgPath, reloadBase)
	srv, _, dataDir = readyServerAt(t, url, slot, func(cfg *serveConfig) { cfg.configPath = cfgPath })
	ws = dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": true}`)
	filterApplied(t, ws)
	return sql, cfgPath, srv, dataDir, ws
}

func writeConfig(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reloadCmd runs "changecast reload" against srv, as an operator would
// on the server's host, and returns its output and error.
func reloadCmd(t testing.TB, srv *instance, dataDir string) (string, error) {
	t.Helper()
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, []string{"reload", "--server", "http://" + srv.addr, "--data-dir", dataDir}, &stdout, &stderr)
	return stdout.String(), err
}

// publishedTables lists the publication's tables, schema-qualified.
func publishedTables(t testing.TB, sql *pgx.Conn) []string {
	t.Helper()
	return queryRows(t, sql, pgx.RowTo[string], `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'changecast' ORDER BY 1`)
}

// TestReload_AddsRemovesAndChangesTypes: "changecast reload" against a
// running server adds a table (its inserts arrive with its type), removes
// one (its inserts stop, the others go on) and adds a secret, stripped
// from every change committed after the reload, in frames and in the
// journal.
func TestReload_AddsRemovesAndChangesTypes(t *testing.T) {
	sql, cfgPath, srv, dataDir, ws := reloadServer(t, "cc_reload")

	// Before: internal_note is not secret yet, customers stream.
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note) VALUES (1, 1, 5, 'new', 'visible-before')`)
	if f, _ := readChange(t, ws, 30*time.Second); f.EntityType != "order" || f.Payload["internal_note"] != "visible-before" {
		t.Fatalf("before the reload: %s, want an order with its internal_note", f.raw)
	}

	writeConfig(t, cfgPath, `entities:
  - name: order
    table: public.orders
    replica_identity: full
    secrets: [internal_note]
  - name: note
    table: public.notes
`)
	out, err := reloadCmd(t, srv, dataDir)
	if err != nil {
		t.Fatalf("reload: %v\nlogs:\n%s", err, srv.logs.String())
	}
	for _, want := range []string{"removed customer (public.customers)", "added note (public.notes)", "changed order: secrets: +internal_note"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload printed:\n%s\nwant a line %q", out, want)
		}
	}
	if got, want := publishedTables(t, sql), []string{"public.notes", "public.orders"}; !slices.Equal(got, want) {
		t.Errorf("published tables %v, want %v", got, want)
	}

	// After: the removed type's insert comes first in commit order, so had
	// it been delivered it would arrive before the others.
	exec1(t, sql, `INSERT INTO customers (id, email) VALUES (9, 'removed@example.com')`)
	exec1(t, sql, `INSERT INTO notes (id, body) VALUES (1, 'hello')`)
	exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note) VALUES (2, 1, 7, 'new', 'CANARY-reloaded-secret')`)
	var got []string
	for len(got) < 2 {
		f, _ := readChange(t, ws, 30*time.Second)
		if strings.Contains(string(f.raw), "CANARY") {
			t.Fatalf("the secret added by the reload left changecast: %s", f.raw)
		}
		if f.EntityType == "customer" {
			t.Fatalf("a change of the removed type was delivered: %s", f.raw)
		}
		got = append(got, f.EntityType+" "+f.Operation)
		if f.EntityType == "note" && f.Payload["body"] != "hello" {
			t.Errorf("note payload %v, want body hello", f.Payload)
		}
	}
	if want := []string{"note create", "order create"}; !slices.Equal(got, want) {
		t.Fatalf("after the reload got %v, want %v", got, want)
	}
	var leaks, customers int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE coalesce(payload::text, '') || coalesce(previous::text, '') LIKE '%CANARY%'),
		count(*) FILTER (WHERE entity_type = 'customer') FROM changecast.journal`).Scan(&leaks, &customers); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 || customers != 0 {
		t.Errorf("journal: %d rows with the canary, %d customer rows; want none of either", leaks, customers)
	}

	// The hub follows: a filter may name the new type, not the removed one.
	other := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, other, `{"filters": [{"entity-type": "customer"}]}`)
	if f := readFrame(t, other, 10*time.Second); f.Namespace != "error" || !strings.Contains(string(f.raw), "unknown entity type") {
		t.Errorf("a filter naming the removed type: %s, want an unknown entity type error", f.raw)
	}
	sendJSON(t, other, `{"filters": [{"entity-type": "note"}]}`)
	filterApplied(t, other)
	exec1(t, sql, `UPDATE notes SET body = 'edited' WHERE id = 1`)
	if f, _ := readChange(t, other, 30*time.Second); f.EntityType != "note" || f.Operation != "update" {
		t.Fatalf("a filter on the added type got %s, want the note update", f.raw)
	}

	// Reloading an unchanged file changes nothing.
	if out, err := reloadCmd(t, srv, dataDir); err != nil || !strings.Contains(out, "nothing changed") {
		t.Errorf("second reload: %q, %v; want nothing changed", out, err)
	}
}

// TestReload_RefusesBadConfigurations: each kind of mistake is refused
// with the file and line, and the running configuration stays fully in
// force (its types stream, its publication is unchanged, no secret is
// added).
func TestReload_RefusesBadConfigurations(t *testing.T) {
	sql, cfgPath, srv, dataDir, ws := reloadServer(t, "cc_reload_bad")
	base := cfgPath[strings.LastIndex(cfgPath, "/")+1:]
	cases := []struct {
		name, config string
		want         string // a regexp the error must match
	}{
		{"syntax error", "entities:\n  - name: order\n    table: public.orders\n    secrets: [internal_note\n", base + `:4:\d+: .*YAML`},
		{"unknown key", "entities:\n  - name: order\n    table: public.orders\n    secret: [internal_note]\n", base + `:4:\d+: .*secret`},
		{"duplicate name", "entities:\n  - name: order\n    table: public.orders\n  - name: order\n    table: public.notes\n", base + `:4:\d+: duplicate entity name "order"`},
		{"missing table", "entities:\n  - name: order\n    table: public.orders\n  - name: gone\n    table: public.no_such_table\n", base + `:4: table public.no_such_table does not exist`},
		{"key column missing", "entities:\n  - name: order\n    table: public.orders\n    key: no_such_column\n", base + `:2: key column no_such_column is not a column of public.orders`},
		{"key not unique", "entities:\n  - name: order\n    table: public.orders\n    key: status\n", base + `:2: key status does not identify one row of public.orders.*CREATE UNIQUE INDEX`},
		{"table without identity", "entities:\n  - name: order\n    table: public.orders\n  - name: nokey\n    table: public.nokey\n    key: id\n", base + `:4: table public.nokey has no primary key or usable replica identity.*REPLICA IDENTITY FULL`},
	}
	for i, c := range cases {
		writeConfig(t, cfgPath, c.config)
		out, err := reloadCmd(t, srv, dataDir)
		if err == nil || !regexp.MustCompile(c.want).MatchString(err.Error()) || !strings.Contains(err.Error(), "stays in force") {
			t.Errorf("%s: reload returned %q, %v; want an error matching %q", c.name, out, err, c.want)
		}
		// The old configuration is fully in force.
		id := 100 + i
		exec1(t, sql, `INSERT INTO customers (id, email) VALUES (`+strconv.Itoa(id)+`, 'still@example.com')`)
		exec1(t, sql, `INSERT INTO orders (id, customer_id, total, status, internal_note) VALUES (`+strconv.Itoa(id)+`, 1, 5, 'new', 'still-visible')`)
		for _, want := range []string{"customer", "order"} {
			f, _ := readChange(t, ws, 30*time.Second)
			if f.EntityType != want {
				t.Fatalf("%s: got %s, want a %s change: the old configuration must stay in force", c.name, f.raw, want)
			}
			if want == "order" && f.Payload["internal_note"] != "still-visible" {
				t.Fatalf("%s: order payload %v: the refused configuration's secret was applied", c.name, f.Payload)
			}
		}
	}
	if got, want := publishedTables(t, sql), []string{"public.customers", "public.orders"}; !slices.Equal(got, want) {
		t.Errorf("published tables %v after refused reloads, want %v", got, want)
	}
	var ident string
	if err := sql.QueryRow(context.Background(), `SELECT relreplident::text FROM pg_class WHERE oid = 'public.nokey'::regclass`).Scan(&ident); err != nil || ident != "d" {
		t.Errorf("replica identity of public.nokey = %q (%v): a refused reload altered a table", ident, err)
	}
}

// TestReload_SIGHUP: a SIGHUP to the server reloads the configuration and
// logs what changed.
func TestReload_SIGHUP(t *testing.T) {
	sql, cfgPath, srv, _, ws := reloadServer(t, "cc_reload_hup")
	writeConfig(t, cfgPath, reloadBase+"  - name: note\n    table: public.notes\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(srv.logs.String(), `change="added note (public.notes)"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within 60s of SIGHUP\nlogs:\n%s", srv.logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	exec1(t, sql, `INSERT INTO notes (id, body) VALUES (1, 'after SIGHUP')`)
	if f, _ := readChange(t, ws, 30*time.Second); f.EntityType != "note" {
		t.Fatalf("after SIGHUP got %s, want the note", f.raw)
	}
}

// TestReload_RequiresAnAdmin: the reload endpoint refuses viewers and
// requests without a token, and changes nothing for them.
func TestReload_RequiresAnAdmin(t *testing.T) {
	_, cfgPath, srv, dataDir, _ := reloadServer(t, "cc_reload_auth")
	writeConfig(t, cfgPath, reloadBase+"  - name: note\n    table: public.notes\n")
	t.Setenv(envToken, mintToken(t, dataDir, "viewer"))
	if _, err := reloadCmd(t, srv, dataDir); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("reload with a viewer token: %v, want 403", err)
	}
	resp, err := http.Post("http://"+srv.addr+reloadPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("reload without a token: %s, want 401", resp.Status)
	}
	if strings.Contains(srv.logs.String(), "configuration reloaded") {
		t.Errorf("a viewer or an anonymous request reloaded the configuration")
	}
}

func TestRegistryChanges(t *testing.T) {
	reg := func(types ...entities.EntityType) *entities.Registry {
		r := entities.NewRegistry()
		for _, et := range types {
			if err := r.Register(et); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	cur := reg(
		entities.EntityType{Name: "order", Table: "orders", Schema: "public", Secrets: []string{"a"}, Allowed: []string{"id", "a", "b"}},
		entities.EntityType{Name: "customer", Table: "customers", Schema: "public"},
		entities.EntityType{Name: "item", Table: "items", Schema: "shop", KeyColumns: []string{"order_id", "line"}},
	)
	next := reg(
		entities.EntityType{Name: "order", Table: "orders", Schema: "public", Secrets: []string{"c"}, ReplicaIdentityFull: true},
		entities.EntityType{Name: "item", Table: "items", Schema: "shop", KeyColumns: []string{"order_id", "line"}},
		entities.EntityType{Name: "note", Table: "notes", Schema: "public"},
	)
	got := registryChanges(cur, next)
	want := []string{
		"removed customer (public.customers)",
		"added note (public.notes)",
		"changed order: secrets: +c -a; columns: no allow-list any more; replica_identity full: false → true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := registryChanges(next, next); len(got) != 0 {
		t.Errorf("no change: got %v", got)
	}
}
