package wire

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/jsonenc"
)

// Frame namespaces and names. Every frame other than an entity change is
// {"namespace": ..., "name": ..., "id": ..., "args": ...}.
const (
	// NamespaceEvents holds requests, responses, control and
	// system_state frames.
	NamespaceEvents = "events"
	// NamespaceError holds error frames (name NameError).
	NamespaceError = "error"

	NameControl     = "control"
	NameResponse    = "response"
	NameError       = "error"
	NameSystemState = "system_state"
)

// Request names a client sends in the events namespace; each gets exactly
// one response or error frame back with the request's id.
const (
	RequestSubscribe   = "subscribe"
	RequestUnsubscribe = "unsubscribe"
	RequestFilter      = "filter"
	RequestPing        = "ping"
)

// SystemStateTopic is the name a subscribe or unsubscribe request lists to
// start or stop the periodic system_state frames (SysAdm's "system-state").
const SystemStateTopic = "system-state"

// ControlType is the type of a control frame.
type ControlType string

// The control frame types (docs/protocol.md).
const (
	ControlResyncRequired ControlType = "resync-required"
	ControlLagging        ControlType = "lagging"
	ControlCaughtUp       ControlType = "caught-up"
	ControlShutdown       ControlType = "shutdown"
	ControlTokenExpired   ControlType = "token-expired"
	// ControlSnapshotComplete follows a snapshot's rows and the changes
	// they do not contain; its cursor is where the stream continues
	// (docs/protocol.md, "Snapshots").
	ControlSnapshotComplete ControlType = "snapshot-complete"
)

// OperationSnapshot is the "operation" of a snapshot row frame: a current
// row, not a change. It carries no cursor.
const OperationSnapshot = "snapshot"

// SnapshotArg is the key of a subscribe or filter request's args that asks
// for a snapshot.
const SnapshotArg = "snapshot"

// Request is an envelope request a client sends. Args is omitted when nil.
type Request struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	ID        string          `json:"id"`
	Args      json.RawMessage `json:"args,omitempty"`
}

// ControlFrame is {"namespace":"events","name":"control","args":{...}}.
type ControlFrame struct {
	Namespace string      `json:"namespace"`
	Name      string      `json:"name"`
	Args      ControlArgs `json:"args"`
}

// ControlArgs are a control frame's args. Cursor is a decimal cursor,
// omitted when the frame carries none; a response frame's args carry a
// cursor of the same form.
type ControlArgs struct {
	Type    ControlType `json:"type"`
	Cursor  string      `json:"cursor,omitempty"`
	Message string      `json:"message,omitempty"`
}

// ErrorFrame is {"namespace":"error","name":"error","id":"...","args":{...}}.
// ID is the refused request's id, empty for a GARM filter message (which
// carries none).
type ErrorFrame struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	Args      ErrorArgs `json:"args"`
}

// ErrorArgs are an error frame's args: Code is an HTTP status as a decimal
// string ("400" for a bad request or filter, "403" for a type outside the
// token's scope).
type ErrorArgs struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// committedAtLayout is RFC 3339 in UTC with exactly six fractional digits,
// PostgreSQL's timestamp precision.
const committedAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// EncodeChange encodes c as the entity-change frame the server sends. Keys
// are written in a fixed order, the first three exactly GARM's:
// entity-type, operation, payload, then cursor (only once journaled),
// committed-at, previous (only for updates that carry one) and unchanged
// (only when PostgreSQL left columns out that nothing could fill). A nil
// payload is sent as {} so clients can always index into it. Rows are
// written as their bytes (entities.Row is its JSON), never re-encoded, so
// a change encodes the same way every time; clients that re-emit frames
// (changecast tail --output json) get exactly the server's bytes.
func EncodeChange(c entities.Change) ([]byte, error) {
	return AppendChange(make([]byte, 0, ChangeSizeHint(&c)), &c), nil
}

// ChangeSizeHint is about the length of c's frame (EncodeChange), for
// sizing a buffer once.
func ChangeSizeHint(c *entities.Change) int {
	return 128 + len(c.EntityType) + len(c.Payload.JSON()) + len(c.Previous.JSON())
}

// AppendChange appends c's frame, exactly as EncodeChange returns it, to b.
func AppendChange(b []byte, c *entities.Change) []byte {
	b = append(b, `{"entity-type":`...)
	b = jsonenc.AppendString(b, c.EntityType)
	b = append(b, `,"operation":`...)
	b = jsonenc.AppendString(b, string(c.Operation))
	b = append(b, `,"payload":`...)
	if c.Payload == nil {
		b = append(b, `{}`...)
	} else {
		b = append(b, c.Payload.JSON()...) // the row is its JSON: written as it is
	}
	if c.Cursor != 0 {
		b = append(b, `,"cursor":"`...)
		b = strconv.AppendInt(b, c.Cursor, 10)
		b = append(b, '"')
	}
	if !c.CommitTime.IsZero() {
		b = append(b, `,"committed-at":"`...)
		b = c.CommitTime.UTC().AppendFormat(b, committedAtLayout)
		b = append(b, '"')
	}
	if c.Operation == entities.OpUpdate && c.Previous != nil {
		b = append(b, `,"previous":`...)
		b = append(b, c.Previous.JSON()...)
	}
	if len(c.Unchanged) > 0 {
		// Columns PostgreSQL did not send (unchanged TOAST values) that
		// the journal could not fill: absent from payload, never null.
		b = append(b, `,"unchanged":[`...)
		for i, col := range c.Unchanged {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonenc.AppendString(b, col)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// WriteJSON appends v's JSON without HTML escaping (the frames are not
// embedded in HTML) and without the encoder's trailing newline, as every
// frame of the protocol is written, by the server and the Go client alike.
// Map keys come out sorted, so a payload encodes the same way every time.
func WriteJSON(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode always ends with '\n'
	return nil
}
