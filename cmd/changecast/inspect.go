package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/store"
)

const inspectUsage = `Usage: changecast inspect [--database-url URL] [--schema NAME ...] [--output text|yaml]

Inspect connects to a database, only reads its catalogs (it creates and
alters nothing), and prints what changecast needs to know to watch the
database's own tables, then a starter config to review.

For the server and the connected role it reports wal_level (logical
decoding needs "logical"), the REPLICATION attribute (a replication slot
needs it) and the right to create a publication (CREATE on the database).

For every ordinary and partitioned table (schemas changecast, pg_catalog,
information_schema and pg_* are skipped; a partition is shown through its
partitioned root, which changecast watches with publish_via_partition_root)
it reports:
  - the key: the primary key, else the replica identity index's columns;
  - the replica identity (default, full, index or nothing);
  - each column's name and type, with STRIPPED marking the columns that the
    deny-by-default name rules strip (see "changecast secrets");
  - what is missing to watch it: no primary key and no usable replica
    identity (UPDATE and DELETE would fail once the table is published, or
    no column identifies an entity), replica identity NOTHING, partitions
    without a usable identity, and whether the connected role may add it to
    a publication (it must own the table, or be a superuser).

The starter config has one entry per table that can be watched:

  entities:
    - name: order              # the wire's entity type: the table's singular
      table: public.orders     # schema-qualified
      key: id                  # a list [a, b] for a composite key
      secrets: [api_key]       # columns the name rules strip, for review
      # columns: [...]         # every column; uncomment to allow only these
      # replica_identity: full # suggested when the identity is DEFAULT and
                               # a column may be TOASTed

Tables that cannot be watched are left out with a "# skipped: <reason>"
comment; what the server or role lacks comes first as "# warning:" lines.
Entity names are the table name in snake_case, singular for simple English
plurals (orders: order, categories: category, addresses: address); a name
taken twice (the same table in two schemas) is prefixed with its schema.

With --output yaml only the config is printed, so
  changecast inspect --output yaml > changecast.yaml
writes a file to review and give to "changecast serve --config".

Without --database-url (env ` + envDatabaseURL + `) it inspects the
embedded PostgreSQL in <data-dir>/postgres, attached while "changecast
serve" runs or started for the command.

Flags:
`

// schemaList is a repeatable --schema flag; each value may also be a
// comma-separated list.
type schemaList []string

func (s *schemaList) String() string { return strings.Join(*s, ",") }

func (s *schemaList) Set(v string) error {
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name == "" {
			return errors.New("empty schema name")
		}
		*s = append(*s, name)
	}
	return nil
}

// runInspect prints the tables of a database and what watching each one
// needs, then a starter config (or only the config, --output yaml).
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), inspectUsage)
		fs.PrintDefaults()
	}
	var (
		c       common
		dbURL   string
		schemas schemaList
		output  string
	)
	c.register(fs)
	fs.StringVar(&dbURL, "database-url", "", "PostgreSQL URL; empty inspects the embedded PostgreSQL in the data dir (env "+envDatabaseURL+")")
	fs.Var(&schemas, "schema", "inspect only this schema; repeat it or give a comma-separated list (default: every schema)")
	fs.StringVar(&output, "output", "text", "text (the report, then the config) or yaml (only the config)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if output != "text" && output != "yaml" {
		return usageError{fmt.Errorf("inspect: --output %q: want text or yaml", output)}
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return err
	}

	var local *localpg.Cluster
	if dbURL == "" {
		dbURL = os.Getenv(envDatabaseURL) // not the flag's default: usage would print its password
	}
	if dbURL == "" {
		if local, err = embeddedForUser(ctx, filepath.Join(c.dataDir, "postgres"), "inspect", log); err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		defer func() {
			if err := local.Close(); err != nil {
				log.Error("stop embedded PostgreSQL", "err", err)
			}
		}()
		dbURL = local.URL()
	}
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer db.Close()
	in, err := db.Inspect(ctx, schemas)
	if errors.Is(err, store.ErrNoSuchSchema) {
		return usageError{err}
	}
	if err != nil {
		return err
	}

	names := entityNames(in.Tables)
	if output == "text" {
		if err := writeInspectReport(stdout, in, names); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
	}
	return writeStarterConfig(stdout, in, names)
}

