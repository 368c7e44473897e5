package wsapi

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// hub is the set of connected clients and the fan-out to them.
//
// Lock rules: mu guards clients and closing. Publish holds the read lock
// while it enqueues, which never blocks (enqueue is a non-blocking channel
// send), so registration waits at most one batch's fan-out. wg counts every
// per-client goroutine; Add happens under mu while closing is false, so no
// Add can race with Close's Wait.
type hub struct {
	log       *slog.Logger
	overflows atomic.Uint64

	mu struct {
		sync.RWMutex
		clients map[*client]struct{}
		closing bool
	}
	wg sync.WaitGroup
}

func newHub(log *slog.Logger) *hub {
	h := &hub{log: log}
	h.mu.clients = map[*client]struct{}{}
	return h
}

// register adds c and starts its reader and writer goroutines. It returns
// false, starting nothing, once the hub is closing.
func (h *hub) register(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closing {
		return false
	}
	h.mu.clients[c] = struct{}{}
	h.wg.Add(2)
	c.running.Store(2)
	go c.readLoop()
	go c.writeLoop()
	return true
}

// unregister removes c; the last of its goroutines calls it on the way out.
func (h *hub) unregister(c *client) {
	h.mu.Lock()
	delete(h.mu.clients, c)
	h.mu.Unlock()
}

// count returns the number of registered clients.
func (h *hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.mu.clients)
}

// beginClose marks the hub closing and returns the clients to shut down. It
// returns nil if the hub was already closing.
func (h *hub) beginClose() []*client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closing {
		return nil
	}
	h.mu.closing = true
	out := make([]*client, 0, len(h.mu.clients))
	for c := range h.mu.clients {
		out = append(out, c)
	}
	return out
}

// snapshot returns the registered clients.
func (h *hub) snapshot() []*client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*client, 0, len(h.mu.clients))
	for c := range h.mu.clients {
		out = append(out, c)
	}
	return out
}

// publish fans batch out to every client that may and wants to see each
// change, in batch order. Each change is encoded at most once, lazily (only
// if some client wants it), and the prepared frame is shared.
func (h *hub) publish(batch []entities.Change) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.mu.closing || len(h.mu.clients) == 0 {
		return
	}
	for i := range batch {
		ch := &batch[i]
		var pm *websocket.PreparedMessage
		for c := range h.mu.clients {
			if !c.wants(ch) {
				continue
			}
			if pm == nil {
				var err error
				if pm, err = prepareChange(ch); err != nil {
					// A payload that cannot be encoded is a bug
					// upstream (sanitize hands us typed values);
					// skip the change rather than stall the stream.
					// The payload is not logged.
					h.log.Error("encode change; change dropped",
						"entity_type", ch.EntityType, "entity_id", ch.EntityID,
						"operation", string(ch.Operation), "err", err)
					break
				}
			}
			c.enqueue(outFrame{msg: pm, cursor: ch.Cursor})
		}
	}
}

func prepareChange(ch *entities.Change) (*websocket.PreparedMessage, error) {
	data, err := encodeChange(ch)
	if err != nil {
		return nil, err
	}
	return websocket.NewPreparedMessage(websocket.TextMessage, data)
}
