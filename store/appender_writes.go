package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// WriteFunc writes changecast's own tables (the events table) inside a
// journal transaction and returns the changes that write made, to be
// journaled in the same transaction. It must not keep tx.
type WriteFunc func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error)

// write is a Submit waiting for the appender goroutine.
type write struct {
	fn   WriteFunc
	done chan error // cap 1: the appender never waits on it
}

// ErrJournalWriteFailed is returned (wrapped) by Submit when the journal
// transaction itself failed or its commit is in doubt (the connection
// broke): the appender stops, and whether the write committed is unknown.
// A write made idempotent (PersistEvent is) can be retried on the next
// appender.
var ErrJournalWriteFailed = pipeline.ErrWriteFailed

// ErrAppenderStopped is returned (wrapped) by Submit and PersistEvent when
// the appender's Run has returned: the write was not made. A new appender
// (the pipeline rebuilds one) takes writes again.
var ErrAppenderStopped = pipeline.ErrWriterStopped

// Submit runs fn on the appender goroutine, between source transactions, in
// a journal transaction of its own: fn's table writes, the journal rows of
// the changes it returns (with cursors after the current head) and nothing
// else commit together, and OnCommit then reports them (with EndLSN 0: a
// system write moves no replication offset, and is never skipped as
// already journaled, whatever its commit position). If fn fails, nothing is
// written and its error is returned; the appender carries on unless the
// connection broke. Submit waits for Run to take the write (or ctx to end,
// or Run to return) and then for the commit.
func (a *Appender) Submit(ctx context.Context, fn WriteFunc) error {
	w := write{fn: fn, done: make(chan error, 1)}
	select {
	case a.writes <- w:
	case <-ctx.Done():
		return fmt.Errorf("journal write: %w", ctx.Err())
	case <-a.runDone:
		return fmt.Errorf("journal write: %w", ErrAppenderStopped)
	}
	return <-w.done
}

// PersistEvent stores a system event: the events table row and its journal
// row commit in one transaction, and OnCommit hands the event change
// (entity type "event", operation create) to the hub. The event first goes
// through AppenderConfig.SanitizeEvent, so a secret-looking metadata key
// reaches neither table; without a SanitizeEvent PersistEvent refuses.
// PersistEvent is idempotent: an event already stored (same id) is not
// written again, so it is safe to retry after ErrJournalWriteFailed.
func (a *Appender) PersistEvent(ctx context.Context, ev entities.Event) error {
	if a.cfg.SanitizeEvent == nil {
		return errors.New("persist event: the appender has no SanitizeEvent; refusing to store unsanitized metadata")
	}
	clean, err := a.cfg.SanitizeEvent(ev)
	if err != nil {
		return fmt.Errorf("persist event: sanitize: %w", err)
	}
	err = a.Submit(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		ch, err := InsertEventTx(ctx, tx, clean)
		if err != nil {
			return nil, err
		}
		return []entities.Change{ch}, nil
	})
	if errors.Is(err, ErrEventExists) {
		return nil // persisted before: a retry after an unknown outcome
	}
	return err
}

// applyWrite runs one Submit on the appender goroutine. It returns an error
// only when the appender must stop (the journal transaction's outcome is
// unknown or the connection broke); fn's own errors go to the submitter.
func (a *Appender) applyWrite(ctx context.Context, w write) error {
	head := a.Head()
	var changes []entities.Change
	var fnErr error
	err := a.inTx(ctx, func(tx pgx.Tx) error {
		changes, fnErr = w.fn(ctx, tx)
		if fnErr != nil {
			return fnErr
		}
		a.hold(len(changes))
		return a.copyChanges(ctx, tx, head, [][]entities.Change{changes})
	})
	switch {
	case err == nil:
	case fnErr != nil && !a.conn.IsClosed():
		w.done <- fnErr // rolled back; the appender is fine
		return nil
	default:
		w.done <- fmt.Errorf("%w: %w", ErrJournalWriteFailed, err)
		return err
	}
	n := int64(len(changes))
	a.committed(head+n, 0)
	if a.cfg.OnCommit != nil {
		if changes == nil {
			changes = []entities.Change{}
		}
		a.cfg.OnCommit(Committed{Head: head + n, Changes: changes})
	}
	a.hold(0)
	w.done <- nil
	return nil
}

// SetEventStatus sets the status of stored events (of owner only, when
// owner is not nil) through the running appender and journals each change
// as an event update. An unknown id fails with ErrEventNotFound and
// changes nothing.
func (a *Appender) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	return a.Submit(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		return SetEventStatusTx(ctx, tx, owner, ids, status)
	})
}

// DeleteEvents deletes stored events (of owner only, when owner is not
// nil) through the running appender and journals each as an event delete.
// An unknown id fails with ErrEventNotFound and deletes nothing.
func (a *Appender) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	return a.Submit(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		return DeleteEventsTx(ctx, tx, owner, ids)
	})
}
