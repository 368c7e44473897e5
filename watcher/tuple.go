package watcher

import (
	"encoding/binary"
	"fmt"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pglogrepl"
)

// tupleData is a pgoutput TupleData read in place: column i's kind
// ('n' NULL, 'u' unchanged TOAST, 't' text, 'b' binary) and, for 't' and
// 'b', its bytes, which point into the message. The slices are reused
// from one message to the next, so reading a row allocates nothing.
type tupleData struct {
	kinds []byte
	data  [][]byte
}

// rowMessage is an Insert, Update or Delete message read in place
// (pgoutput protocol 1, see PostgreSQL's "Logical Replication Message
// Formats"). pglogrepl.Parse allocates a column struct and a copy of each
// value; the watcher reads these three messages, the bulk of the stream,
// itself, and every other message through parseMessage.
type rowMessage struct {
	relID   uint32
	op      entities.Operation
	oldKind byte // 'K' (key columns only), 'O' (whole row) or 0 (none)
	old     tupleData
	cur     tupleData
	hasOld  bool
	hasNew  bool
}

// isRowMessage reports whether b is an Insert, Update or Delete.
func isRowMessage(b []byte) bool {
	return len(b) > 0 && (b[0] == 'I' || b[0] == 'U' || b[0] == 'D')
}

// parse reads b, which isRowMessage accepted. The tuples' bytes point into
// b: use them before b is reused.
func (m *rowMessage) parse(b []byte) error {
	kind := b[0]
	if len(b) < 6 {
		return fmt.Errorf("malformed %q message: %d bytes", kind, len(b))
	}
	m.relID = binary.BigEndian.Uint32(b[1:5])
	m.oldKind, m.hasOld, m.hasNew = 0, false, false
	i := 5
	var err error
	switch kind {
	case 'I':
		m.op = entities.OpCreate
		if b[i] != 'N' {
			return fmt.Errorf("malformed 'I' message: tuple marker %q, want 'N'", b[i])
		}
		m.hasNew = true
		i, err = m.cur.parse(b, i+1)
	case 'U':
		m.op = entities.OpUpdate
		if b[i] == 'K' || b[i] == 'O' {
			m.oldKind, m.hasOld = b[i], true
			if i, err = m.old.parse(b, i+1); err != nil {
				break
			}
			if i >= len(b) {
				return fmt.Errorf("malformed 'U' message: no new tuple")
			}
		}
		if b[i] != 'N' {
			return fmt.Errorf("malformed 'U' message: tuple marker %q, want 'N'", b[i])
		}
		m.hasNew = true
		i, err = m.cur.parse(b, i+1)
	case 'D':
		m.op = entities.OpDelete
		if b[i] != 'K' && b[i] != 'O' {
			return fmt.Errorf("malformed 'D' message: tuple marker %q, want 'K' or 'O'", b[i])
		}
		m.oldKind, m.hasOld = b[i], true
		i, err = m.old.parse(b, i+1)
	}
	if err != nil {
		return fmt.Errorf("malformed %q message: %v", kind, err)
	}
	if i != len(b) {
		return fmt.Errorf("malformed %q message: %d bytes after the tuple", kind, len(b)-i)
	}
	return nil
}

// parse reads the TupleData at b[i:] and returns the index after it.
func (t *tupleData) parse(b []byte, i int) (int, error) {
	if i+2 > len(b) {
		return i, fmt.Errorf("truncated column count")
	}
	n := int(binary.BigEndian.Uint16(b[i:]))
	i += 2
	if n > len(b)-i { // each column takes a byte at least
		return i, fmt.Errorf("%d columns in %d bytes", n, len(b)-i)
	}
	t.kinds, t.data = t.kinds[:0], t.data[:0]
	for range n {
		if i >= len(b) {
			return i, fmt.Errorf("truncated column")
		}
		k := b[i]
		i++
		var d []byte
		switch k {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if i+4 > len(b) {
				return i, fmt.Errorf("truncated value length")
			}
			l := int(binary.BigEndian.Uint32(b[i:]))
			i += 4
			if l < 0 || l > len(b)-i {
				return i, fmt.Errorf("value of %d bytes in %d", l, len(b)-i)
			}
			d = b[i : i+l : i+l]
			i += l
		default:
			return i, fmt.Errorf("column kind %q", k)
		}
		t.kinds = append(t.kinds, k)
		t.data = append(t.data, d)
	}
	return i, nil
}
