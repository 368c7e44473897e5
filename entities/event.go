package entities

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// EventEntityType is the entity type name under which system events travel
// in Changes, the journal and on the wire ("entity-type": "event"). The
// registry reserves it: no table can be registered under this name.
const EventEntityType = "event"

// Severity is how bad a system event is. The values and their order follow
// syslog (RFC 5424), with success between informational and debug.
type Severity string

// The severities, from worst to mildest.
const (
	Emergency     Severity = "emergency"
	Alert         Severity = "alert"
	Critical      Severity = "critical"
	Error         Severity = "error"
	Warning       Severity = "warning"
	Informational Severity = "informational"
	Success       Severity = "success"
	Debug         Severity = "debug"
)

// Severities lists every Severity from worst (emergency) to mildest
// (debug), the order AtLeast uses.
var Severities = []Severity{Emergency, Alert, Critical, Error, Warning, Informational, Success, Debug}

// ParseSeverity returns the Severity named s (exact, lowercase), or an
// error naming the accepted values.
func ParseSeverity(s string) (Severity, error) {
	if Severity(s).rank() >= 0 {
		return Severity(s), nil
	}
	return "", fmt.Errorf("unknown severity %s; known: %s", echo(s), joinSeverities())
}

// maxEcho bounds how much of a rejected value an error message repeats.
const maxEcho = 64

// echo quotes s for an error message, cut to maxEcho bytes.
func echo(s string) string {
	if len(s) > maxEcho {
		s = s[:maxEcho] + "..."
	}
	return strconv.Quote(s)
}

// rank is the severity's index in Severities (0 = emergency, the worst),
// or -1 for an unknown severity.
func (s Severity) rank() int {
	for i, v := range Severities {
		if v == s {
			return i
		}
	}
	return -1
}

// Valid reports whether s is one of Severities.
func (s Severity) Valid() bool { return s.rank() >= 0 }

// AtLeast reports whether s is as bad as o or worse: Critical.AtLeast(Error)
// and Error.AtLeast(Error) hold, Warning.AtLeast(Error) does not. It is
// false when either severity is unknown.
func (s Severity) AtLeast(o Severity) bool {
	rs, ro := s.rank(), o.rank()
	return rs >= 0 && ro >= 0 && rs <= ro
}

