// Package config parses changecast's configuration file: the entity types
// a user declares for their own tables (issue 13, item 1).
//
// Parsing is strict and offline. An unknown key, a value of the wrong
// type, a duplicate entity name or table, a name that is not snake_case,
// a secret that is also allowed, and every other rule of Parse is an
// *Error naming the file, the line (and column) and the fix. Whether the
// tables exist, and their primary keys, are checked later against the
// database; this package never connects to one.
//
// The YAML parser is github.com/goccy/go-yaml (v1.19.2), used with strict
// decoding (yaml.Strict) and its token positions. Anchors, aliases, merge
// keys and tags are refused: a config file is short, and every value it
// holds should be read plainly where it is written.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"unicode"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/changecast/changecast/entities"
)

// DefaultSchema is the schema of a table named without one.
const DefaultSchema = "public"

// The values of Entity.ReplicaIdentity.
const (
	// ReplicaIdentityFull asks changecast to run ALTER TABLE … REPLICA
	// IDENTITY FULL, so updates and deletes carry the whole old row.
	ReplicaIdentityFull = "full"
	// ReplicaIdentityDefault asks for REPLICA IDENTITY DEFAULT (the
	// primary key only).
	ReplicaIdentityDefault = "default"
)

// maxIdentifier is PostgreSQL's identifier length (NAMEDATALEN-1 bytes);
// a longer name is silently truncated by the server, so it could never
// match the table the user meant.
const maxIdentifier = 63

// snakeName is the rule entities.Registry.Register applies to type names
// and tables; the config applies it to entity names, schemas and tables
// so that an accepted file always registers.
var snakeName = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// reservedName is the entity-type name of system events on the wire.
const reservedName = "event"

// File is a parsed configuration file.
type File struct {
	// Path is the file's name as given to Load or Parse; errors start
	// with it.
	Path string
	// Entities are the declared entity types, in file order. Parse
	// returns at least one.
	Entities []Entity
}

// Entity is one declared entity type: a table watched under a wire name.
type Entity struct {
	// Name is the wire's entity-type ("order"): snake_case, unique in
	// the file, not "event".
	Name string
	// Schema and Table name the watched table; Schema is DefaultSchema
	// when the file names the table unqualified.
	Schema, Table string
	// Key lists the key columns whose values become the entity's id.
	// Empty means the table's primary key, resolved later from the
	// database; more than one column is a composite key.
	Key []string
	// Secrets lists columns stripped in addition to the deny-by-default
	// name rules. Never in Key or Columns.
	Secrets []string
	// Columns is the allow-list: when not empty, no other column leaves
	// changecast. It holds every Key column.
	Columns []string
	// ReplicaIdentity is ReplicaIdentityFull, ReplicaIdentityDefault, or
	// empty: leave the table's replica identity as it is. changecast
	// alters a table only when asked.
	ReplicaIdentity string
	// Line is the line where the entity is declared (1-based; 0 for an
	// entity from ParseTableFlag), for later errors about it, such as a
	// table that does not exist.
	Line int
}

// QualifiedTable returns "schema.table".
func (e Entity) QualifiedTable() string { return e.Schema + "." + e.Table }

// EntityType converts e to the registry's type: Name, Schema, Table,
// Secrets, the Columns allow-list (Allowed), ReplicaIdentityFull, and the
// key (Key, plus KeyColumns for a composite key). An entity without a key
// gets none: its table's primary key is resolved from the database by the
// caller, who must also add those columns to a non-empty allow-list.
// Slices are copies.
func (e Entity) EntityType() entities.EntityType {
	t := entities.EntityType{
		Name:                e.Name,
		Schema:              e.Schema,
		Table:               e.Table,
		Secrets:             append([]string(nil), e.Secrets...),
		Allowed:             append([]string(nil), e.Columns...),
		ReplicaIdentityFull: e.ReplicaIdentity == ReplicaIdentityFull,
	}
	switch len(e.Key) {
	case 0:
	case 1:
		t.Key = e.Key[0]
	default:
		t.Key, t.KeyColumns = e.Key[0], append([]string(nil), e.Key...)
	}
	return t
}

// Error is a configuration mistake: where it is and how to fix it.
type Error struct {
	// Path is the file's name, or "--table" for a flag.
	Path string
	// Line and Column are 1-based; 0 when unknown (Column) or when the
	// mistake is the whole file (Line).
	Line, Column int
	// Message says what is wrong and what to write instead.
	Message string
}

