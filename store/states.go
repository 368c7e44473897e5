package store

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
)

// Back-fill: completing the changes of tables without REPLICA IDENTITY
// FULL from the journal.
//
// For such a table PostgreSQL sends an update without its previous row,
// an unchanged TOAST value as "unchanged" instead of its value, and a
// delete with only the key (entities.Change.Backfill is set on them). The
// journal already holds every earlier change of the entity in commit
// order, so the payload of the last one is exactly the state the new
// change starts from. changecast.entity_state points at it: for each
// entity of such a table, the seq of the journal row holding its last
// state (its last create or update; a delete removes the entry). It is
// written in the same database transaction as the journal rows, so it is
// exactly as durable and as ordered as they are.
//
// An entry is trusted only while the journal has followed its entity type
// without a break; everything that could make it stale removes it:
//   - a gap (RecordGap: the lost stretch may hold changes) removes all;
//   - a TRUNCATE of the table removes the type's entries;
//   - a type that leaves the registry (ForgetStates, at start and reload)
//     or whose table turns to REPLICA IDENTITY FULL (its changes stop
//     being tracked) loses its entries, and starts afresh when tracked
//     again (changecast.entity_state_types lists the tracked types);
//   - retention removing the journal row makes the state unknown.
// An unknown state is never guessed: the change keeps what PostgreSQL
// sent (the key; unchanged columns listed in Unchanged).
//
// Filled values are sanitized again (AppenderConfig.Sanitize) with the
// rules in force now, since they were stored under the rules of their
// time: a column made secret since never flows out of an old state.

// stateKey names one entity.
type stateKey struct{ typ, id string }

