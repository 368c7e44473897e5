package entities

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// SecretTag is the struct tag key that classifies a field. Its options:
//
//   - `changecast:"secret"` marks the field secret: its value never leaves
//     changecast; sanitize strips it from every row before the row is
//     journaled or sent.
//   - `changecast:"public"` explicitly allows a field whose column name
//     looks secret (sanitize's deny-by-default name rule would strip it),
//     e.g. Instance.TokenFetched, a bool.
//
// Any other option, or both at once, makes Register fail: a typo such as
// `changecast:"secert"` must not silently leave a secret unmarked.
const SecretTag = "changecast"

// The options of the SecretTag struct tag.
const (
	TagSecret = "secret"
	TagPublic = "public"
)

// EntityType describes one watched table.
type EntityType struct {
	// Name is the snake_case type name used on the wire ("pool").
	Name string
	// Table is the table's name, the plural snake_case of Name ("pools").
	Table string
	// Schema is the table's schema ("public"). Empty: the table is found
	// by name in whatever schema publishes it (the built-in domain's,
	// which lives in the database URL's search path).
	Schema string
	// Key is the key column whose value becomes Change.EntityID.
	// Default: "id" (or the first of KeyColumns).
	Key string
	// KeyColumns, when it names more than one column, is a composite key:
	// Change.EntityID is then a JSON object of those columns' values, in
	// this order ({"order_id":7,"line":2}). Empty or one column: Key.
	KeyColumns []string
	// Allowed, when not empty, is an allow-list: only these columns ever
	// leave changecast; sanitize strips every other column, whatever its
	// name. Secrets still apply to them.
	Allowed []string
	// ReplicaIdentityFull gives consent to set REPLICA IDENTITY FULL on
	// the table (so updates and deletes carry the whole previous row).
	// Without it changecast never alters a table it did not create; types
	// with a GoType (tables changecast creates) always get it.
	ReplicaIdentityFull bool
	// GoType is the struct a payload decodes into; nil for types
	// registered without one.
	GoType reflect.Type
	// Secrets lists the columns whose values are stripped. Given to
	// Register, it declares secret columns (for a table without a Go
	// type, or columns the Go type lacks); after Register it holds the
	// fields tagged `changecast:"secret"` followed by the declared ones.
	Secrets []string
	// Marked lists the columns tagged `changecast:"secret"` in GoType,
	// in field order. Register sets it (whatever the caller passed is
	// replaced); a column in Secrets but not in Marked was declared.
	Marked []string
	// Public lists columns explicitly allowed although their names look
	// secret (sanitize strips such columns by default). Given to
	// Register it declares them; after Register it holds the fields
	// tagged `changecast:"public"` followed by the declared ones. It
	// applies to top-level columns only: keys inside a json value are
	// never allowed. A column may not be both secret and public.
	Public []string
	// Columns lists the table's columns in declaration order (derived
	// from GoType's json tags; may be empty for types without one).
	Columns []string
}

// IsSecret reports whether column is one of the type's secret columns.
func (t EntityType) IsSecret(column string) bool {
	for _, s := range t.Secrets {
		if s == column {
			return true
		}
	}
	return false
}

// IsKeyColumn reports whether column is the key or one of the composite
// key's columns.
func (t EntityType) IsKeyColumn(column string) bool {
	return column == t.Key || contains(t.KeyColumns, column)
}

// IsPublic reports whether column is explicitly allowed (see Public).
func (t EntityType) IsPublic(column string) bool {
	return contains(t.Public, column)
}

// IsMarked reports whether column is secret by a struct tag (see Marked).
func (t EntityType) IsMarked(column string) bool {
	return contains(t.Marked, column)
}

// ErrUnknownType is returned (wrapped) for an entity type the registry does
// not hold.
var ErrUnknownType = errors.New("unknown entity type")

var snakeName = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Registry is the single source of truth for entity types: name, table, key,
// Go type and secret fields. It is safe for concurrent use.
type Registry struct {
	mu struct {
		sync.RWMutex
		byName  map[string]EntityType
		byTable map[string]string // table -> name
	}
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	r.mu.byName = map[string]EntityType{}
	r.mu.byTable = map[string]string{}
	return r
}

