package watcher

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/changecast/changecast/entities"
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
	// ErrSlotLost: the slot that kept the changes after the stored
	// position is gone (see SlotLostError).
	ErrSlotLost = errors.New("replication slot was lost")
)

// How a slot was lost (SlotLostError.Kind).
const (
	// SlotMissing: the slot does not exist although a position was
	// stored (someone dropped it).
	SlotMissing = "missing"
	// SlotInvalidated: PostgreSQL invalidated the slot (wal_status
	// "lost": it fell further behind than max_slot_wal_keep_size) and
	// removed WAL it still needed.
	SlotInvalidated = "invalidated"
	// SlotMoved: the slot's confirmed position is beyond anything this
	// consumer stored, so it is not the slot we streamed from (dropped
	// and created again, or advanced with pg_replication_slot_advance).
	SlotMoved = "moved"
)

// SlotLostError reports that the changes committed after the stored
// position can no longer be streamed: retrying cannot bring them back. Run
// returns it instead of silently starting over on a new slot. The caller
// decides: record the loss and call RecoverSlot, or stop. Its text names
// the lost range and what to do.
type SlotLostError struct {
	Slot string
	Kind string // SlotMissing, SlotInvalidated or SlotMoved
	// From is the stored position (Config.StartLSN, or later Acks):
	// everything up to it was handled.
	From entities.LSN
	// SlotAt is the slot's confirmed position for SlotMoved, 0 otherwise.
	SlotAt entities.LSN
	// Detail is what PostgreSQL said, when it said something.
	Detail string
}

// Error says what was lost and how to avoid it next time.
func (e *SlotLostError) Error() string {
	var what string
	switch e.Kind {
	case SlotMissing:
		what = fmt.Sprintf("replication slot %q no longer exists (it was dropped)", e.Slot)
	case SlotInvalidated:
		what = fmt.Sprintf("replication slot %q was invalidated by PostgreSQL: it fell further behind than max_slot_wal_keep_size allows and the WAL it needed was removed", e.Slot)
	default:
		what = fmt.Sprintf("replication slot %q is at %s, beyond the stored position %s: it was dropped and created again, or advanced, by someone else", e.Slot, e.SlotAt, e.From)
	}
	if e.Detail != "" {
		what += " (" + e.Detail + ")"
	}
	return what + fmt.Sprintf("; changes committed after %s cannot be streamed. To avoid this, do not drop the slot while changecast is stopped, and keep max_slot_wal_keep_size large enough (or -1) for the longest downtime", e.From)
}

// Unwrap returns ErrSlotLost.
func (e *SlotLostError) Unwrap() error { return ErrSlotLost }

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
	if errors.As(err, &pre) || errors.Is(err, ErrRunning) || errors.Is(err, ErrSlotLost) ||
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

// invalidatedByServer reports whether err is PostgreSQL refusing to
// stream from a slot it has invalidated (wal_status "lost": the slot fell
// further behind than max_slot_wal_keep_size allows). The changes after the
// slot's position are gone; retrying cannot bring them back. prepare
// normally sees wal_status first; this covers an invalidation between the
// two.
func invalidatedByServer(err error) bool {
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
