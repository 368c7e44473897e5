package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/gorilla/websocket"
)

// Sentinel errors, wrapped by *Error: branch on them with errors.Is. None of
// them is helped by retrying with the same token, filter and cursor.
var (
	// ErrUnauthorized: the server refused the token (HTTP 401 at the
	// upgrade): missing, malformed, wrongly signed or expired. Mint a new
	// one (changecast token --user NAME --role admin|viewer).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTokenExpired: the token expired, either at the upgrade (then
	// ErrUnauthorized matches too) or during the stream (token-expired
	// control frame). Dial again with a new token; Options.Since (or the
	// CursorStore) resumes where this subscription stopped.
	ErrTokenExpired = errors.New("token expired")
	// ErrForbidden: the token may not see what was asked for (an entity
	// type outside its scope, e.g. user for a viewer), or the server
	// refused the request's origin (HTTP 403).
	ErrForbidden = errors.New("forbidden")
	// ErrBadFilter: the server rejected the filter (unknown entity type,
	// operation or field, ...). Error.Message holds its explanation.
	ErrBadFilter = errors.New("filter rejected")
	// ErrResyncRequired: the server cannot continue the stream without a
	// gap: the cursor is older than the journal keeps, or unknown to this
	// server (another server's, or a reset journal's). Re-read the state
	// you derive from the stream, then subscribe again without a cursor
	// (clearing the CursorStore).
	ErrResyncRequired = errors.New("resync required")
	// ErrBadRequest: the server refused the upgrade request itself (HTTP
	// 400), e.g. a malformed cursor.
	ErrBadRequest = errors.New("bad request")
)

// Error is an error of a subscription: which step failed, what the server
// said, and whether retrying can help (see Retryable). It never contains
// the token.
type Error struct {
	// Op is the step that failed: "dial", "filter", "stream", "handle"
	// (the Handler returned an error) or "cursor" (the CursorStore).
	Op string
	// URL is the WebSocket URL, without query.
	URL string
	// Status is the HTTP status of a refused upgrade; 0 otherwise.
	Status int
	// Message is the server's explanation: the error body of a refused
	// upgrade, or the message of an error or control frame.
	Message string
	// Cursor is the last cursor processed when the error happened (for
	// ErrResyncRequired, the one the server could not resume after); 0
	// when none.
	Cursor int64
	// Kind is the sentinel (ErrUnauthorized, ...) when one applies.
	Kind error
	// Err is the underlying cause, when there is one.
	Err error

	retryable bool
	also      error // a second sentinel (an expired token at dial is also unauthorized)
}

// Error describes the failure and, for terminal errors, what to do:
// "<op> <url>: <kind> (HTTP <status>): <server message>: <cause>; <hint>",
// each part only when known and not a repeat of the one before.
func (e *Error) Error() string {
	var parts []string
	switch {
	case e.Kind != nil && e.Status != 0:
		parts = append(parts, fmt.Sprintf("%v (HTTP %d)", e.Kind, e.Status))
	case e.Kind != nil:
		parts = append(parts, e.Kind.Error())
	case e.Status != 0:
		parts = append(parts, fmt.Sprintf("HTTP %d", e.Status))
	}
	if e.Message != "" && (e.Kind == nil || e.Message != e.Kind.Error()) {
		parts = append(parts, e.Message)
	}
	if e.Err != nil && (e.Message == "" || !strings.HasPrefix(e.Message, e.Err.Error())) {
		parts = append(parts, e.Err.Error())
	}
	head := e.Op
	if e.URL != "" {
		head += " " + e.URL
	}
	msg := head + ": " + strings.Join(parts, ": ")
	if hint := e.hint(); hint != "" {
		msg += "; " + hint
	}
	return msg
}

func (e *Error) hint() string {
	switch {
	case errors.Is(e, ErrTokenExpired):
		return "mint a new token and subscribe again; resuming from the last cursor loses nothing"
	case errors.Is(e, ErrUnauthorized):
		return "check the token, or mint a new one"
	case errors.Is(e, ErrResyncRequired) && !strings.Contains(e.Message, "re-read the state"):
		return "re-read the state, then subscribe again without a cursor"
	}
	return ""
}

// Unwrap returns the sentinel and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var out []error
	for _, err := range []error{e.Kind, e.also, e.Err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Retryable reports whether trying again, unchanged, may succeed: true for
// an unreachable or refusing server, a dropped connection, a timeout, a
// server shutting down and HTTP 408, 429 and 5xx; false for nil, a
// cancelled context, the sentinels above and anything unrecognised.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.retryable
	}
	return retryableCause(err)
}

// retryableCause classifies an error that is not an *Error.
func retryableCause(err error) bool {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &ce):
		switch ce.Code {
		case websocket.ClosePolicyViolation, websocket.CloseUnsupportedData, websocket.CloseInvalidFramePayloadData, websocket.CloseMessageTooBig, websocket.CloseMandatoryExtension:
			return false
		}
		return true
	case errors.As(err, &ne), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, websocket.ErrCloseSent):
		return true
	}
	return false
}

// statusRetryable reports whether an HTTP status refusing the upgrade is
// worth retrying.
func statusRetryable(status int) bool {
	return status == 408 || status == 429 || status >= 500
}
