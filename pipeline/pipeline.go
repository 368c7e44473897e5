// Package pipeline is changecast's replication path, as a library: a Go
// program can run it in-process (cmd/changecast is one such program).
//
// It owns the order every change follows: decode (watcher) → sanitize →
// journal commit (a Journal's Writer) → publish (every Sink) → acknowledge
// to PostgreSQL. Nothing is acknowledged before the journal commit that
// holds it, and nothing reaches the journal or a sink unsanitized: the
// pipeline itself applies all three secret hooks (row changes, system
// events and the secret-field lookup sinks use for filters); no caller can
// wire them out. It supervises that path: after a fault it rebuilds it from
// the journal's stored offset with a capped, jittered backoff, stops on a
// fault that cannot heal (with its fix), records a lost replication slot
// as a gap (docs/guarantees.md), and raises changecast's own system events
// (docs/events.md). See docs/architecture.md for how the packages fit.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/backoff"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/watcher"
)

// DefaultLagWarnBytes is the replication lag above which a lag_high event
// is raised.
const DefaultLagWarnBytes = 64 << 20

// SlotLossPolicy is what the pipeline does when the replication slot was
// lost (dropped, invalidated or moved): see docs/guarantees.md.
type SlotLossPolicy string

const (
	// SlotLossResync records the gap in the journal, tells every sink
	// (whose clients must resynchronise) and continues on a new slot.
	SlotLossResync SlotLossPolicy = "resync"
	// SlotLossStop makes Run return an error naming the loss and the fix,
	// recording nothing.
	SlotLossStop SlotLossPolicy = "stop"
)

// Config configures a Pipeline. Zero fields take the documented default.
type Config struct {
	// DatabaseURL is the PostgreSQL database to watch (URL or keyword/value
	// DSN; it must allow replication). Required.
	DatabaseURL string
	// Registry maps tables to entity types and marks secret fields.
	// Required. Reload replaces it.
	Registry *entities.Registry
	// Journal is where changes are made durable. Required.
	Journal Journal
	// Slot is the logical replication slot. Default: watcher.DefaultSlot.
	Slot string
	// Publication is the publication to stream, which the caller creates
	// (store.DB.EnsurePublication). Default: watcher.DefaultPublication.
	Publication string
	// ChunkSize bounds the changes held for one source transaction: a
	// larger one is journaled in chunks of this many. Default:
	// watcher.DefaultChunkSize.
	ChunkSize int
	// LagWarnBytes is the replication lag, in bytes, above which a
	// lag_high event is raised (lag_recovered below half of it). Default:
	// DefaultLagWarnBytes; negative: never.
	LagWarnBytes int64
	// OnSlotLoss chooses what happens when the slot was lost. Default:
	// SlotLossResync.
	OnSlotLoss SlotLossPolicy
	// Logger receives the pipeline's logs. Default: slog.Default().
	Logger *slog.Logger

	// SlotLostHook, if set (tests), runs when the pipeline starts to
	// recover a lost slot, after sinks were told it is unavailable.
	SlotLostHook func()
}

// Pipeline runs the replication path. Create one with New, add sinks, call
// Prepare once and then Run.
type Pipeline struct {
	cfg   Config
	log   *slog.Logger
	san   atomic.Pointer[sanitizerBox] // the sanitizer in force (Reload replaces it)
	sinks []Sink

	current   atomic.Pointer[watcher.Watcher] // the running watcher
	writer    atomic.Pointer[writerBox]       // the running journal writer
	highWater atomic.Int64                    // most changes a finished writer held at once
	head      atomic.Int64                    // journal head last committed or loaded
	restarts  atomic.Uint64
	standby   atomic.Bool // waiting for another process's slot or journal
	running   atomic.Bool
	// announced: the event saying this stream started (or resumed) is
	// journaled, so a client that connects once Streaming reports true
	// starts after it.
	announced atomic.Bool

	events *emitter     // changecast's own system events
	guard  *secretGuard // replaced by Reload between instances
	rate   rateMeter    // journal changes per second, for system-state
	lagMon lagMonitor   // (once's lag goroutine only)

	// Owned by Run's goroutine, and by the watcher's Started callback
	// while once runs (once starts after Run writes them and returns
	// after the callback).
	checked bool      // prerequisites checked just before the first once
	started bool      // the pipeline has streamed once
	downAt  time.Time // when the running pipeline last failed; zero while streaming
	gaps    []Gap     // gaps recorded during the current outage
	fault   string    // the current fault, logged and raised once; "" while streaming

	reloads chan reloadRequest // Reload → the supervisor (reload.go)
	stopped chan struct{}      // closed when Run returns
	pending *reloadRequest     // taken by the last instance, for supervise
}

