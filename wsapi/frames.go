package wsapi

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/changecast/changecast/entities"
)

// This file encodes what the server sends (DESIGN.md §3, server → client).
// Encoders return bytes; for change frames hub.go builds the complete
// WebSocket frame once (wireFrame), shared by every client that receives it.

// ControlType is the type of a control frame.
type ControlType string

// The control frame types of DESIGN.md §3.
const (
	ControlResyncRequired ControlType = "resync-required"
	ControlLagging        ControlType = "lagging"
	ControlCaughtUp       ControlType = "caught-up"
	ControlShutdown       ControlType = "shutdown"
	ControlTokenExpired   ControlType = "token-expired"
)

// committedAtLayout is RFC 3339 in UTC with exactly six fractional digits,
// PostgreSQL's timestamp precision.
const committedAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// EncodeChange encodes c as the entity-change frame the server sends (see
// encodeChange). Clients that re-emit frames (changecast tail --output
// json) use it to produce exactly the server's bytes.
func EncodeChange(c entities.Change) ([]byte, error) { return encodeChange(&c) }

// encodeChange encodes c as an entity-change frame. Keys are written in a
// fixed order, the first three exactly GARM's: entity-type, operation,
// payload, then cursor (only once journaled), committed-at and previous (only
// for updates that carry one). A nil payload is sent as {} so clients can
// always index into it.
func encodeChange(c *entities.Change) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(256)
	b.WriteString(`{"entity-type":`)
	if err := writeJSON(&b, c.EntityType); err != nil {
		return nil, err
	}
	b.WriteString(`,"operation":`)
	if err := writeJSON(&b, string(c.Operation)); err != nil {
		return nil, err
	}
	b.WriteString(`,"payload":`)
	if c.Payload == nil {
		b.WriteString(`{}`)
	} else if err := writeJSON(&b, c.Payload); err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	if c.Cursor != 0 {
		b.WriteString(`,"cursor":"`)
		b.WriteString(strconv.FormatInt(c.Cursor, 10))
		b.WriteByte('"')
	}
	if !c.CommitTime.IsZero() {
		b.WriteString(`,"committed-at":"`)
		b.WriteString(formatCommittedAt(c.CommitTime))
		b.WriteByte('"')
	}
	if c.Operation == entities.OpUpdate && c.Previous != nil {
		b.WriteString(`,"previous":`)
		if err := writeJSON(&b, c.Previous); err != nil {
			return nil, fmt.Errorf("encode previous: %w", err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeJSON appends v's JSON without HTML escaping (the frames are not
// embedded in HTML) and without the encoder's trailing newline. Map keys
// come out sorted, so a payload encodes the same way every time.
func writeJSON(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode always ends with '\n'
	return nil
}

// controlFrame is {"namespace":"events","name":"control","args":{...}}.
type controlFrame struct {
	Namespace string      `json:"namespace"`
	Name      string      `json:"name"`
	Args      controlArgs `json:"args"`
}

type controlArgs struct {
	Type    ControlType `json:"type"`
	Cursor  string      `json:"cursor,omitempty"`
	Message string      `json:"message,omitempty"`
}

// encodeControl encodes a control frame. cursor 0 is omitted.
func encodeControl(t ControlType, cursor int64, message string) []byte {
	f := controlFrame{Namespace: "events", Name: "control", Args: controlArgs{Type: t, Message: message}}
	if cursor != 0 {
		f.Args.Cursor = strconv.FormatInt(cursor, 10)
	}
	return mustJSON(f)
}

// errorFrame is {"namespace":"error","name":"error","id":"...","args":{...}}.
type errorFrame struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	Args      errorArgs `json:"args"`
}

type errorArgs struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// encodeError encodes an error frame answering the request with id (empty
// for GARM filter messages, which carry none).
func encodeError(id string, code int, message string) []byte {
	return mustJSON(errorFrame{Namespace: "error", Name: "error", ID: id, Args: errorArgs{Code: strconv.Itoa(code), Message: message}})
}

func mustJSON(v any) []byte {
	var b bytes.Buffer
	if err := writeJSON(&b, v); err != nil {
		// Only strings and fixed structs reach here.
		panic(fmt.Sprintf("wsapi: encode %T: %v", v, err))
	}
	return b.Bytes()
}

// formatCommittedAt formats a commit time for the wire (committedAtLayout).
func formatCommittedAt(t time.Time) string { return t.UTC().Format(committedAtLayout) }

// systemStateFrame is SysAdm's periodic subsystem status (DESIGN.md §3,
// issue 5): {"namespace": "events", "name": "system_state", "id": "",
// "args": {...}}.
type systemStateFrame struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	ID        string `json:"id"`
	Args      any    `json:"args"`
}

func encodeSystemState(args any) []byte {
	return mustJSON(systemStateFrame{Namespace: envelopeNamespace, Name: "system_state", ID: "", Args: args})
}

// wireFrame returns payload as one complete WebSocket text frame as a
// server sends it (RFC 6455 §5.2: FIN, opcode 1, unmasked, no extension;
// the server never negotiates compression). Publish builds it once per
// change and every client's writer sends the same bytes, several queued
// frames in one write when a client is behind.
func wireFrame(payload []byte) []byte {
	return appendWireFrame(make([]byte, 0, 10+len(payload)), payload)
}

// appendWireFrame appends payload to dst as one complete frame (see
// wireFrame) and returns the extended slice.
func appendWireFrame(dst, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|0x1, byte(n)) // FIN, text
	case n <= 0xFFFF:
		dst = append(dst, 0x80|0x1, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0x80|0x1, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}
