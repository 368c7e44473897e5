package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of RetentionConfig.
const (
	DefaultRetentionAge      = 7 * 24 * time.Hour
	DefaultRetentionRows     = int64(1_000_000)
	DefaultRetentionInterval = time.Minute
)

// pruneBatch is how many seqs one retention transaction deletes at most, so
// its locks are short.
const pruneBatch = 10_000

// RetentionConfig bounds the journal.
type RetentionConfig struct {
	// MaxAge removes rows journaled longer ago than this (by the
	// database's clock). Default: 7 days (when zero); negative disables.
	MaxAge time.Duration
	// MaxRows keeps at most this many of the newest rows. Default:
	// 1,000,000 (when zero); negative disables.
	MaxRows int64
	// Interval is the time between RunRetention's passes. Default: 1
	// minute (when zero or negative).
	Interval time.Duration
	// Logger receives RunRetention's logs. Default: slog.Default().
	Logger *slog.Logger
}

func (c RetentionConfig) withDefaults() RetentionConfig {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultRetentionAge
	}
	if c.MaxRows == 0 {
		c.MaxRows = DefaultRetentionRows
	}
	if c.Interval <= 0 {
		c.Interval = DefaultRetentionInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// PruneJournal makes one retention pass: it deletes the rows older than
// MaxAge and those beyond the newest MaxRows, oldest first, in batches of
// at most 10,000 seqs, each batch in a transaction that also raises the
// horizon to the highest seq it removed. It always removes a prefix of the
// journal, so a cursor at or above the horizon can resume without a gap.
// It returns how many rows it deleted (also when it fails midway).
func (db *DB) PruneJournal(ctx context.Context, cfg RetentionConfig) (deleted int64, err error) {
	cfg = cfg.withDefaults()
	target, err := db.pruneTarget(ctx, cfg)
	if err != nil {
		return 0, redactErr(fmt.Errorf("prune journal: %w", err), db.url)
	}
	var oldest *int64
	if err := db.pool.QueryRow(ctx, "SELECT min(seq) FROM changecast.journal").Scan(&oldest); err != nil {
		return 0, redactErr(fmt.Errorf("prune journal: oldest row: %w", hintMigrate(err)), db.url)
	}
	if oldest == nil || *oldest > target {
		return 0, nil
	}
	for lo := *oldest - 1; lo < target; {
		hi := min(lo+pruneBatch, target)
		var n int64
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, "DELETE FROM changecast.journal WHERE seq > $1 AND seq <= $2", lo, hi)
			if err != nil {
				return err
			}
			n = tag.RowsAffected()
			_, err = tx.Exec(ctx, "UPDATE changecast.journal_meta SET horizon = GREATEST(horizon, $1)", hi)
			return err
		})
		if err != nil {
			return deleted, redactErr(fmt.Errorf("prune journal through seq %d: %w", hi, hintMigrate(err)), db.url)
		}
		deleted += n
		lo = hi
	}
	return deleted, nil
}

// pruneTarget returns the highest seq to remove (0 for none).
func (db *DB) pruneTarget(ctx context.Context, cfg RetentionConfig) (int64, error) {
	var target int64
	if cfg.MaxRows >= 0 {
		var byCount int64
		if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(seq), 0) - $1 FROM changecast.journal", cfg.MaxRows).Scan(&byCount); err != nil {
			return 0, fmt.Errorf("count cut-off: %w", hintMigrate(err))
		}
		target = max(target, byCount)
	}
	if cfg.MaxAge >= 0 {
		byAge, err := db.ageCutoff(ctx, cfg.MaxAge)
		if err != nil {
			return 0, fmt.Errorf("age cut-off: %w", hintMigrate(err))
		}
		target = max(target, byAge)
	}
	return target, nil
}

// ageCutoff returns the newest seq journaled more than maxAge ago (0 for
// none). journaled_at follows seq (one writer at a time, each commit after
// the one before), so the rows older than the cut-off are a prefix of the
// journal, and its end is found by bisecting seq through the primary key:
// about 40 index probes for a journal of a trillion rows. journaled_at
// has no index of its own, which would cost every journaled change an
// index insert for a query run once an interval.
func (db *DB) ageCutoff(ctx context.Context, maxAge time.Duration) (int64, error) {
	var lo, hi int64 // lo: the newest seq known old (or below the first row); hi: seq known too new
	if err := db.pool.QueryRow(ctx, `SELECT coalesce(min(seq), 1) - 1, coalesce(max(seq), 0) + 1 FROM changecast.journal`).Scan(&lo, &hi); err != nil {
		return 0, err
	}
	first := lo
	cutoff := `now() - $2 * interval '1 microsecond'`
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		// The first row at or after mid (seq has gaps where rows were
		// never written or retention removed them).
		var seq int64
		var old bool
		err := db.pool.QueryRow(ctx, `SELECT seq, journaled_at < `+cutoff+` FROM changecast.journal
			WHERE seq >= $1 ORDER BY seq LIMIT 1`, mid, maxAge.Microseconds()).Scan(&seq, &old)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			hi = mid // removed since the bounds were read
		case err != nil:
			return 0, err
		case old:
			lo = seq // every row up to seq is old
		default:
			hi = mid // no row in [mid, seq) and seq is too new
		}
	}
	if lo == first {
		return 0, nil
	}
	return lo, nil
}

// RunRetention prunes the journal now and then every Interval until ctx
// ends, when it returns nil. A failed pass is logged (once until a pass
// succeeds again, which is logged too) and retried at the next interval.
func (db *DB) RunRetention(ctx context.Context, cfg RetentionConfig) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	ticker := time.NewTicker(cfg.Interval)
	defer ticker.Stop()
	failing := false
	for {
		deleted, err := db.PruneJournal(ctx, cfg)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if !failing {
				log.Error("journal retention failed; retrying every interval", "err", err, "interval", cfg.Interval)
				failing = true
			}
		default:
			if failing {
				log.Info("journal retention recovered")
				failing = false
			}
			if deleted > 0 {
				log.Info("journal retention removed rows", "deleted", deleted, "max_age", cfg.MaxAge, "max_rows", cfg.MaxRows)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
