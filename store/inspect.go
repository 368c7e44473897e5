package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Inspect reads, and never changes, what changecast needs to know before it
// can watch a database's own tables: the server's replication settings and
// the connected role's rights, and for every ordinary and partitioned table
// its key, replica identity, columns and what blocks watching it. It is
// what "changecast inspect" prints.

// ReplicaIdentity is a table's REPLICA IDENTITY: what its UPDATE and DELETE
// records carry of the old row (PostgreSQL docs, ALTER TABLE, REPLICA
// IDENTITY).
type ReplicaIdentity string

// The replica identities, as ALTER TABLE spells them.
const (
	IdentityDefault ReplicaIdentity = "default" // the primary key's columns, if there is one
	IdentityFull    ReplicaIdentity = "full"    // the whole old row
	IdentityIndex   ReplicaIdentity = "index"   // the columns of one unique index
	IdentityNothing ReplicaIdentity = "nothing" // nothing
)

// Inspection is what Inspect found. Its slices are sorted: tables by
// schema then name, columns by position.
type Inspection struct {
	// Database and Role are current_database() and current_user.
	Database, Role string
	// Superuser: Role is a superuser, so it may publish any table and
	// replicate.
	Superuser bool
	// Replication: Role has the REPLICATION attribute (or is a superuser),
	// which opening a replication slot needs.
	Replication bool
	// CreatePublication: Role may create a publication in Database
	// (CREATE privilege on the database, or superuser).
	CreatePublication bool
	// WALLevel is the server's wal_level; logical decoding needs
	// "logical".
	WALLevel string
	// ServerVersion is server_version_num (150004 for 15.4).
	ServerVersion int
	// Tables are the ordinary and partitioned tables, partitions left out
	// (each partitioned table stands for its partitions).
	Tables []InspectedTable
}

// ServerProblems lists, as sentences that say the fix, what the server or
// the role lacks for changecast to watch any table; nil when nothing.
func (in Inspection) ServerProblems() []string {
	var p []string
	if in.WALLevel != "logical" {
		p = append(p, fmt.Sprintf("wal_level is %s; set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", in.WALLevel))
	}
	if !in.Replication {
		p = append(p, fmt.Sprintf("role %s lacks the REPLICATION attribute, which a replication slot needs; run ALTER ROLE %s REPLICATION as a superuser", quoteIdent(in.Role), quoteIdent(in.Role)))
	}
	if !in.CreatePublication {
		p = append(p, fmt.Sprintf("role %s may not create a publication in database %s; run GRANT CREATE ON DATABASE %s TO %s as its owner", quoteIdent(in.Role), quoteIdent(in.Database), quoteIdent(in.Database), quoteIdent(in.Role)))
	}
	return p
}

// InspectedTable is one ordinary or partitioned table.
type InspectedTable struct {
	Schema, Name string
	// Owner is the role that owns the table.
	Owner string
	// CanPublish: the connected role may add the table to a publication,
	// because it owns the table (directly or through a role it inherits)
	// or is a superuser.
	CanPublish bool
	// Identity is the table's replica identity; IdentityIndex names the
	// index when Identity is IdentityIndex.
	Identity      ReplicaIdentity
	IdentityIndex string
	// PrimaryKey lists the primary key's columns in key order; nil when
	// the table has none. IdentityColumns are the columns of the replica
	// identity index (Identity is IdentityIndex).
	PrimaryKey      []string
	IdentityColumns []string
	// UniqueKeys lists the columns of each valid unique index on plain
	// columns without a predicate (the primary key's among them): a set
	// of NOT NULL columns holding one of them identifies a row.
	UniqueKeys [][]string
	// Columns are the table's columns in position order.
	Columns []InspectedColumn
	// Partitioned: a partitioned table, watched through this root
	// (publish_via_partition_root). Partitions are its leaf partitions,
	// schema-qualified; PartitionsWithoutIdentity are those among them
	// whose UPDATEs and DELETEs would fail once published, because the
	// identity that matters is each partition's own.
	Partitioned               bool
	Partitions                []string
	PartitionsWithoutIdentity []string
}

// InspectedColumn is one column of an inspected table.
type InspectedColumn struct {
	Name string
	// Type is the column's type as format_type spells it
	// ("numeric(12,2)", "timestamp with time zone", "text[]").
	Type    string
	NotNull bool
	// Toastable: a variable-length type whose values may be stored out of
	// line (TOAST); an UPDATE that leaves such a value unchanged does not
	// carry it unless the identity is FULL.
	Toastable bool
}

// Qualified returns schema.name, unquoted.
func (t InspectedTable) Qualified() string { return t.Schema + "." + t.Name }

// Key returns the columns that identify a row: the primary key, else the
// replica identity index's columns; nil when there are none.
func (t InspectedTable) Key() []string {
	if len(t.PrimaryKey) > 0 {
		return t.PrimaryKey
	}
	if t.Identity == IdentityIndex {
		return t.IdentityColumns
	}
	return nil
}

