// Package entities is changecast's domain: the entity types it watches, the
// registry that maps each type to its table, key and secret fields, and the
// Change value that flows from the watcher through sanitize and the journal
// to the WebSocket hub.
//
// The package imports nothing heavy (stdlib and uuid only) so every other
// package can depend on it. Values of these types are plain data: they are
// safe to share between goroutines once built and never mutated afterwards.
package entities

import (
	"fmt"
	"time"
)

// Operation is what happened to an entity.
type Operation string

// The operations a Change can carry.
const (
	OpCreate Operation = "create"
	OpUpdate Operation = "update"
	OpDelete Operation = "delete"
	// OpTruncate is a TRUNCATE of the entity's table: one Change per
	// truncated table, with no EntityID and no Payload.
	OpTruncate Operation = "truncate"
	// OpSnapshot is not a change: it marks a current row read by a
	// snapshot (docs/protocol.md, "Snapshots"), sent before the changes
	// that follow it. It is not in Operations: filters cannot name it.
	OpSnapshot Operation = "snapshot"
)

// Operations lists every valid Operation, in a stable order for error messages.
var Operations = []Operation{OpCreate, OpUpdate, OpDelete, OpTruncate}

// ParseOperation returns the Operation named s, or an error naming the
// accepted values.
func ParseOperation(s string) (Operation, error) {
	for _, op := range Operations {
		if string(op) == s {
			return op, nil
		}
	}
	return "", fmt.Errorf("unknown operation %q; known: %s", s, joinOps(Operations))
}

func joinOps(ops []Operation) string {
	s := ""
	for i, op := range ops {
		if i > 0 {
			s += ", "
		}
		s += string(op)
	}
	return s
}

// LSN is a PostgreSQL write-ahead-log position.
type LSN uint64

// String formats the LSN the way PostgreSQL does, e.g. "16/B374D848".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// Change is one committed create, update or delete of one entity.
//
// Payload is the new row for create and update, and the previous row for
// delete; nil for truncate. Previous is the row before an update when the server sent it
// (tables have REPLICA IDENTITY FULL, so it normally does). Unchanged lists
// columns whose value PostgreSQL did not send (an unchanged TOAST value with
// no previous row to fill it from); such columns are absent from Payload,
// never reported as NULL.
type Change struct {
	EntityType string    // registry name, e.g. "pool"
	Operation  Operation // create, update or delete
	EntityID   string    // the key column's value, as text
	Payload    *Row
	Previous   *Row
	Unchanged  []string
	// Withheld names the columns of the change's table that the watcher
	// did not decode because sanitizing strips them from every row (see
	// watcher.Config.Omit): present in the table, absent from Payload and
	// Previous. It tells a secret column withheld from one renamed away
	// (the pipeline's secret guard) and lets the sanitizer count columns
	// stripped by name. Shared by every change of the table: read only.
	// Not journaled.
	Withheld []string
	// Backfill is set by the watcher when the change's table does not
	// have REPLICA IDENTITY FULL: PostgreSQL then sends an update without
	// its previous row and a delete with only the key. The journal keeps
	// the last state of such a table's entities and fills them in
	// (docs/guarantees.md, "What each replica identity gives").
	Backfill bool

	// Source position. CommitLSN is the transaction's commit record;
	// EndLSN the end of it, the only position safe to confirm
	// (see docs/replication.md rule 1). Index is the change's place in its
	// transaction, from 0.
	CommitLSN  LSN
	EndLSN     LSN
	Index      int
	Xid        uint32
	CommitTime time.Time

	// Cursor is the change's journal position once journaled; 0 before.
	Cursor int64
}

// Transaction is one committed source transaction, or one chunk of a large
// one, as the watcher hands it to the journal appender.
//
// A transaction with more changes than the watcher's chunk size arrives as
// several consecutive Transactions with the same Xid, CommitLSN and
// CommitTime: every one but the last has Final false; the last has Final
// true and carries EndLSN. A small transaction is a single Final chunk.
// Chunks of different transactions never interleave (pgoutput protocol 1
// sends each transaction whole, at its commit).
type Transaction struct {
	Xid        uint32
	CommitLSN  LSN       // the commit record's position (pgoutput Begin's final LSN)
	EndLSN     LSN       // the end of the commit record: set on the Final chunk only
	CommitTime time.Time // known from Begin, so set on every chunk
	Changes    []Change
	Final      bool
}
