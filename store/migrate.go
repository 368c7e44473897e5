package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/changecast/changecast/entities"
)

// Schema is the schema of changecast's own tables.
const Schema = "changecast"

// ddlLockKey is the advisory lock that serialises Migrate and
// EnsurePublication between processes starting at once.
const ddlLockKey int64 = 0x63_6861_6e67_6563 // "changec"

// publishActions is what the publication publishes.
const publishActions = "insert, update, delete, truncate"

// ownMigrations create changecast's own tables, in order. Each must be
// idempotent.
var ownMigrations = []string{
	`CREATE SCHEMA IF NOT EXISTS changecast`,
	`CREATE TABLE IF NOT EXISTS changecast.offsets (
		slot text PRIMARY KEY,
		lsn bigint NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	)`,
	// The journal (see appender.go). payload and previous hold JSON
	// objects as text: the exact bytes the appender encoded, so a change
	// read back re-encodes byte for byte as it was sent live (jsonb would
	// not keep them), and the server stores them without parsing what the
	// appender wrote valid (json would parse each value again: about a
	// tenth of the server's work per journaled change). The server no
	// longer checks that a value is JSON: the appender writes only rows
	// the watcher or the event builder encoded, and catch-up validates
	// each row it reads back (entities.ParseRow).
	`CREATE TABLE IF NOT EXISTS changecast.journal (
		seq bigint PRIMARY KEY,
		commit_lsn bigint NOT NULL,
		tx_index int NOT NULL,
		xid bigint NOT NULL,
		committed_at timestamptz NOT NULL,
		journaled_at timestamptz NOT NULL DEFAULT now(),
		entity_type text NOT NULL,
		operation text NOT NULL,
		entity_id text NOT NULL,
		payload text,
		previous text,
		unchanged text[]
	)`,
	// Journals made before held them as json: the same bytes, so the
	// conversion keeps every value (it rewrites the table, once). Each
	// column still json is converted, in one ALTER (one rewrite); a
	// column that is not json, or not there, is left alone.
	`DO $$ DECLARE alters text; BEGIN
		SELECT string_agg(format('ALTER COLUMN %I TYPE text USING %I::text', attname, attname), ', ')
			INTO alters FROM pg_attribute
			WHERE attrelid = 'changecast.journal'::regclass AND attname IN ('payload', 'previous')
			AND atttypid = 'json'::regtype AND NOT attisdropped;
		IF alters IS NOT NULL THEN
			EXECUTE 'ALTER TABLE changecast.journal ' || alters;
		END IF;
	END $$`,
	// Retention by age bisects seq instead (retention.go, ageCutoff): an
	// index on journaled_at cost every journaled change an insert.
	`DROP INDEX IF EXISTS changecast.journal_journaled_at`,
	// One row: horizon is the highest seq retention removed. It also keeps
	// the head when retention empties the journal, so seq never restarts.
	`CREATE TABLE IF NOT EXISTS changecast.journal_meta (
		id boolean PRIMARY KEY DEFAULT true CHECK (id),
		horizon bigint NOT NULL DEFAULT 0
	)`,
	`INSERT INTO changecast.journal_meta (id) VALUES (true) ON CONFLICT (id) DO NOTHING`,
	// The last state of each entity of a table without REPLICA IDENTITY
	// FULL, as the seq of its journal row, and the entity types followed
	// that way (see states.go).
	`CREATE TABLE IF NOT EXISTS changecast.entity_state (
		entity_type text NOT NULL,
		entity_id text NOT NULL,
		seq bigint NOT NULL,
		PRIMARY KEY (entity_type, entity_id)
	)`,
	`CREATE TABLE IF NOT EXISTS changecast.entity_state_types (
		entity_type text PRIMARY KEY
	)`,
	// Gaps (see gaps.go): stretches of source history the journal can
	// never hold because the replication slot was lost. seq is the
	// cursor of the gap's marker row; no reader resumes across it.
	`CREATE TABLE IF NOT EXISTS changecast.journal_gaps (
		seq bigint PRIMARY KEY,
		from_lsn bigint NOT NULL,
		to_lsn bigint NOT NULL,
		reason text NOT NULL,
		recorded_at timestamptz NOT NULL DEFAULT now()
	)`,
	// One row, only in a journal kept apart from the database it follows
	// (see source.go): which database that is. Offsets are positions in
	// one database's WAL and mean nothing in another's.
	`CREATE TABLE IF NOT EXISTS changecast.journal_source (
		id boolean PRIMARY KEY DEFAULT true CHECK (id),
		system_identifier bigint NOT NULL,
		database_oid bigint NOT NULL,
		database_name text NOT NULL,
		recorded_at timestamptz NOT NULL DEFAULT now()
	)`,
}

