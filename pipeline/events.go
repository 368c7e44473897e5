package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/watcher"
)

// This file holds the system events changecast emits about itself
// (docs/events.md lists them) and the system-state snapshot.

// docsBase is where the doc links of changecast's own events point.
const docsBase = "https://github.com/changecast/changecast/blob/main/docs/"

// eventQueueLen bounds the events waiting to be persisted (while the
// pipeline is reconnecting, say).
const eventQueueLen = 256

// emitter queues changecast's own events; the running pipeline persists
// them through the journal appender, in order. Emitting never blocks: when
// the queue is full (PostgreSQL has been away for long) the event is
// dropped, counted and logged.
type emitter struct {
	ch       chan queuedEvent
	systemID uuid.UUID // this changecast's identity: stable per slot
	log      *slog.Logger
	dropped  atomic.Uint64
}

func newEmitter(slot string, log *slog.Logger) *emitter {
	return &emitter{
		ch:       make(chan queuedEvent, eventQueueLen),
		systemID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("changecast:slot:"+slot)),
		log:      log,
	}
}

// event starts an event from this changecast.
func (e *emitter) event(category, action string, sev entities.Severity, description string, meta map[string]any) *entities.EventBuilder {
	return entities.NewEvent().FromSystem(e.systemID).WithCategory(category).WithAction(action).
		WithSeverity(sev).WithDescription(description).WithMetadata(meta)
}

// queuedEvent is an event waiting to be persisted, and what to call once
// it is (or once it is dropped); done may be nil.
type queuedEvent struct {
	ev   entities.Event
	done func()
}

// emit builds and queues an event. A build error is a bug in the caller's
// constant parts; it is logged, not fatal.
func (e *emitter) emit(b *entities.EventBuilder) { e.emitThen(b, nil) }

// emitThen is emit, calling done once the event is journaled, or dropped.
func (e *emitter) emitThen(b *entities.EventBuilder, done func()) {
	ev, err := b.Build()
	if err != nil {
		e.log.Error("build system event", "err", err)
		if done != nil {
			done()
		}
		return
	}
	e.queue(queuedEvent{ev, done})
}

// queue queues q without blocking, dropping it when the queue is full.
func (e *emitter) queue(q queuedEvent) {
	select {
	case e.ch <- q:
	default:
		e.drop(q)
		e.log.Warn("system event queue full; event dropped", "category", q.ev.Category, "action", q.ev.Action)
	}
}

func (e *emitter) drop(q queuedEvent) {
	e.dropped.Add(1)
	if q.done != nil {
		q.done()
	}
}

