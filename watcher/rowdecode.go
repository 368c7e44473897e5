package watcher

import (
	"context"

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
// base types of domains) over conn. The connection that reads the rows
// must run with SessionSettings, as the replication connection does, for
// values to arrive in the formats the decoder parses.
func NewRowDecoder(ctx context.Context, conn *pgconn.PgConn) (*RowDecoder, error) {
	domains, err := loadDomains(ctx, conn)
	if err != nil {
		return nil, err
	}
	v := newValueDecoder()
	v.domains = domains
	return &RowDecoder{v: v}, nil
}

// Decode returns the row whose columns are cols and whose text-format
// values are texts (nil for SQL NULL). texts is not retained.
func (d *RowDecoder) Decode(cols []Column, texts [][]byte) entities.Row {
	row := make(entities.Row, len(cols))
	for i, c := range cols {
		if texts[i] == nil {
			row[c.Name] = nil
			continue
		}
		row[c.Name] = d.v.decode(c.OID, texts[i])
	}
	return row
}
