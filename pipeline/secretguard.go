package pipeline

import (
	"fmt"
	"slices"

	"github.com/changecast/changecast/entities"
)

// secretGuard stops an entity type whose secret column has disappeared
// from its rows. A secret column that vanishes was dropped or, worse,
// renamed: under its new name it is no longer declared secret and might
// flow out. So from the first new row that lacks it, the type's changes
// are no longer delivered (nor journaled) until changecast is restarted
// with a configuration that names the column again, and one error event
// says so (docs/configuration.md, "When a secret column disappears").
//
// Only the rows that carry every column are checked: an insert's or
// update's new row. A delete's old row may hold the key alone, a column
// PostgreSQL did not send because its TOAST value is unchanged is listed
// in Change.Unchanged, and a column of the table the watcher did not
// decode because sanitizing strips it (every secret column, in the
// pipeline) is listed in Change.Withheld.
type secretGuard struct {
	// secrets lists each registered type's secret columns, read once;
	// types without any are absent, and cost one map lookup per change.
	secrets map[string][]string
	// blocked maps a stopped type to the secret column it lost. Only
	// the pipeline's sanitize goroutine uses the guard: no lock.
	blocked map[string]string
}

func newSecretGuard(reg *entities.Registry) *secretGuard {
	g := &secretGuard{secrets: map[string][]string{}, blocked: map[string]string{}}
	for _, et := range reg.Types() {
		if len(et.Secrets) > 0 {
			g.secrets[et.Name] = et.Secrets
		}
	}
	return g
}

// filter returns changes without those of stopped types, and calls stop
// once for each type it stops now. It returns changes itself, not a
// copy, when it drops nothing.
func (g *secretGuard) filter(changes []entities.Change, stop func(entityType, column string)) []entities.Change {
	for i := range changes {
		if g.stopped(&changes[i], stop) {
			out := append([]entities.Change(nil), changes[:i]...)
			for j := i + 1; j < len(changes); j++ {
				if !g.stopped(&changes[j], stop) {
					out = append(out, changes[j])
				}
			}
			return out
		}
	}
	return changes
}

// stopped reports whether c's type is stopped, stopping it if c's row
// lacks one of its secret columns.
func (g *secretGuard) stopped(c *entities.Change, stop func(entityType, column string)) bool {
	cols, ok := g.secrets[c.EntityType]
	if !ok {
		return false
	}
	if _, ok := g.blocked[c.EntityType]; ok {
		return true
	}
	if c.Operation != entities.OpCreate && c.Operation != entities.OpUpdate {
		return false
	}
	for _, col := range cols {
		if c.Payload.Has(col) || slices.Contains(c.Unchanged, col) || slices.Contains(c.Withheld, col) {
			continue
		}
		g.blocked[c.EntityType] = col
		stop(c.EntityType, col)
		return true
	}
	return false
}

// secretColumnMissing raises the event that a type was stopped.
func (e *emitter) secretColumnMissing(entityType, column string) {
	e.emit(e.event("sanitize", "secret_column_missing", entities.Error,
		fmt.Sprintf("the secret column %s of entity type %s is gone from its table (dropped or renamed): changes of %s are no longer delivered, so that a renamed secret never flows out under its new name. Declare the column's new name as a secret (or remove it from the configuration) and restart changecast", column, entityType, entityType),
		map[string]any{"err": fmt.Sprintf("secret column %q missing from %s rows", column, entityType), "entity_type": entityType, "column": column, "doc": doc("secret_column_missing")}))
}
