package watcher

import (
	"encoding/binary"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pgx/v5/pgtype"
)

// Hand-built pgoutput (protocol 1) messages, for what a real server rarely
// sends and for malformed input.

func u32(b []byte, v uint32) []byte  { return binary.BigEndian.AppendUint32(b, v) }
func u64(b []byte, v uint64) []byte  { return binary.BigEndian.AppendUint64(b, v) }
func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

type col struct {
	name string
	oid  uint32
	key  bool
}

func relationMsg(id uint32, table string, cols []col) []byte {
	b := u32([]byte{'R'}, id)
	b = cstr(cstr(b, "public"), table)
	b = append(b, 'f')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		flag := byte(0)
		if c.key {
			flag = 1
		}
		b = append(b, flag)
		b = cstr(b, c.name)
		b = u32(b, c.oid)
		b = u32(b, 0xffffffff)
	}
	return b
}

// tuple encodes values: nil = 'n', "\x00u" = 'u', anything else 't'.
func tuple(b []byte, vals ...any) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		switch v := v.(type) {
		case nil:
			b = append(b, 'n')
		case string:
			if v == "\x00u" {
				b = append(b, 'u')
				continue
			}
			b = append(b, 't')
			b = u32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func beginMsg(xid uint32) []byte { return u32(u64(u64([]byte{'B'}, 100), 0), xid) }

func commitMsg(commit, end uint64) []byte { return u64(u64(u64([]byte{'C', 0}, commit), end), 0) }

func TestAssembler_TupleKinds(t *testing.T) {
	reg := testRegistry(t)
	a := newAssembler(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	cols := []col{{"id", pgtype.Int4OID, true}, {"title", pgtype.TextOID, false}, {"body", pgtype.TextOID, false}}
	// An update is 'U', relid, optional 'K' or 'O' tuple, 'N' tuple.
	// Key-only old tuple: 'n' for non-key columns means "not sent"; 'u'
	// with no old value is omitted and listed as unchanged.
	keyOnly := tuple(append(u32([]byte{'U'}, 1), 'K'), "1", nil, nil)
	keyOnly = tuple(append(keyOnly, 'N'), "2", "new", "\x00u")
	// Full old tuple: 'u' is filled from it.
	full := tuple(append(u32([]byte{'U'}, 1), 'O'), "2", "new", "old body")
	full = tuple(append(full, 'N'), "2", nil, "\x00u")
	msgs := [][]byte{
		beginMsg(7),
		relationMsg(1, "notes", cols),
		relationMsg(2, "gadgets", cols), // not registered: ignored
		tuple(append(u32([]byte{'I'}, 2), 'N'), "1", "x", "y"),
		keyOnly,
		full,
		tuple(append(u32([]byte{'D'}, 1), 'K'), "2", nil, nil),
		commitMsg(200, 250),
	}

	var tx *Transaction
	for i, m := range msgs {
		got, err := a.handle(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got != nil {
			tx = got
		}
	}
	if tx == nil || tx.Xid != 7 || tx.CommitLSN != 200 || tx.EndLSN != 250 || len(tx.Changes) != 3 {
		t.Fatalf("transaction = %+v", tx)
	}
	want := []entities.Change{
		{EntityType: "note", Operation: entities.OpUpdate, EntityID: "2", Index: 0,
			Payload: entities.Row{"id": int64(2), "title": "new"}, Previous: entities.Row{"id": int64(1)}, Unchanged: []string{"body"}},
		{EntityType: "note", Operation: entities.OpUpdate, EntityID: "2", Index: 1,
			Payload: entities.Row{"id": int64(2), "title": nil, "body": "old body"}, Previous: entities.Row{"id": int64(2), "title": "new", "body": "old body"}},
		{EntityType: "note", Operation: entities.OpDelete, EntityID: "2", Index: 2, Payload: entities.Row{"id": int64(2)}},
	}
	for i := range want {
		want[i].Xid, want[i].CommitLSN, want[i].EndLSN, want[i].CommitTime = 7, 200, 250, tx.CommitTime
		if !reflect.DeepEqual(tx.Changes[i], want[i]) {
			t.Errorf("change %d:\n got %+v\nwant %+v", i, tx.Changes[i], want[i])
		}
	}
}

func TestAssembler_MalformedIsAnErrorNotAPanic(t *testing.T) {
	cols := []col{{"id", pgtype.Int4OID, true}, {"title", pgtype.TextOID, false}}
	valid := [][]byte{
		relationMsg(1, "notes", cols),
		beginMsg(1),
		tuple(append(u32([]byte{'I'}, 1), 'N'), "1", "x"),
		commitMsg(10, 20),
	}
	for i, m := range valid {
		for n := 0; n < len(m); n++ {
			a := newAssembler(testRegistry(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
			// Prime the state so each message is acceptable in full.
			_, _ = a.handle(valid[0])
			_, _ = a.handle(valid[1])
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("message %d cut to %d bytes panicked: %v", i, n, r)
					}
				}()
				_, _ = a.handle(m[:n])
			}()
		}
	}
	// Protocol misuse is reported.
	a := newAssembler(testRegistry(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := a.handle(valid[2]); err == nil {
		t.Errorf("insert outside a transaction: no error")
	}
	_, _ = a.handle(valid[1])
	if _, err := a.handle(valid[2]); err == nil {
		t.Errorf("insert before its Relation message: no error")
	}
}