// writerBox lets an interface value live in an atomic.Pointer.
type writerBox struct{ w Writer }

// New validates cfg, fills its defaults and returns a Pipeline. It does not
// connect.
func New(cfg Config) (*Pipeline, error) {
	switch {
	case cfg.DatabaseURL == "":
		return nil, errors.New("pipeline: database URL is empty")
	case cfg.Registry == nil:
		return nil, errors.New("pipeline: registry is nil")
	case cfg.Journal == nil:
		return nil, errors.New("pipeline: journal is nil")
	case cfg.ChunkSize < 0:
		return nil, fmt.Errorf("pipeline: chunk size %d is negative", cfg.ChunkSize)
	}
	if cfg.Slot == "" {
		cfg.Slot = watcher.DefaultSlot
	}
	if cfg.Publication == "" {
		cfg.Publication = watcher.DefaultPublication
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = watcher.DefaultChunkSize
	}
	if cfg.LagWarnBytes == 0 {
		cfg.LagWarnBytes = DefaultLagWarnBytes
	}
	switch cfg.OnSlotLoss {
	case "":
		cfg.OnSlotLoss = SlotLossResync
	case SlotLossResync, SlotLossStop:
	default:
		return nil, fmt.Errorf("pipeline: slot loss policy %q: use %q or %q", cfg.OnSlotLoss, SlotLossResync, SlotLossStop)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Validate the watcher's part now, not at the first rebuild.
	if _, err := watcher.New(watcher.Config{URL: cfg.DatabaseURL, Slot: cfg.Slot, Publication: cfg.Publication, Registry: cfg.Registry}); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p := &Pipeline{
		cfg:     cfg,
		log:     cfg.Logger,
		events:  newEmitter(cfg.Slot, cfg.Logger.With("component", "events")),
		guard:   newSecretGuard(cfg.Registry),
		reloads: make(chan reloadRequest),
		stopped: make(chan struct{}),
	}
	p.san.Store(&sanitizerBox{s: sanitize.New(cfg.Registry)})
	if cfg.LagWarnBytes > 0 {
		p.lagMon.threshold = uint64(cfg.LagWarnBytes)
	}
	return p, nil
}

// AddSink adds a sink; call it before Prepare.
func (p *Pipeline) AddSink(s Sink) { p.sinks = append(p.sinks, s) }

// SecretField reports whether sanitize strips column col of type et: a
// sink must not let a client filter on it (that would leak its value).
func (p *Pipeline) SecretField(et entities.EntityType, col string) bool {
	return sanitize.Stripped(et, col)
}

// Sanitize strips a change with the rules in force now (they change with
// a reload), for readers of current rows (snapshots) that must apply the
// same rules as the stream.
func (p *Pipeline) Sanitize(c entities.Change) (entities.Change, error) {
	return p.san.Load().s.Change(c)
}

// SanitizeStats returns how often sanitize stripped by name alone and
// rewrote json values.
func (p *Pipeline) SanitizeStats() sanitize.Stats {
	b := p.san.Load()
	return addStats(b.retired, b.s.Stats())
}

// Prepare checks the database's prerequisites (wal_level, privileges,
// publication, slot) and makes sure the slot exists before the caller
// announces anything: from its return on, PostgreSQL keeps every change
// committed for the pipeline. The slot is created only on a first start
// (nothing stored, nothing journaled); a lost slot is left for Run to
// record, or, under SlotLossStop, returned as an error. It then hands the
// journal's head to the sinks. A slot in use by another process is not an
// error: Run waits as a standby.
func (p *Pipeline) Prepare(ctx context.Context) error {
	offset, err := p.cfg.Journal.Offset(ctx, p.cfg.Slot)
	if err != nil {
		return err
	}
	head, err := p.cfg.Journal.Head(ctx)
	if err != nil {
		return err
	}
	if err := p.cfg.Journal.ForgetStates(ctx, p.cfg.Registry.Names()); err != nil {
		return err
	}
	probe, err := watcher.New(watcher.Config{URL: p.cfg.DatabaseURL, Slot: p.cfg.Slot, Publication: p.cfg.Publication,
		Registry: p.cfg.Registry, Logger: p.log, StartLSN: offset, ExpectSlot: head > 0,
		SavePosition: func(ctx context.Context, lsn entities.LSN) error {
			return p.cfg.Journal.SaveOffset(ctx, p.cfg.Slot, lsn)
		},
	})
	if err != nil {
		return err
	}
	// Prerequisites first, so a misconfigured server gets Check's one
	// clear message rather than the error of whatever step trips over it.
	checkErr := probe.Check(ctx)
	if checkErr != nil && !errors.Is(checkErr, watcher.ErrSlotInUse) {
		return checkErr
	}
	var lost *watcher.SlotLostError
	if err := probe.EnsureSlot(ctx); errors.As(err, &lost) {
		if p.cfg.OnSlotLoss == SlotLossStop {
			return slotLossStopError(lost)
		}
		// Run records the gap before it streams.
	} else if err != nil {
		return fmt.Errorf("replication slot: %w", err)
	}
	// The first rebuild need not repeat the check that just passed.
	p.checked = checkErr == nil
	p.head.Store(head)
	// Sinks know the head before the first client can connect: a client
	// resuming with since=<cursor> must not be told its cursor is unknown
	// just because Run has not started yet.
	p.publish(head, nil)
	return nil
}

// Streaming reports whether the watcher is streaming right now and the
// event announcing it is journaled (for readiness checks: a client that
// connects once it is true sees changes, not the announcement).
func (p *Pipeline) Streaming() bool {
	w := p.current.Load()
	return w != nil && w.Streaming() && p.announced.Load()
}

// Stats is a snapshot of the pipeline's progress.
type Stats struct {
	// Replication is the running watcher's progress (zero while none runs).
	Replication watcher.Stats
	// Standby reports that another process holds the slot or the journal
	// and this one waits.
	Standby bool
	// Restarts counts rebuilds after a failure.
	Restarts uint64
	// JournalHead is the highest cursor committed (or loaded at start).
	JournalHead int64
	// WriterHighWater is the most changes any journal writer held in
	// memory at once.
	WriterHighWater int64
	// EventsDropped counts system events dropped because their queue was
	// full (PostgreSQL away for long).
	EventsDropped uint64
}

// Stats returns the pipeline's progress. Safe from any goroutine.
func (p *Pipeline) Stats() Stats {
	st := Stats{
		Standby:         p.standby.Load(),
		Restarts:        p.restarts.Load(),
		JournalHead:     p.head.Load(),
		WriterHighWater: p.highWater.Load(),
		EventsDropped:   p.events.dropped.Load(),
	}
	if w := p.current.Load(); w != nil {
		st.Replication = w.Stats()
	}
	if b := p.writer.Load(); b != nil {
		st.WriterHighWater = max(st.WriterHighWater, int64(b.w.HighWater()))
	}
	return st
}

// ErrNotStreaming is returned by the event writes when no journal writer
// is running (the pipeline is reconnecting or waiting as a standby).
var ErrNotStreaming = errors.New("the pipeline is not streaming")

// runningWriter returns the running writer, or ErrNotStreaming.
func (p *Pipeline) runningWriter() (Writer, error) {
	b := p.writer.Load()
	if b == nil || !p.Streaming() {
		return nil, ErrNotStreaming
	}
	return b.w, nil
}

// PersistEvent stores a builder-made system event through the running
// journal writer (sanitized first) and publishes it.
func (p *Pipeline) PersistEvent(ctx context.Context, ev entities.Event) error {
	w, err := p.runningWriter()
	if err != nil {
		return err
	}
	return w.PersistEvent(ctx, ev)
}

// Writer returns the running journal writer for system writes (changing
// stored events), or ErrNotStreaming.
func (p *Pipeline) Writer() (Writer, error) { return p.runningWriter() }

// ReportRetentionGap raises the event for a client (subject, its token's
// subject) whose resume cursor retention had removed.
func (p *Pipeline) ReportRetentionGap(subject string, cursor, horizon int64) {
	p.events.retentionGap(subject, cursor, horizon)
}

// secretColumnMissing logs and raises the stop of an entity type whose
// secret column is gone (see secretGuard).
func (p *Pipeline) secretColumnMissing(entityType, column string) {
	p.log.Error("a secret column is gone from its table; its entity type is no longer delivered", "entity_type", entityType, "column", column)
	p.events.secretColumnMissing(entityType, column)
}

// publish hands a commit to every sink.
func (p *Pipeline) publish(head int64, batch []entities.Change) {
	for _, s := range p.sinks {
		s.Publish(head, batch)
	}
}

func (p *Pipeline) setUnavailable(reason string) {
	for _, s := range p.sinks {
		s.SetUnavailable(reason)
	}
}

// Run streams until ctx ends (then it writes a shutdown event, lets
// everything handed over be journaled and published, and returns nil) or
// until a fault that retrying cannot fix (returned, with its fix). It also
// runs the journal's retention. Call Prepare first; Run may be called once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("pipeline: Run called twice")
	}
	defer close(p.stopped)
	// The shutdown event is queued before the pipeline stops, so it is
	// journaled and published while sinks still serve their clients.
	inner, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	unhook := context.AfterFunc(ctx, func() {
		p.events.shutdown(p.head.Load())
		stop()
	})
	defer unhook()

	var g errgroup.Group
	g.Go(func() error { return p.cfg.Journal.RunRetention(inner) })
	err := p.supervise(inner)
	stop()
	if rerr := g.Wait(); rerr != nil && err == nil {
		err = fmt.Errorf("journal retention: %w", rerr)
	}
	return err
}

