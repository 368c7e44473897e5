package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/changecast/changecast/entities"
)

// defaultRegistry is the registry Decode and ParseFrame use when none is
// given: built once, never mutated.
var defaultRegistry = sync.OnceValue(entities.DefaultRegistry)

// Decode decodes ch's payload into the entity's Go struct, e.g.
// client.Decode[entities.Instance](ch), or entities.Event for a system
// event. For a delete the payload is the deleted row. T must be the Go type
// entities.DefaultRegistry() records for ch.EntityType (entities.Event for
// "event"); anything else is an error naming the right one, as is a
// change without a payload (truncate). Secret columns are never sent, so
// their fields stay zero.
func Decode[T any](ch entities.Change) (T, error) {
	return DecodeWith[T](defaultRegistry(), ch)
}

// DecodePrevious decodes ch's previous row (an update's row before the
// change) like Decode. It is an error when the change carries none: only
// updates do, and only when the server knew it.
func DecodePrevious[T any](ch entities.Change) (T, error) {
	return DecodePreviousWith[T](defaultRegistry(), ch)
}

// DecodeWith is Decode with the registry that knows ch's entity type (for
// types registered beyond the built-in ones).
func DecodeWith[T any](reg *entities.Registry, ch entities.Change) (T, error) {
	return decodeRow[T](reg, ch, ch.Payload, "payload")
}

// DecodePreviousWith is DecodePrevious with the registry that knows ch's
// entity type.
func DecodePreviousWith[T any](reg *entities.Registry, ch entities.Change) (T, error) {
	return decodeRow[T](reg, ch, ch.Previous, "previous row")
}

// lookupType finds an entity type in reg, or system events' type.
func lookupType(reg *entities.Registry, name string) (entities.EntityType, error) {
	if name == entities.EventEntityType {
		return entities.EventType(), nil
	}
	return reg.Lookup(name)
}

func decodeRow[T any](reg *entities.Registry, ch entities.Change, row *entities.Row, what string) (T, error) {
	var v T
	got := reflect.TypeFor[T]()
	et, err := lookupType(reg, ch.EntityType)
	if err != nil {
		return v, fmt.Errorf("decode %s change into %v: %w", ch.EntityType, got, err)
	}
	if et.GoType == nil {
		return v, fmt.Errorf("decode %s change into %v: entity type %q has no Go type; read the payload's fields directly", ch.EntityType, got, ch.EntityType)
	}
	if got != et.GoType {
		return v, fmt.Errorf("decode %s change into %v: a %q payload decodes into %v; use Decode[%v]", ch.EntityType, got, ch.EntityType, et.GoType, et.GoType)
	}
	if row == nil {
		if what == "payload" {
			return v, fmt.Errorf("decode %s %s change into %v: it has no payload", ch.EntityType, ch.Operation, got)
		}
		return v, fmt.Errorf("decode %s %s change into %v: it has no %s (only updates carry one)", ch.EntityType, ch.Operation, got, what)
	}
	if err := json.Unmarshal(row.JSON(), &v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return v, fmt.Errorf("decode %s %s into %v: field %q: JSON %s does not fit %v", ch.EntityType, what, got, te.Field, te.Value, te.Type)
		}
		return v, fmt.Errorf("decode %s %s into %v: %w", ch.EntityType, what, got, err)
	}
	return v, nil
}