// loadTracked reads the tracked types.
func loadTracked(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT entity_type FROM changecast.entity_state_types`)
	if err != nil {
		return nil, fmt.Errorf("load tracked entity types: %w", hintMigrate(err))
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("load tracked entity types: %w", hintMigrate(err))
	}
	out := make(map[string]bool, len(types))
	for _, t := range types {
		out[t] = true
	}
	return out, nil
}

// backfill fills, in place and in order, the Backfill changes of groups
// from the last states of their entities, and returns the entity_state
// writes to make once the changes have their cursors. It runs inside the
// journal transaction that will hold the changes, so the states it reads
// are exactly those the journal holds before them.
func (a *Appender) backfill(ctx context.Context, tx pgx.Tx, groups [][]entities.Change) (*stateWrites, error) {
	// Pass 1 finds the entities whose stored state is needed (the first
	// change to them in the batch needs filling while the stored states
	// of their type still hold); one query reads them all. Pass 2 fills
	// in order, each change seeing the state the ones before it left.
	var lookups []stateKey
	seen := map[stateKey]bool{}
	touched := a.walkStates(groups, newStateWrites(), func(c *entities.Change, storedValid bool) {
		k := stateKey{c.EntityType, c.EntityID}
		if !seen[k] && storedValid && needsFill(c) {
			lookups = append(lookups, k)
		}
		seen[k] = true
	})
	if !touched {
		return nil, nil // nothing tracked, nothing to stop tracking
	}
	stored, err := a.loadStates(ctx, tx, lookups)
	if err != nil {
		return nil, err
	}
	w := newStateWrites()
	var ferr error
	a.walkStates(groups, w, func(c *entities.Change, storedValid bool) {
		if ferr != nil {
			return
		}
		k := stateKey{c.EntityType, c.EntityID}
		if needsFill(c) {
			st, ok := w.pending[k]
			if !ok && storedValid {
				st = stored[k]
			}
			if st != nil {
				ferr = a.fill(c, st)
			}
		}
		w.last[k] = c
		if c.Operation == entities.OpDelete {
			w.pending[k] = nil
		} else {
			w.pending[k] = c.Payload
		}
	})
	if ferr != nil {
		return nil, ferr
	}
	return w, nil
}

// walkStates runs the per-type tracking rules over groups in order and
// calls row for each create, update or delete of a tracked type, saying
// whether the type's stored states still hold at that point. It records
// clearings and tracking changes in w, dropping from w.last and
// w.pending the entities of a type cleared after them, and reports whether
// the batch touches tracking at all.
func (a *Appender) walkStates(groups [][]entities.Change, w *stateWrites, row func(c *entities.Change, storedValid bool)) bool {
	type typeState struct{ tracked, storedValid bool }
	types := map[string]*typeState{}
	touched := false
	clear := func(t string, ts *typeState) {
		ts.storedValid = false
		w.cleared[t] = true
		for k := range w.last {
			if k.typ == t {
				delete(w.last, k)
				delete(w.pending, k)
			}
		}
	}
	for _, g := range groups {
		for i := range g {
			c := &g[i]
			if c.EntityType == entities.EventEntityType {
				continue
			}
			ts := types[c.EntityType]
			if ts == nil {
				on := a.tracked[c.EntityType]
				ts = &typeState{tracked: on, storedValid: on}
				types[c.EntityType] = ts
			}
			switch {
			case !c.Backfill:
				if ts.tracked {
					// The table turned to REPLICA IDENTITY FULL: its
					// states stop being followed and go.
					clear(c.EntityType, ts)
					ts.tracked = false
					touched = true
				}
				continue
			case !ts.tracked:
				clear(c.EntityType, ts) // anything stored is from an earlier tracking
				ts.tracked = true
			}
			touched = true
			if c.Operation == entities.OpTruncate {
				clear(c.EntityType, ts)
				continue
			}
			if row != nil && c.EntityID != "" {
				// (An entity id is "" when the key's name is
				// secret-looking and sanitize blanked it: such
				// entities cannot be told apart, so none is filled.)
				row(c, ts.storedValid)
			}
		}
	}
	for t, ts := range types {
		if ts.tracked || a.tracked[t] {
			w.tracked[t] = ts.tracked
		}
	}
	return touched
}

// needsFill reports whether PostgreSQL left part of c out and the state
// can complete it: a delete (only the key, unless the identity covers
// every column), or an update without its previous row (with its
// unchanged TOAST values).
func needsFill(c *entities.Change) bool {
	switch c.Operation {
	case entities.OpDelete:
		return true
	case entities.OpUpdate:
		// Without FULL identity PostgreSQL sends a previous row (the
		// key alone) only when the key changed: the state found under
		// the new key is then another entity's, so nothing is filled.
		return c.Previous == nil
	}
	return false
}

// fill completes c from st, the entity's state before c, and sanitizes
// the result with today's rules.
func (a *Appender) fill(c *entities.Change, st *entities.Row) error {
	if a.cfg.Sanitize == nil {
		return nil // without today's rules, old values stay where they are
	}
	switch c.Operation {
	case entities.OpDelete:
		// The row as it was, with the key as sent.
		c.Payload = st.With(c.Payload)
	case entities.OpUpdate:
		if len(c.Unchanged) > 0 {
			unchanged := func(name string) bool { return slices.Contains(c.Unchanged, name) }
			c.Payload = st.Without(func(name string) bool { return !unchanged(name) }).With(c.Payload)
			var still []string
			for _, col := range c.Unchanged {
				if !c.Payload.Has(col) {
					still = append(still, col)
				}
			}
			c.Unchanged = still
		}
		if c.Previous == nil {
			c.Previous = st
		}
	}
	clean, err := a.cfg.Sanitize(*c)
	if err != nil {
		return fmt.Errorf("sanitize %s %s %q filled from the journal: %w", c.Operation, c.EntityType, c.EntityID, err)
	}
	*c = clean
	return nil
}

// loadStates reads the last journaled state of each of keys.
func (a *Appender) loadStates(ctx context.Context, tx pgx.Tx, keys []stateKey) (map[stateKey]*entities.Row, error) {
	out := map[stateKey]*entities.Row{}
	if len(keys) == 0 {
		return out, nil
	}
	types, ids := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		types[i], ids[i] = k.typ, k.id
	}
	rows, err := tx.Query(ctx, `SELECT s.entity_type, s.entity_id, j.payload
		FROM unnest($1::text[], $2::text[]) AS k(t, id)
		JOIN changecast.entity_state s ON s.entity_type = k.t AND s.entity_id = k.id
		JOIN changecast.journal j ON j.seq = s.seq`, types, ids)
	if err != nil {
		return nil, fmt.Errorf("read entity states: %w", hintMigrate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var k stateKey
		var payload []byte
		if err := rows.Scan(&k.typ, &k.id, &payload); err != nil {
			return nil, fmt.Errorf("read entity states: %w", err)
		}
		if payload == nil {
			continue
		}
		row, err := entities.ParseRow(payload)
		if err != nil {
			return nil, fmt.Errorf("read state of %s %q: %w", k.typ, k.id, err)
		}
		out[k] = row
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entity states: %w", err)
	}
	return out, nil
}

// stateWrites is what a batch changes in changecast.entity_state.
type stateWrites struct {
	// last is the last change of each entity in the batch (its Cursor
	// is set before the COPY); pending its state after it (nil: deleted).
	last    map[stateKey]*entities.Change
	pending map[stateKey]*entities.Row
	// cleared types lose every stored entry first.
	cleared map[string]bool
	// tracked: types whose tracking the batch starts (true) or ends.
	tracked map[string]bool
}

func newStateWrites() *stateWrites {
	return &stateWrites{last: map[stateKey]*entities.Change{}, pending: map[stateKey]*entities.Row{}, cleared: map[string]bool{}, tracked: map[string]bool{}}
}

// saveStates applies w in tx, after the COPY of the changes, in one
// round trip, and updates a.tracked (inTx restores it if
// the transaction does not commit).
func (a *Appender) saveStates(ctx context.Context, tx pgx.Tx, w *stateWrites) error {
	if w == nil {
		return nil
	}
	var b pgx.Batch
	if len(w.cleared) > 0 {
		b.Queue(`DELETE FROM changecast.entity_state WHERE entity_type = ANY($1)`, slices.Sorted(maps.Keys(w.cleared)))
	}
	var delT, delID, upT, upID []string
	var upSeq []int64
	for k, c := range w.last {
		if !w.tracked[k.typ] {
			continue
		}
		if c.Operation == entities.OpDelete {
			delT, delID = append(delT, k.typ), append(delID, k.id)
		} else {
			upT, upID, upSeq = append(upT, k.typ), append(upID, k.id), append(upSeq, c.Cursor)
		}
	}
	if len(delT) > 0 {
		b.Queue(`DELETE FROM changecast.entity_state s USING unnest($1::text[], $2::text[]) AS d(t, id)
			WHERE s.entity_type = d.t AND s.entity_id = d.id`, delT, delID)
	}
	if len(upT) > 0 {
		b.Queue(`INSERT INTO changecast.entity_state (entity_type, entity_id, seq)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
			ON CONFLICT (entity_type, entity_id) DO UPDATE SET seq = EXCLUDED.seq`, upT, upID, upSeq)
	}
	var start, stop []string
	for t, on := range w.tracked {
		switch {
		case on && !a.tracked[t]:
			start = append(start, t)
		case !on && a.tracked[t]:
			stop = append(stop, t)
		}
	}
	if len(start) > 0 {
		b.Queue(`INSERT INTO changecast.entity_state_types SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, start)
	}
	if len(stop) > 0 {
		b.Queue(`DELETE FROM changecast.entity_state WHERE entity_type = ANY($1)`, stop)
		b.Queue(`DELETE FROM changecast.entity_state_types WHERE entity_type = ANY($1)`, stop)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("write entity states: %w", hintMigrate(err))
	}
	for _, t := range start {
		a.tracked[t] = true
	}
	for _, t := range stop {
		delete(a.tracked, t)
	}
	return nil
}

// ForgetStates removes the states of every entity type not in keep: a
// type that leaves the registry is not followed by the journal any more,
// so its states would be stale if it came back. Called at start and on
// reload, before the watcher streams.
func (db *DB) ForgetStates(ctx context.Context, keep []string) error {
	if keep == nil {
		keep = []string{}
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("forget entity states: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `DELETE FROM changecast.entity_state WHERE entity_type <> ALL($1)`, keep); err != nil {
		return fmt.Errorf("forget entity states: %w", hintMigrate(err))
	}
	if _, err := tx.Exec(ctx, `DELETE FROM changecast.entity_state_types WHERE entity_type <> ALL($1)`, keep); err != nil {
		return fmt.Errorf("forget entity states: %w", hintMigrate(err))
	}
	return tx.Commit(ctx)
}
