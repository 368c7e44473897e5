package entities

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
)

var eventType = sync.OnceValue(func() EntityType {
	si, err := structColumns(reflect.TypeOf(Event{}))
	if err != nil {
		panic(fmt.Sprintf("entities: Event struct: %v", err))
	}
	return EntityType{
		Name:    EventEntityType,
		Table:   "events",
		Key:     "id",
		GoType:  reflect.TypeOf(Event{}),
		Columns: si.cols,
	}
})

// EventType describes system events as an entity type, for code that
// treats them like the registry's types (filters, field matching, typed
// decoding). It has no secret columns: secret-looking metadata keys are
// stripped from the metadata object like any json value's.
func EventType() EntityType { return eventType() }

// OwnerOf returns the user a system event change concerns: the payload's
// user_id as text, and false when the event concerns no user (or ch is not
// an event). An unreadable user_id yields ("", true): owned by no one. Payload values may be typed (uuid.UUID, *uuid.UUID, string,
// nil) or raw JSON read back from the journal.
func OwnerOf(ch *Change) (string, bool) {
	if ch.EntityType != EventEntityType {
		return "", false
	}
	v, ok := ch.Payload.Get("user_id")
	if !ok || string(v) == "null" {
		return "", false
	}
	id, err := rowNullUUID(json.RawMessage(v))
	switch {
	case err != nil:
		// Fail closed: an owner we cannot read is nobody's, so only
		// admins see the event (no token has an empty subject).
		return "", true
	case id == nil:
		return "", false
	}
	return id.String(), true
}
