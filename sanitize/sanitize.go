// Package sanitize turns decoded rows into the payloads changecast sends and
// stores: every column the registry marks secret is removed from the new row
// and from the previous row, before anything is journaled or published.
//
// Sanitizing never mutates its input: rows decoded by the watcher may be
// shared, so a new Row is built. It fails closed: a change whose entity type
// is not registered is an error, never passed through.
package sanitize

import (
	"fmt"

	"github.com/changecast/changecast/entities"
)

// Sanitizer strips secret columns using a registry. It is safe for
// concurrent use.
type Sanitizer struct {
	reg *entities.Registry
}

// New returns a Sanitizer that reads secret columns from reg.
func New(reg *entities.Registry) *Sanitizer {
	return &Sanitizer{reg: reg}
}

// Change returns c with secrets removed from Payload and Previous. The
// returned Change shares nothing mutable with c's rows.
func (s *Sanitizer) Change(c entities.Change) (entities.Change, error) {
	et, err := s.reg.Lookup(c.EntityType)
	if err != nil {
		return entities.Change{}, fmt.Errorf("sanitize %s change: %w", c.Operation, err)
	}
	c.Payload = Row(et, c.Payload)
	c.Previous = Row(et, c.Previous)
	return c, nil
}

// Changes sanitizes a batch into a new slice, leaving batch untouched. On
// error nothing is returned, so a batch is either wholly sanitized or not
// sent at all.
func (s *Sanitizer) Changes(batch []entities.Change) ([]entities.Change, error) {
	out := make([]entities.Change, len(batch))
	for i, c := range batch {
		sc, err := s.Change(c)
		if err != nil {
			return nil, err
		}
		out[i] = sc
	}
	return out, nil
}

// Row returns a copy of row without et's secret columns. A nil row stays nil.
func Row(et entities.EntityType, row entities.Row) entities.Row {
	if row == nil {
		return nil
	}
	out := make(entities.Row, len(row))
	for k, v := range row {
		if et.IsSecret(k) {
			continue
		}
		out[k] = v
	}
	return out
}
