package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm/logger"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// openDB opens a fresh database of the shared cluster.
func openDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(testCtx(t), storetest.NewDatabase(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func migrated(t testing.TB) *store.DB {
	t.Helper()
	db := openDB(t)
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return db
}

func strings1(t testing.TB, db *store.DB, sql string, args ...any) []string {
	t.Helper()
	var out []string
	if err := db.Gorm().WithContext(testCtx(t)).Raw(sql, args...).Scan(&out).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func execSQL(t testing.TB, db *store.DB, sql string) {
	t.Helper()
	if err := db.Gorm().WithContext(testCtx(t)).Exec(sql).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestMigrate_Tables(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	for _, et := range entities.DefaultRegistry().Types() {
		t.Run(et.Name, func(t *testing.T) {
			cols := strings1(t, db, `SELECT column_name::text FROM information_schema.columns
				WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position`, et.Table)
			if !reflect.DeepEqual(cols, et.Columns) {
				t.Errorf("columns of %s = %v, want %v", et.Table, cols, et.Columns)
			}
			ident := strings1(t, db, "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass(?)", "public."+et.Table)
			if len(ident) != 1 || ident[0] != "f" {
				t.Errorf("relreplident of %s = %v, want f", et.Table, ident)
			}
			key := strings1(t, db, `SELECT a.attname::text FROM pg_index i
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
				WHERE i.indrelid = to_regclass(?) AND i.indisprimary`, "public."+et.Table)
			if !reflect.DeepEqual(key, []string{et.Key}) {
				t.Errorf("primary key of %s = %v, want [%s]", et.Table, key, et.Key)
			}
		})
	}
	cols := strings1(t, db, `SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns
		WHERE table_schema = 'changecast' AND table_name = 'offsets' ORDER BY ordinal_position`)
	want := []string{"slot text NO", "lsn bigint NO", "updated_at timestamp with time zone NO"}
	if !reflect.DeepEqual(cols, want) {
		t.Errorf("changecast.offsets columns = %v, want %v", cols, want)
	}
}

func TestMigrate_RowsWithDefaults(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	// Every built-in table accepts a row written with plain SQL, so the
	// watcher's tests can write workloads without gorm.
	execSQL(t, db, `INSERT INTO repositories (owner, name) VALUES ('o', 'r');
		INSERT INTO pools DEFAULT VALUES;
		INSERT INTO users (username) VALUES ('admin');
		INSERT INTO instances DEFAULT VALUES;
		INSERT INTO jobs (id) VALUES (1);
		INSERT INTO github_endpoints (name) VALUES ('github.com');
		UPDATE pools SET max_runners = 2;
		DELETE FROM instances`)
}

// statementLog records the SQL gorm runs.
type statementLog struct {
	logger.Interface
	mu    sync.Mutex
	stmts []string
}

func (l *statementLog) LogMode(logger.LogLevel) logger.Interface { return l }
func (l *statementLog) Trace(_ context.Context, _ time.Time, fc func() (string, int64), _ error) {
	sql, _ := fc()
	l.mu.Lock()
	l.stmts = append(l.stmts, sql)
	l.mu.Unlock()
}

func TestMigrate_Twice(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	execSQL(t, db, "INSERT INTO pools (image) VALUES ('ubuntu')")
	log := &statementLog{Interface: logger.Discard}
	db.Gorm().Logger = log
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	db.Gorm().Logger = logger.Discard
	for _, s := range log.stmts {
		up := strings.ToUpper(s)
		if strings.Contains(up, "IF NOT EXISTS") {
			continue
		}
		if strings.HasPrefix(up, "ALTER") || strings.HasPrefix(up, "CREATE TABLE") || strings.HasPrefix(up, "CREATE INDEX") || strings.HasPrefix(up, "CREATE UNIQUE") {
			t.Errorf("second Migrate ran %q, want no schema change", s)
		}
	}
	if got := strings1(t, db, "SELECT image FROM pools"); !reflect.DeepEqual(got, []string{"ubuntu"}) {
		t.Errorf("pools after second Migrate = %v, want [ubuntu]", got)
	}
}

func TestMigrate_AddsMissingColumn(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	execSQL(t, db, "ALTER TABLE pools DROP COLUMN image; ALTER TABLE pools ALTER COLUMN flavor SET DEFAULT 'big'")
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	et, _ := entities.DefaultRegistry().Lookup("pool")
	cols := strings1(t, db, "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'pools'")
	sort.Strings(cols)
	want := append([]string(nil), et.Columns...)
	sort.Strings(want)
	if !reflect.DeepEqual(cols, want) {
		t.Errorf("pools columns = %v, want %v", cols, want)
	}
	// Existing columns are left alone (they may belong to another app).
	def := strings1(t, db, "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'pools' AND column_name = 'flavor'")
	if !reflect.DeepEqual(def, []string{"'big'::text"}) {
		t.Errorf("flavor default = %v, want ['big'::text] (untouched)", def)
	}
}

// TestMigrate_DollarUserSearchPath covers a role named like changecast's own
// schema with the stock search path "$user", public: entity tables must
// still land in public, not in schema changecast.
func TestMigrate_DollarUserSearchPath(t *testing.T) {
	t.Parallel()
	url := storetest.NewDatabase(t)
	setup, err := store.Open(testCtx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	name := strings1(t, setup, "SELECT current_database()::text")[0]
	execSQL(t, setup, `ALTER DATABASE `+strconv.Quote(name)+` SET search_path = "$user", public`)
	reg := entities.DefaultRegistry()
	for i := 0; i < 2; i++ {
		db, err := store.Open(testCtx(t), url)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings1(t, db, "SELECT current_setting('search_path')"); got[0] != `"$user", public` {
			t.Fatalf("search_path = %v", got)
		}
		if err := db.Migrate(testCtx(t), reg); err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
		if err := db.EnsurePublication(testCtx(t), "changecast", reg); err != nil {
			t.Fatalf("EnsurePublication %d: %v", i, err)
		}
		if got, want := publishedTables(t, db, "changecast"), registeredTables(reg); !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d: published tables = %v, want %v", i, got, want)
		}
		db.Close()
	}
}

func TestMigrate_Concurrent(t *testing.T) {
	t.Parallel()
	url := storetest.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := store.Open(testCtx(t), url)
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			errs[i] = db.Migrate(testCtx(t), entities.DefaultRegistry())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
}

func TestMigrate_SearchPathSchema(t *testing.T) {
	t.Parallel()
	base := storetest.NewDatabase(t)
	setup, err := store.Open(testCtx(t), base)
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	execSQL(t, setup, "CREATE SCHEMA fleet")

	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", "fleet")
	u.RawQuery = q.Encode()
	db, err := store.Open(testCtx(t), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := entities.DefaultRegistry()
	if err := db.Migrate(testCtx(t), reg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := db.EnsurePublication(testCtx(t), "changecast", reg); err != nil {
		t.Fatalf("EnsurePublication: %v", err)
	}
	got := strings1(t, db, "SELECT DISTINCT schemaname::text FROM pg_publication_tables WHERE pubname = 'changecast'")
	if !reflect.DeepEqual(got, []string{"fleet"}) {
		t.Errorf("published schemas = %v, want [fleet]", got)
	}
	if got := strings1(t, db, "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'"); len(got) != 0 {
		t.Errorf("tables in public = %v, want none", got)
	}
}

func TestMigrate_TableWithoutGoType(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	reg := entities.DefaultRegistry()
	if err := reg.Register(entities.EntityType{Name: "widget", Table: "widgets"}); err != nil {
		t.Fatal(err)
	}
	err := db.Migrate(testCtx(t), reg)
	if err == nil || !strings.Contains(err.Error(), `"public"."widgets" does not exist`) || !strings.Contains(err.Error(), "create it first") {
		t.Fatalf("Migrate with a missing table: error = %v, want an explanation", err)
	}
	execSQL(t, db, "CREATE TABLE widgets (id bigint PRIMARY KEY, label text)")
	if err := db.Migrate(testCtx(t), reg); err != nil {
		t.Fatalf("Migrate once widgets exists: %v", err)
	}
	// A table changecast did not create is never altered without consent.
	if got := strings1(t, db, "SELECT relreplident::text FROM pg_class WHERE oid = 'widgets'::regclass"); !reflect.DeepEqual(got, []string{"d"}) {
		t.Errorf("relreplident of widgets = %v, want [d]: altered without consent", got)
	}
	// With consent it gets REPLICA IDENTITY FULL.
	consent := entities.DefaultRegistry()
	if err := consent.Register(entities.EntityType{Name: "widget", Table: "widgets", ReplicaIdentityFull: true}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(testCtx(t), consent); err != nil {
		t.Fatalf("Migrate with consent: %v", err)
	}
	if got := strings1(t, db, "SELECT relreplident::text FROM pg_class WHERE oid = 'widgets'::regclass"); !reflect.DeepEqual(got, []string{"f"}) {
		t.Errorf("relreplident of widgets = %v, want [f]", got)
	}
}

// TestMigrate_DeclaredTableNeedsAnIdentity: a declared table without a
// primary key or replica identity is refused with the fix, and a table in
// another schema is found there and published schema-qualified.
func TestMigrate_DeclaredTableNeedsAnIdentity(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	execSQL(t, db, "CREATE SCHEMA shop; CREATE TABLE shop.logs (at timestamptz, line text); CREATE TABLE shop.orders (id bigint PRIMARY KEY, total numeric)")
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "log", Table: "logs", Schema: "shop"}); err != nil {
		t.Fatal(err)
	}
	err := db.Migrate(testCtx(t), reg)
	if err == nil || !strings.Contains(err.Error(), `"shop"."logs" has no primary key`) || !strings.Contains(err.Error(), "replica_identity: full") {
		t.Fatalf("Migrate with a table without identity: %v, want the refusal and its fix", err)
	}
	reg = entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "order", Table: "orders", Schema: "shop"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(testCtx(t), reg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := db.EnsurePublication(testCtx(t), "pub_shop", reg); err != nil {
		t.Fatalf("EnsurePublication: %v", err)
	}
	if got := strings1(t, db, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'pub_shop'"); !reflect.DeepEqual(got, []string{"shop.orders"}) {
		t.Errorf("published %v, want [shop.orders]", got)
	}
	if got := strings1(t, db, "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'"); len(got) != 0 {
		t.Errorf("tables created in public: %v, want none (the registry names no built-in type)", got)
	}
}

func TestMigrate_RegisteredGoType(t *testing.T) {
	t.Parallel()
	type gadget struct {
		ID    int64  `json:"id" gorm:"primaryKey"`
		Label string `json:"label" gorm:"not null;default:''"`
	}
	db := openDB(t)
	reg := entities.DefaultRegistry()
	if err := reg.Register(entities.EntityType{Name: "gadget", Table: "gadgets", GoType: reflect.TypeOf(gadget{})}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(testCtx(t), reg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	cols := strings1(t, db, "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'gadgets' ORDER BY ordinal_position")
	if !reflect.DeepEqual(cols, []string{"id", "label"}) {
		t.Errorf("gadgets columns = %v, want [id label]", cols)
	}
}

// publishedTables lists the publication's tables as schema.table, sorted.
func publishedTables(t testing.TB, db *store.DB, pub string) []string {
	t.Helper()
	got := strings1(t, db, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = ?", pub)
	sort.Strings(got)
	return got
}

func registeredTables(reg *entities.Registry) []string {
	var want []string
	for _, et := range reg.Types() {
		want = append(want, "public."+et.Table)
	}
	sort.Strings(want)
	return want
}

func TestEnsurePublication(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	reg := entities.DefaultRegistry()
	ctx := testCtx(t)
	want := registeredTables(reg)

	checkPub := func(t *testing.T, step string) {
		t.Helper()
		if got := publishedTables(t, db, "changecast"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: published tables = %v, want %v", step, got, want)
		}
		flags := strings1(t, db, "SELECT concat_ws(',', pubinsert, pubupdate, pubdelete, pubtruncate) FROM pg_publication WHERE pubname = 'changecast'")
		if !reflect.DeepEqual(flags, []string{"t,t,t,t"}) {
			t.Fatalf("%s: publish flags = %v, want all true", step, flags)
		}
	}

	if err := db.EnsurePublication(ctx, "changecast", reg); err != nil {
		t.Fatalf("create: %v", err)
	}
	checkPub(t, "create")
	if err := db.EnsurePublication(ctx, "changecast", reg); err != nil {
		t.Fatalf("again: %v", err)
	}
	checkPub(t, "again")

	cases := []struct {
		name  string
		alter string
	}{
		{"extra table", "CREATE TABLE unrelated (id int PRIMARY KEY); ALTER PUBLICATION changecast ADD TABLE unrelated"},
		{"missing table", "ALTER PUBLICATION changecast DROP TABLE pools"},
		{"extra and missing", "ALTER PUBLICATION changecast DROP TABLE jobs, users; ALTER PUBLICATION changecast ADD TABLE unrelated"},
		{"row filter", "ALTER PUBLICATION changecast SET TABLE repositories WHERE (owner <> 'x'), organizations, enterprises, pools, users, instances, jobs, controllers, github_credentials, github_endpoints"},
		{"column list", "ALTER PUBLICATION changecast SET TABLE repositories (id, name), organizations, enterprises, pools, users, instances, jobs, controllers, github_credentials, github_endpoints"},
		{"whole schema", "ALTER PUBLICATION changecast ADD TABLES IN SCHEMA changecast"},
		{"publish actions", "ALTER PUBLICATION changecast SET (publish = 'insert')"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			execSQL(t, db, c.alter)
			if err := db.EnsurePublication(ctx, "changecast", reg); err != nil {
				t.Fatalf("EnsurePublication: %v", err)
			}
			checkPub(t, c.name)
			attrs := strings1(t, db, "SELECT count(*)::text FROM pg_publication_rel WHERE prqual IS NOT NULL OR prattrs IS NOT NULL")
			if attrs[0] != "0" {
				t.Fatalf("%s rows still have a row filter or column list", attrs[0])
			}
		})
	}
}

func TestEnsurePublication_QuotedName(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	reg := entities.DefaultRegistry()
	name := `Change"Cast pub`
	if err := db.EnsurePublication(testCtx(t), name, reg); err != nil {
		t.Fatalf("EnsurePublication(%q): %v", name, err)
	}
	if got := publishedTables(t, db, name); !reflect.DeepEqual(got, registeredTables(reg)) {
		t.Fatalf("published tables = %v", got)
	}
}

func TestEnsurePublication_Errors(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	reg := entities.DefaultRegistry()
	err := db.EnsurePublication(testCtx(t), "changecast", reg)
	if err == nil || !strings.Contains(err.Error(), "run changecast migrate first") {
		t.Fatalf("before Migrate: error = %v, want a hint to migrate", err)
	}
	if err := db.Migrate(testCtx(t), reg); err != nil {
		t.Fatal(err)
	}
	execSQL(t, db, "CREATE PUBLICATION everything FOR ALL TABLES")
	err = db.EnsurePublication(testCtx(t), "everything", reg)
	if err == nil || !strings.Contains(err.Error(), "FOR ALL TABLES") {
		t.Fatalf("FOR ALL TABLES publication: error = %v, want an explanation", err)
	}
}

func TestOffsets(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	if got, err := db.LoadOffset(ctx, "changecast"); err != nil || got != 0 {
		t.Fatalf("LoadOffset on empty = %v, %v, want 0, nil", got, err)
	}
	steps := []struct {
		save, want entities.LSN
	}{
		{0x16_B374D848, 0x16_B374D848},
		{0x16_B374D900, 0x16_B374D900},
		{0x16_B374D848, 0x16_B374D900}, // never backwards
		{0, 0x16_B374D900},
		{0x7FFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF},
	}
	for i, s := range steps {
		if err := db.SaveOffset(ctx, "changecast", s.save); err != nil {
			t.Fatalf("step %d: SaveOffset(%s): %v", i, s.save, err)
		}
		got, err := db.LoadOffset(ctx, "changecast")
		if err != nil || got != s.want {
			t.Fatalf("step %d: after SaveOffset(%s) LoadOffset = %s, %v, want %s", i, s.save, got, err, s.want)
		}
	}
	if got, _ := db.LoadOffset(ctx, "other"); got != 0 {
		t.Errorf("LoadOffset(other) = %s, want 0", got)
	}
	if err := db.SaveOffset(ctx, "changecast", 1<<63); err == nil {
		t.Errorf("SaveOffset(1<<63) = nil, want an out-of-range error")
	}
}

func TestOffsets_BeforeMigrate(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	_, err := db.LoadOffset(testCtx(t), "changecast")
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("LoadOffset before Migrate: error = %v, want a hint to migrate", err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3t-P@ss"
	cases := []struct {
		in, want string
	}{
		{"postgres://bob:" + url.QueryEscape(pw) + "@db.example:5432/app?sslmode=disable", "postgres://bob:xxxxx@db.example:5432/app?sslmode=disable"},
		{"postgresql://bob:hunter2@/app?host=/run/pg", "postgresql://bob:xxxxx@/app?host=/run/pg"},
		{"postgres://bob@db/app?password=hunter2&sslmode=require", "postgres://bob@db/app?password=xxxxx&sslmode=require"},
		{"postgres://bob@db/app", "postgres://bob@db/app"},
		{"host=db user=bob password=hunter2 dbname=app", "host=db user=bob password=xxxxx dbname=app"},
		{"host=db password='it''s a secret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"host=db password = 'quoted \\' one' dbname=app", "host=db password = xxxxx dbname=app"},
		{"host=db PASSWORD=hunter2", "host=db PASSWORD=xxxxx"},
		{"postgres://bob:hun%zzter2@db/app", "postgres://bob:xxxxx@db/app"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got := store.RedactURL(c.in)
			if got != c.want {
				t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
			}
			for _, secret := range []string{"hunter2", "hun%zzter2", pw, url.QueryEscape(pw), "secret", "quoted"} {
				if strings.Contains(got, secret) {
					t.Errorf("RedactURL(%q) = %q still contains %q", c.in, got, secret)
				}
			}
		})
	}
}

func TestOpen_BadPasswordNotInError(t *testing.T) {
	t.Parallel()
	l := storetest.Cluster(t)
	const pw = "Wr0ng-secret-pa55"
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port()))
	for _, conn := range []string{
		fmt.Sprintf("postgres://changecast:%s@%s/changecast", pw, hostPort),
		fmt.Sprintf("postgres://changecast@%s/changecast?password=%s", hostPort, pw),
		fmt.Sprintf("host=127.0.0.1 port=%d user=changecast dbname=changecast password=%s", l.Port(), pw),
		fmt.Sprintf("postgres://changecast:%s@%s/changecast?sslmode=bogus", pw, hostPort), // a parse error
	} {
		db, err := store.Open(testCtx(t), conn)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%s) with a wrong password succeeded", store.RedactURL(conn))
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Open error %q contains the password", err)
		}
		if !strings.Contains(err.Error(), "xxxxx") && !strings.Contains(err.Error(), "password authentication failed") {
			t.Errorf("Open error %q says neither which URL nor why", err)
		}
	}
}

func TestOpen_Unreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = store.Open(ctx, fmt.Sprintf("postgres://u:topsecret@127.0.0.1:%d/db?connect_timeout=5", port))
	if err == nil || strings.Contains(err.Error(), "topsecret") || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open on a closed port: error = %v", err)
	}
}
