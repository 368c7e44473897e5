package watcher

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/jsonenc"
	"github.com/jackc/pglogrepl"
)

// relation is one entry of the per-connection relation cache, built from a
// pgoutput Relation message.
type relation struct {
	id        uint32
	namespace string
	name      string
	columns   []column
	// order lists the columns' indexes sorted by name: the order of a
	// row's members (entities.Row). Omitted columns (Config.Omit) are
	// not in it.
	order []int
	// omitted marks the columns left out of order, by index.
	omitted []bool
	// withheld names the omitted columns, in column order: every change
	// of the relation carries it (entities.Change.Withheld).
	withheld []string
	// entity is the registered type stored in this table; nil when the
	// table is not registered and its changes are ignored.
	entity *entities.EntityType
	// full: the table has REPLICA IDENTITY FULL, so updates and deletes
	// carry the whole previous row.
	full bool
}

type column struct {
	name   string
	member entities.Member // name, with its JSON key encoded once
	oid    uint32
	isKey  bool // part of the replica identity
}

// openTx is the transaction between a Begin and its Commit.
type openTx struct {
	xid        uint32
	commitLSN  entities.LSN // Begin's final LSN: the commit record's position
	commitTime time.Time
	// skip: the transaction was handled before (its commit LSN is below
	// the skip position); its rows are not even decoded.
	skip bool
	// next is the Index of the next change to a registered table.
	next int
	// dropBelow: changes with a lower Index were sent by an earlier
	// session (see partialTx) and are not sent again.
	dropBelow int
	// emitted: some of the transaction's changes were sent, so its
	// Final chunk must be sent even if it is empty.
	emitted bool
	changes []entities.Change // assembled, not sent yet: at most chunkSize
}

// output receives what the assembler produces. The session implements it
// by sending on Run's channel; tests collect.
type output interface {
	// send delivers a chunk (Final false) or the end of a transaction
	// (Final true). It may block; an error ends the session.
	send(tx *Transaction) error
	// ended reports a transaction that ended with nothing to deliver:
	// skipped, or touching no registered table.
	ended(endLSN entities.LSN)
}

// assembler turns the pgoutput messages of one replication connection
// into Transactions. It holds the relation cache (docs/replication.md rule 10)
// and the transaction being received, never more than chunkSize of its
// changes. It is owned by one goroutine.
type assembler struct {
	registry *entities.Registry
	logger   *slog.Logger
	values   *valueDecoder
	rowMsg   rowMessage // the row message being read, its buffers reused
	// reload reads the catalog again (Watcher.reloadCatalog); nil where
	// there is no database (tests). tried holds the type OIDs a reload
	// was made for, so an OID the catalog still lacks afterwards (a
	// type dropped since) does not cause another.
	reload    func() (*catalog, error)
	refreshed time.Time // the last refreshTypes reload
	tried     map[uint32]bool
	relations map[uint32]*relation
	tx        *openTx
	warned    map[string]bool // one warning per table and kind of surprise

	out       output
	chunkSize int
	// omit is Config.Omit.
	omit func(et entities.EntityType, column string) bool
	// skipBelow: a transaction whose commit LSN is below it was handled
	// before and is skipped.
	skipBelow entities.LSN
	// resume is a transaction partly sent by an earlier session.
	resume partialTx
	// peak is the most changes held at once for one transaction.
	peak int
}

func newAssembler(reg *entities.Registry, logger *slog.Logger, out output, chunkSize int) *assembler {
	return &assembler{
		registry:  reg,
		logger:    logger,
		values:    newValueDecoder(),
		relations: map[uint32]*relation{},
		warned:    map[string]bool{},
		out:       out,
		chunkSize: chunkSize,
	}
}

// inTransaction reports whether a Begin has arrived without its Commit.
func (a *assembler) inTransaction() bool { return a.tx != nil }

// errProtocol marks a pgoutput stream the watcher does not understand; the
// connection is abandoned and replication restarts from the acknowledged
// position.
var errProtocol = errors.New("pgoutput protocol")

