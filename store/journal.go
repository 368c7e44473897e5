package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
)

// ErrCursorExpired is returned (wrapped) by ReadJournal when retention has
// removed rows after the requested cursor: the reader cannot resume without
// a gap and must resync.
var ErrCursorExpired = errors.New("cursor is older than the journal's retention horizon")

const (
	readJournalAll = `SELECT seq, commit_lsn, tx_index, xid, committed_at, entity_type, operation, entity_id, payload, previous, unchanged
		FROM changecast.journal
		WHERE seq > $1 AND $1 >= (SELECT horizon FROM changecast.journal_meta)
			AND $1 >= (SELECT coalesce(max(seq), 0) FROM changecast.journal_gaps)
		ORDER BY seq LIMIT $2`
	readJournalTypes = `SELECT seq, commit_lsn, tx_index, xid, committed_at, entity_type, operation, entity_id, payload, previous, unchanged
		FROM changecast.journal
		WHERE seq > $1 AND $1 >= (SELECT horizon FROM changecast.journal_meta)
			AND $1 >= (SELECT coalesce(max(seq), 0) FROM changecast.journal_gaps) AND entity_type = ANY($3)
		ORDER BY seq LIMIT $2`
)

// ReadJournal returns up to limit journaled changes with seq above after,
// in seq order, of the entity types in types (nil: all types; empty: none).
// Each change has Cursor, CommitLSN, Index, Xid, CommitTime (UTC),
// EntityType, Operation, EntityID, Payload, Previous and Unchanged set;
// EndLSN is not journaled and stays 0.
//
// Payload and Previous are the stored rows, read without decoding their
// values (entities.ParseRow): their JSON is exactly the bytes the live
// change had.
//
// When a gap was recorded after after (see RecordGap), ReadJournal returns
// a *GapError (wrapping ErrJournalGap) naming the lost range; when
// retention has removed rows after after, an error wrapping
// ErrCursorExpired. The checks and the read see one snapshot, so a reader
// never skips rows silently.
func (db *DB) ReadJournal(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	if limit <= 0 {
		return nil, nil
	}
	if types != nil && len(types) == 0 {
		return nil, nil
	}
	var (
		rows pgx.Rows
		err  error
	)
	if types == nil {
		rows, err = db.pool.Query(ctx, readJournalAll, after, limit)
	} else {
		rows, err = db.pool.Query(ctx, readJournalTypes, after, limit, types)
	}
	if err != nil {
		return nil, redactErr(fmt.Errorf("read journal: %w", hintMigrate(err)), db.url)
	}
	defer rows.Close()
	var out []entities.Change
	for rows.Next() {
		var (
			c                 entities.Change
			lsn, xid          int64
			index             int32
			op                string
			payload, previous []byte
		)
		if err := rows.Scan(&c.Cursor, &lsn, &index, &xid, &c.CommitTime, &c.EntityType, &op, &c.EntityID, &payload, &previous, &c.Unchanged); err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		c.CommitLSN, c.Index, c.Xid, c.Operation = entities.LSN(lsn), int(index), uint32(xid), entities.Operation(op)
		c.CommitTime = c.CommitTime.UTC()
		if c.Payload, err = readRow(payload); err != nil {
			return nil, fmt.Errorf("read journal: payload of seq %d: %w", c.Cursor, err)
		}
		if c.Previous, err = readRow(previous); err != nil {
			return nil, fmt.Errorf("read journal: previous row of seq %d: %w", c.Cursor, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, redactErr(fmt.Errorf("read journal: %w", hintMigrate(err)), db.url)
	}
	if len(out) == 0 {
		// Nothing newer, or the horizon or gap check excluded
		// everything. Both only grow, so reading them now is
		// conclusive; a gap explains more than retention does.
		gap, found, err := db.firstGapAfter(ctx, after)
		if err != nil {
			return nil, redactErr(fmt.Errorf("read journal: %w", err), db.url)
		}
		if found {
			return nil, fmt.Errorf("read journal: %w", &GapError{After: after, Gap: gap})
		}
		horizon, err := db.retentionHorizon(ctx)
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		if after < horizon {
			return nil, fmt.Errorf("read journal after cursor %d: %w (%d)", after, ErrCursorExpired, horizon)
		}
	}
	return out, nil
}

// readRow reads a stored JSON object into a Row without decoding its
// values (entities.ParseRow); SQL NULL is a nil Row.
func readRow(b []byte) (*entities.Row, error) {
	if b == nil {
		return nil, nil
	}
	return entities.ParseRow(b)
}

// JournalHead returns the journal's highest seq (0 when nothing was ever
// journaled). It does not go backwards when retention empties the journal.
func (db *DB) JournalHead(ctx context.Context) (int64, error) {
	head, err := loadHead(ctx, db.pool)
	if err != nil {
		return 0, redactErr(err, db.url)
	}
	return head, nil
}

// JournalHorizon returns the lowest cursor a reader can resume after: the
// highest seq retention has removed, or the marker of the latest gap
// (see RecordGap) if that is higher; 0 if neither. Resuming after cursor c
// is possible if and only if c >= the horizon. It never decreases.
func (db *DB) JournalHorizon(ctx context.Context) (int64, error) {
	var horizon int64
	if err := db.pool.QueryRow(ctx, `SELECT GREATEST(
			(SELECT coalesce(max(horizon), 0) FROM changecast.journal_meta),
			(SELECT coalesce(max(seq), 0) FROM changecast.journal_gaps))`).Scan(&horizon); err != nil {
		return 0, redactErr(fmt.Errorf("journal horizon: %w", hintMigrate(err)), db.url)
	}
	return horizon, nil
}

// retentionHorizon returns the highest seq retention has removed.
func (db *DB) retentionHorizon(ctx context.Context) (int64, error) {
	var horizon int64
	if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(horizon), 0) FROM changecast.journal_meta").Scan(&horizon); err != nil {
		return 0, redactErr(fmt.Errorf("journal horizon: %w", hintMigrate(err)), db.url)
	}
	return horizon, nil
}
