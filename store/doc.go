// Package store owns everything changecast keeps in PostgreSQL and the
// PostgreSQL it can run itself: the gorm connection (the only package that
// imports gorm), migrations of the entity tables with REPLICA IDENTITY FULL,
// the publication the watcher streams from, changecast's own schema
// (replication offsets), and the local PostgreSQL launcher behind the
// embedded default (StartLocal).
//
// Guarantees: Migrate and EnsurePublication are idempotent and serialised
// between processes by an advisory lock; SaveOffset never moves an offset
// backwards; errors never carry a connection password (see RedactURL). A DB
// and a Local are safe for concurrent use.
package store
