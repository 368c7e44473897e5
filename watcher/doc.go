// Package watcher owns changecast's PostgreSQL logical replication
// connection: the slot and publication checks, the pgoutput decoding, the
// relation cache, the assembly of row changes into committed transactions
// and the bookkeeping of write-ahead-log positions. It is the only package
// that imports pglogrepl.
//
// # Ordering
//
// Run sends each committed source transaction that touched a registered
// table, in commit order. Nothing of a transaction is sent before it
// committed in PostgreSQL (protocol 1 decodes it only at its commit), but
// its non-final chunks (see Chunks) go out before its Commit message has
// arrived. A
// transaction's Changes are in the order the rows were changed, with Index
// counting from 0 across the whole transaction. A TRUNCATE becomes one
// change per truncated registered table (OpTruncate, no EntityID, nil
// Payload) at its place in the transaction; unregistered tables named or
// reached by CASCADE are ignored. A rolled-back transaction, or one that
// touched no registered table, produces nothing.
//
// One Watcher never sends the same change twice, across Run calls
// included: a transaction interrupted between chunks continues at the next
// Index. It never sends a transaction whose commit LSN is below
// Config.StartLSN (REPLICATION.md rule 2: the slot's own position can go
// backwards, so the stored one is authoritative). That comparison is
// strict: the next transaction's commit record can start exactly at the
// stored EndLSN, and DESIGN.md §4's "commit LSN ≤ stored offset" would
// drop it. A new Watcher resumes at whole transactions: a transaction
// whose Final chunk was not acknowledged is sent again from Index 0. So
// call Run again on the same Watcher only when the consumer kept all that
// the previous Run sent it, unacknowledged chunks included; a consumer
// that started over (rolled back what it had not made durable) needs a new
// Watcher whose StartLSN is its stored offset.
//
// # Chunks
//
// Pgoutput protocol 1 sends a transaction whole at its commit, however
// large; the watcher holds at most Config.ChunkSize of its changes. Each
// time it has ChunkSize, it sends them as a Transaction with Final false
// (Xid, CommitLSN and CommitTime set, EndLSN 0) and lets them go. At the
// Commit it sends the rest with Final true and EndLSN set, possibly with
// no changes (when the count is a multiple of ChunkSize). A transaction
// that fits in one chunk is a single Final Transaction. A Change's EndLSN
// equals its chunk's: 0 except in the Final chunk. Chunks of different
// transactions never interleave. Only a Final chunk's EndLSN may be passed
// to Ack: the consumer journals the chunks and acknowledges when the Final
// is durable.
//
// # Acknowledgement
//
// The watcher tells PostgreSQL that WAL may be recycled only up to what
// the caller acknowledged with Ack: write, flush and apply positions are
// all the highest Ack'd EndLSN, never the received position. While a
// transaction is open, chunks of it sent or not, nothing past the last
// Ack is confirmed. When nothing is pending (no open transaction, every
// sent Final acknowledged) it
// also confirms the end of transactions that touched no registered table
// and the server's position from keepalives, so a quiet publication does
// not pin WAL (rule 4). Positions are reported at least every
// Config.StatusInterval, within about half a second of an Ack, and at once
// when the server asks, including while Run waits for room on its output
// channel. Stats reports the lag: the bytes between the server's WAL end
// and the confirmed position.
//
// # Concurrency
//
// Run owns the replication connection: only its goroutine reads or writes
// it (rule 5). Ack, Streaming, Confirmed and Stats are safe to call from
// any goroutine. Check uses its own short-lived ordinary connection.
package watcher
