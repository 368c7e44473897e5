package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/changecast/changecast/entities"
)

// This file holds the system events table, changecast.events (docs/events.md):
// its migration, the reads behind the REST list, and the writes, which
// run inside a caller's pgx transaction (the journal appender's, so the
// row and its journal entry commit together) and return the Changes to
// journal and publish.
//
// Ownership: an event with a user_id belongs to that user; one without
// concerns the whole system. A caller acting for a user (owner set) may
// read both kinds, but may change the status of, or delete, only that
// user's own events: status is a property of the event, not per user, so
// a viewer marking a system-wide event read would mark it read for
// everyone. To that caller a system-wide event is "not found" for writes.

// ErrEventNotFound is returned (wrapped, naming the id) for an event id
// that does not exist or that the owner may not change.
var ErrEventNotFound = errors.New("event not found")

// eventRecord is the gorm model of changecast.events, used only to create
// and extend the table. Its columns are entities.EventColumns.
type eventRecord struct {
	ID          uuid.UUID       `gorm:"column:id;type:uuid;primaryKey"`
	UserID      *uuid.UUID      `gorm:"column:user_id;type:uuid;index:events_user_id_created_at,priority:1"`
	SystemID    *uuid.UUID      `gorm:"column:system_id;type:uuid"`
	ActedUpon   *uuid.UUID      `gorm:"column:acted_upon;type:uuid;index:events_acted_upon"`
	Category    string          `gorm:"column:category;type:text;not null;index:events_category_action,priority:1"`
	Action      string          `gorm:"column:action;type:text;not null;index:events_category_action,priority:2"`
	Severity    string          `gorm:"column:severity;type:text;not null"`
	Description string          `gorm:"column:description;type:text;not null;default:''"`
	Metadata    json.RawMessage `gorm:"column:metadata;type:jsonb;not null;default:'{}'"`
	Status      string          `gorm:"column:status;type:text;not null;default:'unread';check:events_status_check,status IN ('read', 'unread')"`
	OperationID uuid.UUID       `gorm:"column:operation_id;type:uuid;not null"`
	CreatedAt   time.Time       `gorm:"column:created_at;type:timestamptz;not null;default:now();index:events_user_id_created_at,priority:2;index:events_created_at"`
	UpdatedAt   time.Time       `gorm:"column:updated_at;type:timestamptz;not null;default:now()"`
}

// eventsTable is the events table's name in Schema.
const eventsTable = "events"

// migrateEventsTable creates changecast.events, or adds the columns and
// indexes it lacks. It is idempotent; Migrate runs it inside its
// transaction, after changecast's schema exists.
func migrateEventsTable(tx *gorm.DB) error {
	if err := migrateModel(tx, Schema, eventsTable, &eventRecord{}); err != nil {
		return fmt.Errorf("table %s: %w", pgx.Identifier{Schema, eventsTable}.Sanitize(), err)
	}
	return nil
}

// eventSelect lists the columns in entities.EventColumns order, as scanEvent
// reads them.
var eventSelect = strings.Join(entities.EventColumns, ", ")

// severityOrder lists the severities from mildest to worst, so
// array_position gives a rank that sorts worst last (first in desc).
var severityOrder = func() []string {
	out := make([]string, len(entities.Severities))
	for i, s := range entities.Severities {
		out[len(out)-1-i] = string(s)
	}
	return out
}()

// eventSortColumns maps EventQuery.Sort to an ORDER BY expression. Only
// these constant strings ever reach the SQL text; $severity is replaced by
// the parameter holding severityOrder. Text sorts compare bytes (COLLATE
// "C"), as Go does, so pages do not depend on the database's locale.
var eventSortColumns = map[string]string{
	entities.EventSortCreatedAt: "created_at",
	entities.EventSortUpdatedAt: "updated_at",
	entities.EventSortSeverity:  "array_position($severity::text[], severity)",
	entities.EventSortCategory:  `category COLLATE "C"`,
	entities.EventSortAction:    `action COLLATE "C"`,
}

// eventFilter builds a parameterised WHERE clause: user input only ever
// travels as parameters.
type eventFilter struct {
	conds []string
	args  []any
}

// arg adds a parameter and returns its placeholder.
func (f *eventFilter) arg(v any) string {
	f.args = append(f.args, v)
	return "$" + strconv.Itoa(len(f.args))
}

