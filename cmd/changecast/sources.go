package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/changecast/changecast/config"
	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

// domainGARM is the built-in domain: GARM's runner-fleet tables, which
// changecast creates when asked (the embedded default and demo use it).
const domainGARM = "garm"

// sources says where the entity types come from: a domain (--domain), a
// configuration file (--config) and quick-start tables (--table), and
// whether changecast may set REPLICA IDENTITY FULL on declared tables
// (--replica-identity full). docs/configuration.md describes them.
type sources struct {
	domain          string
	configPath      string
	tables          tableFlags
	replicaIdentity string
}

// tableFlags collects repeated --table NAME=SCHEMA.TABLE flags.
type tableFlags []config.Entity

func (t *tableFlags) String() string {
	var s []string
	for _, e := range *t {
		s = append(s, e.Name+"="+e.QualifiedTable())
	}
	return strings.Join(s, ",")
}

func (t *tableFlags) Set(v string) error {
	e, err := config.ParseTableFlag(v)
	if err != nil {
		return err
	}
	for _, o := range *t {
		if o.Name == e.Name {
			return fmt.Errorf("entity type %q is given twice", e.Name)
		}
	}
	*t = append(*t, e)
	return nil
}

func (s *sources) register(fs *flag.FlagSet) {
	fs.StringVar(&s.domain, "domain", "", "a built-in domain to watch, whose tables changecast creates: garm (GARM's runner-fleet tables; the default for the embedded PostgreSQL when no --config or --table is given)")
	fs.StringVar(&s.configPath, "config", "", "configuration file declaring the entity types to watch (docs/configuration.md; changecast inspect writes a starter one)")
	fs.Var(&s.tables, "table", "watch a table as an entity type, NAME=SCHEMA.TABLE (repeatable), e.g. --table order=public.orders")
	fs.StringVar(&s.replicaIdentity, "replica-identity", "", "full: set REPLICA IDENTITY FULL on every declared table (otherwise changecast never alters your tables; see docs/guarantees.md)")
}

// declared reads the declared entities: the configuration file's, then
// the --table flags'.
func (s sources) declared() ([]config.Entity, error) {
	var out []config.Entity
	if s.configPath != "" {
		f, err := config.Load(s.configPath)
		if err != nil {
			return nil, err
		}
		out = append(out, f.Entities...)
	}
	for _, e := range s.tables {
		if i := slices.IndexFunc(out, func(o config.Entity) bool { return o.Name == e.Name }); i >= 0 {
			return nil, fmt.Errorf("--table %s=%s: entity type %q is already declared in %s", e.Name, e.QualifiedTable(), e.Name, s.configPath)
		}
		out = append(out, e)
	}
	return out, nil
}

// errNoEntities is what serve says when it does not know what to watch.
var errNoEntities = errors.New(`changecast does not know which tables of this database to watch. Either:
  1. run "changecast inspect --database-url URL --output yaml > changecast.yaml", review it, then "changecast serve --config changecast.yaml";
  2. name tables for a quick start: --table order=public.orders (repeatable);
  3. or watch GARM's runner-fleet tables, which changecast then creates: --domain garm`)

