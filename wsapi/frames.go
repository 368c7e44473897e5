package wsapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

// This file encodes what the server sends (docs/protocol.md, server →
// client) with the vocabulary and change-frame encoder of package wire.
// Encoders return bytes; for change frames hub.go builds the complete
// WebSocket frame once (wireFrame), shared by every client that receives
// it.

// encodeChange encodes c as an entity-change frame (wire.EncodeChange).
// The server's call sites hold a *entities.Change.
func encodeChange(c *entities.Change) []byte {
	return wire.AppendChange(make([]byte, 0, wire.ChangeSizeHint(c)), c)
}

// encodeControl encodes a control frame. cursor 0 is omitted.
func encodeControl(t wire.ControlType, cursor int64, message string) []byte {
	f := wire.ControlFrame{Namespace: wire.NamespaceEvents, Name: wire.NameControl, Args: wire.ControlArgs{Type: t, Message: message}}
	if cursor != 0 {
		f.Args.Cursor = strconv.FormatInt(cursor, 10)
	}
	return mustJSON(f)
}

// encodeError encodes an error frame answering the request with id (empty
// for GARM filter messages, which carry none).
func encodeError(id string, code int, message string) []byte {
	return mustJSON(wire.ErrorFrame{Namespace: wire.NamespaceError, Name: wire.NameError, ID: id, Args: wire.ErrorArgs{Code: strconv.Itoa(code), Message: message}})
}

func mustJSON(v any) []byte {
	var b bytes.Buffer
	if err := wire.WriteJSON(&b, v); err != nil {
		// Only strings and fixed structs reach here.
		panic(fmt.Sprintf("wsapi: encode %T: %v", v, err))
	}
	return b.Bytes()
}

// systemStateFrame is SysAdm's periodic subsystem status (docs/protocol.md,
// "System state"; issue 5): {"namespace": "events", "name":
// "system_state", "id": "", "args": {...}}.
type systemStateFrame struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	ID        string `json:"id"`
	Args      any    `json:"args"`
}

func encodeSystemState(args any) []byte {
	return mustJSON(systemStateFrame{Namespace: wire.NamespaceEvents, Name: wire.NameSystemState, ID: "", Args: args})
}

// wireFrame returns payload as one complete WebSocket text frame as a
// server sends it (RFC 6455 §5.2: FIN, opcode 1, unmasked, no extension;
// the server never negotiates compression). Publish builds it once per
// change and every client's writer sends the same bytes, several queued
// frames in one write when a client is behind.
func wireFrame(payload []byte) []byte {
	return appendWireFrame(make([]byte, 0, maxFrameHeader+len(payload)), payload)
}

// appendWireFrame appends payload to dst as one complete frame (see
// wireFrame) and returns the extended slice.
func appendWireFrame(dst, payload []byte) []byte {
	return append(appendFrameHeader(dst, len(payload)), payload...)
}

// maxFrameHeader is the longest header appendFrameHeader writes.
const maxFrameHeader = 10

// appendFrameHeader appends the header of a frame (see wireFrame) whose
// payload is n bytes long.
func appendFrameHeader(dst []byte, n int) []byte {
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
	return dst
}