// Backoff bounds of supervise's rebuilds.
const (
	minRebuild = 250 * time.Millisecond
	maxRebuild = 15 * time.Second
	// maxStandbyRetry bounds a standby's wait between attempts to take
	// the journal or slot over.
	maxStandbyRetry = 3 * time.Second
)

// supervise rebuilds the pipeline until ctx ends.
func (p *Pipeline) supervise(ctx context.Context) error {
	wait := backoff.Backoff{Min: minRebuild, Max: maxRebuild}
	for {
		started := time.Now()
		err := p.once(ctx)
		if p.takeReload(ctx, err) {
			continue // the instance stopped for a reload: start the next
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		f := classify(err, p.cfg.Journal)
		if f.kind == faultFatal {
			return f.err
		}
		if time.Since(started) > time.Minute {
			wait.Reset()
		}
		if p.downAt.IsZero() {
			p.downAt = time.Now()
		}
		var lost *watcher.SlotLostError
		if errors.As(err, &lost) {
			if p.cfg.OnSlotLoss == SlotLossStop {
				return slotLossStopError(lost)
			}
			if err = p.recoverSlot(ctx, lost); err == nil {
				wait.Reset()
				continue // stream from the new slot at once
			}
			if ctx.Err() != nil {
				return nil
			}
			if f = classify(err, p.cfg.Journal); f.kind == faultFatal {
				return f.err
			}
			f.kind, err = faultSlotLost, f.err
		}
		p.standby.Store(f.kind == faultStandby)
		d := wait.Next()
		if f.kind == faultStandby {
			// A standby retries often enough to take over within
			// seconds of the active process dying.
			d = min(d, maxStandbyRetry)
		}
		now := f.describe(p.cfg.Slot)
		if now != p.fault || f.kind == faultInterrupted {
			p.log.Warn(now, "err", err, "retry_in", d.Round(time.Millisecond))
		}
		if now != p.fault {
			// One event when a fault begins; the end is the resumed
			// event, raised once streaming really restarts.
			switch f.kind {
			case faultStandby:
				p.events.slotInUse(p.cfg.Slot)
			case faultSlotLost:
				// The slot_lost event is the gap's marker, raised
				// once the gap is recorded.
			default:
				p.events.unreachable(p.cfg.Slot, err, d)
			}
		}
		p.fault = now
		p.restarts.Add(1)
		if !p.sleep(ctx, d) { // backoff.Sleep, applying reloads meanwhile
			return nil
		}
	}
}

// slotLossStopError is the answer to a lost slot under SlotLossStop: what
// was lost and how to continue.
func slotLossStopError(lost *watcher.SlotLostError) error {
	return fmt.Errorf("%w. Stopped (--on-slot-loss stop); nothing was recorded. To continue, restart with --on-slot-loss resync: changecast records the gap, tells every client to resync and streams on from a new slot", lost)
}

// recoverSlot handles a lost slot under SlotLossResync: it makes the slot
// usable again (watcher.RecoverSlot), records the gap in the journal with
// its marker event (Writer.RecordGap), and tells every sink. Sinks are
// unavailable from the moment the loss is seen until streaming resumes. An
// error leaves the loss to be found again by the next once.
func (p *Pipeline) recoverSlot(ctx context.Context, lost *watcher.SlotLostError) error {
	p.setUnavailable(fmt.Sprintf("replication slot %s was lost (%s); changecast is recording the gap and will continue on a new slot: connect again shortly and resynchronise", p.cfg.Slot, lost.Kind))
	p.log.Error("replication slot lost; recording the gap and continuing on a new slot (--on-slot-loss resync)", "err", lost)
	if p.cfg.SlotLostHook != nil {
		p.cfg.SlotLostHook()
	}
	jw, err := p.cfg.Journal.OpenWriter(ctx, WriterConfig{
		Slot:          p.cfg.Slot,
		Logger:        p.log.With("component", "journal"),
		SanitizeEvent: sanitize.Event,
		Sanitize:      p.san.Load().s.Change, // fixed for an instance: a reload starts a new one
		OnCommit: func(c Committed) {
			p.head.Store(c.Head)
			p.publish(c.Head, c.Changes)
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := jw.Close(); cerr != nil {
			p.log.Debug("close journal writer", "err", cerr)
		}
	}()
	w, err := watcher.New(watcher.Config{URL: p.cfg.DatabaseURL, Slot: p.cfg.Slot, Publication: p.cfg.Publication,
		Registry: p.cfg.Registry, Logger: p.log.With("component", "watcher")})
	if err != nil {
		return err
	}
	start, err := w.RecoverSlot(ctx, lost)
	if err != nil {
		return fmt.Errorf("recover replication slot: %w", err)
	}
	from := max(lost.From, jw.Offset())
	marker, err := p.events.slotLost(p.cfg.Slot, lost, from, start)
	if err != nil {
		return err
	}
	gap, err := jw.RecordGap(ctx, Gap{FromLSN: from, ToLSN: start, Reason: "replication slot " + lost.Kind}, marker)
	if err != nil {
		return err
	}
	msg := GapMessage(gap)
	for _, s := range p.sinks {
		s.Gap(gap.Seq, msg)
	}
	p.log.Error("recorded a gap in the journal: changes committed in the lost range were not streamed",
		"from_lsn", from.String(), "to_lsn", start.String(), "gap_cursor", gap.Seq)
	p.gaps = append(p.gaps, gap)
	return nil
}

// GapMessage is what a client stopped by gap reads: what was lost and what
// to do.
func GapMessage(g Gap) string {
	return fmt.Sprintf("changes committed between LSN %s and %s were lost (%s) and the journal has a gap at cursor %d; re-read the state and reconnect without since (or with since=%d)",
		g.FromLSN, g.ToLSN, g.Reason, g.Seq, g.Seq)
}

// streamingFrom is the watcher's Started callback: replication really runs
// again, from start. It raises the event that ends an outage, with its
// real outcome, and makes the sinks available again.
func (p *Pipeline) streamingFrom(start entities.LSN) {
	p.setUnavailable("")
	p.standby.Store(false)
	head := p.head.Load()
	announced := func() { p.announced.Store(true) }
	switch {
	case !p.started:
		p.started = true
		p.events.started(p.cfg.Slot, start, head, p.gaps, announced)
	case !p.downAt.IsZero() && len(p.gaps) == 0:
		p.log.Info("replication resumed", "start_lsn", start.String(), "downtime", time.Since(p.downAt).Round(time.Millisecond))
		p.events.resumed(p.cfg.Slot, start, time.Since(p.downAt), p.restarts.Load(), announced)
	case !p.downAt.IsZero():
		p.log.Warn("replication resumed on a new slot after a gap", "start_lsn", start.String(), "downtime", time.Since(p.downAt).Round(time.Millisecond))
		p.events.resumedAfterGap(p.cfg.Slot, start, time.Since(p.downAt), p.gaps, announced)
	default:
		announced()
	}
	p.downAt = time.Time{}
	p.gaps = nil
	p.fault = ""
}

// unsanitizable marks a change sanitize refused: the pipeline stops rather
// than store or send it.
type unsanitizable struct{ err error }

func (e unsanitizable) Error() string { return e.err.Error() }
func (e unsanitizable) Unwrap() error { return e.err }

// once runs one instance of the pipeline until ctx ends (orderly: the
// watcher stops, and everything it handed over is journaled and published)
// or a stage fails (the rest is abandoned: nothing unjournaled was
// acknowledged, so the next instance receives it again).
func (p *Pipeline) once(ctx context.Context) error {
	var w *watcher.Watcher
	jw, err := p.cfg.Journal.OpenWriter(ctx, WriterConfig{
		Slot:          p.cfg.Slot,
		Logger:        p.log.With("component", "journal"),
		SanitizeEvent: sanitize.Event,
		Sanitize:      p.san.Load().s.Change, // fixed for an instance: a reload starts a new one
		OnCommit: func(c Committed) {
			p.head.Store(c.Head)
			p.publish(c.Head, c.Changes)
			if c.EndLSN > 0 {
				w.Ack(c.EndLSN)
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		p.writer.Store(nil)
		p.highWater.Store(max(p.highWater.Load(), int64(jw.HighWater())))
		if cerr := jw.Close(); cerr != nil {
			p.log.Debug("close journal writer", "err", cerr)
		}
	}()
	p.writer.Store(&writerBox{jw})
	p.announced.Store(false)
	p.head.Store(jw.Head())
	p.publish(jw.Head(), nil)

	w, err = watcher.New(watcher.Config{
		URL:         p.cfg.DatabaseURL,
		Slot:        p.cfg.Slot,
		Publication: p.cfg.Publication,
		Registry:    p.cfg.Registry,
		StartLSN:    jw.Offset(),
		ChunkSize:   p.cfg.ChunkSize,
		Omit:        sanitize.Stripped,
		Logger:      p.log.With("component", "watcher"),
		// The slot may be created only on a first start, and every
		// position it confirms is stored first, so a dropped, moved or
		// invalidated slot is noticed (SlotLostError), never silently
		// replaced.
		ExpectSlot:   jw.Head() > 0,
		SavePosition: jw.SavePosition,
		Started:      p.streamingFrom,
	})
	if err != nil {
		return err
	}
	if !p.checked {
		if err := w.Check(ctx); err != nil {
			return err
		}
	}
	p.checked = false // every rebuild checks again: the server may have changed
	p.current.Store(w)
	p.log.Info("replication pipeline starting", "start_lsn", jw.Offset().String(), "journal_head", jw.Head())
	// The sanitizer and guard of this instance: a reload replaces them only
	// between instances.
	san, guard := p.san.Load().s, p.guard

	// gctx ends when a stage fails; ctx ends an orderly stop, which only the
	// watcher sees directly: the later stages drain what it handed over.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	wctx, stopWatch := context.WithCancel(gctx)
	defer stopWatch()
	unhook := context.AfterFunc(ctx, stopWatch)
	defer unhook()

	// System events go through the same writer. On an orderly stop the
	// queue is written out (the shutdown event last) before the writer's
	// input closes (path.go).
	eventsDone := make(chan struct{})
	g.Go(func() error {
		defer close(eventsDone)
		return p.events.persist(wctx, jw)
	})
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return nil
			case <-t.C:
				p.lagMon.observe(p.events, p.cfg.Slot, w.Stats().LagBytes)
			}
		}
	})
	sanitizeTx := func(tx entities.Transaction) (entities.Transaction, error) {
		changes, err := san.Changes(guard.filter(tx.Changes, p.secretColumnMissing))
		if err != nil {
			// Fail closed: an unsanitizable change is never stored or
			// sent, and nothing after it is acknowledged.
			return tx, unsanitizable{fmt.Errorf("transaction %d: %w", tx.Xid, err)}
		}
		tx.Changes = changes
		return tx, nil
	}
	p.startPath(g, gctx, wctx, w, jw, sanitizeTx, eventsDone)
	// A reload abandons this instance like a failed stage (reload.go).
	g.Go(func() error { return p.awaitReload(wctx) })
	return g.Wait()
}
