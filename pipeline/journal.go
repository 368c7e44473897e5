package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// Journal is where the pipeline makes changes durable: an append-only log
// of sanitized changes and system events, whose dense sequence is the wire
// cursor, with the replication offset kept beside it. store.Journal is the
// PostgreSQL implementation.
//
// A journal has one writer at a time (OpenWriter takes an exclusive lock
// that a second process waits for), which is what makes its sequence order
// equal to commit order. Every method must be safe for concurrent use.
type Journal interface {
	// OpenWriter takes the journal's writer lock and returns its one
	// writer, loaded with the head and the stored offset of cfg.Slot. It
	// fails with an error for which Standby reports true when another
	// process holds the lock.
	OpenWriter(ctx context.Context, cfg WriterConfig) (Writer, error)
	// Head returns the highest cursor ever written (0 when none), without
	// the writer lock. It never decreases, even when retention empties
	// the journal.
	Head(ctx context.Context) (int64, error)
	// Offset returns the stored replication offset of slot (0 when none),
	// without the writer lock.
	Offset(ctx context.Context, slot string) (entities.LSN, error)
	// SaveOffset stores lsn as slot's offset, never moving it backwards.
	// The pipeline uses it only for a newly created slot's start, before
	// any writer runs.
	SaveOffset(ctx context.Context, slot string, lsn entities.LSN) error
	// ForgetStates drops what the journal keeps to complete the changes
	// of entity types not in keep (see WriterConfig.Sanitize): a type
	// that is not watched misses changes, so its kept states would be
	// stale if it were watched again. The pipeline calls it before it
	// streams.
	ForgetStates(ctx context.Context, keep []string) error
	// RunRetention removes old entries by the journal's own policy until
	// ctx ends, then returns nil.
	RunRetention(ctx context.Context) error
	// Standby reports whether err from OpenWriter means another process
	// holds the journal: retrying later, as a hot standby, may succeed.
	Standby(err error) bool
}

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Slot names the replication offset the writer moves with each
	// commit.
	Slot string
	// OnCommit is called on the writer's goroutine after each durable
	// commit, in commit order, and for each transaction skipped as
	// already written. It must return quickly.
	OnCommit func(Committed)
	// SanitizeEvent strips secrets from a system event before it is
	// stored. The pipeline always sets it; a writer refuses to store
	// events without it.
	SanitizeEvent func(entities.Event) (entities.Event, error)
	// Sanitize strips secrets from a change the writer completes from
	// what it journaled earlier (a delete or update of a table without
	// REPLICA IDENTITY FULL: entities.Change.Backfill), with the rules in
	// force now. The pipeline always sets it; without it a writer
	// completes nothing.
	Sanitize func(entities.Change) (entities.Change, error)
	// Logger receives the writer's logs.
	Logger *slog.Logger
}