// registry builds the entity registry: the domain's types, then the
// declared ones. embedded says the database is changecast's own embedded
// PostgreSQL, where the garm domain is the default. db, when not nil,
// resolves declared types' keys (their primary key) and checks that their
// tables exist; without it, a declared type without a key is registered
// with key "id", which is enough for commands that only need names.
func (s sources) registry(ctx context.Context, db *store.DB, embedded bool) (*entities.Registry, error) {
	decl, err := s.declared()
	if err != nil {
		return nil, err
	}
	switch s.replicaIdentity {
	case "", config.ReplicaIdentityFull:
	default:
		return nil, usageError{fmt.Errorf("--replica-identity %q: the only value is %q", s.replicaIdentity, config.ReplicaIdentityFull)}
	}
	domain := s.domain
	if domain == "" && len(decl) == 0 {
		if !embedded {
			return nil, errNoEntities
		}
		domain = domainGARM
	}
	var reg *entities.Registry
	switch domain {
	case "":
		reg = entities.NewRegistry()
	case domainGARM:
		reg = entities.DefaultRegistry()
	default:
		return nil, usageError{fmt.Errorf("--domain %q: the only built-in domain is %q", domain, domainGARM)}
	}
	var tables map[string]store.InspectedTable
	if db != nil && len(decl) > 0 {
		if tables, err = inspectTables(ctx, db); err != nil {
			return nil, err
		}
	}
	for _, e := range decl {
		et := e.EntityType()
		et.ReplicaIdentityFull = et.ReplicaIdentityFull || s.replicaIdentity == config.ReplicaIdentityFull
		if tables != nil {
			t, ok := tables[e.QualifiedTable()]
			if !ok {
				return nil, fmt.Errorf("%s: table %s does not exist in this database; create it, or fix the name (changecast inspect lists the tables)", where(s, e), e.QualifiedTable())
			}
			if !et.ReplicaIdentityFull && !identityPublishes(t) {
				return nil, fmt.Errorf("%s: table %s has no primary key or usable replica identity, so PostgreSQL could not publish its updates and deletes (and would refuse the application's own UPDATEs); add a primary key, run ALTER TABLE %s REPLICA IDENTITY FULL, or set replica_identity: full for it in the configuration", where(s, e), e.QualifiedTable(), e.QualifiedTable())
			}
			if len(e.Key) == 0 {
				key := t.Key()
				if len(key) == 0 {
					return nil, fmt.Errorf("%s: table %s has no primary key; give its key columns with key: [...] in the configuration, or add a primary key", where(s, e), e.QualifiedTable())
				}
				et.Key = key[0]
				if len(key) > 1 {
					et.KeyColumns = key
				}
				for _, k := range key {
					if len(et.Allowed) > 0 && !slices.Contains(et.Allowed, k) {
						et.Allowed = append(et.Allowed, k) // the id is sent with every change
					}
				}
			} else if k := missingColumn(t, e.Key); k != "" {
				return nil, fmt.Errorf("%s: key column %s is not a column of %s; fix the name (changecast inspect lists the columns)", where(s, e), k, e.QualifiedTable())
			} else if !t.IdentifiesRows(e.Key) {
				return nil, fmt.Errorf("%s: key %s does not identify one row of %s: a key's columns must all be NOT NULL and include every column of its primary key or of a unique index, since clients keep rows by this id and snapshots page by it; use the primary key (leave key out), or add a unique index: CREATE UNIQUE INDEX ON %s (%s)",
					where(s, e), strings.Join(e.Key, ", "), e.QualifiedTable(), e.QualifiedTable(), strings.Join(e.Key, ", "))
			}
		}
		if err := reg.Register(et); err != nil {
			return nil, fmt.Errorf("%s: %w", where(s, e), err)
		}
	}
	return reg, nil
}

// missingColumn returns the first of cols that t does not have, or "".
func missingColumn(t store.InspectedTable, cols []string) string {
	for _, c := range cols {
		if !slices.ContainsFunc(t.Columns, func(ic store.InspectedColumn) bool { return ic.Name == c }) {
			return c
		}
	}
	return ""
}

// where names a declared entity's origin for errors: file:line, or the
// --table flag.
func where(s sources, e config.Entity) string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d", s.configPath, e.Line)
	}
	return "--table " + e.Name + "=" + e.QualifiedTable()
}

// inspectTables reads the catalog entries of every table, by
// schema.table, to resolve the declared ones.
func inspectTables(ctx context.Context, db *store.DB) (map[string]store.InspectedTable, error) {
	in, err := db.Inspect(ctx, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]store.InspectedTable{}
	for _, t := range in.Tables {
		out[t.Schema+"."+t.Name] = t
	}
	return out, nil
}

// identityPublishes reports whether t's replica identity lets PostgreSQL
// publish its updates and deletes: the rule store.DB.Migrate enforces,
// checked here first so that the error names the line of the entity.
func identityPublishes(t store.InspectedTable) bool {
	switch t.Identity {
	case store.IdentityFull:
		return true
	case store.IdentityDefault:
		return len(t.PrimaryKey) > 0
	case store.IdentityIndex:
		return len(t.IdentityColumns) > 0
	}
	return false
}
