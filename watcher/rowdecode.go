package watcher

import (
	"context"
	"slices"
	"strings"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pgx/v5/pgconn"
)

// Column describes one column of a row read with SQL: its name and its
// type's OID (pgconn.FieldDescription.DataTypeOID).
type Column struct {
	Name string
	OID  uint32
}

// RowDecoder decodes rows read with SQL in PostgreSQL's text format into the
// same entities.Row values the watcher makes of replicated rows, so that a
// row read directly (a snapshot, a back-fill) and the same row replicated
// are equal and encode to the same JSON.
//
// A RowDecoder is not safe for concurrent use; make one per goroutine.
type RowDecoder struct{ v *valueDecoder }

// NewRowDecoder loads what decoding needs from the database's catalog (the
// base types of domains, the attributes of composite types, the arrays of
// those and of enums) over conn. The connection that reads the rows
// must run with SessionSettings, as the replication connection does, for
// values to arrive in the formats the decoder parses.
func NewRowDecoder(ctx context.Context, conn *pgconn.PgConn) (*RowDecoder, error) {
	cat, err := loadCatalog(ctx, conn)
	if err != nil {
		return nil, err
	}
	v := newValueDecoder()
	v.cat = cat
	return &RowDecoder{v: v}, nil
}

// Decode returns the row whose columns are cols and whose text-format
// values are texts (nil for SQL NULL): members sorted by name, each value
// the JSON the watcher writes for a replicated row. texts is not retained.
func (d *RowDecoder) Decode(cols []Column, texts [][]byte) *entities.Row {
	order := make([]int, len(cols))
	size := 2
	for i := range cols {
		order[i] = i
		size += len(texts[i]) + len(cols[i].Name) + 8
	}
	slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(cols[i].Name, cols[j].Name) })
	var b entities.RowBuilder
	b.Grow(len(cols), size+size/8)
	for _, i := range order {
		if texts[i] == nil {
			b.AppendRaw(cols[i].Name, jsonNull)
			continue
		}
		b.End(d.v.appendValue(b.Key(cols[i].Name), cols[i].OID, texts[i]))
	}
	return b.Row()
}