// Error returns "path:line:column: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	return b.String()
}

// Load reads and parses the configuration file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// rawFile and rawEntity are the file's shape, decoded strictly.
type rawFile struct {
	Entities []rawEntity `yaml:"entities"`
}

type rawEntity struct {
	Name            string     `yaml:"name"`
	Table           string     `yaml:"table"`
	Key             columnList `yaml:"key"`
	Secrets         []string   `yaml:"secrets"`
	Columns         []string   `yaml:"columns"`
	ReplicaIdentity string     `yaml:"replica_identity"`
}

var (
	fileKeys   = "entities"
	entityKeys = "name, table, key, secrets, columns, replica_identity"
)

// columnList is key's value: one column name or a list of them.
type columnList []string

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (c *columnList) UnmarshalYAML(n ast.Node) error {
	bad := func(n ast.Node) error {
		return &Error{Line: line(n), Column: column(n), Message: "key must be a column name or a list of them, e.g. key: id or key: [order_id, line_no]"}
	}
	n = untag(n)
	switch v := n.(type) {
	case *ast.NullNode:
		*c = nil
	case *ast.StringNode:
		*c = columnList{v.Value}
	case *ast.SequenceNode:
		out := make(columnList, 0, len(v.Values))
		for _, item := range v.Values {
			switch s := untag(item).(type) {
			case *ast.StringNode:
				out = append(out, s.Value)
			case *ast.NullNode:
				out = append(out, "")
			default:
				return bad(item)
			}
		}
		*c = out
	default:
		return bad(n)
	}
	return nil
}

// Parse parses a configuration file's contents; name is the file's name
// for errors. It returns the first mistake it finds as an *Error.
func Parse(name string, data []byte) (*File, error) {
	p := &parse{name: name}
	f, err := p.run(data)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.Path = name
			return nil, ce
		}
		return nil, &Error{Path: name, Message: err.Error()}
	}
	return f, nil
}

type parse struct {
	name string
	root ast.Node
}

func (p *parse) errorf(n ast.Node, format string, args ...any) *Error {
	return &Error{Path: p.name, Line: line(n), Column: column(n), Message: fmt.Sprintf(format, args...)}
}

const example = "write, e.g.\n  entities:\n    - name: order\n      table: public.orders"