// DefaultRegistry returns a new registry holding the built-in entity types.
func DefaultRegistry() *Registry {
	r := NewRegistry()
	for _, t := range Builtins() {
		if err := r.Register(t); err != nil {
			panic(fmt.Sprintf("entities: built-in type %s: %v", t.Name, err))
		}
	}
	return r
}

// Register adds an entity type. It fills Key (default "id"), Columns,
// Marked, Secrets and Public from GoType, and rejects names that are not
// snake_case, names or tables already registered, unknown `changecast`
// tag options, and a column that is both secret and public.
func (r *Registry) Register(t EntityType) error {
	if !snakeName.MatchString(t.Name) {
		return fmt.Errorf("register entity type %q: name must be snake_case", t.Name)
	}
	if t.Name == "event" {
		return fmt.Errorf("register entity type %q: name is reserved for system events", t.Name)
	}
	if !snakeName.MatchString(t.Table) {
		return fmt.Errorf("register entity type %q: table %q must be snake_case", t.Name, t.Table)
	}
	if t.Schema != "" && !identName.MatchString(t.Schema) {
		return fmt.Errorf("register entity type %q: schema %q must be a lower-case identifier", t.Name, t.Schema)
	}
	if len(t.KeyColumns) == 1 && t.Key == "" {
		t.Key = t.KeyColumns[0]
	}
	if len(t.KeyColumns) > 1 {
		if t.Key == "" {
			t.Key = t.KeyColumns[0]
		}
		for _, k := range t.KeyColumns {
			if k == "" {
				return fmt.Errorf("register entity type %q: empty key column", t.Name)
			}
		}
	} else {
		t.KeyColumns = nil
	}
	if t.Key == "" {
		t.Key = "id"
	}
	if len(t.Allowed) > 0 {
		for _, k := range append([]string{t.Key}, t.KeyColumns...) {
			if !contains(t.Allowed, k) {
				return fmt.Errorf("register entity type %q: key column %q must be in the allow-list (columns): the entity id is sent with every change", t.Name, k)
			}
		}
	}
	t.Marked = nil
	if t.GoType != nil {
		sc, err := structColumns(t.GoType)
		if err != nil {
			return fmt.Errorf("register entity type %q: %w", t.Name, err)
		}
		t.Columns = sc.cols
		t.Marked = sc.secrets
		t.Secrets = mergeUnique(sc.secrets, t.Secrets)
		t.Public = mergeUnique(sc.public, t.Public)
	} else {
		t.Secrets = mergeUnique(nil, t.Secrets)
		t.Public = mergeUnique(nil, t.Public)
	}
	for _, c := range append(append([]string(nil), t.Secrets...), t.Public...) {
		if c == "" {
			return fmt.Errorf("register entity type %q: empty column name in Secrets or Public", t.Name)
		}
	}
	for _, c := range t.Public {
		if t.IsSecret(c) {
			return fmt.Errorf("register entity type %q: column %q is both secret and public; a secret column cannot be allowed", t.Name, c)
		}
	}
	if len(t.Columns) > 0 && !contains(t.Columns, t.Key) {
		return fmt.Errorf("register entity type %q: key column %q is not a column of %s", t.Name, t.Key, t.GoType)
	}
	for _, k := range append([]string{t.Key}, t.KeyColumns...) {
		if t.IsSecret(k) {
			return fmt.Errorf("register entity type %q: key column %q cannot be secret", t.Name, k)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.byName[t.Name]; ok {
		return fmt.Errorf("register entity type %q: already registered", t.Name)
	}
	if other, ok := r.mu.byTable[t.QualifiedTable()]; ok {
		return fmt.Errorf("register entity type %q: table %q already belongs to %q", t.Name, t.QualifiedTable(), other)
	}
	r.mu.byName[t.Name] = t
	r.mu.byTable[t.QualifiedTable()] = t.Name
	return nil
}

// Replace makes r hold exactly the types next holds, in one step: a
// reader of r sees either all of its former types or all of next's, never
// a mix. next is not changed and stays usable; the two registries share
// no mutable state afterwards (registered types are never modified).
// A reloaded configuration reaches the readers of a long-lived registry
// this way.
func (r *Registry) Replace(next *Registry) {
	if r == next {
		return
	}
	next.mu.RLock()
	byName := maps.Clone(next.mu.byName)
	byTable := maps.Clone(next.mu.byTable)
	next.mu.RUnlock()
	r.mu.Lock()
	r.mu.byName, r.mu.byTable = byName, byTable
	r.mu.Unlock()
}

// QualifiedTable is "schema.table", or the table alone when Schema is
// empty.
func (t EntityType) QualifiedTable() string {
	if t.Schema == "" {
		return t.Table
	}
	return t.Schema + "." + t.Table
}

// IsAllowed reports whether column may leave changecast as far as the
// allow-list goes: true when there is none.
func (t EntityType) IsAllowed(column string) bool {
	return len(t.Allowed) == 0 || contains(t.Allowed, column)
}

// identName is a lower-case SQL identifier (schemas may be "app2", "public").
var identName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Lookup returns the entity type called name, or an error wrapping
// ErrUnknownType that lists the known names.
func (r *Registry) Lookup(name string) (EntityType, error) {
	r.mu.RLock()
	t, ok := r.mu.byName[name]
	r.mu.RUnlock()
	if !ok {
		return EntityType{}, fmt.Errorf("%w %q; known: %s", ErrUnknownType, name, strings.Join(r.Names(), ", "))
	}
	return t, nil
}

// ByTable returns the entity type stored in table (a name, or
// "schema.table" for a type registered with a Schema).
func (r *Registry) ByTable(table string) (EntityType, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	name, ok := r.mu.byTable[table]
	if !ok {
		return EntityType{}, false
	}
	return r.mu.byName[name], true
}

// ByRelation returns the entity type of the table schema.table as
// PostgreSQL names it in a replication Relation message: a type
// registered for that schema, else one registered by table name alone.
func (r *Registry) ByRelation(schema, table string) (EntityType, bool) {
	if et, ok := r.ByTable(schema + "." + table); ok {
		return et, true
	}
	return r.ByTable(table)
}

// Names returns the registered type names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.mu.byName))
	for n := range r.mu.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Types returns the registered types, sorted by name.
func (r *Registry) Types() []EntityType {
	names := r.Names()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]EntityType, 0, len(names))
	for _, n := range names {
		out = append(out, r.mu.byName[n])
	}
	return out
}