// persist writes queued events through app until ctx ends, then writes
// those still queued (the shutdown event among them) and returns. Waiting
// for the appender has no time limit: it may be journaling a large
// transaction, and Submit returns as soon as the appender stops. When the
// appender stops or its journal transaction fails, the event goes back in
// the queue for the next pipeline (PersistEvent is idempotent) and persist
// returns that error; any other failure is the event's own (it cannot be
// stored), so it is logged and dropped rather than retried forever.
func (e *emitter) persist(ctx context.Context, app Writer) error {
	write := func(q queuedEvent) error {
		err := app.PersistEvent(context.WithoutCancel(ctx), q.ev)
		switch {
		case err == nil:
			if q.done != nil {
				q.done()
			}
			return nil
		case errors.Is(err, ErrWriterStopped), errors.Is(err, ErrWriteFailed):
			select {
			case e.ch <- q:
			default:
				e.drop(q)
			}
			return fmt.Errorf("persist system event %s/%s: %w", q.ev.Category, q.ev.Action, err)
		default:
			e.drop(q)
			e.log.Error("system event cannot be stored; dropped", "category", q.ev.Category, "action", q.ev.Action, "err", err)
			return nil
		}
	}
	for {
		select {
		case q := <-e.ch:
			if err := write(q); err != nil {
				return err
			}
		case <-ctx.Done():
			for {
				select {
				case q := <-e.ch:
					if err := write(q); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		}
	}
}

func doc(anchor string) string { return docsBase + "events.md#" + anchor }

// started is the first stream of this process; gaps are those it had to
// record before it could stream.
func (e *emitter) started(slot string, confirmed entities.LSN, head int64, gaps []Gap, done func()) {
	meta := map[string]any{"slot": slot, "confirmed_lsn": confirmed.String(), "journal_head": fmt.Sprint(head)}
	if len(gaps) == 0 {
		e.emitThen(e.event("replication", "started", entities.Informational,
			fmt.Sprintf("streaming changes from slot %s, resuming after %s", slot, confirmed), meta), done)
		return
	}
	g := gaps[len(gaps)-1]
	meta["lost_from_lsn"], meta["lost_to_lsn"], meta["gap_cursor"] = gaps[0].FromLSN.String(), g.ToLSN.String(), fmt.Sprint(g.Seq)
	e.emitThen(e.event("replication", "started", entities.Warning,
		fmt.Sprintf("streaming changes from a new slot %s after %s; changes committed between %s and %s were lost (gap at cursor %d, see the slot_lost event)",
			slot, confirmed, gaps[0].FromLSN, g.ToLSN, g.Seq), meta), done)
}

func (e *emitter) resumed(slot string, start entities.LSN, down time.Duration, attempts uint64, done func()) {
	e.emitThen(e.event("replication", "resumed", entities.Success,
		fmt.Sprintf("replication resumed from %s after %s; nothing was lost", start, down.Round(time.Millisecond)),
		map[string]any{"slot": slot, "start_lsn": start.String(), "downtime_ms": down.Milliseconds(), "attempts": attempts}), done)
}

func (e *emitter) unreachable(slot string, err error, retryIn time.Duration) {
	e.emit(e.event("replication", "postgres_unreachable", entities.Error,
		"cannot stream from PostgreSQL; retrying with backoff. Clients stay connected; what is committed meanwhile is delivered once streaming resumes, unless the replication slot is lost (a slot_lost event would say so).",
		map[string]any{"err": err, "slot": slot, "retry_in_ms": retryIn.Milliseconds(), "doc": doc("postgres_unreachable")}))
}

func (e *emitter) slotInUse(slot string) {
	e.emit(e.event("replication", "slot_in_use", entities.Warning,
		fmt.Sprintf("replication slot %s is used by another process; this changecast waits as a standby", slot),
		map[string]any{"slot": slot, "doc": doc("slot_in_use")}))
}

// slotLost builds (does not queue) the critical event that marks a gap in
// the journal: the pipeline records it together with the gap.
func (e *emitter) slotLost(slot string, lost *watcher.SlotLostError, from, to entities.LSN) (entities.Event, error) {
	return e.event("replication", "slot_lost", entities.Critical,
		fmt.Sprintf("replication slot %s was %s: changes committed between %s and %s were lost. Every client was told to resync (resync-required) and streaming continues on a new slot. To prevent this, never drop the slot while changecast is stopped and keep max_slot_wal_keep_size at -1 or above the WAL of your longest downtime",
			slot, lostVerb(lost.Kind), from, to),
		map[string]any{"err": lost, "slot": slot, "kind": lost.Kind, "from_lsn": from.String(), "to_lsn": to.String(), "doc": doc("slot_lost")}).Build()
}

func lostVerb(kind string) string {
	switch kind {
	case watcher.SlotMissing:
		return "dropped"
	case watcher.SlotInvalidated:
		return "invalidated by PostgreSQL"
	default:
		return "replaced or advanced by someone else"
	}
}

// resumedAfterGap ends an outage in which a slot was lost.
func (e *emitter) resumedAfterGap(slot string, start entities.LSN, down time.Duration, gaps []Gap, done func()) {
	g := gaps[len(gaps)-1]
	e.emitThen(e.event("replication", "resumed", entities.Warning,
		fmt.Sprintf("replication resumed on a new slot from %s after %s; changes committed between %s and %s were lost (gap at cursor %d, see the slot_lost event)",
			start, down.Round(time.Millisecond), gaps[0].FromLSN, g.ToLSN, g.Seq),
		map[string]any{"slot": slot, "start_lsn": start.String(), "downtime_ms": down.Milliseconds(),
			"lost_from_lsn": gaps[0].FromLSN.String(), "lost_to_lsn": g.ToLSN.String(), "gap_cursor": fmt.Sprint(g.Seq)}), done)
}

func (e *emitter) lagHigh(slot string, lag, threshold uint64) {
	e.emit(e.event("replication", "lag_high", entities.Warning,
		fmt.Sprintf("replication lag is %d bytes, over the %d-byte threshold", lag, threshold),
		map[string]any{"slot": slot, "lag_bytes": lag, "threshold_bytes": threshold, "doc": doc("lag_high")}))
}

func (e *emitter) lagRecovered(slot string, lag, threshold uint64) {
	e.emit(e.event("replication", "lag_recovered", entities.Success,
		fmt.Sprintf("replication lag is back to %d bytes, under the %d-byte threshold", lag, threshold),
		map[string]any{"slot": slot, "lag_bytes": lag, "threshold_bytes": threshold}))
}

// retentionGap reports a client whose resume cursor retention removed. The
// event concerns that client's user when its token names one.
func (e *emitter) retentionGap(subject string, cursor, horizon int64) {
	b := e.event("journal", "retention_gap", entities.Warning,
		fmt.Sprintf("a client resumed after cursor %d, but retention had removed the journal up to %d; it was told to resynchronise", cursor, horizon),
		map[string]any{"cursor": fmt.Sprint(cursor), "horizon": fmt.Sprint(horizon), "doc": doc("retention_gap")})
	if id, err := uuid.Parse(subject); err == nil {
		b = b.FromUser(id)
	}
	e.emit(b)
}

func (e *emitter) shutdown(head int64) {
	e.emit(e.event("server", "shutdown", entities.Informational,
		"changecast is shutting down; clients will be disconnected and can resume with their last cursor",
		map[string]any{"journal_head": fmt.Sprint(head)}))
}

// lagMonitor emits lag_high when the watcher's lag exceeds threshold and
// lag_recovered once it is back under half of it (hysteresis, so a lag
// hovering at the threshold does not flap).
type lagMonitor struct {
	threshold uint64
	high      bool
}

func (m *lagMonitor) observe(e *emitter, slot string, lag uint64) {
	switch {
	case m.threshold == 0:
	case !m.high && lag > m.threshold:
		m.high = true
		e.lagHigh(slot, lag, m.threshold)
	case m.high && lag <= m.threshold/2:
		m.high = false
		e.lagRecovered(slot, lag, m.threshold)
	}
}

// rateMeter turns the journal head into changes per second, measured over
// at least a second.
type rateMeter struct {
	mu   sync.Mutex
	at   time.Time
	head int64
	rate float64
}

func (r *rateMeter) observe(now time.Time, head int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() {
		r.at, r.head = now, head
		return 0
	}
	if dt := now.Sub(r.at); dt >= time.Second {
		r.rate = float64(head-r.head) / dt.Seconds()
		r.at, r.head = now, head
	}
	return r.rate
}

// SystemState returns the pipeline's part of the system_state frame
// (docs/protocol.md): slot health, lag, journal head and rate, events
// dropped. A sink adds its own (connected clients).
func (p *Pipeline) SystemState() map[string]any {
	st := p.Stats()
	health := "reconnecting"
	switch {
	case st.Replication.Streaming:
		health = "streaming"
	case st.Standby:
		health = "standby"
	}
	return map[string]any{
		"slot":               p.cfg.Slot,
		"slot_health":        health,
		"confirmed_lsn":      st.Replication.Confirmed.String(),
		"lag_bytes":          st.Replication.LagBytes,
		"journal_head":       fmt.Sprint(st.JournalHead),
		"changes_per_second": p.rate.observe(time.Now(), st.JournalHead),
		"events_dropped":     st.EventsDropped,
	}
}
