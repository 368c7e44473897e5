// Package entitiestest holds helpers for tests of the packages that use
// entities: code that tests need and production code does not, kept out of
// the entities package so that no program links it.
package entitiestest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// EventFromRow converts an event Row (entities.Event.Row, or one read back
// from the journal or a frame) back to an Event. Numbers in metadata
// become json.Number.
func EventFromRow(r *entities.Row) (entities.Event, error) {
	var (
		e    entities.Event
		errs []string
	)
	fail := func(col string, err error) { errs = append(errs, fmt.Sprintf("%s: %v", col, err)) }
	for _, col := range entities.EventColumns {
		raw, ok := r.Get(col)
		var v any = json.RawMessage(raw)
		if !ok {
			errs = append(errs, col+": missing")
			continue
		}
		var err error
		switch col {
		case "id":
			e.ID, err = rowUUID(v)
		case "operation_id":
			e.OperationID, err = rowUUID(v)
		case "user_id":
			e.UserID, err = rowNullUUID(v)
		case "system_id":
			e.SystemID, err = rowNullUUID(v)
		case "acted_upon":
			e.ActedUpon, err = rowNullUUID(v)
		case "category":
			e.Category, err = rowString(v)
		case "action":
			e.Action, err = rowString(v)
		case "severity":
			var s string
			s, err = rowString(v)
			e.Severity = entities.Severity(s)
		case "description":
			e.Description, err = rowString(v)
		case "status":
			var s string
			s, err = rowString(v)
			e.Status = entities.EventStatus(s)
		case "metadata":
			e.Metadata, err = rowMetadata(v)
		case "created_at":
			e.CreatedAt, err = rowTime(v)
		case "updated_at":
			e.UpdatedAt, err = rowTime(v)
		}
		if err != nil {
			fail(col, err)
		}
	}
	if len(errs) > 0 {
		return entities.Event{}, fmt.Errorf("event from row: %s", strings.Join(errs, "; "))
	}
	return e, nil
}

// unraw turns a json.RawMessage into a Go value (strings stay strings,
// null becomes nil).
func unraw(v any) (any, error) {
	raw, ok := v.(json.RawMessage)
	if !ok {
		return v, nil
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

func rowString(v any) (string, error) {
	v, err := unraw(v)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %T", v)
	}
	return s, nil
}

func rowUUID(v any) (uuid.UUID, error) {
	id, err := rowNullUUID(v)
	if err != nil {
		return uuid.Nil, err
	}
	if id == nil {
		return uuid.Nil, errors.New("want a uuid, got null")
	}
	return *id, nil
}

func rowTime(v any) (time.Time, error) {
	v, err := unraw(v)
	if err != nil {
		return time.Time{}, err
	}
	switch x := v.(type) {
	case time.Time:
		return x.UTC(), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return time.Time{}, err
		}
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("want a time, got %T", v)
}

func rowMetadata(v any) (map[string]any, error) {
	var b []byte
	switch x := v.(type) {
	case nil:
		return map[string]any{}, nil
	case json.RawMessage:
		b = x
	case []byte:
		b = x
	case string:
		b = []byte(x)
	case map[string]any:
		// A JSON round trip gives the same shape as a built event's
		// metadata: a deep copy of JSON values, numbers as json.Number.
		var err error
		if b, err = json.Marshal(x); err != nil {
			return nil, fmt.Errorf("want a JSON object: %w", err)
		}
	default:
		return nil, fmt.Errorf("want a JSON object, got %T", v)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("want a JSON object: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

func rowNullUUID(v any) (*uuid.UUID, error) {
	v, err := unraw(v)
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case uuid.UUID:
		return &x, nil
	case *uuid.UUID:
		if x == nil {
			return nil, nil
		}
		id := *x
		return &id, nil
	case [16]byte:
		id := uuid.UUID(x)
		return &id, nil
	case string:
		id, err := uuid.Parse(x)
		if err != nil {
			return nil, err
		}
		return &id, nil
	}
	return nil, fmt.Errorf("want a uuid, got %T", v)
}

// WithColumn returns a copy of r (members sorted by name) in which column
// name holds v's JSON (encoding/json, without HTML escaping), added or
// replaced; r is not modified. It panics if v does not encode.
func WithColumn(r *entities.Row, name string, v any) *entities.Row {
	m := make(map[string]any, r.Len()+1)
	for i := range r.Len() {
		k, raw := r.At(i)
		m[k] = json.RawMessage(raw)
	}
	m[name] = v
	return entities.RowOf(m)
}