func (p *parse) run(data []byte) (*File, error) {
	var af *ast.File
	err := safely(func() (err error) {
		af, err = parser.ParseBytes(data, 0)
		return err
	})
	if err != nil {
		return nil, p.yamlError(err)
	}
	var docs []*ast.DocumentNode
	for _, d := range af.Docs {
		if d != nil && d.Body != nil {
			docs = append(docs, d)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, &Error{Message: "the file declares nothing; " + example}
	case len(docs) > 1:
		return nil, p.errorf(docs[1].Body, "the file holds %d YAML documents; keep one", len(docs))
	}
	p.root = docs[0].Body
	if err := p.refuseExtras(); err != nil {
		return nil, err
	}
	if _, ok := untag(p.root).(*ast.NullNode); ok {
		return nil, &Error{Line: line(p.root), Message: "the file declares nothing; " + example}
	}

	var raw rawFile
	dec := yaml.NewDecoder(bytes.NewReader(nil), yaml.Strict())
	if err := safely(func() error { return dec.DecodeFromNode(p.root, &raw) }); err != nil {
		return nil, p.yamlError(err)
	}
	if len(raw.Entities) == 0 {
		return nil, p.errorf(p.fieldOr(p.root, "entities"), "no entities declared; %s", example)
	}

	f := &File{Path: p.name, Entities: make([]Entity, 0, len(raw.Entities))}
	names := map[string]int{}  // name -> line
	tables := map[string]int{} // schema.table -> line
	for i, r := range raw.Entities {
		en := p.entity(i)
		e, err := p.entityOf(i, en, r)
		if err != nil {
			return nil, err
		}
		if first, ok := names[e.Name]; ok {
			return nil, p.errorf(p.field(en, "name"), "duplicate entity name %q, declared on lines %d and %d; entity names must be unique: rename one", e.Name, first, e.Line)
		}
		names[e.Name] = e.Line
		qt := e.QualifiedTable()
		if first, ok := tables[qt]; ok {
			return nil, p.errorf(p.field(en, "table"), "table %s is declared twice, on lines %d and %d; declare each table once", qt, first, e.Line)
		}
		tables[qt] = e.Line
		f.Entities = append(f.Entities, e)
	}
	return f, nil
}

// entityOf validates one decoded entity; en is its node, for positions.
func (p *parse) entityOf(i int, en ast.Node, r rawEntity) (Entity, error) {
	e := Entity{
		Name:            r.Name,
		Key:             nonEmpty(r.Key),
		Secrets:         nonEmpty(r.Secrets),
		Columns:         nonEmpty(r.Columns),
		ReplicaIdentity: r.ReplicaIdentity,
		Line:            line(en),
	}
	if e.Name == "" {
		return e, p.errorf(p.fieldOr(en, "name"), "entity %d has no name; add name: <snake_case type name>, e.g. name: order", i+1)
	}
	if err := checkName(e.Name); err != nil {
		return e, p.errorf(p.field(en, "name"), "%s", err)
	}
	if r.Table == "" {
		return e, p.errorf(p.fieldOr(en, "table"), "entity %q has no table; add table: <schema>.<table>, e.g. table: public.orders", e.Name)
	}
	var err error
	if e.Schema, e.Table, err = splitTable(r.Table); err != nil {
		return e, p.errorf(p.field(en, "table"), "%s", err)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"key", e.Key}, {"secrets", e.Secrets}, {"columns", e.Columns}} {
		if err := p.checkList(en, l.key, l.list); err != nil {
			return e, err
		}
	}
	for j, k := range e.Key {
		if contains(e.Secrets, k) {
			return e, p.errorf(p.item(en, "secrets", indexOf(e.Secrets, k)), "key column %q is listed in secrets; an entity's id leaves with every change, so a key cannot be secret: remove it from secrets or choose another key", k)
		}
		if len(e.Columns) > 0 && !contains(e.Columns, k) {
			return e, p.errorf(p.item(en, "key", j), "key column %q is not in columns; the allow-list must hold the key: add %s to columns", k, k)
		}
	}
	for _, s := range e.Secrets {
		if contains(e.Columns, s) {
			return e, p.errorf(p.item(en, "columns", indexOf(e.Columns, s)), "column %q is both allowed (columns) and secret (secrets); a secret must never be allowed: remove it from columns", s)
		}
	}
	switch e.ReplicaIdentity {
	case "", ReplicaIdentityFull, ReplicaIdentityDefault:
	default:
		return e, p.errorf(p.field(en, "replica_identity"), "replica_identity %q is not known; write full or default, or leave it out to keep the table as it is", e.ReplicaIdentity)
	}
	return e, nil
}

// checkList rejects empty and duplicated entries of key, secrets or
// columns.
func (p *parse) checkList(en ast.Node, key string, list []string) error {
	for j, c := range list {
		if strings.TrimSpace(c) == "" {
			return p.errorf(p.item(en, key, j), "%s entry %d is empty; write a column name or remove the entry", key, j+1)
		}
		if strings.ContainsFunc(c, unicode.IsControl) || len(c) > maxIdentifier {
			return p.errorf(p.item(en, key, j), "%s entry %d is not a column name (a control character, such as a line break, or longer than %d bytes); write the column's name on one line", key, j+1, maxIdentifier)
		}
		if k := indexOf(list[:j], c); k >= 0 {
			return p.errorf(p.item(en, key, j), "%s lists %q twice (entries %d and %d); remove one", key, c, k+1, j+1)
		}
	}
	return nil
}

// checkName applies the entity-type name rules of entities.Registry.
func checkName(name string) error {
	if !snakeName.MatchString(name) {
		return fmt.Errorf("entity name %q is not snake_case; use lower-case words joined by single underscores, e.g. order_item", name)
	}
	if name == reservedName {
		return fmt.Errorf("entity name %q is reserved for system events; choose another name", name)
	}
	return nil
}

// splitTable splits "schema.table" (or "table", schema DefaultSchema).
func splitTable(s string) (schema, table string, err error) {
	schema, table, qualified := strings.Cut(s, ".")
	if !qualified {
		schema, table = DefaultSchema, s
	}
	for _, id := range []string{schema, table} {
		if !snakeName.MatchString(id) || len(id) > maxIdentifier {
			return "", "", fmt.Errorf("table %q is not a valid table name; write schema.table or table with lower-case snake_case identifiers of at most %d bytes (no quotes), e.g. public.orders", s, maxIdentifier)
		}
	}
	return schema, table, nil
}