// handle consumes the WALData of one XLogData message, passing any chunk
// or finished transaction to the output. walData may be reused by the
// caller after handle returns: nothing here keeps a reference to it.
func (a *assembler) handle(walData []byte) error {
	if isRowMessage(walData) {
		m := &a.rowMsg
		if err := m.parse(walData); err != nil {
			return fmt.Errorf("%w: %v", errProtocol, err)
		}
		var old, cur *tupleData
		if m.hasOld {
			old = &m.old
		}
		if m.hasNew {
			cur = &m.cur
		}
		return a.row(m.relID, m.op, cur, m.oldKind, old)
	}
	msg, err := parseMessage(walData)
	if err != nil {
		return fmt.Errorf("%w: %v", errProtocol, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		a.relation(m)
	case *pglogrepl.BeginMessage:
		if a.tx != nil {
			return fmt.Errorf("%w: begin of xid %d inside xid %d", errProtocol, m.Xid, a.tx.xid)
		}
		a.begin(m)
	case *pglogrepl.CommitMessage:
		if a.tx == nil {
			return fmt.Errorf("%w: commit at %s without begin", errProtocol, m.CommitLSN)
		}
		return a.commit(m)
	case *pglogrepl.TruncateMessage:
		return a.truncate(m)
	case *pglogrepl.TypeMessage:
		// Sent before a Relation whose columns use a type of the
		// database's own: a type created while streaming is looked up.
		a.learnTypes(m.DataType)
	case *pglogrepl.OriginMessage, *pglogrepl.LogicalDecodingMessage:
		// Origins: no filtering by origin. Messages: not requested.
	default:
		a.logger.Debug("ignoring pgoutput message", "type", msg.Type().String())
	}
	return nil
}

// begin opens a transaction and decides, now, whether it was handled
// before.
//
// The skip position is an EndLSN: the end of the last handled commit
// record. Every transaction committed before it has its commit record
// below it; the next one's commit record may start exactly there, so its
// commit LSN can EQUAL the skip position and it must be kept. Hence "<",
// not "<=": skipping when "commit LSN ≤ stored offset" would lose that
// transaction (docs/replication.md rule 1). PostgreSQL applies the same rule
// when it starts decoding at a requested position (snapbuild.c,
// SnapBuildXactNeedsSkip: commit record start < start_decoding_at).
// Deciding at Begin, not at Commit, means a skipped transaction is
// neither decoded nor sent in part.
func (a *assembler) begin(m *pglogrepl.BeginMessage) {
	tx := &openTx{
		xid:        m.Xid,
		commitLSN:  entities.LSN(m.FinalLSN),
		commitTime: m.CommitTime,
	}
	tx.skip = tx.commitLSN < a.skipBelow
	if !tx.skip && a.resume.commitLSN != 0 && tx.commitLSN == a.resume.commitLSN {
		tx.dropBelow = a.resume.sent
		tx.emitted = true
	}
	a.tx = tx
}

// commit ends the open transaction: its last (possibly empty) chunk is
// sent as Final when anything of it was or is to be sent; otherwise the
// output hears that it ended.
//
// The skip decision was taken at Begin and is not revisited here: the old
// "EndLSN <= skip" test at Commit agrees with it (a commit LSN at or above
// the skip position has its end above it, one below has its end at or
// below it), and by now chunks may already have been sent.
func (a *assembler) commit(m *pglogrepl.CommitMessage) error {
	tx := a.tx
	a.tx = nil
	end := entities.LSN(m.TransactionEndLSN)
	if tx.skip || (len(tx.changes) == 0 && !tx.emitted) {
		a.out.ended(end)
		return nil
	}
	if entities.LSN(m.CommitLSN) != tx.commitLSN {
		return fmt.Errorf("%w: commit of xid %d at %s, its begin said %s", errProtocol, tx.xid, m.CommitLSN, tx.commitLSN)
	}
	return a.out.send(a.chunk(tx, end))
}

// chunk takes the assembled changes of tx as a Transaction, Final when
// end is set, and releases them. Every change carries the transaction's
// Xid, CommitLSN and CommitTime; EndLSN is set on the Final chunk's
// changes only, as on the chunk itself.
func (a *assembler) chunk(tx *openTx, end entities.LSN) *Transaction {
	out := &Transaction{
		Xid:        tx.xid,
		CommitLSN:  tx.commitLSN,
		EndLSN:     end,
		CommitTime: tx.commitTime,
		Changes:    tx.changes,
		Final:      end != 0,
	}
	for i := range out.Changes {
		c := &out.Changes[i]
		c.CommitLSN, c.EndLSN, c.Xid, c.CommitTime = out.CommitLSN, out.EndLSN, out.Xid, out.CommitTime
	}
	tx.changes = nil
	tx.emitted = true
	return out
}

// add appends c to the open transaction, numbering it, first sending the
// changes held as a chunk when there are chunkSize of them.
func (a *assembler) add(c entities.Change) error {
	tx := a.tx
	c.Index = tx.next
	tx.next++
	if c.Index < tx.dropBelow {
		return nil
	}
	if len(tx.changes) >= a.chunkSize {
		// A full chunk is sent once the transaction has a change more
		// for the next one, not as soon as it fills: a transaction of
		// exactly chunkSize changes then reaches its commit whole and is
		// sent as one Final transaction, which the journal can commit
		// together with its neighbours, rather than as a chunk and an
		// empty Final that hold a journal transaction open between them.
		if err := a.out.send(a.chunk(tx, 0)); err != nil {
			return err
		}
	}
	if tx.changes == nil {
		tx.changes = make([]entities.Change, 0, min(a.chunkSize, 64))
	}
	tx.changes = append(tx.changes, c)
	a.peak = max(a.peak, len(tx.changes))
	return nil
}

// wanted reports whether a change of the open transaction with the next
// Index would be kept: false when the transaction is skipped or the
// change was sent by an earlier session. It saves decoding.
func (a *assembler) wanted() bool {
	return !a.tx.skip && a.tx.next >= a.tx.dropBelow
}

// truncate turns a Truncate message into one OpTruncate change per
// registered relation, in the message's order. Unregistered relations
// (TRUNCATE ... CASCADE reaching other published tables, or several
// tables named) are ignored like their rows.
func (a *assembler) truncate(m *pglogrepl.TruncateMessage) error {
	if a.tx == nil {
		return fmt.Errorf("%w: truncate outside a transaction", errProtocol)
	}
	for _, id := range m.RelationIDs {
		rel := a.relations[id]
		if rel == nil {
			return fmt.Errorf("%w: truncate of relation %d before its Relation message", errProtocol, id)
		}
		if rel.entity == nil || a.tx.skip {
			continue
		}
		if err := a.add(entities.Change{EntityType: rel.entity.Name, Operation: entities.OpTruncate, Backfill: !rel.full}); err != nil {
			return err
		}
	}
	return nil
}

// parseMessage is pglogrepl.Parse made safe: it indexes the buffer without
// bounds checks, and a malformed message must become an error, not a crash.
func parseMessage(data []byte) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty message")
	}
	if data[0] == byte(pglogrepl.MessageTypeTruncate) && len(data) >= 5 {
		// pglogrepl allocates the relation count before reading: a
		// corrupt count must not become a fatal out-of-memory.
		if n := uint64(binary.BigEndian.Uint32(data[1:5])); n > uint64(len(data)) {
			return nil, fmt.Errorf("malformed %q message: %d relations in %d bytes", data[0], n, len(data))
		}
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
	rel := &relation{id: m.RelationID, namespace: m.Namespace, name: m.RelationName, full: m.ReplicaIdentity == 'f'}
	oids := make([]uint32, len(m.Columns))
	for i, c := range m.Columns {
		oids[i] = c.DataType
	}
	a.learnTypes(oids...)
	for _, c := range m.Columns {
		rel.columns = append(rel.columns, column{name: c.Name, member: entities.NewMember(c.Name), oid: c.DataType, isKey: c.Flags&1 != 0})
	}
	et, registered := a.registry.ByRelation(m.Namespace, m.RelationName)
	rel.omitted = make([]bool, len(rel.columns))
	for i, c := range rel.columns {
		if registered && a.omit != nil && !et.IsKeyColumn(c.name) && a.omit(et, c.name) {
			rel.omitted[i] = true
			rel.withheld = append(rel.withheld, c.name)
			continue
		}
		rel.order = append(rel.order, i)
	}
	slices.SortStableFunc(rel.order, func(i, j int) int { return strings.Compare(rel.columns[i].name, rel.columns[j].name) })
	if registered {
		rel.entity = &et
		for _, k := range append([]string{et.Key}, et.KeyColumns...) {
			if !hasColumn(rel.columns, k) {
				a.warnOnce("nokey:"+m.Namespace+"."+m.RelationName+"."+k, "table has no key column: changes will carry an empty entity id",
					"table", m.Namespace+"."+m.RelationName, "key", k)
			}
		}
	}
	a.relations[m.RelationID] = rel
}