func (f *eventFilter) where() string {
	if len(f.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(f.conds, " AND ")
}

// ownerCond restricts reads to what owner may see.
func (f *eventFilter) ownerCond(owner *uuid.UUID) {
	if owner != nil {
		f.conds = append(f.conds, "(user_id = "+f.arg(*owner)+" OR user_id IS NULL)")
	}
}

// likeEscaper escapes LIKE's wildcards with '!', a character that needs no
// escaping in SQL string literals whatever standard_conforming_strings is.
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

func queryFilter(q entities.EventQuery) *eventFilter {
	f := &eventFilter{}
	f.ownerCond(q.Owner)
	if q.Search != "" {
		p := f.arg("%" + likeEscaper.Replace(q.Search) + "%")
		f.conds = append(f.conds, "(description ILIKE "+p+" ESCAPE '!' OR category ILIKE "+p+" ESCAPE '!' OR action ILIKE "+p+" ESCAPE '!')")
	}
	for _, in := range []struct {
		col    string
		values []string
	}{{"category", q.Category}, {"action", q.Action}, {"severity", q.Severity}, {"status", q.Status}} {
		if len(in.values) > 0 {
			f.conds = append(f.conds, in.col+" = ANY("+f.arg(in.values)+"::text[])")
		}
	}
	if q.ActedUpon != nil {
		f.conds = append(f.conds, "acted_upon = "+f.arg(*q.ActedUpon))
	}
	return f
}

// ListEvents returns the page of events q selects (see entities.EventQuery),
// counted and read in one snapshot. q is validated (and its defaults
// filled) first; an invalid q returns its validation error.
func (db *DB) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	if err := q.Validate(); err != nil {
		return entities.EventPage{}, fmt.Errorf("list events: %w", err)
	}
	sortExpr, ok := eventSortColumns[q.Sort]
	if !ok { // Validate and eventSortColumns disagree: a bug here.
		return entities.EventPage{}, fmt.Errorf("list events: sort %q has no column", q.Sort)
	}
	dir := " DESC"
	if q.Order == entities.OrderAsc {
		dir = " ASC"
	}
	f := queryFilter(q)
	where, whereArgs := f.where(), slices.Clone(f.args)
	if strings.Contains(sortExpr, "$severity") {
		sortExpr = strings.Replace(sortExpr, "$severity", f.arg(severityOrder), 1)
	}
	order := sortExpr + dir
	if q.Sort != entities.EventSortCreatedAt {
		order += ", created_at" + dir
	}
	order += ", id" + dir
	limit, offset := f.arg(q.PageSize), f.arg(int64(q.Page-1)*int64(q.PageSize))

	page := entities.EventPage{Page: int64(q.Page), PageSize: int64(q.PageSize), Events: []entities.Event{}}
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM changecast.events"+where, whereArgs...).Scan(&page.TotalCount); err != nil {
			return fmt.Errorf("count: %w", err)
		}
		rows, err := tx.Query(ctx, "SELECT "+eventSelect+" FROM changecast.events"+where+
			" ORDER BY "+order+" LIMIT "+limit+" OFFSET "+offset, f.args...)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			ev, err := scanEvent(rows)
			if err != nil {
				return err
			}
			page.Events = append(page.Events, ev)
		}
		return rows.Err()
	})
	if err != nil {
		return entities.EventPage{}, redactErr(fmt.Errorf("list events: %w", hintMigrate(err)), db.url)
	}
	return page, nil
}

// EventTypes returns the distinct categories and actions of the events
// owner may see (nil: all events), each sorted bytewise.
func (db *DB) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	types := entities.EventTypes{Categories: []string{}, Actions: []string{}}
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		for _, c := range []struct {
			col string
			out *[]string
		}{{"category", &types.Categories}, {"action", &types.Actions}} {
			f := &eventFilter{}
			f.ownerCond(owner)
			rows, err := tx.Query(ctx, "SELECT DISTINCT "+c.col+` COLLATE "C" FROM changecast.events`+f.where()+" ORDER BY 1", f.args...)
			if err != nil {
				return fmt.Errorf("distinct %s: %w", c.col, err)
			}
			vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("distinct %s: %w", c.col, err)
			}
			*c.out = append(*c.out, vals...)
		}
		return nil
	})
	if err != nil {
		return entities.EventTypes{}, redactErr(fmt.Errorf("event types: %w", hintMigrate(err)), db.url)
	}
	return types, nil
}