// ParseTableFlag parses the quick-start flag's value, "name=table" as in
// --table order=public.orders; an unqualified table is in DefaultSchema.
// The entity has no key (the primary key), secrets or allow-list, and
// Line 0. Errors are *Error with Path "--table".
func ParseTableFlag(s string) (Entity, error) {
	fail := func(format string, args ...any) (Entity, error) {
		return Entity{}, &Error{Path: "--table", Message: fmt.Sprintf("%q: ", s) + fmt.Sprintf(format, args...)}
	}
	name, table, ok := strings.Cut(s, "=")
	if !ok || name == "" || table == "" {
		return fail("write name=table, e.g. --table order=public.orders")
	}
	if err := checkName(name); err != nil {
		return fail("%s", err)
	}
	schema, table, err := splitTable(table)
	if err != nil {
		return fail("%s", err)
	}
	return Entity{Name: name, Schema: schema, Table: table}, nil
}

// yamlError turns the YAML library's error into an *Error whose message
// speaks of the file's keys rather than Go types.
func (p *parse) yamlError(err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) {
		var ce *Error
		if errors.As(err, &ce) {
			return ce
		}
		return &Error{Message: fmt.Sprintf("%v; check the YAML syntax", err)}
	}
	tk := ye.GetToken()
	e := &Error{}
	if tk != nil && tk.Position != nil {
		e.Line, e.Column = tk.Position.Line, tk.Position.Column
	}
	var (
		unknown *yaml.UnknownFieldError
		typ     *yaml.TypeError
		node    *yaml.UnexpectedNodeTypeError
	)
	switch {
	case errors.As(err, &unknown):
		path := p.pathTo(tk)
		keys := fileKeys
		if len(path) >= 2 {
			keys = entityKeys
		}
		e.Message = fmt.Sprintf("unknown key %q; the known keys are %s (check the spelling)", tk.Value, keys)
	case errors.As(err, &typ), errors.As(err, &node):
		e.Message = wrongType(p.pathTo(tk))
	default:
		e.Message = fmt.Sprintf("%s; check the YAML syntax", ye.GetMessage())
	}
	return e
}

// wrongType says what a value at path should be.
func wrongType(path []any) string {
	switch len(path) {
	case 0:
		return "the file must be a mapping with an entities list; " + example
	case 1:
		return "entities must be a list of entities, each a mapping with name and table"
	case 2:
		return fmt.Sprintf("entity %d must be a mapping with name and table, e.g. {name: order, table: public.orders}", path[1].(int)+1)
	}
	key, _ := path[2].(string)
	switch key {
	case "secrets":
		return "secrets must be a list of column names, e.g. secrets: [api_key]"
	case "columns":
		return "columns must be a list of column names, e.g. columns: [id, status]"

	case "key":
		return "key must be a column name or a list of them, e.g. key: id or key: [order_id, line_no]"
	case "replica_identity":
		return "replica_identity must be full or default"
	default:
		return fmt.Sprintf("%s must be a string, e.g. %s: orders", key, key)
	}
}

// safely runs a call into the YAML library and turns a panic into an
// error: a mistake in a config file, read again on reload, must not stop
// the server. go-yaml v1.19.2 panics, for one, on a tag without a value
// decoded into a list (goccy/go-yaml#735); refuseExtras avoids that case.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML parser failed on this file (%v)", r)
		}
	}()
	return f()
}

// refuseExtras rejects the YAML features a config file has no use for:
// anchors, aliases and merge keys would make a value apply far from where
// it is written, and positions ambiguous; a tag (!!str, !x) changes how a
// value is read, where quoting says the same plainly.
func (p *parse) refuseExtras() error {
	var found ast.Node
	var msg string
	ast.Walk(visitFunc(func(n ast.Node) bool {
		if found != nil {
			return false
		}
		switch v := n.(type) {
		case *ast.AnchorNode, *ast.AliasNode:
			found, msg = n, "anchors, aliases and merge keys (&, *, <<) are not supported; write each value where it applies"
		case *ast.MappingValueNode:
			if v.Key != nil && v.Key.IsMergeKey() {
				found, msg = n, "anchors, aliases and merge keys (&, *, <<) are not supported; write each value where it applies"
			}
		case *ast.TagNode:
			found, msg = n, "YAML tags (!...) are not supported; remove the tag, and quote the value if it must be read as text"
		}
		return found == nil
	}), p.root)
	if found != nil {
		return p.errorf(found, "%s", msg)
	}
	return nil
}

