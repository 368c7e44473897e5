package store

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// A gap is the one way the journal can miss source changes: the
// replication slot that kept them was dropped, invalidated by PostgreSQL
// (max_slot_wal_keep_size) or moved past what changecast had stored. The
// changes committed between the stored offset and the new slot's start
// are gone. The journal records that fact instead of hiding it: a marker
// row (a critical system event) and a row in changecast.journal_gaps with
// the marker's seq and the lost LSN range, in one transaction. From then
// on no reader can resume after a cursor below the marker: ReadJournal
// fails with a *GapError and JournalHorizon is at least the marker's seq
// (docs/guarantees.md, "When a replication slot is lost").

// ErrJournalGap is wrapped by the *GapError ReadJournal returns for a
// cursor before a recorded gap.
var ErrJournalGap = errors.New("the journal has a gap after this cursor")

// Gap is a recorded gap in the journal (see pipeline.Gap).
type Gap = pipeline.Gap

// GapError reports that a reader's cursor lies before a gap: it cannot
// resume without missing changes and must re-read the state.
type GapError struct {
	After int64 // the reader's cursor
	Gap   Gap   // the first gap after it
}

// Error says what happened, for the reader's user.
func (e *GapError) Error() string {
	return fmt.Sprintf("cursor %d is before a gap in the journal at cursor %d: changes committed between LSN %s and %s were lost (%s)",
		e.After, e.Gap.Seq, e.Gap.FromLSN, e.Gap.ToLSN, e.Gap.Reason)
}

// Unwrap returns ErrJournalGap.
func (e *GapError) Unwrap() error { return ErrJournalGap }

// ResyncReason is what a client stopped by the gap is told (wsapi sends
// it in resync-required).
func (e *GapError) ResyncReason() string { return pipeline.GapMessage(e.Gap) }

// RecordGap journals a gap: marker (a system event saying what was lost,
// sanitized like PersistEvent's) becomes the marker row, gap's FromLSN,
// ToLSN and Reason go to changecast.journal_gaps under the marker's seq,
// and the slot's offset moves to ToLSN, all in one transaction. OnCommit
// then reports the marker change. It returns the gap with Seq and
// RecordedAt set.
//
// RecordGap runs on the caller's goroutine and must not be called while
// Run is running: the pipeline records a gap between two runs, before the
// watcher streams from the new slot.
func (a *Appender) RecordGap(ctx context.Context, gap Gap, marker entities.Event) (Gap, error) {
	if a.running.Load() {
		return Gap{}, errors.New("record gap: the appender is running")
	}
	if a.broken != nil {
		return Gap{}, fmt.Errorf("record gap: appender failed earlier (%v); close it and create a new one", a.broken)
	}
	if a.cfg.SanitizeEvent == nil {
		return Gap{}, errors.New("record gap: the appender has no SanitizeEvent; refusing to store unsanitized metadata")
	}
	if uint64(gap.ToLSN) > math.MaxInt64 || uint64(gap.FromLSN) > math.MaxInt64 {
		return Gap{}, fmt.Errorf("record gap: LSN out of range")
	}
	clean, err := a.cfg.SanitizeEvent(marker)
	if err != nil {
		return Gap{}, fmt.Errorf("record gap: sanitize marker: %w", err)
	}
	head := a.Head()
	var ch entities.Change
	err = a.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if ch, err = InsertEventTx(ctx, tx, clean); err != nil {
			return err
		}
		if err := a.copyChanges(ctx, tx, head, [][]entities.Change{{ch}}); err != nil {
			return err
		}
		// copyChanges set the cursor on its own copy of the slice.
		ch.Cursor = head + 1
		gap.Seq = ch.Cursor
		if err := tx.QueryRow(ctx, `INSERT INTO changecast.journal_gaps (seq, from_lsn, to_lsn, reason)
			VALUES ($1, $2, $3, $4) RETURNING recorded_at`, gap.Seq, int64(gap.FromLSN), int64(gap.ToLSN), gap.Reason).Scan(&gap.RecordedAt); err != nil {
			return fmt.Errorf("insert gap: %w", hintMigrate(err))
		}
		// The lost stretch may hold changes to any entity: no state
		// kept for back-fill can be trusted past it (states.go).
		if _, err := tx.Exec(ctx, `DELETE FROM changecast.entity_state`); err != nil {
			return fmt.Errorf("forget entity states: %w", hintMigrate(err))
		}
		return a.saveOffset(ctx, tx, gap.ToLSN)
	})
	if err != nil {
		if a.conn.IsClosed() {
			a.broken = redactErr(err, a.url)
		}
		return Gap{}, redactErr(fmt.Errorf("record gap: %w", err), a.url)
	}
	a.committed(gap.Seq, gap.ToLSN)
	if a.cfg.OnCommit != nil {
		a.cfg.OnCommit(Committed{Head: gap.Seq, Changes: []entities.Change{ch}})
	}
	gap.RecordedAt = gap.RecordedAt.UTC()
	return gap, nil
}

// SavePosition stores lsn as the slot's offset through the running
// appender, between source transactions, and returns once it is durable.
// The watcher calls it (through the pipeline) before confirming a position
// that no journaled transaction covers, such as WAL that touched no
// watched table: the slot then never holds a confirmed position the
// journal does not, which is what lets the next start tell our slot from
// one that was recreated or moved by someone else. The offset never moves
// backwards.
func (a *Appender) SavePosition(ctx context.Context, lsn entities.LSN) error {
	if lsn <= a.Offset() {
		return nil
	}
	err := a.Submit(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		return nil, a.saveOffset(ctx, tx, lsn)
	})
	if err != nil {
		return err
	}
	// Submit's commit reports EndLSN 0 (system writes move no offset);
	// this one did, durably.
	storeMaxOffset(&a.offset, lsn)
	return nil
}

// Gaps returns the recorded gaps, oldest first.
func (db *DB) Gaps(ctx context.Context) ([]Gap, error) {
	rows, err := db.pool.Query(ctx, `SELECT seq, from_lsn, to_lsn, reason, recorded_at FROM changecast.journal_gaps ORDER BY seq`)
	if err != nil {
		return nil, redactErr(fmt.Errorf("read gaps: %w", hintMigrate(err)), db.url)
	}
	gaps, err := pgx.CollectRows(rows, scanGap)
	if err != nil {
		return nil, redactErr(fmt.Errorf("read gaps: %w", err), db.url)
	}
	return gaps, nil
}

// firstGapAfter returns the first gap whose marker is after cursor after,
// and whether there is one.
func (db *DB) firstGapAfter(ctx context.Context, after int64) (Gap, bool, error) {
	rows, err := db.pool.Query(ctx, `SELECT seq, from_lsn, to_lsn, reason, recorded_at FROM changecast.journal_gaps
		WHERE seq > $1 ORDER BY seq LIMIT 1`, after)
	if err != nil {
		return Gap{}, false, fmt.Errorf("read gaps: %w", hintMigrate(err))
	}
	g, err := pgx.CollectExactlyOneRow(rows, scanGap)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Gap{}, false, nil
	case err != nil:
		return Gap{}, false, fmt.Errorf("read gaps: %w", err)
	}
	return g, true, nil
}

func scanGap(row pgx.CollectableRow) (Gap, error) {
	var g Gap
	var from, to int64
	if err := row.Scan(&g.Seq, &from, &to, &g.Reason, &g.RecordedAt); err != nil {
		return Gap{}, err
	}
	g.FromLSN, g.ToLSN, g.RecordedAt = entities.LSN(from), entities.LSN(to), g.RecordedAt.UTC()
	return g, nil
}