// IdentifiesRows reports whether cols, together, name at most one row:
// every one of them is a NOT NULL column and they include all the columns
// of a unique index (or the primary key). A key that does not would give
// two rows one entity id, and a NULL in it would hide the row from keyset
// pages, whose comparisons are never true for NULL.
func (t InspectedTable) IdentifiesRows(cols []string) bool {
	for _, c := range cols {
		i := slices.IndexFunc(t.Columns, func(ic InspectedColumn) bool { return ic.Name == c })
		if i < 0 || !t.Columns[i].NotNull {
			return false
		}
	}
	for _, u := range t.UniqueKeys {
		if len(u) > 0 && !slices.ContainsFunc(u, func(c string) bool { return !slices.Contains(cols, c) }) {
			return true
		}
	}
	return false
}

// Toastable reports whether any column may hold a TOASTed value.
func (t InspectedTable) Toastable() bool {
	for _, c := range t.Columns {
		if c.Toastable {
			return true
		}
	}
	return false
}

// Blockers lists, as sentences that say the fix, why changecast cannot
// watch the table; nil when it can.
func (t InspectedTable) Blockers() []string {
	q := quoteQualified(t.Schema, t.Name)
	var b []string
	switch {
	case t.Identity == IdentityNothing:
		b = append(b, fmt.Sprintf("replica identity is NOTHING: UPDATE and DELETE would fail once the table is published; run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or FULL", q))
	case t.Identity == IdentityDefault && len(t.PrimaryKey) == 0:
		b = append(b, fmt.Sprintf("no primary key and replica identity DEFAULT: UPDATE and DELETE would fail once the table is published, and no column identifies an entity; add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...))", q))
	case len(t.Key()) == 0:
		// FULL without a key: changes flow, but no column names the
		// entity a change belongs to.
		b = append(b, fmt.Sprintf("no primary key: no column identifies an entity; add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)), or a unique index on NOT NULL columns and REPLICA IDENTITY USING INDEX", q))
	}
	if len(t.PartitionsWithoutIdentity) > 0 {
		b = append(b, fmt.Sprintf("partitions without a primary key or usable replica identity (UPDATE and DELETE on them would fail once published): %s; add the primary key on the partitioned table, or set each partition's replica identity", strings.Join(t.PartitionsWithoutIdentity, ", ")))
	}
	return b
}

// Warnings lists, as sentences that say the fix, what the connected role
// lacks to watch the table that another role (the one changecast serve
// runs as) may have; nil when nothing.
func (t InspectedTable) Warnings(role string) []string {
	if t.CanPublish {
		return nil
	}
	return []string{fmt.Sprintf("role %s does not own the table (%s does), so it cannot add it to a publication; run changecast as its owner, or ALTER TABLE %s OWNER TO %s", quoteIdent(role), quoteIdent(t.Owner), quoteQualified(t.Schema, t.Name), quoteIdent(role))}
}

// skippedSchemas are never inspected: changecast's own and the system's.
var skippedSchemas = []string{Schema, "pg_catalog", "information_schema"}

// ErrNoSuchSchema is returned (wrapped, naming the schemas) by Inspect when
// a requested schema does not exist.
var ErrNoSuchSchema = errors.New("no such schema")