type visitFunc func(ast.Node) bool

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if f(n) {
		return f
	}
	return nil
}

// Positions. The helpers below find nodes in the parsed file so that
// errors point at the value at fault; each falls back to the enclosing
// node when the one it looks for is absent.

// pairs returns the key/value pairs of a mapping node (a single pair is a
// *ast.MappingValueNode in go-yaml's AST).
func pairs(n ast.Node) []*ast.MappingValueNode {
	switch v := untag(n).(type) {
	case *ast.MappingNode:
		return v.Values
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}
	}
	return nil
}

func untag(n ast.Node) ast.Node {
	for {
		t, ok := n.(*ast.TagNode)
		if !ok || t.Value == nil {
			return n
		}
		n = t.Value
	}
}

func keyName(kv *ast.MappingValueNode) string {
	if kv.Key == nil {
		return ""
	}
	if s, ok := untag(kv.Key).(*ast.StringNode); ok {
		return s.Value
	}
	return kv.Key.GetToken().Value
}

// lookup returns the value of key in mapping n, or nil.
func (p *parse) lookup(n ast.Node, key string) ast.Node {
	for _, kv := range pairs(n) {
		if keyName(kv) == key {
			return kv.Value
		}
	}
	return nil
}

// entity returns the node of entity i (or the entities list, or the root).
func (p *parse) entity(i int) ast.Node {
	list := p.lookup(p.root, "entities")
	if list == nil {
		return p.root
	}
	if seq, ok := untag(list).(*ast.SequenceNode); ok && i < len(seq.Values) {
		return seq.Values[i]
	}
	return list
}

// field returns the value node of key in entity node en, or en.
func (p *parse) field(en ast.Node, key string) ast.Node {
	if v := p.lookup(en, key); v != nil {
		return v
	}
	return en
}

// fieldOr is field for a key whose value may be missing or null: it
// points at the key when present (a null value has no useful position).
func (p *parse) fieldOr(en ast.Node, key string) ast.Node {
	for _, kv := range pairs(en) {
		if keyName(kv) == key {
			return kv.Key
		}
	}
	return en
}

// item returns entry j of the list under key in en, or the list, or en.
func (p *parse) item(en ast.Node, key string, j int) ast.Node {
	v := p.field(en, key)
	if seq, ok := untag(v).(*ast.SequenceNode); ok && j >= 0 && j < len(seq.Values) {
		return seq.Values[j]
	}
	return v
}

// pathTo returns the path (keys and indexes) from the root to the node
// holding tk, e.g. ["entities", 0, "name"]; nil when tk is the root's.
func (p *parse) pathTo(tk *token.Token) []any {
	var walk func(n ast.Node, path []any) []any
	walk = func(n ast.Node, path []any) []any {
		if n == nil {
			return nil
		}
		n = untag(n)
		if n.GetToken() == tk {
			return path
		}
		switch v := n.(type) {
		case *ast.MappingNode, *ast.MappingValueNode:
			for _, kv := range pairs(v) {
				sub := append(append([]any(nil), path...), keyName(kv))
				if kv.Key != nil && kv.Key.GetToken() == tk {
					return sub
				}
				if r := walk(kv.Value, sub); r != nil {
					return r
				}
			}
		case *ast.SequenceNode:
			for i, item := range v.Values {
				if r := walk(item, append(append([]any(nil), path...), i)); r != nil {
					return r
				}
			}
		}
		return nil
	}
	if r := walk(p.root, []any{}); len(r) > 0 {
		return r
	}
	return nil
}

func line(n ast.Node) int {
	if n == nil {
		return 0
	}
	if kv, ok := n.(*ast.MappingNode); ok && len(kv.Values) > 0 {
		n = kv.Values[0]
	}
	if kv, ok := n.(*ast.MappingValueNode); ok && kv.Key != nil {
		n = kv.Key
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 0
}

func column(n ast.Node) int {
	if n == nil {
		return 0
	}
	if kv, ok := n.(*ast.MappingNode); ok && len(kv.Values) > 0 {
		n = kv.Values[0]
	}
	if kv, ok := n.(*ast.MappingValueNode); ok && kv.Key != nil {
		n = kv.Key
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Column
	}
	return 0
}

// nonEmpty returns list, or nil when it is empty: "secrets: []" and no
// secrets read the same.
func nonEmpty(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	return list
}

func contains(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