// structInfo is what structColumns reads from a struct.
type structInfo struct {
	cols    []string // json column names, in field order
	secrets []string // tagged `changecast:"secret"`
	public  []string // tagged `changecast:"public"`
}

// structColumns reads the json column names and secret/public marks of a
// struct.
func structColumns(rt reflect.Type) (structInfo, error) {
	var si structInfo
	if rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	if rt.Kind() != reflect.Struct {
		return si, fmt.Errorf("go type %s is not a struct", rt)
	}
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return si, fmt.Errorf("field %s: use `changecast:\"secret\"` rather than json:\"-\" so the column stays known", f.Name)
		}
		if name == "" {
			return si, fmt.Errorf("field %s has no json tag", f.Name)
		}
		if !snakeName.MatchString(name) {
			return si, fmt.Errorf("field %s: json name %q is not snake_case", f.Name, name)
		}
		si.cols = append(si.cols, name)
		tag, ok := f.Tag.Lookup(SecretTag)
		if !ok {
			continue
		}
		var secret, public bool
		for _, opt := range strings.Split(tag, ",") {
			switch strings.TrimSpace(opt) {
			case TagSecret:
				secret = true
			case TagPublic:
				public = true
			default:
				return si, fmt.Errorf("field %s: unknown %s tag option %q; use %q or %q", f.Name, SecretTag, opt, TagSecret, TagPublic)
			}
		}
		if secret && public {
			return si, fmt.Errorf("field %s: column %q is tagged both %s and %s", f.Name, name, TagSecret, TagPublic)
		}
		if secret {
			si.secrets = append(si.secrets, name)
		}
		if public {
			si.public = append(si.public, name)
		}
	}
	return si, nil
}

func mergeUnique(a, b []string) []string {
	var out []string
	for _, s := range append(append([]string(nil), a...), b...) {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