// Migrate brings the database to the shape changecast needs: schema
// changecast with its own tables, the tables of the registered entity
// types that have a Go type (the built-in domain's when reg holds it) in
// the schema of the URL's search path, and REPLICA IDENTITY FULL on every
// registered table, so updates and deletes carry the whole previous row.
// It creates no table that reg does not name; a registered type without a
// Go type must name an existing table. Migrate is idempotent, and
// serialised with EnsurePublication between processes by an advisory lock.
func (db *DB) Migrate(ctx context.Context, reg *entities.Registry) error {
	return db.migrate(ctx, func(tx *gorm.DB) error {
		if err := migrateOwn(tx); err != nil {
			return err
		}
		return migrateEntities(tx, reg)
	})
}

// MigrateJournal prepares a database that holds only changecast's own
// bookkeeping, apart from the database it watches (serve --journal-url):
// schema changecast with its tables, and the users table login checks, in
// the schema of the URL's search path. It creates no entity table, sets
// no replica identity and no publication. Idempotent, and serialised with
// Migrate and EnsurePublication by the same advisory lock.
func (db *DB) MigrateJournal(ctx context.Context) error {
	return db.migrate(ctx, func(tx *gorm.DB) error {
		if err := migrateOwn(tx); err != nil {
			return err
		}
		schema, err := currentSchema(tx)
		if err != nil {
			return err
		}
		var u entities.User
		if err := migrateModel(tx, schema, u.TableName(), &u); err != nil {
			return fmt.Errorf("table %s: %w", pgx.Identifier{schema, u.TableName()}.Sanitize(), err)
		}
		return nil
	})
}

// MigrateOwn creates schema changecast and its tables (login users in
// changecast.users included) and nothing else: what "changecast user"
// needs in a database whose entity types it does not know.
func (db *DB) MigrateOwn(ctx context.Context) error {
	return db.migrate(ctx, migrateOwn)
}

// MigrateWatched prepares a watched database whose journal lives in
// another one (serve --journal-url): the registered entity types' tables
// and replica identities, as Migrate does, and nothing of changecast's
// own: no schema changecast. Idempotent, and serialised like Migrate.
func (db *DB) MigrateWatched(ctx context.Context, reg *entities.Registry) error {
	return db.migrate(ctx, func(tx *gorm.DB) error { return migrateEntities(tx, reg) })
}

