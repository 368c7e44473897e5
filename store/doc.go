// Package store owns everything changecast keeps in PostgreSQL: the gorm
// connection (the only package that imports gorm), migrations of the entity
// tables with REPLICA IDENTITY FULL, the publication the watcher streams
// from, and changecast's own schema (replication offsets and the journal).
// It never starts or stops PostgreSQL; package localpg runs the embedded
// default.
//
// The journal (changecast.journal) is an append-only table of sanitized
// changes whose seq is the wire cursor. Its guarantees:
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
//
// Other guarantees: Migrate and EnsurePublication are idempotent and
// serialised between processes by an advisory lock; SaveOffset never moves
// an offset backwards; errors never carry a connection password (see
// RedactURL). A DB is safe for concurrent use.
package store
