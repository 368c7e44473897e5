// Package localpg runs a PostgreSQL cluster on this machine: the embedded
// default that serve starts when no database URL is given, and the
// throwaway clusters of the tests. It owns initdb, the access rules and
// settings (wal_level=logical, trust on a private unix socket, scram over
// loopback TCP), handing the files and processes to the postgres OS user
// when run as root, and starting and stopping the server with pg_ctl.
//
// Guarantees: Start returns only once the server accepts connections; an
// interrupted first start leaves no half-made cluster; a second Start on a
// running directory fails with ErrAlreadyRunning instead of sharing it, and
// Attach reaches such a server without owning it. The superuser's password
// stays in a 0600 pass file: never in a URL, in PsqlCommand or in the
// server log. A Cluster is safe for concurrent use.
//
// It is a public top-level package, not internal, because a Go program
// that embeds changecast needs to start the same embedded default. It
// imports the standard library and pgx only, never the persistence layer.
package localpg