// writeInspectReport writes the human report: server facts, then every
// table with its key, identity, columns and what is missing.
func writeInspectReport(w io.Writer, in store.Inspection, names []string) error {
	role := in.Role
	if in.Superuser {
		role += " (superuser)"
	}
	fmt.Fprintf(w, "database %s as role %s, PostgreSQL %s\n", in.Database, role, pgVersion(in.ServerVersion))
	fmt.Fprintf(w, "  wal_level    %s\n", in.WALLevel)
	fmt.Fprintf(w, "  replication  %s\n", yesNo(in.Replication))
	fmt.Fprintf(w, "  publication  %s\n", map[bool]string{true: "may create", false: "may not create"}[in.CreatePublication])
	for _, p := range in.ServerProblems() {
		fmt.Fprintf(w, "  MISSING: %s\n", p)
	}
	if len(in.Tables) == 0 {
		fmt.Fprintln(w, "\nno tables found")
		return nil
	}
	ready := 0
	for i, t := range in.Tables {
		fmt.Fprintf(w, "\n%s", t.Qualified())
		if t.Partitioned {
			fmt.Fprintf(w, " (partitioned; watched through this root, which stands for its %d partitions: %s)", len(t.Partitions), strings.Join(t.Partitions, ", "))
		}
		fmt.Fprintln(w)
		blockers := t.Blockers()
		if len(blockers) == 0 {
			ready++
			fmt.Fprintf(w, "  entity    %s\n", names[i])
		}
		if k := t.Key(); len(k) > 0 {
			src := "primary key"
			if len(t.PrimaryKey) == 0 {
				src = "replica identity index"
			}
			fmt.Fprintf(w, "  key       %s (%s)\n", strings.Join(k, ", "), src)
		} else {
			fmt.Fprintln(w, "  key       none")
		}
		fmt.Fprintf(w, "  identity  %s\n", identityText(t))
		fmt.Fprintln(w, "  columns")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range t.Columns {
			mark := ""
			if sanitize.SecretName(c.Name) {
				mark = "\tSTRIPPED (its name looks secret)"
			}
			fmt.Fprintf(tw, "    %s\t%s%s\n", c.Name, c.Type, mark)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, b := range blockers {
			fmt.Fprintf(w, "  MISSING: %s\n", b)
		}
		for _, warn := range t.Warnings(in.Role) {
			fmt.Fprintf(w, "  WARNING: %s\n", warn)
		}
	}
	_, err := fmt.Fprintf(w, "\n%d tables: %d can be watched, %d cannot (MISSING above)\n", len(in.Tables), ready, len(in.Tables)-ready)
	return err
}

// identityText says what a table's replica identity gives changecast.
func identityText(t store.InspectedTable) string {
	switch t.Identity {
	case store.IdentityFull:
		return "full: updates and deletes carry the whole previous row"
	case store.IdentityIndex:
		return "index " + t.IdentityIndex + ": updates and deletes carry its columns of the previous row"
	case store.IdentityNothing:
		return "nothing"
	}
	if len(t.PrimaryKey) == 0 {
		return "default (no primary key, so none)"
	}
	if t.Toastable() {
		return "default: deletes carry only the key, and unchanged TOASTed values are not sent; REPLICA IDENTITY FULL sends them"
	}
	return "default: deletes carry only the key"
}

// writeStarterConfig writes the config: one entry per table that can be
// watched, a "# skipped:" comment for each other one.
func writeStarterConfig(w io.Writer, in store.Inspection, names []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Starter config from \"changecast inspect\" of database %s. Review it:\n", in.Database)
	b.WriteString("# secrets lists the columns the name rules strip (add any other secret\n")
	b.WriteString("# column); uncomment columns to let only those columns leave.\n")
	for _, p := range in.ServerProblems() {
		fmt.Fprintf(&b, "# warning: %s\n", p)
	}
	watched := 0
	for _, t := range in.Tables {
		if t.Blockers() == nil {
			watched++
		}
	}
	if watched == 0 {
		b.WriteString("entities: []\n")
	} else {
		b.WriteString("entities:\n")
	}
	for i, t := range in.Tables {
		if blockers := t.Blockers(); blockers != nil {
			fmt.Fprintf(&b, "  # skipped: %s: %s\n", t.Qualified(), strings.Join(blockers, "; "))
			continue
		}
		for _, warn := range t.Warnings(in.Role) {
			fmt.Fprintf(&b, "  # warning: %s\n", warn)
		}
		var secrets, columns []string
		for _, c := range t.Columns {
			columns = append(columns, c.Name)
			if sanitize.SecretName(c.Name) {
				secrets = append(secrets, c.Name)
			}
		}
		fmt.Fprintf(&b, "  - name: %s\n", yamlScalar(names[i]))
		fmt.Fprintf(&b, "    table: %s\n", yamlScalar(t.Qualified()))
		if k := t.Key(); len(k) == 1 {
			fmt.Fprintf(&b, "    key: %s\n", yamlScalar(k[0]))
		} else {
			fmt.Fprintf(&b, "    key: %s\n", yamlList(k))
		}
		fmt.Fprintf(&b, "    secrets: %s\n", yamlList(secrets))
		fmt.Fprintf(&b, "    # columns: %s\n", yamlList(columns))
		if t.Identity == store.IdentityDefault && t.Toastable() {
			b.WriteString("    # replica_identity: full\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// plainYAML matches the scalars written unquoted; every other one is
// double-quoted, so a column named "yes", "1" or "a, b" stays a string.
var plainYAML = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null":
		return strconv.Quote(s)
	}
	if plainYAML.MatchString(s) {
		return s
	}
	return strconv.Quote(s)
}

func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = yamlScalar(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// pgVersion formats server_version_num: 150004 is "15.4".
func pgVersion(n int) string {
	if n >= 100000 {
		return fmt.Sprintf("%d.%d", n/10000, n%10000)
	}
	return fmt.Sprintf("%d.%d.%d", n/10000, n/100%100, n%100)
}

// reservedEntityNames cannot name a declared entity type: "event" is the
// wire's system events.
var reservedEntityNames = map[string]bool{"event": true}

// entityNames returns each table's entity type name (entityName), made
// unique: a name taken by more than one table, or reserved, is prefixed
// with the table's schema ("archive_order"), and a numeric suffix settles
// what is still taken twice.
func entityNames(tables []store.InspectedTable) []string {
	names := make([]string, len(tables))
	count := map[string]int{}
	for i, t := range tables {
		names[i] = entityName(t.Name)
		count[names[i]]++
	}
	for i, t := range tables {
		n := names[i]
		if reservedEntityNames[n] || count[n] > 1 && t.Schema != "public" {
			names[i] = snakeCase(t.Schema) + "_" + n
		}
	}
	taken := map[string]bool{}
	for i, n := range names {
		name := n
		for k := 2; taken[name] || reservedEntityNames[name]; k++ {
			name = n + "_" + strconv.Itoa(k)
		}
		taken[name] = true
		names[i] = name
	}
	return names
}

// entityName derives an entity type name from a table name: snake_case,
// singular for the simple English plurals of its last word (orders: order,
// categories: category, addresses: address, statuses: status, boxes: box),
// else unchanged ("batches", "news" and "inventory" stay).
func entityName(table string) string {
	s := snakeCase(table)
	head, last := "", s
	if i := strings.LastIndexByte(s, '_'); i >= 0 {
		head, last = s[:i+1], s[i+1:]
	}
	return head + singular(last)
}

func singular(w string) string {
	if len(w) < 4 {
		return w // "bus", "gas", "os": too short to tell
	}
	switch {
	case strings.HasSuffix(w, "ies") && !isVowel(w[len(w)-4]) && !irregularIES[w]:
		return w[:len(w)-3] + "y" // categories
	case strings.HasSuffix(w, "sses"), strings.HasSuffix(w, "xes"):
		return w[:len(w)-2] // addresses, boxes
	case strings.HasSuffix(w, "uses") && len(w) >= 5:
		if isVowel(w[len(w)-5]) {
			return w[:len(w)-1] // houses, causes
		}
		return w[:len(w)-2] // statuses, campuses
	case strings.HasSuffix(w, "ches"), strings.HasSuffix(w, "shes"), strings.HasSuffix(w, "zes"),
		strings.HasSuffix(w, "oes"), strings.HasSuffix(w, "ies"):
		return w // batches or caches, wishes, heroes or shoes: ambiguous
	case strings.HasSuffix(w, "ss"), strings.HasSuffix(w, "us"), strings.HasSuffix(w, "is"), strings.HasSuffix(w, "news"):
		return w // address, status, analysis, news: not plural
	case strings.HasSuffix(w, "s"):
		return w[:len(w)-1] // orders
	}
	return w
}

// irregularIES end in a consonant and "ies" but are not "-y" plurals.
var irregularIES = map[string]bool{"movies": true, "series": true, "species": true, "cookies": true, "zombies": true}

func isVowel(c byte) bool { return strings.IndexByte("aeiou", c) >= 0 }

// snakeCase lowers a name into ASCII words joined by single underscores,
// splitting at non-alphanumerics and camelCase boundaries
// ("OrderItems": order_items). A result that would not start with a letter
// is prefixed with "t_".
func snakeCase(s string) string {
	var b strings.Builder
	sep := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		isUp := c >= 'A' && c <= 'Z'
		switch {
		case isUp || c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			if isUp && i > 0 && (s[i-1] >= 'a' && s[i-1] <= 'z' || s[i-1] >= '0' && s[i-1] <= '9') {
				sep = true
			}
			if sep && b.Len() > 0 {
				b.WriteByte('_')
			}
			sep = false
			if isUp {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
		default:
			sep = true
		}
	}
	out := b.String()
	if out == "" || out[0] < 'a' || out[0] > 'z' {
		out = "t_" + out
	}
	return out
}