func joinSeverities() string {
	names := make([]string, len(Severities))
	for i, s := range Severities {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// EventStatus says whether a system event has been read. Status is a
// property of the event, not of each user who sees it.
type EventStatus string

// The statuses of a system event. New events are unread.
const (
	StatusRead   EventStatus = "read"
	StatusUnread EventStatus = "unread"
)

// EventStatuses lists every EventStatus.
var EventStatuses = []EventStatus{StatusRead, StatusUnread}

// ParseEventStatus returns the EventStatus named s, or an error naming the
// accepted values.
func ParseEventStatus(s string) (EventStatus, error) {
	for _, v := range EventStatuses {
		if string(v) == s {
			return v, nil
		}
	}
	return "", fmt.Errorf("unknown event status %s; known: read, unread", echo(s))
}

// Metadata keys with a meaning of their own.
const (
	// MetaErr holds the error's message; required from severity error
	// up.
	MetaErr = "err"
	// MetaDoc holds an absolute http(s) URL of the documentation that
	// explains what to do.
	MetaDoc = "doc"
)

// ErrInvalidEvent is wrapped by the errors of EventBuilder.Build and
// Event.Validate.
var ErrInvalidEvent = errors.New("invalid event")

// Event is a system event: something changecast itself reports
// (docs/events.md), persisted in changecast.events and delivered like an
// entity change of type "event". Its JSON is the wire payload.
//
// An Event is a value: Build gives each one its own copies of the UUID
// pointers and of Metadata. Code that receives an Event must not mutate
// Metadata (or what UserID, SystemID and ActedUpon point to) in place; copy
// first.
type Event struct {
	// ID identifies the event (a UUIDv7, so ids sort by creation time).
	ID uuid.UUID `json:"id"`
	// UserID is the user the event concerns; nil for an event about the
	// system as a whole, which every user allowed to see events sees.
	UserID *uuid.UUID `json:"user_id"`
	// SystemID identifies the changecast instance that emitted the
	// event; nil if not set.
	SystemID *uuid.UUID `json:"system_id"`
	// ActedUpon is the id of the thing the event is about (an entity, a
	// connection); nil if none.
	ActedUpon *uuid.UUID `json:"acted_upon"`
	// Category groups events ("connection", "replication"); snake_case.
	Category string `json:"category"`
	// Action is what happened within the category ("ping",
	// "lag_exceeded"); snake_case.
	Action string `json:"action"`
	// Severity is how bad it is.
	Severity Severity `json:"severity"`
	// Description is a human sentence.
	Description string `json:"description"`
	// Metadata holds details, JSON values only (see EventBuilder.
	// WithMetadata); never nil once built, and encoded as {} when empty.
	Metadata map[string]any `json:"metadata"`
	// Status is read or unread.
	Status EventStatus `json:"status"`
	// OperationID ties together the events of one operation.
	OperationID uuid.UUID `json:"operation_id"`
	// CreatedAt and UpdatedAt are UTC, truncated to microseconds (what
	// PostgreSQL stores). UpdatedAt moves on a status change.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// MarshalJSON encodes the event with metadata {} when it is nil, the
// times in UTC, and without HTML escaping of its own.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event // no MarshalJSON: no recursion
	p := plain(e)
	if p.Metadata == nil {
		p.Metadata = map[string]any{}
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	// No HTML escaping here, like the journal's encoder; an outer encoder
	// that escapes HTML still does.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Validate reports, in one error wrapping ErrInvalidEvent, every way e
// breaks the rules Build enforces: an id, operation id and times are set,
// category and action are snake_case, severity and status are known, a
// user, system or acted-upon id is not the nil UUID, severity error or
// worse carries metadata "err", metadata "doc" is an absolute http(s) URL,
// and the metadata encodes as JSON.
func (e Event) Validate() error {
	var problems []string
	if e.ID == uuid.Nil {
		problems = append(problems, "id is the nil UUID; create events with entities.NewEvent()")
	}
	if e.OperationID == uuid.Nil {
		problems = append(problems, "operation_id is the nil UUID; create events with entities.NewEvent()")
	}
	if e.CreatedAt.IsZero() || e.UpdatedAt.IsZero() {
		problems = append(problems, "created_at and updated_at must be set; create events with entities.NewEvent()")
	}
	for _, f := range []struct {
		name string
		id   *uuid.UUID
	}{{"user_id", e.UserID}, {"system_id", e.SystemID}, {"acted_upon", e.ActedUpon}} {
		if f.id != nil && *f.id == uuid.Nil {
			problems = append(problems, f.name+" is the nil UUID; leave it unset (nil) instead")
		}
	}
	problems = appendSnake(problems, "category", e.Category, "connection")
	problems = appendSnake(problems, "action", e.Action, "ping")
	switch {
	case e.Severity == "":
		problems = append(problems, "severity is required; known: "+joinSeverities())
	case !e.Severity.Valid():
		problems = append(problems, fmt.Sprintf("unknown severity %q; known: %s", e.Severity, joinSeverities()))
	case e.Severity.AtLeast(Error):
		if v, ok := e.Metadata[MetaErr]; !ok || v == nil || v == "" {
			problems = append(problems, fmt.Sprintf("severity %q requires metadata key %q with the error's message (severities error and worse: emergency, alert, critical, error)", e.Severity, MetaErr))
		}
	}
	if _, err := ParseEventStatus(string(e.Status)); err != nil {
		problems = append(problems, err.Error())
	}
	if v, ok := e.Metadata[MetaDoc]; ok {
		if p := checkDoc(v); p != "" {
			problems = append(problems, p)
		}
	}
	if _, err := json.Marshal(e.Metadata); err != nil {
		problems = append(problems, fmt.Sprintf("metadata does not encode as JSON: %v", err))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w %s/%s: %s", ErrInvalidEvent, orEmpty(e.Category), orEmpty(e.Action), strings.Join(problems, "; "))
	}
	return nil
}

func orEmpty(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s
}

func appendSnake(problems []string, field, v, example string) []string {
	switch {
	case v == "":
		return append(problems, fmt.Sprintf("%s is required (snake_case, e.g. %q)", field, example))
	case !snakeName.MatchString(v):
		return append(problems, fmt.Sprintf("%s %q is not snake_case (lowercase ASCII letters and digits in words joined by single underscores, starting with a letter, e.g. %q)", field, v, example))
	}
	return problems
}

// checkDoc returns the problem with a metadata "doc" value, or "".
func checkDoc(v any) string {
	s, ok := v.(string)
	if !ok {
		return fmt.Sprintf("metadata %q must be a string URL, got %T", MetaDoc, v)
	}
	u, err := url.Parse(s)
	if err != nil || (!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")) || u.Host == "" || u.Opaque != "" {
		return fmt.Sprintf("metadata %q %q is not an absolute http(s) URL (e.g. \"https://example.com/docs/events.md\")", MetaDoc, s)
	}
	return ""
}

// Row returns the event as a Row, the payload of its Changes: the columns
// of EventColumns sorted by name, each in its JSON form (ids as strings or
// null, metadata as an object with sorted keys, times RFC 3339 in UTC).
// The Row's JSON is the same object as the Event's.
func (e Event) Row() *Row {
	meta, err := encodeMetadata(e.Metadata)
	if err != nil {
		// Validate rejects such metadata; keep the row encodable.
		meta = json.RawMessage(`{}`)
	}
	return RowOf(map[string]any{
		"id":           e.ID,
		"user_id":      uuidOrNil(e.UserID),
		"system_id":    uuidOrNil(e.SystemID),
		"acted_upon":   uuidOrNil(e.ActedUpon),
		"category":     e.Category,
		"action":       e.Action,
		"severity":     string(e.Severity),
		"description":  e.Description,
		"metadata":     meta,
		"status":       string(e.Status),
		"operation_id": e.OperationID,
		"created_at":   e.CreatedAt.UTC(),
		"updated_at":   e.UpdatedAt.UTC(),
	})
}

// EventColumns lists the columns of an event Row (and of the events
// table), in table order.
var EventColumns = []string{"id", "user_id", "system_id", "acted_upon", "category", "action", "severity", "description", "metadata", "status", "operation_id", "created_at", "updated_at"}

func uuidOrNil(id *uuid.UUID) any {
	if id == nil {
		return nil
	}
	return *id
}

// encodeMetadata encodes metadata as a JSON object with sorted keys; nil
// encodes as {}.
func encodeMetadata(m map[string]any) (json.RawMessage, error) {
	if m == nil {
		return json.RawMessage(`{}`), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return json.RawMessage(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
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

// EventBuilder builds an Event step by step; see NewEvent. Its methods
// return the builder, for chaining. A builder is not safe for concurrent
// use; the Events it builds are independent values.
type EventBuilder struct {
	ev   Event
	meta map[string]any
}

// NewEvent starts an event: a new id (UUIDv7) and operation id, created_at
// = updated_at = now (UTC, microseconds), status unread. Set at least the
// category, action and severity, then Build:
//
//	ev, err := entities.NewEvent().
//		FromSystem(systemID).
//		WithCategory("connection").WithAction("unreachable").
//		WithSeverity(entities.Error).
//		WithDescription("PostgreSQL is unreachable; retrying").
//		WithMetadata(map[string]any{"err": err, "doc": docURL}).
//		Build()
func NewEvent() *EventBuilder {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &EventBuilder{ev: Event{
		ID:          uuid.Must(uuid.NewV7()),
		OperationID: uuid.Must(uuid.NewV7()),
		Status:      StatusUnread,
		CreatedAt:   now,
		UpdatedAt:   now,
	}}
}

func uuidPtr(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// ActedUpon sets the id of what the event is about. uuid.Nil clears it.
func (b *EventBuilder) ActedUpon(id uuid.UUID) *EventBuilder {
	b.ev.ActedUpon = uuidPtr(id)
	return b
}

// FromUser sets the user the event concerns: only that user and admins
// receive it. uuid.Nil clears it (an event for everyone allowed to see
// events).
func (b *EventBuilder) FromUser(id uuid.UUID) *EventBuilder {
	b.ev.UserID = uuidPtr(id)
	return b
}

// FromSystem sets the id of the emitting changecast instance. uuid.Nil
// clears it.
func (b *EventBuilder) FromSystem(id uuid.UUID) *EventBuilder {
	b.ev.SystemID = uuidPtr(id)
	return b
}

// WithOperationID replaces the generated operation id, to tie this event
// to others of the same operation. uuid.Nil keeps the current one.
func (b *EventBuilder) WithOperationID(id uuid.UUID) *EventBuilder {
	if id != uuid.Nil {
		b.ev.OperationID = id
	}
	return b
}

// WithCategory sets the category (snake_case, checked by Build).
func (b *EventBuilder) WithCategory(category string) *EventBuilder {
	b.ev.Category = category
	return b
}

// WithAction sets the action (snake_case, checked by Build).
func (b *EventBuilder) WithAction(action string) *EventBuilder {
	b.ev.Action = action
	return b
}

// WithSeverity sets the severity (checked by Build).
func (b *EventBuilder) WithSeverity(s Severity) *EventBuilder {
	b.ev.Severity = s
	return b
}

// WithDescription sets the human description.
func (b *EventBuilder) WithDescription(description string) *EventBuilder {
	b.ev.Description = description
	return b
}

// WithMetadata replaces the metadata. The map is read (and copied) by
// Build, not here. Values must encode as JSON; error values become their
// Error() text, at any depth of maps and slices. Key "err" (MetaErr) is
// required from severity error up; key "doc" (MetaDoc), if present, must
// be an absolute http(s) URL string.
func (b *EventBuilder) WithMetadata(m map[string]any) *EventBuilder {
	b.meta = m
	return b
}

// Build validates the event and returns it, or an error wrapping
// ErrInvalidEvent that names every problem (see Event.Validate). The
// returned Event shares nothing with the builder or with the map given to
// WithMetadata: metadata is normalized (errors rendered as text) and deep
// copied, so later builder calls or changes to that map do not affect it.
//
// Calling Build again returns another independent Event with the same id,
// operation id and timestamps: one builder describes one event. Persisting
// both would collide on the id; use NewEvent for each new event.
func (b *EventBuilder) Build() (Event, error) {
	ev := b.ev
	ev.UserID = copyUUID(ev.UserID)
	ev.SystemID = copyUUID(ev.SystemID)
	ev.ActedUpon = copyUUID(ev.ActedUpon)
	meta, err := normalizeMetadata(b.meta)
	if err != nil {
		return Event{}, fmt.Errorf("%w %s/%s: %v", ErrInvalidEvent, orEmpty(ev.Category), orEmpty(ev.Action), err)
	}
	ev.Metadata = meta
	if err := ev.Validate(); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// MustBuild is Build for events known at compile time; it panics if Build
// fails.
func (b *EventBuilder) MustBuild() Event {
	ev, err := b.Build()
	if err != nil {
		panic(err)
	}
	return ev
}

func copyUUID(id *uuid.UUID) *uuid.UUID {
	if id == nil {
		return nil
	}
	c := *id
	return &c
}

// normalizeMetadata returns a deep copy of m made only of JSON values
// (map[string]any, []any, string, bool, json.Number, nil): errors become
// their text, and everything else goes through encoding/json. nil gives
// an empty map.
func normalizeMetadata(m map[string]any) (map[string]any, error) {
	if len(m) == 0 {
		return map[string]any{}, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rendered := make(map[string]any, len(m))
	for _, k := range keys {
		rendered[k] = renderErrors(m[k], 0)
	}
	b, err := json.Marshal(rendered)
	if err != nil {
		for _, k := range keys {
			if _, kerr := json.Marshal(rendered[k]); kerr != nil {
				return nil, fmt.Errorf("metadata %q does not encode as JSON: %v", k, kerr)
			}
		}
		return nil, fmt.Errorf("metadata does not encode as JSON: %v", err)
	}
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("metadata: %v", err)
	}
	return out, nil
}

// maxMetadataDepth bounds renderErrors' recursion (a self-referencing
// structure fails later, in encoding/json, with a clear error).
const maxMetadataDepth = 32

var (
	errorType     = reflect.TypeFor[error]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
)

// renderErrors replaces error values by their Error() text, inside maps
// with string keys, slices and arrays too. Values that marshal themselves
// are left alone.
func renderErrors(v any, depth int) any {
	if v == nil || depth > maxMetadataDepth {
		return v
	}
	rv := reflect.ValueOf(v)
	if rv.Type().Implements(marshalerType) {
		return v
	}
	if err, ok := v.(error); ok {
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return nil
		}
		return err.Error()
	}
	switch rv.Kind() {
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String || !mayHoldErrors(rv.Type().Elem()) {
			return v
		}
		if rv.IsNil() {
			return nil
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			out[it.Key().String()] = renderErrors(it.Value().Interface(), depth+1)
		}
		return out
	case reflect.Slice, reflect.Array:
		if !mayHoldErrors(rv.Type().Elem()) {
			return v
		}
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = renderErrors(rv.Index(i).Interface(), depth+1)
		}
		return out
	}
	return v
}

// mayHoldErrors reports whether values of type t can be or contain an
// error that renderErrors would render: interfaces (any, error), types
// implementing error, and maps and slices of those.
func mayHoldErrors(t reflect.Type) bool {
	for range maxMetadataDepth {
		switch {
		case t.Implements(errorType), t.Kind() == reflect.Interface:
			return true
		case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String,
			t.Kind() == reflect.Slice, t.Kind() == reflect.Array:
			t = t.Elem()
		default:
			return false
		}
	}
	return false
}
