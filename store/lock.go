package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// watcherLockKey is the session advisory lock that elects the one active
// watcher of a database whose journal lives outside PostgreSQL
// (natsjournal): "cwatchr".
const watcherLockKey int64 = 0x63_7761_7463_6872

// ErrWatcherLocked is returned (wrapped) by TryWatcherLock when another
// session holds the lock: another watcher is active.
var ErrWatcherLocked = errors.New("another changecast watcher is active on this database")

// SessionLock is a held session advisory lock, on a connection of its
// own.
type SessionLock struct {
	conn *pgx.Conn
}

// TryWatcherLock takes the watcher lock of the database on a connection of
// its own, without waiting: it fails with an error wrapping
// ErrWatcherLocked when another session holds it. The lock lasts until
// Unlock, or until the connection ends (a killed process loses it as soon
// as PostgreSQL sees its connection close).
func (db *DB) TryWatcherLock(ctx context.Context) (*SessionLock, error) {
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		return nil, redactErr(fmt.Errorf("watcher lock: %w", err), db.url)
	}
	cfg.RuntimeParams["application_name"] = "changecast watcher lock"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, redactErr(fmt.Errorf("watcher lock: connect to %s: %w", RedactURL(db.url), err), db.url)
	}
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", watcherLockKey).Scan(&locked); err != nil {
		conn.Close(context.Background())
		return nil, redactErr(fmt.Errorf("watcher lock: %w", err), db.url)
	}
	if !locked {
		conn.Close(context.Background())
		return nil, fmt.Errorf("%w: it stays on standby and takes over when the lock is free", ErrWatcherLocked)
	}
	return &SessionLock{conn: conn}, nil
}

// Alive reports whether the lock's connection still answers: a false
// answer means the lock may be lost.
func (l *SessionLock) Alive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return l.conn.Ping(ctx) == nil
}

// Unlock releases the lock and closes its connection. It is safe to call
// more than once.
func (l *SessionLock) Unlock() error {
	if l.conn.IsClosed() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = l.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", watcherLockKey)
	return l.conn.Close(ctx)
}
