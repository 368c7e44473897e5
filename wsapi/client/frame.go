package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// This file converts between the wire frames of docs/protocol.md and
// entities.Change.

// wireFrame is any server frame, decoded once.
type wireFrame struct {
	EntityType  *string         `json:"entity-type"`
	Operation   string          `json:"operation"`
	Payload     json.RawMessage `json:"payload"`
	Previous    json.RawMessage `json:"previous"`
	Cursor      string          `json:"cursor"`
	CommittedAt string          `json:"committed-at"`
	Unchanged   []string        `json:"unchanged"`

	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	ID        string          `json:"id"`
	Args      json.RawMessage `json:"args"`
}

// frameKind says what a server frame is.
type frameKind int

const (
	kindChange frameKind = iota + 1
	kindControl
	kindResponse
	kindError
)

// frame is a decoded server frame.
type frame struct {
	kind   frameKind
	change entities.Change  // kindChange
	id     string           // kindResponse, kindError: the request id
	ctl    wire.ControlType // kindControl: the control type
	code   string           // kindError
	msg    string           // kindControl, kindError
	cursor int64            // kindControl, kindResponse: args.cursor (0 when absent)
	hasCur bool
}

// parseFrame decodes one server frame. A frame it does not know has kind 0.
func parseFrame(data []byte, reg *entities.Registry) (frame, error) {
	var w wireFrame
	if err := json.Unmarshal(data, &w); err != nil {
		return frame{}, fmt.Errorf("decode server frame: %w", err)
	}
	if w.EntityType != nil {
		ch, err := changeOf(&w, reg)
		return frame{kind: kindChange, change: ch}, err
	}
	var kind frameKind
	switch {
	case w.Namespace == wire.NamespaceEvents && w.Name == wire.NameControl:
		kind = kindControl
	case w.Namespace == wire.NamespaceEvents && w.Name == wire.NameResponse:
		kind = kindResponse
	case w.Namespace == wire.NamespaceError:
		kind = kindError
	default:
		return frame{}, nil // a frame this client does not use (system_state, a later protocol's): skipped
	}
	// One shape for every kind: a control frame's type, cursor and
	// message; a response's cursor; an error frame's code and message
	// (wire.ErrorArgs, whose message is the same field).
	var args struct {
		wire.ControlArgs
		Code string `json:"code"`
	}
	if len(w.Args) > 0 {
		if err := json.Unmarshal(w.Args, &args); err != nil {
			return frame{}, fmt.Errorf("decode server frame %s/%s args: %w", w.Namespace, w.Name, err)
		}
	}
	f := frame{kind: kind, id: w.ID, ctl: args.Type, code: args.Code, msg: args.Message}
	if args.Cursor != "" {
		n, err := parseCursor(args.Cursor)
		if err != nil {
			return frame{}, fmt.Errorf("server frame %s/%s: %w", w.Namespace, w.Name, err)
		}
		f.cursor, f.hasCur = n, true
	}
	return f, nil
}

// ParseFrame decodes an entity-change frame (docs/protocol.md, "Entity
// changes") into an entities.Change, as a Subscription delivers it:
// Payload and Previous hold each field's JSON value as a json.RawMessage,
// EntityID is the value of the type's key column in reg (the "id" field for
// system events and for types reg does not hold), Cursor and
// CommitTime come from "cursor" and "committed-at". A nil reg means
// entities.DefaultRegistry(). Any other frame is an error.
func ParseFrame(data []byte, reg *entities.Registry) (entities.Change, error) {
	if reg == nil {
		reg = defaultRegistry()
	}
	f, err := parseFrame(data, reg)
	if err != nil {
		return entities.Change{}, err
	}
	if f.kind != kindChange {
		return entities.Change{}, errors.New("decode change frame: not an entity-change frame")
	}
	return f.change, nil
}

func changeOf(w *wireFrame, reg *entities.Registry) (entities.Change, error) {
	ch := entities.Change{EntityType: *w.EntityType}
	op, err := entities.ParseOperation(w.Operation)
	if w.Operation == wire.OperationSnapshot {
		op, err = entities.OpSnapshot, nil // a snapshot row (Options.Snapshot)
	}
	if err != nil {
		return ch, fmt.Errorf("decode %s change: %w", ch.EntityType, err)
	}
	ch.Operation = op
	if ch.Payload, err = rowOf(w.Payload); err != nil {
		return ch, fmt.Errorf("decode %s change payload: %w", ch.EntityType, err)
	}
	if op == entities.OpTruncate && len(ch.Payload) == 0 {
		ch.Payload = nil // the server sends {} for a truncate's absent row
	}
	if ch.Previous, err = rowOf(w.Previous); err != nil {
		return ch, fmt.Errorf("decode %s change previous: %w", ch.EntityType, err)
	}
	ch.Unchanged = w.Unchanged
	if w.Cursor != "" {
		if ch.Cursor, err = parseCursor(w.Cursor); err != nil {
			return ch, fmt.Errorf("decode %s change: %w", ch.EntityType, err)
		}
	}
	if w.CommittedAt != "" {
		if ch.CommitTime, err = time.Parse(time.RFC3339Nano, w.CommittedAt); err != nil {
			return ch, fmt.Errorf("decode %s change: committed-at %q: %w", ch.EntityType, w.CommittedAt, err)
		}
	}
	key := "id"
	if et, err := lookupType(reg, ch.EntityType); err == nil {
		key = et.Key
	}
	ch.EntityID = idOf(ch.Payload[key])
	return ch, nil
}

// rowOf decodes a JSON object into a Row of raw values; null or absent is
// a nil Row.
func rowOf(raw json.RawMessage) (entities.Row, error) {
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	row := make(entities.Row, len(m))
	for k, v := range m {
		row[k] = v
	}
	return row, nil
}

// idOf renders a key value as text: a string's contents, a number's
// digits. Other values (null, objects) give "".
func idOf(v any) string {
	raw, ok := v.(json.RawMessage)
	if !ok || len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw)
	}
	return ""
}

func parseCursor(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cursor %q is not a non-negative integer", s)
	}
	return n, nil
}

// MarshalFrame encodes ch as the entity-change frame the server sends:
// "entity-type", "operation", "payload" ({} when nil), then "cursor" and
// "committed-at" when set, "previous" for an update that has one and
// "unchanged" when columns were left out. Payload keys come out sorted, as the server writes them, so a change a
// Subscription delivered encodes back to the bytes received.
func MarshalFrame(ch entities.Change) ([]byte, error) {
	return wire.EncodeChange(ch)
}