// migrate runs steps in one transaction under the DDL advisory lock.
func (db *DB) migrate(ctx context.Context, steps func(tx *gorm.DB) error) error {
	err := db.gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", ddlLockKey).Error; err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		return steps(tx)
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// migrateOwn creates schema changecast and its tables.
func migrateOwn(tx *gorm.DB) error {
	for _, stmt := range ownMigrations {
		if err := tx.Exec(stmt).Error; err != nil {
			return fmt.Errorf("changecast schema: %w", err)
		}
	}
	// Login users when the database has no users table of their own
	// (users_table.go).
	if err := migrateModel(tx, "changecast", "users", &entities.User{}); err != nil {
		return fmt.Errorf("table %s: %w", OwnUsersTable, err)
	}
	return migrateEventsTable(tx)
}

// migrateEntities creates the tables of the registered types that have a
// Go type and checks (or, with consent, sets) the replica identity of
// every registered table.
func migrateEntities(tx *gorm.DB, reg *entities.Registry) error {
	schema, err := currentSchema(tx)
	if err != nil {
		return err
	}

	// Go models: the registered built-ins (their gorm models carry
	// defaults and indexes), then other registered types with a Go
	// type. A table no registered type names is never created.
	type model struct {
		table string
		value any
	}
	var models []model
	seen := map[string]bool{}
	registered := map[string]bool{}
	for _, et := range reg.Types() {
		registered[et.Table] = true
	}
	for _, m := range entities.Models() {
		table := m.(interface{ TableName() string }).TableName()
		if !registered[table] {
			continue
		}
		models = append(models, model{table, m})
		seen[schema+"."+table] = true
	}
	for _, et := range reg.Types() {
		if et.GoType == nil || et.Schema != "" || seen[schema+"."+et.Table] {
			continue
		}
		rt := et.GoType
		if rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		models = append(models, model{et.Table, reflect.New(rt).Interface()})
		seen[schema+"."+et.Table] = true
	}
	for _, m := range models {
		if err := migrateModel(tx, schema, m.table, m.value); err != nil {
			return fmt.Errorf("table %s: %w", pgx.Identifier{schema, m.table}.Sanitize(), err)
		}
	}

	// Declared types (no Go type) name tables that must exist; they
	// are altered only with consent.
	full := map[string]bool{}
	for t := range seen {
		full[t] = true // created (or extended) from a Go model
	}
	for _, et := range reg.Types() {
		s := schema
		if et.Schema != "" {
			s = et.Schema
		}
		q := pgx.Identifier{s, et.Table}.Sanitize()
		if et.GoType != nil && et.Schema == "" {
			continue // migrated above
		}
		ok, err := tableExists(tx, s, et.Table)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("entity type %q: table %s does not exist; changecast creates tables only for entity types with a Go type, so create it first (with a primary key) or remove the type from the configuration", et.Name, q)
		}
		if et.ReplicaIdentityFull {
			full[s+"."+et.Table] = true
			continue
		}
		if err := identityUsable(tx, et.Name, s, et.Table); err != nil {
			return err
		}
	}
	tables := make([]string, 0, len(full))
	for t := range full {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		sc, tb, ok := strings.Cut(t, ".")
		if !ok {
			sc, tb = schema, t
		}
		if err := replicaIdentityFull(tx, sc, tb); err != nil {
			return err
		}
	}
	return nil
}

