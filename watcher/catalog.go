package watcher

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// firstNormalOID is PostgreSQL's FirstNormalObjectId: types with a lower
// OID are built in (pg_catalog and information_schema), the rest were
// created in the database (by users or extensions).
const firstNormalOID = 16384

// firstGenbkiOID is PostgreSQL's FirstGenbkiObjectId: OIDs below it are the
// types of pg_type.dat, none of them a domain. The built-in types above it
// (up to firstNormalOID) include information_schema's domains
// (cardinal_number over integer, time_stamp over timestamptz, …).
const firstGenbkiOID = 10000

// attribute is one attribute of a composite type, in attribute order.
type attribute struct {
	name string
	oid  uint32
}

// catalog is what the value decoder knows of the database's own types,
// read from pg_type and pg_attribute: the base type of each domain, the
// attributes of each composite type, and the element type of each array
// of a domain, enum or composite. A nil catalog knows only built-in types.
// It is never modified once loaded (a reload makes a new one).
type catalog struct {
	domains    map[uint32]uint32
	arrays     map[uint32]uint32
	composites map[uint32][]attribute
	// known holds every type the database had at load time from
	// firstNormalOID up, so a type created later is recognised as new.
	known map[uint32]bool
}

// base returns the type a domain (over a domain over …, to a sane depth)
// stands for; any other type is its own base.
func (c *catalog) base(oid uint32) uint32 {
	if c == nil || oid < firstGenbkiOID {
		return oid // a type of pg_type.dat: never a domain, no look-up
	}
	for range 8 {
		b, ok := c.domains[oid]
		if !ok {
			break
		}
		oid = b
	}
	return oid
}

// element returns the element type of an array type.
func (c *catalog) element(oid uint32) (uint32, bool) {
	if e, ok := arrayElements[oid]; ok {
		return e, true
	}
	if c == nil {
		return 0, false
	}
	e, ok := c.arrays[oid]
	return e, ok
}

// composite returns the attributes of a composite type.
func (c *catalog) composite(oid uint32) ([]attribute, bool) {
	if c == nil {
		return nil, false
	}
	a, ok := c.composites[oid]
	return a, ok
}

// knows reports whether oid is a built-in type or existed when the
// catalog was loaded.
func (c *catalog) knows(oid uint32) bool {
	return oid < firstNormalOID || (c != nil && c.known[oid])
}

// catalogQuery reads, in one round trip, every domain's base type ('d'),
// every array of a domain, enum or composite with its element type ('a'),
// every attribute of the database's composite types, in order ('c'), and
// every type from FirstNormalObjectId up ('k').
const catalogQuery = `SELECT 'd', t.oid::text, t.typbasetype::text, '', 0 FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
UNION ALL
SELECT 'a', t.oid::text, t.typelem::text, '', 0 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND e.typarray = t.oid
	WHERE e.typtype IN ('d', 'e', 'c')
UNION ALL
SELECT 'c', t.oid::text, a.atttypid::text, a.attname, a.attnum FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
	WHERE t.typtype = 'c' AND t.oid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'k', t.oid::text, '', '', 0 FROM pg_catalog.pg_type t WHERE t.oid >= 16384
ORDER BY 1, 2, 5`

// loadCatalog reads the catalog over conn: a replication connection before
// streaming starts (SQL is allowed there until then), or a normal one.
func loadCatalog(ctx context.Context, conn *pgconn.PgConn) (*catalog, error) {
	rows, err := simpleQuery(ctx, conn, catalogQuery)
	if err != nil {
		return nil, fmt.Errorf("look up the database's types: %w", err)
	}
	c := &catalog{
		domains:    map[uint32]uint32{},
		arrays:     map[uint32]uint32{},
		composites: map[uint32][]attribute{},
		known:      map[uint32]bool{},
	}
	for _, r := range rows {
		if len(r) != 5 {
			continue
		}
		oid, err1 := strconv.ParseUint(r[1], 10, 32)
		if err1 != nil {
			continue
		}
		switch r[0] {
		case "k":
			c.known[uint32(oid)] = true
			continue
		}
		other, err2 := strconv.ParseUint(r[2], 10, 32)
		if err2 != nil {
			continue
		}
		switch r[0] {
		case "d":
			c.domains[uint32(oid)] = uint32(other)
		case "a":
			c.arrays[uint32(oid)] = uint32(other)
		case "c":
			c.composites[uint32(oid)] = append(c.composites[uint32(oid)], attribute{name: r[3], oid: uint32(other)})
		}
	}
	return c, nil
}

// catalogReloadTimeout bounds a reload of the catalog while streaming.
const catalogReloadTimeout = 10 * time.Second

// reloadCatalog reads the catalog again over a new, normal
// (non-replication) connection, which it closes before returning. The
// replication connection is never used for SQL once streaming started
// (docs/replication.md), so types created while streaming are looked up
// this way.
func (w *Watcher) reloadCatalog(ctx context.Context) (*catalog, error) {
	pc, err := pgconn.ParseConfig(w.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "changecast-watcher-catalog"
	}
	ctx, cancel := context.WithTimeout(ctx, catalogReloadTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to read the catalog: %w", err)
	}
	defer conn.Close(context.Background())
	return loadCatalog(ctx, conn)
}
