// Package store owns everything changecast keeps in PostgreSQL: the gorm
// connection (the only package that imports gorm), migrations of the entity
// tables with REPLICA IDENTITY FULL, the publication the watcher streams
// from, and changecast's own schema: replication offsets, the journal of
// sanitized changes whose seq is the wire cursor, system events and users.
// It never starts or stops PostgreSQL; package localpg runs the embedded
// default.
//
// Guarantees: the journal has one writer (Appender), which journals each
// source transaction once, in commit order, moving the offset in the same
// database transaction; a reader never skips rows silently (retention and
// lost slots are reported, see Journal). Migrate and EnsurePublication are
// idempotent and serialised between processes; errors never carry a
// connection password (RedactURL). A DB is safe for concurrent use. What
// this promises end to end is docs/guarantees.md.
package store
