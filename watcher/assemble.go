package watcher

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pglogrepl"
)

// relation is one entry of the per-connection relation cache, built from a
// pgoutput Relation message.
type relation struct {
	id        uint32
	namespace string
	name      string
	columns   []column
	// entity is the registered type stored in this table; nil when the
	// table is not registered and its changes are ignored.
	entity *entities.EntityType
}

type column struct {
	name  string
	oid   uint32
	isKey bool // part of the replica identity
}

// openTx is the transaction between a Begin and its Commit.
type openTx struct {
	xid        uint32
	finalLSN   entities.LSN
	commitTime time.Time
	changes    []entities.Change
}

// assembler turns the pgoutput messages of one replication connection
// into Transactions. It holds the relation cache (REPLICATION.md rule 10)
// and the transaction being received. It is owned by one goroutine.
type assembler struct {
	registry  *entities.Registry
	logger    *slog.Logger
	values    *valueDecoder
	relations map[uint32]*relation
	tx        *openTx
	warned    map[string]bool // one warning per table and kind of surprise
}

func newAssembler(reg *entities.Registry, logger *slog.Logger) *assembler {
	return &assembler{
		registry:  reg,
		logger:    logger,
		values:    newValueDecoder(),
		relations: map[uint32]*relation{},
		warned:    map[string]bool{},
	}
}

// inTransaction reports whether a Begin has arrived without its Commit.
func (a *assembler) inTransaction() bool { return a.tx != nil }

// errProtocol marks a pgoutput stream the watcher does not understand; the
// connection is abandoned and replication restarts from the acknowledged
// position.
var errProtocol = errors.New("pgoutput protocol")

// handle consumes the WALData of one XLogData message. At a Commit it
// returns the finished transaction; otherwise nil. walData may be reused by
// the caller after handle returns: nothing here keeps a reference to it.
func (a *assembler) handle(walData []byte) (*Transaction, error) {
	msg, err := parseMessage(walData)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errProtocol, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		a.relation(m)
	case *pglogrepl.BeginMessage:
		if a.tx != nil {
			return nil, fmt.Errorf("%w: begin of xid %d inside xid %d", errProtocol, m.Xid, a.tx.xid)
		}
		a.tx = &openTx{xid: m.Xid, finalLSN: entities.LSN(m.FinalLSN), commitTime: m.CommitTime}
	case *pglogrepl.CommitMessage:
		if a.tx == nil {
			return nil, fmt.Errorf("%w: commit at %s without begin", errProtocol, m.CommitLSN)
		}
		tx := &Transaction{
			Xid:        a.tx.xid,
			CommitLSN:  entities.LSN(m.CommitLSN),
			EndLSN:     entities.LSN(m.TransactionEndLSN),
			CommitTime: m.CommitTime,
			Changes:    a.tx.changes,
		}
		a.tx = nil
		for i := range tx.Changes {
			c := &tx.Changes[i]
			c.CommitLSN, c.EndLSN, c.Xid, c.CommitTime = tx.CommitLSN, tx.EndLSN, tx.Xid, tx.CommitTime
		}
		return tx, nil
	case *pglogrepl.InsertMessage:
		return nil, a.row(m.RelationID, entities.OpCreate, m.Tuple, 0, nil)
	case *pglogrepl.UpdateMessage:
		return nil, a.row(m.RelationID, entities.OpUpdate, m.NewTuple, m.OldTupleType, m.OldTuple)
	case *pglogrepl.DeleteMessage:
		return nil, a.row(m.RelationID, entities.OpDelete, nil, m.OldTupleType, m.OldTuple)
	case *pglogrepl.TruncateMessage:
		// Reporting truncates is a later issue; say so rather than
		// dropping them silently.
		for _, id := range m.RelationIDs {
			if rel := a.relations[id]; rel != nil && rel.entity != nil {
				a.logger.Warn("truncate is not reported to clients yet", "table", rel.namespace+"."+rel.name)
			}
		}
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage, *pglogrepl.LogicalDecodingMessage:
		// Types: unknown OIDs decode as text anyway. Origins: no
		// filtering by origin. Messages: not requested.
	default:
		a.logger.Debug("ignoring pgoutput message", "type", msg.Type().String())
	}
	return nil, nil
}

// parseMessage is pglogrepl.Parse made safe: it indexes the buffer without
// bounds checks, and a malformed message must become an error, not a crash.
func parseMessage(data []byte) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty message")
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("malformed %q message: %v", data[0], r)
		}
	}()
	return pglogrepl.Parse(data)
}

