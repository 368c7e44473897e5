package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/wire"
)

// subscription is what a client asks for: a GARM filter message, and for
// narrow ones the single entity type and operation it selects (so the
// harness can check every frame and know how many to expect).
type subscription struct {
	filter     string
	entityType string // "" for send-everything
	operation  string
}

var sendEverything = subscription{filter: `{"send-everything": true}`}

// narrow selects one entity type and one operation.
func narrow(entityType, op string) subscription {
	return subscription{
		filter:     fmt.Sprintf(`{"send-everything": false, "filters": [{"entity-type": %q, "operations": [%q]}]}`, entityType, op),
		entityType: entityType,
		operation:  op,
	}
}

// window is the commit-time interval whose changes' latencies count.
type window struct{ from, to time.Time }

// recording is what every client of a scenario shares.
type recording struct {
	window     atomic.Pointer[window]
	deliveries atomic.Int64 // change frames received by all clients
}

// wsClient is one harness WebSocket connection and what its reader saw.
// Counters are written by the reader goroutine only.
type wsClient struct {
	conn *websocket.Conn
	sub  subscription
	rec  *recording

	acked   chan struct{} // closed when the ping after the filter is answered
	ackOnce sync.Once
	done    chan struct{} // closed when the reader exits
	closing atomic.Bool   // the harness is closing the connection

	received  atomic.Int64 // change frames of the workload's entity types
	target    int64        // when received reaches it, reachedAt is set (0: never)
	reachedAt atomic.Int64 // unix nanoseconds

	mu  sync.Mutex
	lat []int32 // microseconds, changes committed within the window
	err error   // the first problem seen
}

// dialClient connects with "Authorization: Bearer token"; query, if not
// empty, is appended to the URL (since=...). The error never contains the
// token.
func dialClient(ctx context.Context, addr, token, query string) (*websocket.Conn, error) {
	u := "ws://" + addr + wire.EventsPath
	if query != "" {
		u += "?" + query
	}
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 1024}
	conn, resp, err := d.DialContext(ctx, u, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("connect %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
		}
		return nil, fmt.Errorf("connect %s: %w", u, err)
	}
	return conn, nil
}