// Inspect returns the server's replication facts and the tables of
// schemas (every schema when empty, except changecast's own, pg_catalog,
// information_schema and pg_*). Partitions are left out: a partitioned
// table stands for them. It only reads the catalogs, in one read-only
// snapshot.
func (db *DB) Inspect(ctx context.Context, schemas []string) (Inspection, error) {
	var in Inspection
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return in, fmt.Errorf("inspect: %w", err)
	}
	defer tx.Rollback(ctx)

	err = tx.QueryRow(ctx, `SELECT current_database(), current_user, r.rolsuper,
			r.rolsuper OR r.rolreplication,
			has_database_privilege(current_database(), 'CREATE'),
			current_setting('wal_level'), current_setting('server_version_num')::int
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&in.Database, &in.Role, &in.Superuser, &in.Replication, &in.CreatePublication, &in.WALLevel, &in.ServerVersion)
	if err != nil {
		return in, fmt.Errorf("inspect: server settings: %w", err)
	}

	var filter []string // nil: every schema
	if len(schemas) > 0 {
		filter = dedupe(schemas)
		var missing []string
		if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(s ORDER BY s), '{}') FROM unnest($1::text[]) s
			WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s)`, filter).Scan(&missing); err != nil {
			return in, fmt.Errorf("inspect: schemas: %w", err)
		}
		if len(missing) > 0 {
			return in, fmt.Errorf("inspect: %w: %s", ErrNoSuchSchema, strings.Join(missing, ", "))
		}
	}

	// usable is true when a relation's UPDATEs and DELETEs may be
	// published: identity FULL, DEFAULT with a primary key, or USING
	// INDEX (PostgreSQL docs, 31.1 Publication).
	const usable = `(%[1]s.relreplident = 'f'
		OR %[1]s.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = %[1]s.oid AND x.indisprimary)
		OR %[1]s.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = %[1]s.oid AND x.indisreplident))`
	rows, err := tx.Query(ctx, `SELECT c.oid, n.nspname, c.relname, pg_get_userbyid(c.relowner),
			pg_has_role(c.relowner, 'USAGE'), c.relreplident::text, c.relkind = 'p',
			coalesce((SELECT array_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) ORDER BY pn.nspname, pc.relname)
				FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
				WHERE c.relkind = 'p' AND t.isleaf AND t.relid <> c.oid), '{}'),
			coalesce((SELECT array_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) ORDER BY pn.nspname, pc.relname)
				FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
				WHERE c.relkind = 'p' AND t.isleaf AND t.relid <> c.oid AND NOT `+fmt.Sprintf(usable, "pc")+`), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
			AND n.nspname <> ALL ($1::text[]) AND n.nspname NOT LIKE 'pg\_%'
			AND ($2::text[] IS NULL OR n.nspname = ANY ($2::text[]))
		ORDER BY n.nspname, c.relname`, skippedSchemas, filter)
	if err != nil {
		return in, fmt.Errorf("inspect: tables: %w", err)
	}
	byOID := map[uint32]int{}
	var oids []uint32
	for rows.Next() {
		var (
			oid   uint32
			t     InspectedTable
			ident string
		)
		if err := rows.Scan(&oid, &t.Schema, &t.Name, &t.Owner, &t.CanPublish, &ident, &t.Partitioned, &t.Partitions, &t.PartitionsWithoutIdentity); err != nil {
			rows.Close()
			return in, fmt.Errorf("inspect: tables: %w", err)
		}
		t.Identity = identityOf(ident)
		if len(t.Partitions) == 0 {
			t.Partitions = nil
		}
		if len(t.PartitionsWithoutIdentity) == 0 {
			t.PartitionsWithoutIdentity = nil
		}
		byOID[oid] = len(in.Tables)
		oids = append(oids, oid)
		in.Tables = append(in.Tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return in, fmt.Errorf("inspect: tables: %w", err)
	}
	if len(oids) == 0 {
		return in, nil
	}

	rows, err = tx.Query(ctx, `SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
			a.attnotnull, a.attlen = -1 AND a.attstorage <> 'p'
		FROM pg_attribute a
		WHERE a.attrelid = ANY ($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attrelid, a.attnum`, oids)
	if err != nil {
		return in, fmt.Errorf("inspect: columns: %w", err)
	}
	for rows.Next() {
		var (
			oid uint32
			c   InspectedColumn
		)
		if err := rows.Scan(&oid, &c.Name, &c.Type, &c.NotNull, &c.Toastable); err != nil {
			rows.Close()
			return in, fmt.Errorf("inspect: columns: %w", err)
		}
		t := &in.Tables[byOID[oid]]
		t.Columns = append(t.Columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return in, fmt.Errorf("inspect: columns: %w", err)
	}

	rows, err = tx.Query(ctx, `SELECT i.indrelid, i.indisprimary, i.indisreplident,
			i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL, ic.relname,
			array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				ORDER BY k.ord)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = ANY ($1::oid[]) AND (i.indisprimary OR i.indisreplident
			OR i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL)`, oids)
	if err != nil {
		return in, fmt.Errorf("inspect: keys: %w", err)
	}
	for rows.Next() {
		var (
			oid              uint32
			primary, replIdx bool
			unique           bool
			name             string
			cols             []string
		)
		if err := rows.Scan(&oid, &primary, &replIdx, &unique, &name, &cols); err != nil {
			rows.Close()
			return in, fmt.Errorf("inspect: keys: %w", err)
		}
		t := &in.Tables[byOID[oid]]
		if primary {
			t.PrimaryKey = cols
		}
		if unique {
			t.UniqueKeys = append(t.UniqueKeys, cols)
		}
		if replIdx && t.Identity == IdentityIndex {
			t.IdentityIndex = name
			t.IdentityColumns = cols
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return in, fmt.Errorf("inspect: keys: %w", err)
	}
	return in, tx.Commit(ctx)
}

func identityOf(relreplident string) ReplicaIdentity {
	switch relreplident {
	case "f":
		return IdentityFull
	case "i":
		return IdentityIndex
	case "n":
		return IdentityNothing
	default:
		return IdentityDefault
	}
}

func dedupe(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	n := 0
	for i, v := range out {
		if i == 0 || v != out[n-1] {
			out[n] = v
			n++
		}
	}
	return out[:n]
}

// quoteIdent quotes an identifier for SQL shown to a user.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func quoteQualified(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }
