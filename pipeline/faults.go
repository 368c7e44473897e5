package pipeline

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/changecast/changecast/watcher"
)

// faultKind is what a failure of the pipeline means for the supervisor.
type faultKind int

const (
	// faultInterrupted: the connection or the server went away;
	// rebuilding after a pause will work once it is back.
	faultInterrupted faultKind = iota
	// faultStandby: another process streams from the slot or holds the
	// journal; this one waits as a hot standby.
	faultStandby
	// faultSlotLost: the slot was lost and recording the gap failed;
	// the next rebuild finds the loss again.
	faultSlotLost
	// faultFatal: retrying cannot help (bad credentials, no such
	// database, a missing privilege or prerequisite, an unsanitizable
	// change): Run returns err, which says what to do.
	faultFatal
)

// fault is a classified failure.
type fault struct {
	kind faultKind
	err  error // for faultFatal, the error Run returns, with its fix
}

// classify decides from the error itself, never from its text, whether a
// rebuild can help. PostgreSQL's SQLSTATE classes say which faults cannot
// heal by waiting: 28 (invalid authorization), 3D000 (no such database),
// 42501 (insufficient privilege).
func classify(err error, j Journal) fault {
	var (
		pre   *watcher.PrerequisiteError
		unsan unsanitizable
		pgErr *pgconn.PgError
	)
	switch {
	case errors.Is(err, watcher.ErrSlotInUse), j.Standby(err):
		return fault{kind: faultStandby}
	case errors.Is(err, watcher.ErrSlotLost):
		return fault{kind: faultSlotLost, err: err}
	case errors.As(err, &unsan):
		return fault{kind: faultFatal, err: err}
	case errors.As(err, &pre):
		return fault{kind: faultFatal, err: err}
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28"):
		return fault{kind: faultFatal, err: fmt.Errorf("%w; PostgreSQL refused the credentials: fix the user or password in the database URL and restart", err)}
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		return fault{kind: faultFatal, err: fmt.Errorf("%w; the database does not exist: create it or fix the database name in the URL, then restart", err)}
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return fault{kind: faultFatal, err: fmt.Errorf("%w; the role lacks a privilege changecast needs: grant it (see the message) or use another role, then restart", err)}
	case errors.Is(err, watcher.ErrRunning):
		return fault{kind: faultFatal, err: err}
	}
	return fault{kind: faultInterrupted}
}

// describe is the log line for a fault's state; a new line means a new
// state, which raises one event.
func (f fault) describe(slot string) string {
	switch f.kind {
	case faultStandby:
		return "replication slot " + slot + " or the journal is held by another process; waiting as a standby"
	case faultSlotLost:
		return "replication slot " + slot + " was lost; recording the gap failed, retrying"
	default:
		return "replication interrupted; reconnecting"
	}
}