// migrateModel creates the table of a Go model, or adds the columns and
// indexes it lacks. Unlike gorm's AutoMigrate it never alters an existing
// column: the watched tables may belong to another application (GARM), and
// changecast must not rewrite their types or defaults.
func migrateModel(tx *gorm.DB, schema, table string, value any) error {
	if strings.Contains(schema, ".") || strings.Contains(table, ".") {
		return fmt.Errorf("names containing a dot are not supported")
	}
	mtx := tx.Table(schema + "." + table)
	m := mtx.Migrator()
	if !m.HasTable(value) {
		return m.CreateTable(value)
	}
	stmt := &gorm.Statement{DB: mtx}
	if err := stmt.ParseWithSpecialTableName(value, table); err != nil {
		return err
	}
	cols, err := m.ColumnTypes(value)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c.Name()] = true
	}
	for _, name := range stmt.Schema.DBNames {
		if !have[name] {
			if err := m.AddColumn(value, name); err != nil {
				return err
			}
		}
	}
	for _, idx := range stmt.Schema.ParseIndexes() {
		if !m.HasIndex(value, idx.Name) {
			if err := m.CreateIndex(value, idx.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// replicaIdentityFull sets REPLICA IDENTITY FULL unless it is already set
// (ALTER TABLE takes an exclusive lock; skip it when there is nothing to do).
// Without it, a published table without a primary key makes the
// application's UPDATEs fail (docs/replication.md rule 14), and deletes carry
// only the key.
// identityUsable checks that a declared table's replica identity lets
// PostgreSQL publish its updates and deletes (REPLICATION rule: a table
// without one makes the application's own UPDATEs fail once published):
// a primary key, a replica identity index, or FULL.
func identityUsable(tx *gorm.DB, name, schema, table string) error {
	qualified := pgx.Identifier{schema, table}.Sanitize()
	var ident string
	var hasPK, hasIndex bool
	err := tx.Raw(`SELECT c.relreplident::text,
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
		FROM pg_class c WHERE c.oid = to_regclass(?)`, qualified).Row().Scan(&ident, &hasPK, &hasIndex)
	if err != nil {
		return fmt.Errorf("replica identity of %s: %w", qualified, err)
	}
	switch {
	case ident == "f", ident == "d" && hasPK, ident == "i" && hasIndex:
		return nil
	}
	return fmt.Errorf("entity type %q: table %s has no primary key or usable replica identity, so PostgreSQL could not publish its updates and deletes (and would refuse the application's own UPDATEs); add a primary key, run ALTER TABLE %s REPLICA IDENTITY FULL, or set replica_identity: full for it in the configuration", name, qualified, qualified)
}

func replicaIdentityFull(tx *gorm.DB, schema, table string) error {
	qualified := pgx.Identifier{schema, table}.Sanitize()
	var ident string
	if err := tx.Raw("SELECT relreplident::text FROM pg_class WHERE oid = to_regclass(?)", qualified).Row().Scan(&ident); err != nil {
		return fmt.Errorf("replica identity of %s: %w", qualified, err)
	}
	if ident == "f" {
		return nil
	}
	if err := tx.Exec("ALTER TABLE " + qualified + " REPLICA IDENTITY FULL").Error; err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("set REPLICA IDENTITY FULL on %s: %w; the database user must own the table (or run ALTER TABLE %s REPLICA IDENTITY FULL as its owner)", qualified, err, qualified)
		}
		return fmt.Errorf("set REPLICA IDENTITY FULL on %s: %w", qualified, err)
	}
	return nil
}

// currentSchema returns the schema where entity tables live: the first
// existing schema of the search path other than changecast's own. Skipping
// "changecast" matters: the default search path starts with "$user", and
// the superuser of the embedded default is called changecast.
func currentSchema(tx *gorm.DB) (string, error) {
	var schema sql.NullString
	err := tx.Raw("SELECT s FROM unnest(current_schemas(false)) WITH ORDINALITY AS t(s, i) WHERE s <> ? ORDER BY i LIMIT 1", Schema).Row().Scan(&schema)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !schema.Valid {
		return "", errNoSchema
	}
	if err != nil {
		return "", fmt.Errorf("current schema: %w", err)
	}
	return schema.String, nil
}

func tableExists(tx *gorm.DB, schema, table string) (bool, error) {
	var ok bool
	err := tx.Raw("SELECT to_regclass(?) IS NOT NULL", pgx.Identifier{schema, table}.Sanitize()).Row().Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check table %s.%s: %w", schema, table, err)
	}
	return ok, nil
}

