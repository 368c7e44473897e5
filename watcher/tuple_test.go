package watcher

import (
	"bytes"
	"testing"

	"github.com/jackc/pglogrepl"
)

// FuzzRowMessage checks the in-place reader of Insert, Update and Delete
// messages on arbitrary bytes: it never panics, and whenever it and
// pglogrepl.Parse both accept a message, they read the same tuples. The seed corpus
// is in testdata/fuzz/FuzzRowMessage.
func FuzzRowMessage(f *testing.F) {
	f.Add(tuple(append(u32([]byte{'I'}, 1), 'N'), "1", nil, "\x00u", "héllo"))
	up := tuple(append(u32([]byte{'U'}, 1), 'O'), "1", "old")
	f.Add(tuple(append(up, 'N'), "1", "new"))
	f.Add(tuple(append(u32([]byte{'U'}, 1), 'N'), "2"))
	f.Add(tuple(append(u32([]byte{'D'}, 1), 'K'), "2", nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isRowMessage(b) {
			return
		}
		var m rowMessage
		if err := m.parse(b); err != nil {
			return
		}
		msg, err := parseMessage(b)
		if err != nil {
			return // pglogrepl refuses some well-formed edge cases (a tuple of no columns)
		}
		var relID uint32
		var oldT, newT *pglogrepl.TupleData
		var oldKind uint8
		switch x := msg.(type) {
		case *pglogrepl.InsertMessage:
			relID, newT = x.RelationID, x.Tuple
		case *pglogrepl.UpdateMessage:
			relID, oldKind, oldT, newT = x.RelationID, x.OldTupleType, x.OldTuple, x.NewTuple
		case *pglogrepl.DeleteMessage:
			relID, oldKind, oldT = x.RelationID, x.OldTupleType, x.OldTuple
		default:
			t.Fatalf("pglogrepl read %q as %T", b, msg)
		}
		if relID != m.relID || oldKind != m.oldKind || (oldT != nil) != m.hasOld || (newT != nil) != m.hasNew {
			t.Fatalf("%q: relation %d/%d, old kind %q/%q, old %v/%v, new %v/%v", b, m.relID, relID, m.oldKind, oldKind, m.hasOld, oldT != nil, m.hasNew, newT != nil)
		}
		same := func(mine *tupleData, theirs *pglogrepl.TupleData) {
			if theirs == nil {
				return
			}
			if len(mine.kinds) != len(theirs.Columns) {
				t.Fatalf("%q: %d columns, pglogrepl %d", b, len(mine.kinds), len(theirs.Columns))
			}
			for i, c := range theirs.Columns {
				if mine.kinds[i] != c.DataType || !bytes.Equal(mine.data[i], c.Data) {
					t.Fatalf("%q column %d: %q %q, pglogrepl %q %q", b, i, mine.kinds[i], mine.data[i], c.DataType, c.Data)
				}
			}
		}
		same(&m.old, oldT)
		same(&m.cur, newT)
	})
}