// startClient sends sub's filter and a ping envelope on conn and starts the
// reader. acked closes when the ping's response arrives: the filter is in
// force from then on.
func startClient(conn *websocket.Conn, sub subscription, rec *recording, target int64) (*wsClient, error) {
	c := &wsClient{conn: conn, sub: sub, rec: rec, target: target, acked: make(chan struct{}), done: make(chan struct{})}
	_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(sub.filter)); err != nil {
		return nil, fmt.Errorf("send filter: %w", err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "ping", "id": "bench"}`)); err != nil {
		return nil, fmt.Errorf("send ping: %w", err)
	}
	go c.read() // owned by the client: ends when the connection closes
	return c, nil
}

// close closes the connection and waits for the reader.
func (c *wsClient) close() {
	c.closing.Store(true)
	_ = c.conn.Close()
	<-c.done
}

// failed returns the first problem the reader saw.
func (c *wsClient) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *wsClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// takeLatencies returns the latencies recorded so far and forgets them.
func (c *wsClient) takeLatencies() []int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lat
	c.lat = nil
	return l
}

// workloadTypes are the entity types the harness writes; change frames of
// other types (changecast's own system events) are not counted.
var workloadTypes = map[string]bool{instancesTable.entity: true, poolsTable.entity: true, jobsTable.entity: true}

// secretColumns must never appear in a frame: sanitize strips them.
var secretColumns = [][]byte{[]byte(`"callback_token"`), []byte(`"jit_configuration"`)}

// read receives frames until the connection ends. For each change frame
// it checks the cursor order and the filter, checks for secrets (every
// frame of the first thousand, then one in 64), and records the latency
// from its committed-at.
func (c *wsClient) read() {
	defer close(c.done)
	var buf bytes.Buffer
	var last int64
	var n int64
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			if !c.closing.Load() {
				c.fail(fmt.Errorf("connection ended after %d changes: %w", c.received.Load(), err))
			}
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			if !c.closing.Load() {
				c.fail(fmt.Errorf("read frame: %w", err))
			}
			return
		}
		now := time.Now()
		data := buf.Bytes()
		f, ok, err := parseFrame(data)
		if err != nil {
			c.fail(err)
			continue
		}
		if !ok {
			c.other(data)
			continue
		}
		n++
		if !workloadTypes[f.entityType] {
			// System events (entity type "event") and anything else
			// the harness did not write: checked for order, not
			// counted.
			if f.cursor <= last {
				c.fail(fmt.Errorf("cursor %d after %d: out of order or repeated", f.cursor, last))
			}
			last = f.cursor
			continue
		}
		switch {
		case f.cursor <= last:
			c.fail(fmt.Errorf("cursor %d after %d: out of order or repeated", f.cursor, last))
		case c.sub.entityType != "" && (f.entityType != c.sub.entityType || f.operation != c.sub.operation):
			c.fail(fmt.Errorf("got %s/%s through filter %s", f.entityType, f.operation, c.sub.filter))
		}
		last = f.cursor
		if n <= 1000 || n%64 == 0 {
			// Every frame at first, then a sample: the scans are a
			// large part of the clients' CPU, which the server shares.
			for _, s := range secretColumns {
				if bytes.Contains(data, s) {
					c.fail(fmt.Errorf("secret column %s in a frame (cursor %d)", s, f.cursor))
				}
			}
		}
		if n%997 == 1 {
			// Check the scan against a real JSON decode now and then.
			if err := checkFrame(data, f); err != nil {
				c.fail(err)
			}
		}
		if w := c.rec.window.Load(); w != nil && !f.committed.Before(w.from) && f.committed.Before(w.to) {
			us := now.Sub(f.committed).Microseconds()
			c.mu.Lock()
			c.lat = append(c.lat, int32(min(max(us, 0), 1<<31-1)))
			c.mu.Unlock()
		}
		c.rec.deliveries.Add(1)
		if got := c.received.Add(1); got == c.target {
			c.reachedAt.Store(now.UnixNano())
		}
	}
}

// other handles a frame that is not a change: the ping response, control
// frames, error frames.
func (c *wsClient) other(data []byte) {
	switch {
	case bytes.HasPrefix(data, []byte(`{"namespace":"events","name":"response"`)):
		c.ackOnce.Do(func() { close(c.acked) })
	case bytes.HasPrefix(data, []byte(`{"namespace":"events","name":"control"`)):
		for _, fatal := range []wire.ControlType{wire.ControlResyncRequired, wire.ControlShutdown, wire.ControlTokenExpired} {
			if bytes.Contains(data, []byte(`"`+fatal+`"`)) && !c.closing.Load() {
				c.fail(fmt.Errorf("control frame %s", data))
			}
		}
	case bytes.HasPrefix(data, []byte(`{"namespace":"error"`)):
		c.fail(fmt.Errorf("error frame %s", data))
	}
}

// frame is what the harness reads from a change frame.
type frame struct {
	entityType string
	operation  string
	cursor     int64
	committed  time.Time
}

// parseFrame scans a change frame, laid out as changecast writes it:
// {"entity-type":"…","operation":"…","payload":{…},"cursor":"…","committed-at":"…",…}.
// It scans rather than decodes so the clients cost little next to the
// server they share the machine with; the harness's rows never contain
// the keys "cursor" or "committed-at". ok is false for frames that are not
// changes.
func parseFrame(data []byte) (f frame, ok bool, err error) {
	rest, found := bytes.CutPrefix(data, []byte(`{"entity-type":"`))
	if !found {
		return f, false, nil
	}
	bad := func(what string) (frame, bool, error) {
		return frame{}, false, fmt.Errorf("change frame without %s: %.300s", what, data)
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return bad("entity type")
	}
	f.entityType = string(rest[:i])
	rest, found = bytes.CutPrefix(rest[i+1:], []byte(`,"operation":"`))
	if i = bytes.IndexByte(rest, '"'); !found || i < 0 {
		return bad("operation")
	}
	f.operation = string(rest[:i])
	rest = rest[i+1:]
	const cursorKey, committedKey = `,"cursor":"`, `,"committed-at":"`
	if i = bytes.Index(rest, []byte(cursorKey)); i < 0 {
		return bad("cursor")
	}
	rest = rest[i+len(cursorKey):]
	if i = bytes.IndexByte(rest, '"'); i < 0 {
		return bad("cursor")
	}
	if f.cursor, err = strconv.ParseInt(string(rest[:i]), 10, 64); err != nil {
		return bad("numeric cursor")
	}
	rest, found = bytes.CutPrefix(rest[i+1:], []byte(committedKey))
	if i = bytes.IndexByte(rest, '"'); !found || i < 0 {
		return bad("committed-at")
	}
	if f.committed, err = time.Parse(time.RFC3339Nano, string(rest[:i])); err != nil {
		return bad("RFC 3339 committed-at")
	}
	return f, true, nil
}

// checkFrame decodes data as JSON and compares it with what parseFrame
// found.
func checkFrame(data []byte, f frame) error {
	var v struct {
		EntityType  string          `json:"entity-type"`
		Operation   string          `json:"operation"`
		Payload     json.RawMessage `json:"payload"`
		Cursor      string          `json:"cursor"`
		CommittedAt time.Time       `json:"committed-at"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("change frame is not JSON: %w", err)
	}
	if v.EntityType != f.entityType || v.Operation != f.operation || v.Cursor != strconv.FormatInt(f.cursor, 10) || !v.CommittedAt.Equal(f.committed) || len(v.Payload) == 0 {
		return errors.New("frame layout changed: the harness's scan disagrees with its JSON decode; update parseFrame")
	}
	return nil
}
