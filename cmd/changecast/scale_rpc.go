package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// System writes from any process (a gateway's events REST API, the events
// a gateway raises) reach the stream through the active watcher's journal
// writer, the path row changes take: the gateway sends a NATS request on
// rpcSubject, which only the active watcher subscribes to. The subject is
// outside the stream's (changecast.>), so requests are never journaled.

// rpcSubject is where the active watcher of stream takes system writes.
func rpcSubject(stream string) string { return "changecast_rpc." + stream + ".events" }

// rpcTimeout bounds one system write through the active watcher.
const rpcTimeout = 15 * time.Second

// noWatcherWait is how long a system write waits for a watcher to become
// active before it answers unavailable.
const noWatcherWait = 5 * time.Second

// rpcRequest is one system write.
type rpcRequest struct {
	Op     string               `json:"op"` // persist, status, delete
	Event  *entities.Event      `json:"event,omitempty"`
	Owner  *uuid.UUID           `json:"owner,omitempty"`
	IDs    []uuid.UUID          `json:"ids,omitempty"`
	Status entities.EventStatus `json:"status,omitempty"`
}

// rpcReply is its outcome.
type rpcReply struct {
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"` // not_found, unavailable
}

// serveSystemWrites subscribes the watcher to rpcSubject while its
// pipeline streams (it is the active watcher), until ctx ends.
func serveSystemWrites(ctx context.Context, nc *nats.Conn, stream string, pipe *pipeline.Pipeline, log *slog.Logger) {
	var sub *nats.Subscription
	defer func() {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		active := pipe.Streaming()
		switch {
		case active && sub == nil:
			s, err := nc.QueueSubscribe(rpcSubject(stream), "watchers", func(m *nats.Msg) { handleSystemWrite(ctx, m, pipe) })
			if err != nil {
				log.Warn("take system writes from gateways", "err", err)
			} else {
				sub = s
			}
		case !active && sub != nil:
			_ = sub.Unsubscribe()
			sub = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func handleSystemWrite(ctx context.Context, m *nats.Msg, pipe *pipeline.Pipeline) {
	var req rpcRequest
	dec := json.NewDecoder(bytes.NewReader(m.Data))
	dec.UseNumber()
	reply := func(err error) {
		var r rpcReply
		switch {
		case err == nil:
		case errors.Is(err, store.ErrEventNotFound):
			r = rpcReply{Error: err.Error(), Kind: "not_found"}
		case errors.Is(err, pipeline.ErrNotStreaming), errors.Is(err, pipeline.ErrWriterStopped):
			r = rpcReply{Error: err.Error(), Kind: "unavailable"}
		default:
			r = rpcReply{Error: err.Error()}
		}
		b, _ := json.Marshal(r)
		_ = m.Respond(b)
	}
	if err := dec.Decode(&req); err != nil {
		reply(fmt.Errorf("bad system write: %w", err))
		return
	}
	wctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	w, err := pipe.Writer()
	if err != nil {
		reply(err)
		return
	}
	switch req.Op {
	case "persist":
		if req.Event == nil {
			reply(errors.New("persist: no event"))
			return
		}
		reply(pipe.PersistEvent(wctx, *req.Event)) // sanitized by the writer
	case "status":
		reply(w.SetEventStatus(wctx, req.Owner, req.IDs, req.Status))
	case "delete":
		reply(w.DeleteEvents(wctx, req.Owner, req.IDs))
	default:
		reply(fmt.Errorf("unknown system write %q", req.Op))
	}
}

// remoteWrites sends system writes to the active watcher.
type remoteWrites struct {
	nc      *nats.Conn
	subject string
}

func (r remoteWrites) do(ctx context.Context, req rpcRequest) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	// No watcher answers while one takes over: wait a little for it.
	m, err := r.nc.RequestWithContext(ctx, r.subject, b)
	for wait := time.Now().Add(noWatcherWait); errors.Is(err, nats.ErrNoResponders) && time.Now().Before(wait); {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		m, err = r.nc.RequestWithContext(ctx, r.subject, b)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %w", wsapi.ErrUnavailable, errNoWatcher)
	case err != nil:
		return fmt.Errorf("%w: system write through the active watcher: %w", wsapi.ErrUnavailable, err)
	}
	var rep rpcReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return fmt.Errorf("system write: bad reply: %w", err)
	}
	switch {
	case rep.Error == "":
		return nil
	case rep.Kind == "not_found":
		return wsapi.MarkEventNotFound(errors.New(rep.Error))
	case rep.Kind == "unavailable":
		return fmt.Errorf("%w: %s", wsapi.ErrUnavailable, rep.Error)
	}
	return errors.New(rep.Error)
}

// natsEventStore serves the events REST API of a process whose journal is
// in JetStream: reads from the events table (of the watched database or
// its read replica), writes through the active watcher.
type natsEventStore struct {
	db     eventReads
	remote remoteWrites
	// wrote, when set, runs after each write (even one that failed: it
	// may have been made): the read replica's fence, so the next list
	// shows the write.
	wrote func()
}

// eventReads is what natsEventStore reads: a *store.DB, or a *readReplica.
type eventReads interface {
	ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error)
	EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error)
}

func (s natsEventStore) done(err error) error {
	if s.wrote != nil {
		s.wrote()
	}
	return err
}

func (s natsEventStore) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	return s.db.ListEvents(ctx, q)
}

func (s natsEventStore) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	return s.db.EventTypes(ctx, owner)
}

func (s natsEventStore) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	return s.done(s.remote.do(ctx, rpcRequest{Op: "status", Owner: owner, IDs: ids, Status: status}))
}

func (s natsEventStore) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	return s.done(s.remote.do(ctx, rpcRequest{Op: "delete", Owner: owner, IDs: ids}))
}

// eventSender persists a gateway's own events through the active watcher,
// in order, retrying while none is active; a bounded queue, whose
// goroutine run owns.
type eventSender struct {
	remote remoteWrites
	log    *slog.Logger
	ch     chan entities.Event
	mu     sync.Mutex
}

func newEventSender(remote remoteWrites, log *slog.Logger) *eventSender {
	return &eventSender{remote: remote, log: log, ch: make(chan entities.Event, 64)}
}

// send queues ev without blocking (dropped, logged, when the queue is
// full).
func (s *eventSender) send(b *entities.EventBuilder) {
	ev, err := b.Build()
	if err != nil {
		s.log.Error("build system event", "err", err)
		return
	}
	select {
	case s.ch <- ev:
	default:
		s.log.Warn("system event queue full; event dropped", "category", ev.Category, "action", ev.Action)
	}
}

// run sends queued events until ctx ends.
func (s *eventSender) run(ctx context.Context) {
	for {
		var ev entities.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-s.ch:
		}
		for {
			err := s.remote.do(ctx, rpcRequest{Op: "persist", Event: &ev})
			if err == nil || ctx.Err() != nil {
				break
			}
			s.log.Debug("send system event; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}
