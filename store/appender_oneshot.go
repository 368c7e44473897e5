package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/changecast/changecast/entities"
)

// One-statement journal commits.
//
// A group of source transactions that touches no back-filled entity type
// (states.go) is journaled by a single statement: the journal rows and the
// slot's offset are written by one INSERT (the rows in a data-modifying
// WITH), which PostgreSQL runs as its own transaction. That is one round
// trip and one commit, instead of BEGIN, COPY, the offset upsert and
// COMMIT (four round trips, each waking the server's backend and the
// appender). The guarantees are those of the transaction it replaces: the
// rows and the offset commit together or not at all, and the statement
// returns only once the commit is durable (synchronous_commit is not
// touched). An error leaves the commit in doubt exactly like a failed
// COMMIT did: Run returns it and the Appender is replaced, its successor
// reading the head and offset back.

// oneShotJournal is the statement's journal part: each column comes as
// one array, the unchanged lists as array literals (text[] has no
// array-of-arrays form that unnest could split).
const oneShotJournal = `INSERT INTO changecast.journal (seq, commit_lsn, tx_index, xid, committed_at, entity_type, operation, entity_id, payload, previous, unchanged)
	SELECT s, l, i, x, t, e, o, id, p, pr, u::text[]
	FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
		AS r(s, l, i, x, t, e, o, id, p, pr, u)`

// oneShotWithOffset journals the rows and moves the offset (never
// backwards) in one statement.
const oneShotWithOffset = `WITH j AS (` + oneShotJournal + `)
INSERT INTO changecast.offsets (slot, lsn, updated_at) VALUES ($12, $13, now())
	ON CONFLICT (slot) DO UPDATE SET lsn = GREATEST(offsets.lsn, EXCLUDED.lsn), updated_at = now()`

// oneShotColumns holds a group's rows column by column; the appender keeps
// one and reuses its slices.
type oneShotColumns struct {
	seq, lsn, xid []int64
	idx           []int32
	at            []time.Time
	typ, op, id   []string
	payload, prev [][]byte
	unchanged     []*string
	lits          []string
}

func (o *oneShotColumns) reset() {
	o.seq, o.lsn, o.xid, o.idx, o.at = o.seq[:0], o.lsn[:0], o.xid[:0], o.idx[:0], o.at[:0]
	o.typ, o.op, o.id, o.payload, o.prev = o.typ[:0], o.op[:0], o.id[:0], o.payload[:0], o.prev[:0]
	o.unchanged, o.lits = o.unchanged[:0], o.lits[:0]
}

// release drops the references to the group's rows, keeping the slices.
func (o *oneShotColumns) release() {
	clear(o.payload[:cap(o.payload)])
	clear(o.prev[:cap(o.prev)])
	clear(o.typ[:cap(o.typ)])
	clear(o.id[:cap(o.id)])
	clear(o.unchanged[:cap(o.unchanged)])
	clear(o.lits[:cap(o.lits)])
	o.reset()
}

// oneShotMaxChanges is the largest group commitOneShot journals. It saves
// three round trips (begin, the offset, commit) over COPY in a transaction,
// which is what matters to small groups; but encoding its column arrays and
// the server's unnesting them cost more per change than COPY's binary rows,
// so a large group (a backlog, a big transaction) goes by COPY.
const oneShotMaxChanges = 64

// oneShot reports whether groups can be journaled by commitOneShot:
// nothing in them concerns the entity states (no change to be back-filled,
// no type whose states are followed), so no state is read or written.
func (a *Appender) oneShot(groups [][]entities.Change) bool {
	for _, g := range groups {
		for i := range g {
			c := &g[i]
			if c.EntityType == entities.EventEntityType {
				continue
			}
			if c.Backfill || a.tracked[c.EntityType] {
				return false
			}
		}
	}
	return true
}

// commitOneShot journals groups as seq head+1, ... and moves the offset to
// end (0: leaves it), in one statement, setting each change's Cursor.
func (a *Appender) commitOneShot(ctx context.Context, head int64, groups [][]entities.Change, end entities.LSN) error {
	if uint64(end) > math.MaxInt64 {
		return fmt.Errorf("save offset of slot %s: LSN %s out of range", a.cfg.Slot, end)
	}
	o := &a.cols
	o.reset()
	defer o.release()
	err := eachChange(head, groups, func(seq int64, c *entities.Change) {
		c.Cursor = seq // as copyChanges does: set before the statement
		o.seq = append(o.seq, seq)
		o.lsn = append(o.lsn, int64(c.CommitLSN))
		o.idx = append(o.idx, int32(c.Index))
		o.xid = append(o.xid, int64(c.Xid))
		o.at = append(o.at, c.CommitTime)
		o.typ = append(o.typ, c.EntityType)
		o.op = append(o.op, string(c.Operation))
		o.id = append(o.id, c.EntityID)
		o.payload = append(o.payload, rowJSON(c.Payload))
		o.prev = append(o.prev, rowJSON(c.Previous))
		if c.Unchanged == nil {
			o.unchanged = append(o.unchanged, nil)
		} else {
			o.lits = append(o.lits, textArrayLiteral(c.Unchanged))
			o.unchanged = append(o.unchanged, &o.lits[len(o.lits)-1])
		}
	})
	if err != nil {
		return err
	}
	if len(o.seq) == 0 {
		return nil
	}
	args := []any{o.seq, o.lsn, o.idx, o.xid, o.at, o.typ, o.op, o.id, o.payload, o.prev, o.unchanged}
	sql := oneShotJournal
	if end != 0 {
		sql = oneShotWithOffset
		args = append(args, a.cfg.Slot, int64(end))
	}
	if _, err := a.conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("journal commit: %w", hintMigrate(err))
	}
	return nil
}

// rowJSON is a row's JSON for a payload column, nil (NULL) for no row.
func rowJSON(r *entities.Row) []byte {
	if r == nil {
		return nil
	}
	return r.JSON()
}

// textArrayLiteral writes names as a PostgreSQL text[] literal, every
// element quoted.
func textArrayLiteral(names []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(n); j++ {
			if n[j] == '"' || n[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(n[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
