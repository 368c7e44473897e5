package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/config"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// inspectDB returns the URL of a fresh database holding
// testdata/schema/inspect.sql: an application's own schema.
func inspectDB(t testing.TB) string {
	t.Helper()
	dbURL := storetest.NewDatabase(t)
	sql, err := os.ReadFile(filepath.Join("..", "..", "testdata", "schema", "inspect.sql"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, string(sql)); err != nil {
		t.Fatalf("inspect.sql: %v", err)
	}
	return dbURL
}

// runInspectCmd runs "changecast inspect args..." and fails the test
// unless it succeeds.
func runInspectCmd(t testing.TB, args ...string) (stdout string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if err := run(ctx, append([]string{"inspect"}, args...), &out, &errb); err != nil {
		t.Fatalf("changecast inspect %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// databaseLine is the one line of the config that names the database,
// whose name differs per run.
var databaseLine = regexp.MustCompile(`of database \S+\.`)

// TestInspect_YAMLGolden checks that --output yaml prints exactly
// testdata/inspect/config.golden.yaml (only the config: it must be
// redirectable to a file), that it parses as YAML, and that it holds the
// expected entries. -update rewrites the golden.
func TestInspect_YAMLGolden(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	dbURL := inspectDB(t)
	got := runInspectCmd(t, "--database-url", dbURL, "--output", "yaml")
	got = databaseLine.ReplaceAllString(got, "of database DATABASE.")

	golden := filepath.Join("testdata", "inspect", "config.golden.yaml")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("inspect --output yaml differs from %s (if intended, run go test ./cmd/changecast -run TestInspect_YAMLGolden -update and review the diff)\n--- got\n%s\n--- want\n%s", golden, got, want)
	}

	// Fed back, the config is accepted by changecast's own parser.
	cfg, err := config.Parse("inspect.yaml", []byte(got))
	if err != nil {
		t.Fatalf("changecast's config parser refuses inspect's config: %v", err)
	}
	type entity struct {
		Name, Table string
		Key         []string
		Secrets     []string
	}
	var entities []entity
	for _, e := range cfg.Entities {
		entities = append(entities, entity{e.Name, e.QualifiedTable(), e.Key, e.Secrets})
	}
	wantEntities := []entity{
		{"archive_order", "archive.orders", []string{"id"}, nil},
		{"status", "archive.statuses", []string{"code"}, nil},
		{"address", "public.addresses", []string{"street", "city"}, nil},
		{"category", "public.categories", []string{"id"}, nil},
		{"customer", "public.customers", []string{"id"}, []string{"api_key", "password_hash"}},
		{"measurement", "public.measurements", []string{"id", "taken_on"}, nil},
		{"order_item", "public.order_items", []string{"order_id", "line"}, nil},
		{"order", "public.orders", []string{"id"}, nil},
	}
	if !reflect.DeepEqual(entities, wantEntities) {
		t.Errorf("entities:\ngot  %#v\nwant %#v", entities, wantEntities)
	}
	// Tables that cannot be watched are named in a comment, not listed.
	for _, table := range []string{"public.audit_log", "public.page_views"} {
		if !strings.Contains(got, "# skipped: "+table+": ") {
			t.Errorf("the config has no \"# skipped: %s\" comment", table)
		}
	}
	// Nothing but the config: every line is YAML or a comment.
	if strings.Contains(got, "STRIPPED") || strings.Contains(got, "wal_level") {
		t.Errorf("--output yaml printed the report too:\n%s", got)
	}
}

// TestInspect_Report checks the text report: secrets marked, a missing
// key explained, the partitioned root shown with its partitions and the
// partitions not listed on their own; then the config follows. And
// inspect writes nothing into the database.
func TestInspect_Report(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	dbURL := inspectDB(t)
	out := runInspectCmd(t, "--database-url", dbURL)

	report, config, ok := strings.Cut(out, "\n# Starter config")
	if !ok {
		t.Fatalf("no starter config after the report:\n%s", out)
	}
	if !strings.HasPrefix(strings.TrimSpace(config), "from \"changecast inspect\"") || !strings.Contains(config, "\n  - name: order\n") {
		t.Errorf("the config after the report is not the starter config:\n%s", config)
	}
	section := func(table string) string {
		t.Helper()
		_, rest, ok := strings.Cut(report, "\n\n"+table)
		if !ok {
			t.Fatalf("table %s missing from the report:\n%s", table, report)
		}
		s, _, _ := strings.Cut(rest, "\n\n")
		return s
	}
	for _, c := range []struct{ table, re string }{
		{"public.customers", `(?m)^\s+api_key\s+text\s+STRIPPED`},
		{"public.customers", `(?m)^\s+password_hash\s+bytea\s+STRIPPED`},
		{"public.orders", `(?m)^\s+total\s+numeric\(12,2\)$`},
		{"public.orders", `(?m)^\s+tags\s+text\[\]$`},
		{"public.orders", `(?m)^\s+placed_at\s+timestamp with time zone$`},
		{"public.orders", `(?m)^  key\s+id \(primary key\)$`},
		{"public.orders", `(?m)^  entity\s+order$`},
		{"public.order_items", `(?m)^  key\s+order_id, line \(primary key\)$`},
		{"public.audit_log", `(?m)^  key\s+none$`},
		{"public.audit_log", `MISSING: no primary key and replica identity DEFAULT: UPDATE and DELETE would fail`},
		{"public.page_views", `MISSING: no primary key: no column identifies an entity`},
		{"public.measurements", `^ \(partitioned; watched through this root, which stands for its 2 partitions: public\.measurements_2024, public\.measurements_2025\)`},
		{"archive.orders", `(?m)^  entity\s+archive_order$`},
	} {
		if !regexp.MustCompile(c.re).MatchString(section(c.table)) {
			t.Errorf("%s: report section does not match %s:\n%s", c.table, c.re, section(c.table))
		}
	}
	if regexp.MustCompile(`(?m)^\s+email\s+text\s+STRIPPED`).MatchString(section("public.customers")) {
		t.Errorf("public.customers: email marked STRIPPED")
	}
	if strings.Contains(report, "\npublic.measurements_2024") {
		t.Errorf("a partition is listed as a table of its own:\n%s", report)
	}
	if !strings.Contains(report, "wal_level    logical") || strings.Contains(report, "  MISSING: wal_level") {
		t.Errorf("server facts: want wal_level logical and nothing missing:\n%s", report)
	}

	// Read only: no changecast schema, no publication.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'changecast') + (SELECT count(*) FROM pg_publication)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("inspect created a changecast schema or a publication in the inspected database")
	}
}

func TestInspect_Flags(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	dbURL := inspectDB(t)
	out := runInspectCmd(t, "--database-url", dbURL, "--schema", "archive", "--output", "yaml")
	if strings.Contains(out, "public.") || !strings.Contains(out, "table: archive.orders") {
		t.Errorf("--schema archive: got\n%s", out)
	}
	// Alone, archive.orders is the only "order": no schema prefix.
	if !strings.Contains(out, "- name: order\n") {
		t.Errorf("--schema archive: want entity order for archive.orders, got\n%s", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--database-url", dbURL, "--output", "json"}, `--output "json": want text or yaml`},
		{[]string{"--database-url", dbURL, "--schema", "nope"}, "no such schema: nope"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"inspect"}, c.args...), &out, &errb)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("inspect %q: got %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

func TestInspect_EntityNames(t *testing.T) {
	for _, c := range []struct{ table, want string }{
		{"orders", "order"},
		{"customers", "customer"},
		{"categories", "category"},
		{"addresses", "address"},
		{"statuses", "status"},
		{"order_items", "order_item"},
		{"OrderItems", "order_item"},
		{"boxes", "box"},
		{"houses", "house"},
		{"status", "status"},
		{"address", "address"},
		{"news", "news"},
		{"movies", "movies"},
		{"batches", "batches"},
		{"inventory", "inventory"},
		{"bus", "bus"},
		{"2024 data", "t_2024_data"},
	} {
		if got := entityName(c.table); got != c.want {
			t.Errorf("entityName(%q): got %q, want %q", c.table, got, c.want)
		}
	}

	tables := []store.InspectedTable{
		{Schema: "archive", Name: "orders"},
		{Schema: "public", Name: "orders"},
		{Schema: "public", Name: "order"},
		{Schema: "public", Name: "events"},
	}
	got := entityNames(tables)
	want := []string{"archive_order", "order", "order_2", "public_event"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entityNames: got %q, want %q", got, want)
	}
}

// TestInspect_Unprivileged runs inspect as a role without REPLICATION or
// CREATE on the database that owns only public.orders: the report and
// the config say what it lacks, and the tables it does not own stay in
// the config with a warning (the role serve runs as may own them).
func TestInspect_Unprivileged(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	role := fmt.Sprintf("inspect_cmd_%d", time.Now().UnixNano())
	admin := storetest.Cluster(t).DatabaseURL("postgres")
	exec := func(dbURL, sql string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Registered before inspectDB's cleanup, so it runs after the
	// database is dropped.
	t.Cleanup(func() { exec(admin, "DROP ROLE IF EXISTS "+role) })
	exec(admin, "CREATE ROLE "+role+" LOGIN")
	dbURL := inspectDB(t)
	exec(dbURL, "ALTER TABLE orders OWNER TO "+role)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)

	out := runInspectCmd(t, "--database-url", u.String(), "--schema", "public")
	for _, want := range []string{
		"  replication  no\n",
		"  MISSING: role " + `"` + role + `"` + " lacks the REPLICATION attribute",
		"# warning: role " + `"` + role + `"` + " lacks the REPLICATION attribute",
		"# warning: role " + `"` + role + `"` + " may not create a publication",
		"  # warning: role " + `"` + role + `"` + " does not own the table (",
		`so it cannot add it to a publication; run changecast as its owner, or ALTER TABLE "public"."customers" OWNER TO "` + role + `"`,
		"  - name: customer\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `ALTER TABLE "public"."orders" OWNER TO`) {
		t.Errorf("public.orders is owned by %s, yet a warning says otherwise:\n%s", role, out)
	}
}

// TestInspect_ConfigServes is the README's "Watching your own tables":
// the config "inspect --output yaml" prints for testdata/schema/inspect.sql,
// written to a file and given to "serve --config" unreviewed, starts, and
// every table it lists streams typed, sanitized changes under its entity
// type (a composite key, a replica identity USING INDEX, a partitioned
// table through its root, a second schema); the tables inspect skipped
// are not published, and no table was altered.
func TestInspect_ConfigServes(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	dbURL := inspectDB(t)
	cfgPath := filepath.Join(t.TempDir(), "changecast.yaml")
	if err := os.WriteFile(cfgPath, []byte(runInspectCmd(t, "--database-url", dbURL, "--output", "yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	sql := connect(t, dbURL)
	srv, _, dataDir := readyServerAt(t, dbURL, "cc_inspect_serve", func(cfg *serveConfig) { cfg.configPath = cfgPath })
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"send-everything": true}`)
	filterApplied(t, ws)

	exec1(t, sql, `INSERT INTO customers (email, api_key, password_hash) VALUES ('ada@example.com', 'CANARY-key', convert_to('CANARY-hash', 'UTF8'));
		INSERT INTO orders VALUES (1, 1, 9.99, 'new', '{a,b}', '{"n": 9007199254740993}', '\x01ff', '2026-12-07 10:00:00+01');
		INSERT INTO order_items VALUES (1, 1, 'SKU-1', 2);
		INSERT INTO categories VALUES (1, NULL);
		INSERT INTO addresses VALUES ('Main St 1', 'Springfield');
		INSERT INTO measurements VALUES (1, '2025-03-01', 1.5);
		INSERT INTO archive.orders VALUES (1, '2026-12-07 10:00:00+00');
		INSERT INTO archive.statuses VALUES ('new', 'New');
		INSERT INTO audit_log VALUES (now(), 'not watched');
		UPDATE orders SET status = 'paid' WHERE id = 1;
		DELETE FROM order_items WHERE order_id = 1 AND line = 1`)
	want := []struct{ typ, op, json string }{
		{"customer", "create", `"email":"ada@example.com"`},
		{"order", "create", `"details":{"n":9007199254740993},"id":1,"placed_at":"2026-12-07T09:00:00Z","receipt":"Af8=","status":"new","tags":["a","b"],"total":9.99}`},
		{"order_item", "create", `{"line":1,"order_id":1,"quantity":2,"sku":"SKU-1"}`},
		{"category", "create", `{"id":1,"parent_id":null}`},
		{"address", "create", `{"city":"Springfield","street":"Main St 1"}`},
		{"measurement", "create", `{"id":1,"taken_on":"2025-03-01","value":1.5}`},
		{"archive_order", "create", `{"archived_at":"2026-12-07T10:00:00Z","id":1}`},
		{"status", "create", `{"code":"new","label":"New"}`},
		{"order", "update", `"status":"paid"`},
		{"order_item", "delete", `"line":1,"order_id":1`},
	}
	for i, w := range want {
		f, _ := readChange(t, ws, 30*time.Second)
		if bytes.Contains(f.raw, []byte("CANARY")) || bytes.Contains(f.raw, []byte("Q0FOQVJZ")) { // "CANARY" in base64
			t.Fatalf("a secret left changecast: %s", f.raw)
		}
		if f.EntityType != w.typ || f.Operation != w.op || !bytes.Contains(f.raw, []byte(w.json)) {
			t.Fatalf("change %d: %s, want a %s %s holding %s", i, f.raw, w.typ, w.op, w.json)
		}
	}

	published := publishedTables(t, sql)
	if want := []string{"archive.orders", "archive.statuses", "public.addresses", "public.categories", "public.customers", "public.measurements", "public.order_items", "public.orders"}; !reflect.DeepEqual(published, want) {
		t.Errorf("published %v, want the %d tables of inspect's config", published, len(want))
	}
	var altered int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('public', 'archive') AND c.relkind IN ('r', 'p') AND c.relreplident <> CASE c.relname WHEN 'page_views' THEN 'f' WHEN 'addresses' THEN 'i' ELSE 'd' END`).Scan(&altered); err != nil || altered != 0 {
		t.Errorf("%d tables' replica identity changed (%v): inspect's config asks for no change", altered, err)
	}
}
