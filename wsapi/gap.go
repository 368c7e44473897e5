package wsapi

import (
	"net/http"

	"github.com/changecast/changecast/wire"
)

// This file is how the hub tells clients that the stream has a gap it can
// never fill: the replication slot that kept the source's changes was lost
// (docs/guarantees.md, "When a replication slot is lost").

// A Journal's ReadAfter error that has a ResyncReason method (found with
// errors.As; store.GapError has one) means resuming after the cursor is
// impossible for a reason the client should hear, such as a recorded gap
// in the journal: the reader is stopped with resync-required carrying that
// reason, without asking Journal.Horizon.
type resyncReasoner interface{ ResyncReason() string }

// Gap stops, with a resync-required control frame carrying reason, every
// connected client that started (live or from its since cursor) before
// cursor: the stream it was given cannot continue without the gap whose
// marker is at cursor. Call it after Publish has published cursor;
// clients that connect from then on start at or after it and are left
// alone. It is wsapi.Server's side of the pipeline's Sink.
func (s *Server) Gap(cursor int64, reason string) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.mu.clients {
		if c.startPos < cursor {
			c.kick(resyncReason(reason))
		}
	}
}

// SetUnavailable makes the server refuse new WebSocket connections with
// 503 and reason (the stream cannot be served: the replication slot is
// unusable), and sends every connected client a lagging control frame
// saying so; connected clients keep their sockets. An empty reason makes
// the server accept connections again.
func (s *Server) SetUnavailable(reason string) {
	if reason == "" {
		s.unavailable.Store(nil)
		return
	}
	if prev := s.unavailable.Swap(&reason); prev != nil && *prev == reason {
		return // said already
	}
	data := encodeControl(wire.ControlLagging, s.Head(), reason)
	for _, c := range s.hub.snapshot() {
		select {
		case c.replies <- reply{data: data}:
			c.ensureWriter() // an idle connection has no writer running
		default: // its reader's replies are pending; the next lagging frame will do
		}
	}
}

// refuseUnavailable answers 503 with the reason while SetUnavailable holds.
func (s *Server) refuseUnavailable(w http.ResponseWriter) bool {
	p := s.unavailable.Load()
	if p == nil {
		return false
	}
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, *p)
	return true
}