// Writer is a journal's single writer. Its contract:
//
//   - Run appends the transactions it receives, in order: a transaction
//     whose CommitLSN is below Offset is already written and is skipped
//     (reported to OnCommit with its EndLSN, so it can be acknowledged);
//     a chunked transaction's chunks become visible together with its
//     Final chunk and the new offset, atomically. It returns nil when in
//     is closed or ctx ends, and an error when the journal failed (the
//     Writer must then be closed and a new one opened).
//   - System writes (PersistEvent, SetEventStatus, DeleteEvents,
//     SavePosition) are applied by Run between source transactions, each
//     in a commit of its own, and wait for it; they fail with an error
//     when Run is not running.
//   - RecordGap is called while Run is not running.
//   - Head, Offset and HighWater are safe from any goroutine.
type Writer interface {
	// Run appends the transactions from in until in closes or ctx ends.
	Run(ctx context.Context, in <-chan entities.Transaction) error
	// Head returns the highest cursor committed.
	Head() int64
	// Offset returns the stored replication offset: the EndLSN of the
	// last written source transaction, or a position saved with
	// SavePosition or RecordGap, whichever is higher.
	Offset() entities.LSN
	// HighWater returns the most changes the writer held in memory at
	// once.
	HighWater() int
	// PersistEvent stores a system event (sanitized first) and journals
	// it as an "event" create; idempotent by event id.
	PersistEvent(ctx context.Context, ev entities.Event) error
	// SetEventStatus and DeleteEvents change stored events (those of
	// owner only, when owner is not nil) and journal the change. They
	// return an error wrapping ErrEventNotFound when an id is unknown.
	SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error
	DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error
	// SavePosition durably stores lsn as the offset (never backwards),
	// for a position no written transaction covers.
	SavePosition(ctx context.Context, lsn entities.LSN) error
	// RecordGap journals a gap: marker (sanitized) as its marker entry,
	// the lost range beside it, and the offset moved to gap.ToLSN, in
	// one commit; OnCommit reports the marker. It returns gap with Seq
	// and RecordedAt set.
	RecordGap(ctx context.Context, gap Gap, marker entities.Event) (Gap, error)
	// Close releases the writer lock. Call it after Run returned.
	Close() error
}

// Committed reports one journal commit to WriterConfig.OnCommit.
type Committed struct {
	// Head is the journal's highest cursor after the commit.
	Head int64
	// Changes are the committed changes in cursor order with Cursor set,
	// or nil when the commit was too large to hand over (sinks read it
	// from the journal, after the previous Head). Empty, not nil, when
	// the commit held no change.
	Changes []entities.Change
	// EndLSN is the highest source Transaction.EndLSN now durable in the
	// offset (0 if the commit covered none): the position the watcher may
	// confirm.
	EndLSN entities.LSN
}

// Gap is a stretch of source history the journal can never hold, because
// the replication slot that kept it was lost (docs/guarantees.md, "When a
// replication slot is lost").
type Gap struct {
	// Seq is the cursor of the gap's marker entry. Resuming after a
	// cursor below Seq is impossible; after Seq or later, exact.
	Seq int64
	// FromLSN is the stored offset when the slot was found lost:
	// everything that ended at or before it is in the journal.
	FromLSN entities.LSN
	// ToLSN is where the new slot starts: transactions that committed
	// after FromLSN and before ToLSN are lost.
	ToLSN entities.LSN
	// Reason says how the slot was lost, in a few words.
	Reason string
	// RecordedAt is when the gap was recorded.
	RecordedAt time.Time
}

// Sink receives what the journal committed, for delivery to an output
// (wsapi.Server, the WebSocket hub, is the first). The pipeline calls its
// methods from one goroutine, in commit order; none may block or do slow
// I/O: a sink that falls behind must catch up from the journal by itself,
// never slow the pipeline down.
type Sink interface {
	// Publish hands over one commit: head is the journal's highest
	// cursor after it, batch its changes in cursor order. A nil batch
	// means the commit was too large to hand over: read the changes up
	// to head from the journal. Called once with (head, nil) before the
	// first commit, with the journal's head at start.
	Publish(head int64, batch []entities.Change)
	// Gap says the stream has a gap whose marker is at cursor: whoever
	// the sink serves from a position before cursor must resynchronise;
	// reason says why, for people.
	Gap(cursor int64, reason string)
	// SetUnavailable says the stream cannot be served right now (the
	// replication slot is unusable), with the reason; "" says it can be
	// again.
	SetUnavailable(reason string)
}

// Errors a Writer's system writes return (wrapped), for callers to branch
// on.
var (
	// ErrWriterStopped: Run is not running (it returned, or never
	// started); the write was not made. The next writer takes writes
	// again.
	ErrWriterStopped = errors.New("journal writer is not running")
	// ErrWriteFailed: the journal commit failed or its outcome is
	// unknown; the writer stops. Idempotent writes (PersistEvent) can be
	// retried on the next writer.
	ErrWriteFailed = errors.New("journal write failed")
)
