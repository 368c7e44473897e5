package watcher

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
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

func beginMsg(xid uint32) []byte { return beginAt(xid, 200) }

// beginAt is a Begin whose final (commit) LSN is commit.
func beginAt(xid uint32, commit uint64) []byte { return u32(u64(u64([]byte{'B'}, commit), 0), xid) }

// truncateMsg is a Truncate of the relations ids (no options).
func truncateMsg(ids ...uint32) []byte {
	b := append(u32([]byte{'T'}, uint32(len(ids))), 0)
	for _, id := range ids {
		b = u32(b, id)
	}
	return b
}

func insertMsg(rel uint32, vals ...any) []byte {
	return tuple(append(u32([]byte{'I'}, rel), 'N'), vals...)
}

// collector is an output that keeps what it is given.
type collector struct {
	txs  []Transaction
	ends []entities.LSN
}

func (c *collector) send(tx *Transaction) error { c.txs = append(c.txs, *tx); return nil }
func (c *collector) ended(end entities.LSN)     { c.ends = append(c.ends, end) }

func newTestAssembler(t testing.TB, chunkSize int) (*assembler, *collector) {
	t.Helper()
	c := &collector{}
	return newAssembler(testRegistry(t), slog.New(slog.NewTextHandler(io.Discard, nil)), c, chunkSize), c
}

// feed hands msgs to a, failing on the first error.
func feed(t testing.TB, a *assembler, msgs ...[]byte) {
	t.Helper()
	for i, m := range msgs {
		if err := a.handle(m); err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
	}
}

func commitMsg(commit, end uint64) []byte { return u64(u64(u64([]byte{'C', 0}, commit), end), 0) }

func TestAssembler_TupleKinds(t *testing.T) {
	a, got := newTestAssembler(t, 1000)
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
		beginAt(7, 200),
		relationMsg(1, "notes", cols),
		relationMsg(2, "gadgets", cols), // not registered: ignored
		tuple(append(u32([]byte{'I'}, 2), 'N'), "1", "x", "y"),
		keyOnly,
		full,
		tuple(append(u32([]byte{'D'}, 1), 'K'), "2", nil, nil),
		commitMsg(200, 250),
	}

	feed(t, a, msgs...)
	if len(got.txs) != 1 {
		t.Fatalf("got %d transactions, want 1: %+v", len(got.txs), got.txs)
	}
	tx := got.txs[0]
	if tx.Xid != 7 || tx.CommitLSN != 200 || tx.EndLSN != 250 || !tx.Final || len(tx.Changes) != 3 {
		t.Fatalf("transaction = %+v", tx)
	}
	want := []entities.Change{
		{EntityType: "note", Operation: entities.OpUpdate, EntityID: "2", Index: 0,
			Payload: rowOf(map[string]any{"id": int64(2), "title": "new"}), Previous: rowOf(map[string]any{"id": int64(1)}), Unchanged: []string{"body"}},
		{EntityType: "note", Operation: entities.OpUpdate, EntityID: "2", Index: 1,
			Payload: rowOf(map[string]any{"id": int64(2), "title": nil, "body": "old body"}), Previous: rowOf(map[string]any{"id": int64(2), "title": "new", "body": "old body"})},
		{EntityType: "note", Operation: entities.OpDelete, EntityID: "2", Index: 2, Payload: rowOf(map[string]any{"id": int64(2)})},
	}
	for i := range want {
		want[i].Xid, want[i].CommitLSN, want[i].EndLSN, want[i].CommitTime = 7, 200, 250, tx.CommitTime
		if !sameChange(tx.Changes[i], want[i]) {
			t.Errorf("change %d:\n got %+v\nwant %+v", i, tx.Changes[i], want[i])
		}
	}
}

func TestAssembler_MalformedIsAnErrorNotAPanic(t *testing.T) {
	cols := []col{{"id", pgtype.Int4OID, true}, {"title", pgtype.TextOID, false}}
	valid := [][]byte{
		relationMsg(1, "notes", cols),
		beginAt(1, 10),
		tuple(append(u32([]byte{'I'}, 1), 'N'), "1", "x"),
		truncateMsg(1),
		commitMsg(10, 20),
	}
	for i, m := range valid {
		for n := 0; n < len(m); n++ {
			a, _ := newTestAssembler(t, 1000)
			// Prime the state so each message is acceptable in full.
			_ = a.handle(valid[0])
			_ = a.handle(valid[1])
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("message %d cut to %d bytes panicked: %v", i, n, r)
					}
				}()
				_ = a.handle(m[:n])
			}()
		}
	}
	// Protocol misuse is reported.
	a, _ := newTestAssembler(t, 1000)
	if err := a.handle(valid[2]); err == nil {
		t.Errorf("insert outside a transaction: no error")
	}
	_ = a.handle(valid[1])
	if err := a.handle(valid[2]); err == nil {
		t.Errorf("insert before its Relation message: no error")
	}
}

var noteCols = []col{{"id", pgtype.Int4OID, true}, {"title", pgtype.TextOID, false}, {"body", pgtype.TextOID, false}}