// learnTypes reloads the catalog once when one of oids is a type the
// decoder's catalog does not know: a domain, enum or composite type (or an
// array of one) created after replication started, for example by CREATE
// TYPE and ALTER TABLE ... ADD COLUMN while changes stream. Until the
// reload succeeds such values are sent as text, as before; a failed reload
// is logged and not retried for the same types.
func (a *assembler) learnTypes(oids ...uint32) {
	if a.reload == nil {
		return
	}
	var unknown []uint32
	for _, oid := range oids {
		if !a.values.cat.knows(oid) && !a.tried[oid] {
			unknown = append(unknown, oid)
		}
	}
	if len(unknown) == 0 {
		return
	}
	if a.tried == nil {
		a.tried = map[uint32]bool{}
	}
	for _, oid := range unknown {
		a.tried[oid] = true
	}
	cat, err := a.reload()
	if err != nil {
		a.logger.Warn("cannot read the types created since replication started: their values are sent as text", "types", unknown, "err", err)
		return
	}
	a.values.cat = cat
	a.logger.Info("read the types created since replication started", "types", unknown)
}

// refreshInterval is how often a value that could not be decoded may make
// the watcher read the catalog again.
const refreshInterval = 5 * time.Second

// refreshTypes reads the catalog again after a value of type oid could not
// be decoded (a composite type altered, or a type whose earlier reload
// failed), at most once per refreshInterval; it reports whether the
// catalog was read.
func (a *assembler) refreshTypes(oid uint32) bool {
	if a.reload == nil || time.Since(a.refreshed) < refreshInterval {
		return false
	}
	a.refreshed = time.Now()
	cat, err := a.reload()
	if err != nil {
		a.logger.Warn("cannot read the database's types again: values of the types that changed are left out", "type", oid, "err", err)
		return false
	}
	a.values.cat = cat
	a.logger.Info("read the database's types again after a value did not match its type", "type", oid)
	return true
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
func (a *assembler) row(relID uint32, op entities.Operation, newTuple *tupleData, oldKind uint8, oldTuple *tupleData) error {
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
	if !a.wanted() {
		if !a.tx.skip {
			a.tx.next++ // sent by an earlier session
		}
		return nil
	}
	var old, cur *entities.Row
	var unchanged []string
	var keyText, oldKey string
	var err error
	if oldTuple != nil {
		old, _, oldKey, err = a.tuple(rel, oldTuple, oldKind == pglogrepl.UpdateMessageTupleTypeKey, nil)
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
		Withheld:   rel.withheld,
		Backfill:   !rel.full,
	}
	switch op {
	case entities.OpUpdate:
		c.Previous = old
	case entities.OpDelete:
		c.Payload = old
	}
	if keyText == "" {
		// Deletes, and updates whose new key was not sent: the key is
		// in the old tuple (always, for 'K' and 'O').
		keyText = oldKey
	}
	c.EntityID = keyText
	if c.Payload == nil {
		c.Payload = emptyRow
	}
	return a.add(c)
}

// emptyRow is the payload of a change whose rows PostgreSQL did not send.
var emptyRow = (&entities.RowBuilder{}).Row()

// jsonNull is SQL NULL's JSON.
var jsonNull = []byte("null")

// tuple decodes t against rel's columns into a Row, appending each
// column's JSON straight from the tuple's text (valueDecoder), members
// sorted by name. In a key-only tuple ('K') only replica-identity columns
// are present; the others arrive as 'n' meaning "not sent" and are
// omitted. An unchanged TOAST value ('u') is taken from old when old has
// the column, and otherwise omitted from the row and listed in unchanged
// (in column order): it is never reported as NULL (docs/replication.md
// rule 11). keyText is the key column's text, "" when absent.
func (a *assembler) tuple(rel *relation, t *tupleData, keyOnly bool, old *entities.Row) (row *entities.Row, unchanged []string, keyText string, err error) {
	if len(t.kinds) != len(rel.columns) {
		return nil, nil, "", fmt.Errorf("%w: tuple has %d columns, relation %s has %d", errProtocol, len(t.kinds), rel.name, len(rel.columns))
	}
	size := 2
	for i, d := range t.data {
		size += len(d) + len(rel.columns[i].name) + 8
	}
	var b entities.RowBuilder
	b.Grow(len(t.kinds), size+size/8)
	missing := false
	var withheld []string
	for _, i := range rel.order {
		kind, data, col := t.kinds[i], t.data[i], rel.columns[i]
		if keyOnly && !col.isKey {
			continue
		}
		switch kind {
		case pglogrepl.TupleDataTypeNull:
			b.End(append(b.KeyMember(col.member), jsonNull...))
		case pglogrepl.TupleDataTypeToast:
			if v, ok := old.Get(col.name); ok {
				b.End(append(b.KeyMember(col.member), v...))
			} else {
				missing = true
			}
		case pglogrepl.TupleDataTypeText:
			if col.name == rel.entity.Key {
				keyText = string(data)
			}
			a.values.withheld = false
			buf := a.values.appendValue(b.KeyMember(col.member), col.oid, data)
			if a.values.withheld && a.refreshTypes(col.oid) {
				// The catalog was stale (ALTER TYPE … ADD ATTRIBUTE):
				// decode again with the fresh one.
				a.values.withheld = false
				b.Drop()
				buf = a.values.appendValue(b.KeyMember(col.member), col.oid, data)
			}
			if a.values.withheld {
				b.Drop()
				withheld = append(withheld, col.name)
				a.warnOnce("withheld:"+rel.namespace+"."+rel.name+"."+col.name,
					"a value whose type changecast cannot decode was left out (listed in unchanged), since its fields cannot be checked for secrets",
					"table", rel.namespace+"."+rel.name, "column", col.name)
				continue
			}
			b.End(buf)
		default:
			// Binary tuples are only sent when asked for ("binary 'true'").
			return nil, nil, "", fmt.Errorf("%w: column %s has tuple data kind %q", errProtocol, col.name, kind)
		}
	}
	row = b.Row()
	if missing {
		for i, kind := range t.kinds {
			if kind == pglogrepl.TupleDataTypeToast && !rel.omitted[i] && !(keyOnly && !rel.columns[i].isKey) && !row.Has(rel.columns[i].name) {
				unchanged = append(unchanged, rel.columns[i].name)
			}
		}
	}
	unchanged = append(unchanged, withheld...)
	if len(rel.entity.KeyColumns) > 1 {
		keyText = compositeKey(rel.entity.KeyColumns, row)
	}
	return row, unchanged, keyText, nil
}

// compositeKey is the entity id of a composite key: a JSON object of the
// key columns' values in key order ({"order_id":7,"line":2}), written as
// json.Marshal writes it (HTML characters escaped, as ids always were);
// "" when a key column is missing from row.
func compositeKey(cols []string, row *entities.Row) string {
	b := make([]byte, 0, 64)
	b = append(b, '{')
	for i, c := range cols {
		v, ok := row.Get(c)
		if !ok {
			return ""
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.AppendHTMLEscaped(b, jsonenc.AppendString(nil, c))
		b = append(b, ':')
		b = jsonenc.AppendHTMLEscaped(b, v)
	}
	b = append(b, '}')
	return string(b)
}
