// Package watcher owns changecast's PostgreSQL logical replication
// connection: the slot and publication checks, pgoutput decoding, the
// relation cache, the assembly of row changes into committed transactions
// (in chunks when large) and the bookkeeping of write-ahead-log positions.
// It is the only package that imports pglogrepl.
//
// Guarantees: Run sends every committed transaction that touched a
// registered table, in commit order, each change once per Watcher, and
// nothing of a transaction before PostgreSQL committed it (Watcher.Run,
// Transaction). PostgreSQL is told that WAL may be recycled only up to
// what the caller acknowledged as durable, never up to what was received
// (Watcher.Ack). Run's goroutine alone uses the replication connection;
// Ack, Streaming, Confirmed and Stats are safe to call from any goroutine.
//
// The replication rules this relies on are docs/replication.md; the code
// cites them by number ("rule 4").
package watcher