// relation replaces the cache entry for m's OID: Relation messages are
// re-sent after DDL and TRUNCATE and the new one always wins.
func (a *assembler) relation(m *pglogrepl.RelationMessage) {
	rel := &relation{id: m.RelationID, namespace: m.Namespace, name: m.RelationName}
	for _, c := range m.Columns {
		rel.columns = append(rel.columns, column{name: c.Name, oid: c.DataType, isKey: c.Flags&1 != 0})
	}
	if et, ok := a.registry.ByTable(m.RelationName); ok {
		rel.entity = &et
		if !hasColumn(rel.columns, et.Key) {
			a.warnOnce("nokey:"+m.RelationName, "table has no key column: changes will carry an empty entity id",
				"table", m.Namespace+"."+m.RelationName, "key", et.Key)
		}
	}
	a.relations[m.RelationID] = rel
}

func hasColumn(cols []column, name string) bool {
	for _, c := range cols {
		if c.name == name {
			return true
		}
	}
	return false
}

func (a *assembler) warnOnce(key, msg string, args ...any) {
	if a.warned[key] {
		return
	}
	a.warned[key] = true
	a.logger.Warn(msg, args...)
}

// row decodes one insert, update or delete into a Change of the open
// transaction. oldKind is 'O' (full old row), 'K' (key columns only) or 0.
func (a *assembler) row(relID uint32, op entities.Operation, newTuple *pglogrepl.TupleData, oldKind uint8, oldTuple *pglogrepl.TupleData) error {
	if a.tx == nil {
		return fmt.Errorf("%w: %s on relation %d outside a transaction", errProtocol, op, relID)
	}
	rel := a.relations[relID]
	if rel == nil {
		return fmt.Errorf("%w: %s on relation %d before its Relation message", errProtocol, op, relID)
	}
	if rel.entity == nil {
		return nil
	}
	var old, cur entities.Row
	var unchanged []string
	var keyText string
	var err error
	if oldTuple != nil {
		old, _, _, err = a.tuple(rel, oldTuple, oldKind == pglogrepl.UpdateMessageTupleTypeKey, nil)
		if err != nil {
			return fmt.Errorf("old tuple of %s: %w", rel.name, err)
		}
	}
	if newTuple != nil {
		cur, unchanged, keyText, err = a.tuple(rel, newTuple, false, old)
		if err != nil {
			return fmt.Errorf("new tuple of %s: %w", rel.name, err)
		}
	}
	c := entities.Change{
		EntityType: rel.entity.Name,
		Operation:  op,
		Payload:    cur,
		Unchanged:  unchanged,
		Index:      len(a.tx.changes),
	}
	switch op {
	case entities.OpUpdate:
		c.Previous = old
	case entities.OpDelete:
		c.Payload = old
	}
	if keyText == "" && oldTuple != nil {
		// Deletes, and updates whose new key was not sent: the key is
		// in the old tuple (always, for 'K' and 'O').
		_, _, keyText, _ = a.tuple(rel, oldTuple, oldKind == pglogrepl.UpdateMessageTupleTypeKey, nil)
	}
	c.EntityID = keyText
	if c.Payload == nil {
		c.Payload = entities.Row{}
	}
	a.tx.changes = append(a.tx.changes, c)
	return nil
}

// tuple decodes t against rel's columns. In a key-only tuple ('K') only
// replica-identity columns are present; the others arrive as 'n' meaning
// "not sent" and are omitted. An unchanged TOAST value ('u') is taken from
// old when old has the column, and otherwise omitted from the row and
// listed in unchanged: it is never reported as NULL (REPLICATION.md rule
// 11). keyText is the key column's text, "" when absent.
func (a *assembler) tuple(rel *relation, t *pglogrepl.TupleData, keyOnly bool, old entities.Row) (row entities.Row, unchanged []string, keyText string, err error) {
	if len(t.Columns) != len(rel.columns) {
		return nil, nil, "", fmt.Errorf("%w: tuple has %d columns, relation %s has %d", errProtocol, len(t.Columns), rel.name, len(rel.columns))
	}
	row = make(entities.Row, len(t.Columns))
	for i, tc := range t.Columns {
		col := rel.columns[i]
		if keyOnly && !col.isKey {
			continue
		}
		switch tc.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[col.name] = nil
		case pglogrepl.TupleDataTypeToast:
			if v, ok := old[col.name]; ok {
				row[col.name] = v
			} else {
				unchanged = append(unchanged, col.name)
			}
		case pglogrepl.TupleDataTypeText:
			row[col.name] = a.values.decode(col.oid, tc.Data)
			if col.name == rel.entity.Key {
				keyText = string(tc.Data)
			}
		default:
			// Binary tuples are only sent when asked for ("binary 'true'").
			return nil, nil, "", fmt.Errorf("%w: column %s has tuple data kind %q", errProtocol, col.name, tc.DataType)
		}
	}
	return row, unchanged, keyText, nil
}