// inserts returns n inserts into relation 1 (notes), ids from first.
func inserts(first, n int) [][]byte {
	var msgs [][]byte
	for i := first; i < first+n; i++ {
		msgs = append(msgs, insertMsg(1, strconv.Itoa(i), "t", nil))
	}
	return msgs
}

func TestAssembler_Chunks(t *testing.T) {
	cases := []struct {
		rows  int
		sizes []int // chunk sizes; the last is Final
	}{
		{0, nil}, // touched no registered table: nothing
		{1, []int{1}},
		{2, []int{2}},
		{3, []int{3}}, // exactly a chunk: sent whole at its commit, one Final
		{4, []int{3, 1}},
		{6, []int{3, 3}}, // exact multiple: the last chunk is the Final
		{7, []int{3, 3, 1}},
	}
	for _, c := range cases {
		t.Run(strconv.Itoa(c.rows), func(t *testing.T) {
			a, got := newTestAssembler(t, 3)
			feed(t, a, relationMsg(1, "notes", noteCols), beginAt(9, 500))
			feed(t, a, inserts(0, c.rows)...)
			feed(t, a, commitMsg(500, 540))
			if c.sizes == nil {
				if len(got.txs) != 0 || !reflect.DeepEqual(got.ends, []entities.LSN{540}) {
					t.Fatalf("got %d chunks, ended %v; want none, ended [540]", len(got.txs), got.ends)
				}
				return
			}
			if len(got.txs) != len(c.sizes) {
				t.Fatalf("got %d chunks, want %d", len(got.txs), len(c.sizes))
			}
			index := 0
			for i, tx := range got.txs {
				last := i == len(got.txs)-1
				wantEnd := entities.LSN(0)
				if last {
					wantEnd = 540
				}
				if len(tx.Changes) != c.sizes[i] || tx.Final != last || tx.EndLSN != wantEnd || tx.Xid != 9 || tx.CommitLSN != 500 {
					t.Errorf("chunk %d: %d changes final %v end %s xid %d commit %s; want %d changes final %v end %s xid 9 commit 0/1F4",
						i, len(tx.Changes), tx.Final, tx.EndLSN, tx.Xid, tx.CommitLSN, c.sizes[i], last, wantEnd)
				}
				for _, ch := range tx.Changes {
					if ch.Index != index || ch.EntityID != strconv.Itoa(index) || ch.Xid != 9 || ch.CommitLSN != 500 || ch.EndLSN != wantEnd {
						t.Errorf("change %d: index %d id %s xid %d commit %s end %s", index, ch.Index, ch.EntityID, ch.Xid, ch.CommitLSN, ch.EndLSN)
					}
					index++
				}
			}
			if index != c.rows {
				t.Errorf("got %d changes in all, want %d", index, c.rows)
			}
			if a.peak > 3 {
				t.Errorf("peak buffered = %d, want at most the chunk size 3", a.peak)
			}
		})
	}
}

func TestAssembler_SkipAtBegin(t *testing.T) {
	// The skip position is the EndLSN of the last handled transaction.
	// The next transaction's commit record can start exactly there: a
	// commit LSN equal to it is new, only a lower one was handled.
	cases := []struct {
		commit   uint64
		wantSent bool
	}{
		{999, false},
		{1000, true},
		{1001, true},
	}
	for _, c := range cases {
		a, got := newTestAssembler(t, 2)
		a.skipBelow = 1000
		feed(t, a, relationMsg(1, "notes", noteCols), beginAt(5, c.commit))
		feed(t, a, inserts(0, 5)...)
		feed(t, a, commitMsg(c.commit, c.commit+40))
		if sent := len(got.txs) > 0; sent != c.wantSent {
			t.Errorf("commit LSN %d, skip position 1000: sent %v (%d chunks), want %v", c.commit, sent, len(got.txs), c.wantSent)
		}
		if !c.wantSent && (!reflect.DeepEqual(got.ends, []entities.LSN{entities.LSN(c.commit + 40)}) || a.peak != 0) {
			t.Errorf("skipped transaction: ended %v, peak %d; want its end reported and nothing decoded", got.ends, a.peak)
		}
	}
}

func TestAssembler_ResumesPartlySentTransaction(t *testing.T) {
	// An earlier session sent Index 0..3 of the transaction committed at
	// 500; the replay sends only 4.. and the Final, and other
	// transactions whole.
	for _, c := range []struct {
		rows  int
		sizes []int
	}{{7, []int{2, 1}}, {4, []int{0}}} {
		a, got := newTestAssembler(t, 2)
		a.resume = partialTx{commitLSN: 500, sent: 4}
		feed(t, a, relationMsg(1, "notes", noteCols), beginAt(9, 500))
		feed(t, a, inserts(0, c.rows)...)
		feed(t, a, commitMsg(500, 540))
		var sizes, indexes []int
		for _, tx := range got.txs {
			sizes = append(sizes, len(tx.Changes))
			for _, ch := range tx.Changes {
				indexes = append(indexes, ch.Index)
			}
		}
		var want []int
		for i := 4; i < c.rows; i++ {
			want = append(want, i)
		}
		if !reflect.DeepEqual(sizes, c.sizes) || !reflect.DeepEqual(indexes, want) || !got.txs[len(got.txs)-1].Final {
			t.Errorf("%d rows, 4 sent before: chunk sizes %v, indexes %v; want %v, %v, last Final", c.rows, sizes, indexes, c.sizes, want)
		}
	}
}

