package natsjournal

import (
	"context"
	"errors"
	"fmt"

	"github.com/changecast/changecast/store"
)

// PGLocker elects the writer with a PostgreSQL session advisory lock on
// the watched database (store.DB.TryWatcherLock): a watcher killed with
// kill -9 loses it as soon as PostgreSQL sees its connection close, so a
// standby takes over within its retry interval.
type PGLocker struct{ DB *store.DB }

// TryLock takes the lock or fails with an error wrapping ErrLocked.
func (l PGLocker) TryLock(ctx context.Context) (Lease, error) {
	lk, err := l.DB.TryWatcherLock(ctx)
	if errors.Is(err, store.ErrWatcherLocked) {
		return nil, fmt.Errorf("%w: %w", ErrLocked, err)
	}
	if err != nil {
		return nil, err
	}
	return lk, nil
}

var _ Events = (*store.DB)(nil)
