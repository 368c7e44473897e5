package watcher

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors for the prerequisites Check verifies and Run relies on.
// Callers branch on them with errors.Is; the error's text (see
// PrerequisiteError) says what to do.
var (
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrReplicationPrivilege: the role is neither superuser nor has the
	// REPLICATION attribute.
	ErrReplicationPrivilege = errors.New("role may not replicate")
	// ErrPublicationMissing: Config.Publication does not exist in the
	// database.
	ErrPublicationMissing = errors.New("publication does not exist")
	// ErrNoFreeSlot: the watcher's slot does not exist and every one of
	// max_replication_slots is taken.
	ErrNoFreeSlot = errors.New("no free replication slot")
	// ErrNoFreeWALSender: every one of max_wal_senders is busy.
	ErrNoFreeWALSender = errors.New("no free WAL sender")
	// ErrSlotInUse: another process is streaming from the slot.
	// PostgreSQL allows one consumer per slot.
	ErrSlotInUse = errors.New("replication slot is in use")
	// ErrSlotMismatch: a slot of that name exists but is not a permanent
	// pgoutput slot of this database.
	ErrSlotMismatch = errors.New("replication slot does not fit")
	// ErrRunning: Run was called while another Run of the same Watcher
	// was still going.
	ErrRunning = errors.New("watcher is already running")
)

// PrerequisiteError is a missing or wrong server setup. Its text is meant
// for the person running changecast and says what to do; Err is one of the
// sentinels above.
type PrerequisiteError struct {
	Err     error  // sentinel, for errors.Is
	Message string // what is wrong and how to fix it
}

// Error returns the message for the operator.
func (e *PrerequisiteError) Error() string { return e.Message }

// Unwrap returns the sentinel.
func (e *PrerequisiteError) Unwrap() error { return e.Err }

func prerequisite(sentinel error, msg string) error {
	return &PrerequisiteError{Err: sentinel, Message: msg}
}

// Retryable reports whether calling Run again, after a pause, may succeed
// where it failed with err: true for lost connections, server restarts,
// stream errors and a slot held by another process (a standby waiting its
// turn); false for setup and configuration problems that need a person
// (wal_level, privileges, a missing publication, authentication, a
// mismatched slot), for ErrRunning and for context cancellation.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrSlotInUse) {
		return true
	}
	var pre *PrerequisiteError
	if errors.As(err, &pre) || errors.Is(err, ErrRunning) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "28"), // invalid authorization
			pgErr.Code == "3D000", // invalid_catalog_name: no such database
			pgErr.Code == "42501": // insufficient_privilege
			return false
		}
	}
	return true
}

// SlotInvalidated reports whether err is PostgreSQL refusing to stream from
// a slot it has invalidated (wal_status "lost": the slot fell further
// behind than max_slot_wal_keep_size allows). The changes after the slot's
// position are gone; retrying cannot bring them back.
func SlotInvalidated(err error) bool {
	if err == nil {
		return false
	}
	text := err.Error() // also for messages the server sent outside an error response
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		text += "\n" + pgErr.Detail // PostgreSQL says "invalidated" in the detail
	}
	return strings.Contains(text, "can no longer get changes from replication slot") ||
		strings.Contains(text, "has been invalidated")
}