// EnsurePublication makes publication name publish inserts, updates,
// deletes and truncates of exactly the registered tables (schema-qualified:
// a type's Schema, else the search path's), a partitioned table's changes
// as its root's (publish_via_partition_root): it creates the publication
// if missing and otherwise corrects its table set (extra or missing tables,
// and on PostgreSQL 15 tables published with a row filter or column list,
// or whole schemas) and its options. Run Migrate first.
func (db *DB) EnsurePublication(ctx context.Context, name string, reg *entities.Registry) error {
	if name == "" {
		return errors.New("ensure publication: empty name")
	}
	types := reg.Types()
	if len(types) == 0 {
		return fmt.Errorf("ensure publication %s: no entity types registered", name)
	}
	pub := pgx.Identifier{name}.Sanitize()
	err := db.gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", ddlLockKey).Error; err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		schema, err := currentSchema(tx)
		if err != nil {
			return err
		}
		want := map[string]bool{}
		var list []string
		for _, et := range types {
			s := schema
			if et.Schema != "" {
				s = et.Schema
			}
			ok, err := tableExists(tx, s, et.Table)
			if err != nil {
				return err
			}
			q := pgx.Identifier{s, et.Table}.Sanitize()
			if !ok {
				return fmt.Errorf("table %s of entity type %q does not exist; run changecast migrate first", q, et.Name)
			}
			want[s+"."+et.Table] = true
			list = append(list, q)
		}
		sort.Strings(list)
		tableList := strings.Join(list, ", ")

		var (
			oid                  uint32
			allTables, viaRoot   bool
			ins, upd, del, trunc bool
			serverVersion        int
		)
		if err := tx.Raw("SELECT current_setting('server_version_num')::int").Row().Scan(&serverVersion); err != nil {
			return fmt.Errorf("server version: %w", err)
		}
		row := tx.Raw("SELECT oid, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = ?", name).Row()
		switch err := row.Scan(&oid, &allTables, &ins, &upd, &del, &trunc, &viaRoot); {
		case errors.Is(err, sql.ErrNoRows):
			// publish_via_partition_root: a partitioned table's changes
			// arrive as its root's, so the root is what is declared.
			if err := tx.Exec("CREATE PUBLICATION " + pub + " FOR TABLE " + tableList + " WITH (publish = '" + publishActions + "', publish_via_partition_root = true)").Error; err != nil {
				return fmt.Errorf("create: %w", err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("look up: %w", err)
		}
		if allTables {
			return fmt.Errorf("publication %s is FOR ALL TABLES, which would stream every table (secrets included) and cannot be narrowed; drop it (DROP PUBLICATION %s) or choose another publication name", pub, pub)
		}

		differs, err := publicationDiffers(tx, oid, want, serverVersion)
		if err != nil {
			return err
		}
		if differs {
			if err := tx.Exec("ALTER PUBLICATION " + pub + " SET TABLE " + tableList).Error; err != nil {
				return fmt.Errorf("set tables: %w", err)
			}
		}
		if !(ins && upd && del && trunc) || !viaRoot {
			if err := tx.Exec("ALTER PUBLICATION " + pub + " SET (publish = '" + publishActions + "', publish_via_partition_root = true)").Error; err != nil {
				return fmt.Errorf("set publish: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure publication %s: %w", name, err)
	}
	return nil
}

// publicationDiffers reports whether the publication's tables differ from
// want (schema.table), or publish some of them only partially.
func publicationDiffers(tx *gorm.DB, oid uint32, want map[string]bool, serverVersion int) (bool, error) {
	q := `SELECT n.nspname, c.relname, false
		FROM pg_publication_rel pr
		JOIN pg_class c ON c.oid = pr.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE pr.prpubid = ?`
	if serverVersion >= 150000 {
		q = `SELECT n.nspname, c.relname, pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL
		FROM pg_publication_rel pr
		JOIN pg_class c ON c.oid = pr.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE pr.prpubid = ?`
		var schemas int
		if err := tx.Raw("SELECT count(*) FROM pg_publication_namespace WHERE pnpubid = ?", oid).Row().Scan(&schemas); err != nil {
			return false, fmt.Errorf("publication schemas: %w", err)
		}
		if schemas > 0 {
			return true, nil
		}
	}
	rows, err := tx.Raw(q, oid).Rows()
	if err != nil {
		return false, fmt.Errorf("publication tables: %w", err)
	}
	defer rows.Close()
	have := map[string]bool{}
	partial := false
	for rows.Next() {
		var schema, table string
		var p bool
		if err := rows.Scan(&schema, &table, &p); err != nil {
			return false, fmt.Errorf("publication tables: %w", err)
		}
		have[schema+"."+table] = true
		partial = partial || p
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("publication tables: %w", err)
	}
	if partial || len(have) != len(want) {
		return true, nil
	}
	for t := range want {
		if !have[t] {
			return true, nil
		}
	}
	return false, nil
}

// LoadOffset returns the replication position stored for slot, or 0 when
// none is stored.
func (db *DB) LoadOffset(ctx context.Context, slot string) (entities.LSN, error) {
	return loadOffset(ctx, db.pool, slot)
}

// SaveOffset stores lsn as slot's replication position. The stored
// position never moves backwards: saving an older LSN leaves the newer one.
// It is the statement the appender runs in its journal transactions.
func (db *DB) SaveOffset(ctx context.Context, slot string, lsn entities.LSN) error {
	return storeOffset(ctx, db.pool, slot, lsn)
}

// hintMigrate adds what to do when changecast's tables are missing.
func hintMigrate(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return fmt.Errorf("%w (run changecast migrate first)", err)
	}
	return err
}
