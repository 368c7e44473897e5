package store

import (
	"context"
	"fmt"

	"github.com/changecast/changecast/entities"
)

// Positions that tell how far a streaming standby has got behind its
// primary, for callers that read from the standby (serve --read-url).

// WALWritten returns how far the server has written its WAL
// (pg_current_wal_lsn()). Every transaction that committed before the call
// (with synchronous_commit on) ends at or before it. It fails on a standby.
func (db *DB) WALWritten(ctx context.Context) (entities.LSN, error) {
	var n int64
	if err := db.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&n); err != nil {
		return 0, redactErr(fmt.Errorf("read the WAL position: %w", err), db.url)
	}
	return entities.LSN(n), nil
}

// WALReplayed reports whether the server is a standby (in recovery) and,
// if so, the end of the last WAL record it replayed
// (pg_last_wal_replay_lsn()): what a query on it sees.
func (db *DB) WALReplayed(ctx context.Context) (standby bool, replayed entities.LSN, err error) {
	var n *int64
	if err := db.pool.QueryRow(ctx, `SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&standby, &n); err != nil {
		return false, 0, redactErr(fmt.Errorf("read the replayed WAL position: %w", err), db.url)
	}
	if n != nil {
		replayed = entities.LSN(*n)
	}
	return standby, replayed, nil
}
