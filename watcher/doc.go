// Package watcher owns changecast's PostgreSQL logical replication
// connection: the slot and publication checks, the pgoutput decoding, the
// relation cache, the assembly of row changes into committed transactions
// and the bookkeeping of write-ahead-log positions. It is the only package
// that imports pglogrepl.
//
// # Ordering
//
// Run sends one Transaction per committed source transaction that touched a
// registered table, after its Commit message and never before, in commit
// order. A Transaction's Changes are in the order the rows were changed,
// with Index counting from 0. A rolled-back transaction produces nothing.
// One Watcher never sends the same transaction twice, across Run calls
// included, and never sends one whose EndLSN is at or below
// Config.StartLSN (REPLICATION.md rule 2: the slot's own position can go
// backwards, so the stored one is authoritative).
//
// # Acknowledgement
//
// The watcher tells PostgreSQL that WAL may be recycled only up to what
// the caller acknowledged with Ack: write, flush and apply positions are
// all the highest Ack'd EndLSN, never the received position. When nothing
// is pending (no open transaction, every sent Transaction acknowledged) it
// also confirms the end of transactions that touched no registered table
// and the server's position from keepalives, so a quiet publication does
// not pin WAL (rule 4). Positions are reported at least every
// Config.StatusInterval, within about half a second of an Ack, and at once
// when the server asks, including while Run waits for room on its output
// channel.
//
// # Concurrency
//
// Run owns the replication connection: only its goroutine reads or writes
// it (rule 5). Ack, Streaming and Confirmed are safe to call from any
// goroutine. Check uses its own short-lived ordinary connection.
package watcher