// GetEvent returns the event with id, or an error wrapping
// ErrEventNotFound.
func (db *DB) GetEvent(ctx context.Context, id uuid.UUID) (entities.Event, error) {
	ev, err := scanEvent(db.pool.QueryRow(ctx, "SELECT "+eventSelect+" FROM changecast.events WHERE id = $1", id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return entities.Event{}, fmt.Errorf("get event: %w: %s", ErrEventNotFound, id)
	case err != nil:
		return entities.Event{}, redactErr(fmt.Errorf("get event %s: %w", id, hintMigrate(err)), db.url)
	}
	return ev, nil
}

// scanEvent reads one row of eventSelect columns, followed by the extra
// destinations given. Metadata comes back from jsonb re-keyed; it is
// decoded into the Event's map, so Event.Row encodes it with sorted keys
// like a freshly built event.
func scanEvent(row pgx.Row, extra ...any) (entities.Event, error) {
	var (
		ev       entities.Event
		severity string
		status   string
		meta     []byte
	)
	dest := append([]any{&ev.ID, &ev.UserID, &ev.SystemID, &ev.ActedUpon, &ev.Category, &ev.Action,
		&severity, &ev.Description, &meta, &status, &ev.OperationID, &ev.CreatedAt, &ev.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return entities.Event{}, err
	}
	ev.Severity, ev.Status = entities.Severity(severity), entities.EventStatus(status)
	ev.CreatedAt, ev.UpdatedAt = ev.CreatedAt.UTC(), ev.UpdatedAt.UTC()
	dec := json.NewDecoder(bytes.NewReader(meta))
	dec.UseNumber()
	if err := dec.Decode(&ev.Metadata); err != nil {
		return entities.Event{}, fmt.Errorf("metadata of event %s: %w", ev.ID, err)
	}
	if ev.Metadata == nil {
		ev.Metadata = map[string]any{}
	}
	return ev, nil
}

// eventChange makes the Change of one event write. CommitTime is the
// transaction's timestamp (now()); the source position fields stay zero
// for the caller (the journal appender) to fill.
func eventChange(op entities.Operation, ev entities.Event, previous *entities.Row, at time.Time) entities.Change {
	return entities.Change{
		EntityType: entities.EventEntityType,
		Operation:  op,
		EntityID:   ev.ID.String(),
		Payload:    ev.Row(),
		Previous:   previous,
		CommitTime: at.UTC(),
	}
}

// InsertEventTx inserts ev, which must pass ev.Validate, into
// changecast.events within tx and returns its create Change: Payload is
// the stored row (times as PostgreSQL keeps them, in microseconds),
// EntityID the event id, CommitTime the transaction's now(). An error
// leaves tx aborted: roll it back.
func InsertEventTx(ctx context.Context, tx pgx.Tx, ev entities.Event) (entities.Change, error) {
	if err := ev.Validate(); err != nil {
		return entities.Change{}, fmt.Errorf("insert event: %w", err)
	}
	meta, _ := ev.Row().Get("metadata") // the object Event.Row encodes ({} when empty)
	byColumn := map[string]any{
		"id": ev.ID, "user_id": ev.UserID, "system_id": ev.SystemID, "acted_upon": ev.ActedUpon,
		"category": ev.Category, "action": ev.Action, "severity": string(ev.Severity), "description": ev.Description,
		"metadata": json.RawMessage(meta), "status": string(ev.Status), "operation_id": ev.OperationID,
		"created_at": ev.CreatedAt.UTC(), "updated_at": ev.UpdatedAt.UTC(),
	}
	placeholders := make([]string, len(entities.EventColumns))
	args := make([]any, len(entities.EventColumns))
	for i, col := range entities.EventColumns {
		placeholders[i] = "$" + strconv.Itoa(i+1)
		args[i] = byColumn[col]
	}
	var at time.Time
	// ON CONFLICT DO NOTHING: persisting an event again (a retry after a
	// commit whose outcome was unknown) is a no-op, not an error that
	// would fail every retry.
	stored, err := scanEvent(tx.QueryRow(ctx, "INSERT INTO changecast.events ("+eventSelect+") VALUES ("+
		strings.Join(placeholders, ", ")+") ON CONFLICT (id) DO NOTHING RETURNING "+eventSelect+", now()", args...), &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return entities.Change{}, fmt.Errorf("insert event %s: %w", ev.ID, ErrEventExists)
	}
	if err != nil {
		return entities.Change{}, fmt.Errorf("insert event %s: %w", ev.ID, hintMigrate(err))
	}
	return eventChange(entities.OpCreate, stored, nil, at), nil
}

// ErrEventExists is returned (wrapped) by InsertEventTx for an event whose
// id is already stored: it was persisted before (a retry), or two events
// were built from one builder. Nothing is written.
var ErrEventExists = errors.New("an event with this id already exists")

// SetEventStatusTx sets the status of the events ids within tx, updating
// updated_at to now(), and returns one update Change (with Previous) per
// event whose status actually changed, in the order of ids (duplicates
// count once). owner nil may change any event; otherwise only events whose
// user_id is *owner (see the ownership note at the top of this file). If
// an id does not exist or is not owner's, it returns an error wrapping
// ErrEventNotFound that names the first such id, and changes nothing.
// Other errors leave tx aborted: roll it back.
func SetEventStatusTx(ctx context.Context, tx pgx.Tx, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) ([]entities.Change, error) {
	if _, err := entities.ParseEventStatus(string(status)); err != nil {
		return nil, fmt.Errorf("set event status: %w", err)
	}
	ids = uniqueIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	before, _, err := lockEvents(ctx, tx, owner, ids)
	if err != nil {
		return nil, fmt.Errorf("set event status: %w", err)
	}
	rows, err := tx.Query(ctx, "UPDATE changecast.events SET status = $1, updated_at = now() WHERE id = ANY($2) AND status <> $1 RETURNING "+eventSelect+", now()", string(status), ids)
	if err != nil {
		return nil, fmt.Errorf("set event status: %w", hintMigrate(err))
	}
	after := map[uuid.UUID]entities.Change{}
	for rows.Next() {
		var at time.Time
		ev, err := scanEvent(rows, &at)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("set event status: %w", err)
		}
		after[ev.ID] = eventChange(entities.OpUpdate, ev, before[ev.ID].Row(), at)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("set event status: %w", err)
	}
	var changes []entities.Change
	for _, id := range ids {
		if c, ok := after[id]; ok {
			changes = append(changes, c)
		}
	}
	return changes, nil
}

// DeleteEventsTx deletes the events ids within tx and returns one delete
// Change per event, in the order of ids (duplicates count once), with
// Payload the deleted row. Ownership and not-found rules are those of
// SetEventStatusTx: on ErrEventNotFound nothing is deleted.
func DeleteEventsTx(ctx context.Context, tx pgx.Tx, owner *uuid.UUID, ids []uuid.UUID) ([]entities.Change, error) {
	ids = uniqueIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	before, at, err := lockEvents(ctx, tx, owner, ids)
	if err != nil {
		return nil, fmt.Errorf("delete events: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM changecast.events WHERE id = ANY($1)", ids); err != nil {
		return nil, fmt.Errorf("delete events: %w", hintMigrate(err))
	}
	changes := make([]entities.Change, len(ids))
	for i, id := range ids {
		changes[i] = eventChange(entities.OpDelete, before[id], nil, at)
	}
	return changes, nil
}

// lockEvents locks the rows of ids (in id order, so concurrent callers
// cannot deadlock) and returns them with the transaction's now(). Every id
// must exist and, with owner set, belong to *owner; otherwise the error
// wraps ErrEventNotFound and names the first missing id of ids.
func lockEvents(ctx context.Context, tx pgx.Tx, owner *uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]entities.Event, time.Time, error) {
	f := &eventFilter{}
	f.conds = append(f.conds, "id = ANY("+f.arg(ids)+")")
	if owner != nil {
		f.conds = append(f.conds, "user_id = "+f.arg(*owner))
	}
	rows, err := tx.Query(ctx, "SELECT "+eventSelect+", now() FROM changecast.events"+f.where()+" ORDER BY id FOR UPDATE", f.args...)
	if err != nil {
		return nil, time.Time{}, hintMigrate(err)
	}
	defer rows.Close()
	found := make(map[uuid.UUID]entities.Event, len(ids))
	var at time.Time
	for rows.Next() {
		ev, err := scanEvent(rows, &at)
		if err != nil {
			return nil, time.Time{}, err
		}
		found[ev.ID] = ev
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, err
	}
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			return nil, time.Time{}, fmt.Errorf("%w: %s", ErrEventNotFound, id)
		}
	}
	return found, at, nil
}

// uniqueIDs returns ids without repeats, first occurrences kept in order.
func uniqueIDs(ids []uuid.UUID) []uuid.UUID {
	seen := make(map[uuid.UUID]bool, len(ids))
	out := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