func TestAssembler_Truncate(t *testing.T) {
	a, got := newTestAssembler(t, 1000)
	feed(t, a,
		relationMsg(1, "notes", noteCols),
		relationMsg(2, "gadgets", noteCols), // not registered
		relationMsg(3, "widgets", []col{{"id", pgtype.Int8OID, true}}),
		beginAt(3, 100),
		insertMsg(1, "1", "t", nil),
		truncateMsg(2, 1, 3),
		truncateMsg(2),
		insertMsg(1, "2", "t", nil),
		commitMsg(100, 140),
	)
	if len(got.txs) != 1 {
		t.Fatalf("got %d transactions, want 1", len(got.txs))
	}
	type op struct {
		entity string
		op     entities.Operation
		id     string
		index  int
	}
	var ops []op
	for _, c := range got.txs[0].Changes {
		ops = append(ops, op{c.EntityType, c.Operation, c.EntityID, c.Index})
		if c.Operation == entities.OpTruncate && (c.Payload != nil || c.Previous != nil || c.CommitLSN != 100) {
			t.Errorf("truncate change %+v: want no payload, the transaction's positions", c)
		}
	}
	want := []op{
		{"note", entities.OpCreate, "1", 0},
		{"note", entities.OpTruncate, "", 1},
		{"widget", entities.OpTruncate, "", 2},
		{"note", entities.OpCreate, "2", 3},
	}
	if !reflect.DeepEqual(ops, want) {
		t.Errorf("changes = %v, want %v", ops, want)
	}

	// An unknown relation is a protocol error; a corrupt relation count
	// is an error, not a huge allocation.
	a, _ = newTestAssembler(t, 1000)
	feed(t, a, beginAt(1, 10))
	if err := a.handle(truncateMsg(77)); !errors.Is(err, errProtocol) {
		t.Errorf("truncate of an unknown relation = %v, want errProtocol", err)
	}
	if err := a.handle(append(u32([]byte{'T'}, 0xffffffff), 0, 0, 0, 0, 1)); !errors.Is(err, errProtocol) {
		t.Errorf("truncate claiming 4294967295 relations = %v, want errProtocol", err)
	}
}

// TestAssembler_Omit: columns Omit names are neither decoded nor listed as
// unchanged (a TOASTed one) but named in every change's Withheld, a key
// column is kept whatever Omit says, and an unregistered relation is not
// asked about.
func TestAssembler_Omit(t *testing.T) {
	a, got := newTestAssembler(t, 1000)
	var asked []string
	a.omit = func(et entities.EntityType, col string) bool {
		asked = append(asked, et.Name+"."+col)
		return col == "body" || col == "id"
	}
	cols := []col{{"id", pgtype.Int4OID, true}, {"title", pgtype.TextOID, false}, {"body", pgtype.TextOID, false}}
	upd := tuple(append(u32([]byte{'U'}, 1), 'N'), "2", "\x00u", "\x00u")
	feed(t, a,
		beginAt(7, 200),
		relationMsg(1, "notes", cols),
		relationMsg(2, "gadgets", cols), // not registered
		tuple(append(u32([]byte{'I'}, 1), 'N'), "1", "a title", "secret body"),
		upd,
		commitMsg(200, 250))
	if len(got.txs) != 1 || len(got.txs[0].Changes) != 2 {
		t.Fatalf("got %+v, want one transaction of two changes", got.txs)
	}
	ins, up := got.txs[0].Changes[0], got.txs[0].Changes[1]
	if want := rowOf(map[string]any{"id": int64(1), "title": "a title"}); !ins.Payload.Equal(want) || ins.EntityID != "1" {
		t.Errorf("insert: payload %s id %q, want %s and id 1", ins.Payload.JSON(), ins.EntityID, want.JSON())
	}
	if want := rowOf(map[string]any{"id": int64(2)}); !up.Payload.Equal(want) || !slices.Equal(up.Unchanged, []string{"title"}) {
		t.Errorf("update: payload %s unchanged %q, want %s and [title] unchanged (not the omitted body)", up.Payload.JSON(), up.Unchanged, want.JSON())
	}
	for _, c := range []entities.Change{ins, up} {
		if !slices.Equal(c.Withheld, []string{"body"}) {
			t.Errorf("%s: Withheld %q, want [body]", c.Operation, c.Withheld)
		}
	}
	if want := []string{"note.title", "note.body"}; !slices.Equal(asked, want) {
		t.Errorf("Omit was asked %q, want %q (never for a key column or an unregistered table)", asked, want)
	}
}
