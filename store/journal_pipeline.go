package store

import (
	"context"
	"errors"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// Journal is the PostgreSQL implementation of pipeline.Journal (for the
// pipeline) and of wsapi.Journal (for the hub's resume and catch-up): the
// changecast.journal table, its offsets and its retention, in the database
// DB is connected to.
//
// The journal is an append-only table of sanitized changes whose seq is
// the wire cursor. Its guarantees:
//
//   - Single writer: one Appender per database, held by a session advisory
//     lock (a second gets ErrJournalLocked); it assigns seq itself, dense,
//     without gaps.
//   - Commit order: the Appender journals source transactions in the order
//     it receives them, which is commit order, so seq order is commit order
//     and a reader tailing by seq never skips a row that commits late.
//   - Exactly once per commit LSN: the slot's offset (the EndLSN of the last
//     journaled transaction) moves in the same database transaction as the
//     rows it covers, and transactions with a CommitLSN below it are
//     skipped, so a replay after a crash adds nothing twice.
//   - Bounded memory: a chunked source transaction is written chunk by
//     chunk into one journal transaction; only its commit makes it visible.
//   - Bounded retention (PruneJournal, RunRetention): rows go oldest first
//     and the horizon records the highest removed seq; a reader resuming
//     after a cursor below it gets ErrCursorExpired, never a silent gap.
//   - Lost slots are recorded, never hidden: RecordGap journals a marker
//     and the lost LSN range together, and a reader resuming from before
//     the marker gets a *GapError (gaps.go).
type Journal struct {
	DB *DB
	// Retention is the policy RunRetention applies.
	Retention RetentionConfig
}

var (
	_ pipeline.Journal = (*Journal)(nil)
	_ pipeline.Writer  = (*Appender)(nil)
)

// OpenWriter opens the journal's single writer, an Appender.
func (j *Journal) OpenWriter(ctx context.Context, cfg pipeline.WriterConfig) (pipeline.Writer, error) {
	a, err := j.DB.NewAppender(ctx, AppenderConfig{Slot: cfg.Slot, OnCommit: cfg.OnCommit, SanitizeEvent: cfg.SanitizeEvent, Sanitize: cfg.Sanitize, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Head returns the journal's highest seq.
func (j *Journal) Head(ctx context.Context) (int64, error) { return j.DB.JournalHead(ctx) }

// Offset returns slot's stored replication position.
func (j *Journal) Offset(ctx context.Context, slot string) (entities.LSN, error) {
	return j.DB.LoadOffset(ctx, slot)
}

// SaveOffset stores slot's replication position, never backwards.
func (j *Journal) SaveOffset(ctx context.Context, slot string, lsn entities.LSN) error {
	return j.DB.SaveOffset(ctx, slot, lsn)
}

// ForgetStates drops the back-fill states of entity types not in keep
// (states.go).
func (j *Journal) ForgetStates(ctx context.Context, keep []string) error {
	return j.DB.ForgetStates(ctx, keep)
}

// RunRetention prunes the journal by j.Retention until ctx ends.
func (j *Journal) RunRetention(ctx context.Context) error { return j.DB.RunRetention(ctx, j.Retention) }

// ReadAfter reads journaled changes after a cursor (see DB.ReadJournal):
// with Horizon, what wsapi's hub needs for resume and catch-up.
func (j *Journal) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	return j.DB.ReadJournal(ctx, after, limit, types)
}

// Horizon returns the lowest cursor a reader can resume after (see
// DB.JournalHorizon).
func (j *Journal) Horizon(ctx context.Context) (int64, error) { return j.DB.JournalHorizon(ctx) }

// Standby reports whether err is ErrJournalLocked: another process writes
// this journal.
func (j *Journal) Standby(err error) bool { return errors.Is(err, ErrJournalLocked) }

var _ pipeline.BatchWriter = (*Appender)(nil)
