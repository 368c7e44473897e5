package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// inspectSchema is an application's own schema (shared with
// cmd/changecast's inspect test).
var inspectSchema = filepath.Join("..", "testdata", "schema", "inspect.sql")

// execFile runs the SQL file path on the database at dbURL.
func execFile(t testing.TB, dbURL, path string) {
	t.Helper()
	sql, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(testCtx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(testCtx(t), string(sql)); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func findTable(t testing.TB, in store.Inspection, qualified string) store.InspectedTable {
	t.Helper()
	for _, tb := range in.Tables {
		if tb.Qualified() == qualified {
			return tb
		}
	}
	t.Fatalf("table %s not inspected", qualified)
	return store.InspectedTable{}
}

func TestInspect(t *testing.T) {
	t.Parallel()
	dbURL := storetest.NewDatabase(t)
	execFile(t, dbURL, inspectSchema)
	db, err := store.Open(testCtx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	in, err := db.Inspect(testCtx(t), nil)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if !in.Superuser || !in.Replication || !in.CreatePublication || in.WALLevel != "logical" {
		t.Errorf("server facts: got superuser %v, replication %v, create publication %v, wal_level %q; want true, true, true, logical",
			in.Superuser, in.Replication, in.CreatePublication, in.WALLevel)
	}
	if p := in.ServerProblems(); p != nil {
		t.Errorf("ServerProblems: got %q, want none", p)
	}

	var names []string
	for _, tb := range in.Tables {
		names = append(names, tb.Qualified())
	}
	// Partitions are left out; the partitioned root stands for them.
	want := []string{"archive.orders", "archive.statuses", "public.addresses", "public.audit_log", "public.categories",
		"public.customers", "public.measurements", "public.order_items", "public.orders", "public.page_views"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("tables: got %q, want %q", names, want)
	}

	t.Run("columns", func(t *testing.T) {
		orders := findTable(t, in, "public.orders")
		var got []string
		for _, c := range orders.Columns {
			got = append(got, fmt.Sprintf("%s %s notnull=%v toast=%v", c.Name, c.Type, c.NotNull, c.Toastable))
		}
		want := []string{
			"id bigint notnull=true toast=false",
			"customer_id bigint notnull=true toast=false",
			"total numeric(12,2) notnull=true toast=true",
			"status text notnull=true toast=true",
			"tags text[] notnull=false toast=true",
			"details jsonb notnull=false toast=true",
			"receipt bytea notnull=false toast=true",
			"placed_at timestamp with time zone notnull=true toast=false",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("columns of public.orders:\ngot  %q\nwant %q", got, want)
		}
		if findTable(t, in, "public.categories").Toastable() {
			t.Errorf("public.categories (integers only): got Toastable true, want false")
		}
	})

	t.Run("keys", func(t *testing.T) {
		for _, c := range []struct {
			table    string
			key      []string
			identity store.ReplicaIdentity
			blocked  bool
		}{
			{"public.orders", []string{"id"}, store.IdentityDefault, false},
			{"public.order_items", []string{"order_id", "line"}, store.IdentityDefault, false},
			{"public.addresses", []string{"street", "city"}, store.IdentityIndex, false},
			{"public.audit_log", nil, store.IdentityDefault, true},
			{"public.page_views", nil, store.IdentityFull, true},
			{"public.measurements", []string{"id", "taken_on"}, store.IdentityDefault, false},
			{"archive.statuses", []string{"code"}, store.IdentityDefault, false},
		} {
			tb := findTable(t, in, c.table)
			if got := tb.Key(); !reflect.DeepEqual(got, c.key) {
				t.Errorf("%s: Key got %q, want %q", c.table, got, c.key)
			}
			if tb.Identity != c.identity {
				t.Errorf("%s: Identity got %q, want %q", c.table, tb.Identity, c.identity)
			}
			if got := tb.Blockers(); (got != nil) != c.blocked {
				t.Errorf("%s: Blockers got %q, want blocked=%v", c.table, got, c.blocked)
			}
			if !tb.CanPublish || tb.Warnings(in.Role) != nil {
				t.Errorf("%s: superuser: got CanPublish %v, warnings %q; want true, none", c.table, tb.CanPublish, tb.Warnings(in.Role))
			}
		}
		if b := findTable(t, in, "public.audit_log").Blockers(); !strings.Contains(b[0], "UPDATE and DELETE would fail") {
			t.Errorf("public.audit_log: Blockers got %q, want the failing UPDATE and DELETE named", b)
		}
		if a := findTable(t, in, "public.addresses"); a.IdentityIndex != "addresses_street_city" {
			t.Errorf("public.addresses: IdentityIndex got %q, want addresses_street_city", a.IdentityIndex)
		}
	})

	t.Run("partitioned", func(t *testing.T) {
		m := findTable(t, in, "public.measurements")
		want := []string{"public.measurements_2024", "public.measurements_2025"}
		if !m.Partitioned || !reflect.DeepEqual(m.Partitions, want) || m.PartitionsWithoutIdentity != nil {
			t.Errorf("public.measurements: got partitioned %v, partitions %q, without identity %q; want true, %q, none",
				m.Partitioned, m.Partitions, m.PartitionsWithoutIdentity, want)
		}
		if findTable(t, in, "public.orders").Partitioned {
			t.Errorf("public.orders: got Partitioned true, want false")
		}
	})

	t.Run("schemas", func(t *testing.T) {
		in, err := db.Inspect(testCtx(t), []string{"archive", "archive"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tb := range in.Tables {
			got = append(got, tb.Qualified())
		}
		if want := []string{"archive.orders", "archive.statuses"}; !reflect.DeepEqual(got, want) {
			t.Errorf("--schema archive: got %q, want %q", got, want)
		}
		_, err = db.Inspect(testCtx(t), []string{"public", "nope"})
		if !errors.Is(err, store.ErrNoSuchSchema) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("missing schema: got %v, want ErrNoSuchSchema naming nope", err)
		}
	})
}

// TestInspect_Unprivileged connects as a role that owns one table and has
// neither REPLICATION nor CREATE on the database: Inspect says so.
func TestInspect_Unprivileged(t *testing.T) {
	t.Parallel()
	role := fmt.Sprintf("inspect_%d", time.Now().UnixNano())
	admin := storetest.Cluster(t).DatabaseURL("postgres")
	exec := func(dbURL, sql string) {
		t.Helper()
		conn, err := pgx.Connect(testCtx(t), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Registered before NewDatabase's cleanup, so it runs after the
	// database (and the role's table in it) is dropped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+role)
			conn.Close(ctx)
		}
	})
	exec(admin, "CREATE ROLE "+role+" LOGIN")
	dbURL := storetest.NewDatabase(t)
	execFile(t, dbURL, inspectSchema)
	exec(dbURL, "ALTER TABLE orders OWNER TO "+role)

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	db, err := store.Open(testCtx(t), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	in, err := db.Inspect(testCtx(t), []string{"public"})
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if in.Role != role || in.Superuser || in.Replication || in.CreatePublication {
		t.Errorf("got role %q superuser %v replication %v create publication %v; want %q, false, false, false",
			in.Role, in.Superuser, in.Replication, in.CreatePublication, role)
	}
	problems := strings.Join(in.ServerProblems(), "\n")
	for _, want := range []string{"REPLICATION", "GRANT CREATE ON DATABASE"} {
		if !strings.Contains(problems, want) {
			t.Errorf("ServerProblems got %q, want it to mention %s", problems, want)
		}
	}
	if o := findTable(t, in, "public.orders"); !o.CanPublish || o.Warnings(in.Role) != nil {
		t.Errorf("public.orders (owned): got CanPublish %v, warnings %q; want true, none", o.CanPublish, o.Warnings(in.Role))
	}
	c := findTable(t, in, "public.customers")
	if w := c.Warnings(in.Role); c.CanPublish || len(w) != 1 || !strings.Contains(w[0], "OWNER TO") {
		t.Errorf("public.customers (not owned): got CanPublish %v, warnings %q; want false and the OWNER TO fix", c.CanPublish, w)
	}
}

// TestInspect_IdentifiesRows: a key identifies rows only when its columns
// are NOT NULL and hold a whole unique index on plain columns; a partial
// or expression index, a nullable column or a part of a unique index is
// not enough.
func TestInspect_IdentifiesRows(t *testing.T) {
	t.Parallel()
	dbURL := storetest.NewDatabase(t)
	conn, err := pgx.Connect(testCtx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(testCtx(t), `CREATE TABLE accounts (
		id bigint PRIMARY KEY,
		code text NOT NULL UNIQUE,
		email text UNIQUE,
		slug text NOT NULL,
		tenant int NOT NULL,
		name text NOT NULL,
		UNIQUE (tenant, name));
	CREATE UNIQUE INDEX accounts_slug_live ON accounts (slug) WHERE tenant > 0;
	CREATE UNIQUE INDEX accounts_lower_name ON accounts (lower(name));`); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(testCtx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	in, err := db.Inspect(testCtx(t), []string{"public"})
	if err != nil {
		t.Fatal(err)
	}
	tb := findTable(t, in, "public.accounts")
	for _, c := range []struct {
		key  []string
		want bool
	}{
		{[]string{"id"}, true},
		{[]string{"code"}, true},
		{[]string{"tenant", "name"}, true},
		{[]string{"name", "tenant", "code"}, true},
		{[]string{"email"}, false},          // unique but nullable
		{[]string{"slug"}, false},           // unique only where tenant > 0
		{[]string{"name"}, false},           // unique only as lower(name), or with tenant
		{[]string{"id", "email"}, false},    // a NULL email would hide the row from keyset pages
		{[]string{"no_such_column"}, false}, // not a column
	} {
		if got := tb.IdentifiesRows(c.key); got != c.want {
			t.Errorf("IdentifiesRows(%q) = %v, want %v (unique keys %q)", c.key, got, c.want, tb.UniqueKeys)
		}
	}
}
