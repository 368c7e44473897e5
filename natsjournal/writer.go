package natsjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// floorInterval is how often the writer copies its offset to the offsets
// bucket, for a stream that retention may empty.
const floorInterval = 2 * time.Second

// publishTimeout bounds the wait for a batch's acknowledgement; past it
// the outcome is unknown and the writer stops.
const publishTimeout = 10 * time.Second

// OpenWriter takes the writer lock and returns the journal's single
// writer, loaded with the stream's head and offset.
func (j *Journal) OpenWriter(ctx context.Context, cfg pipeline.WriterConfig) (pipeline.Writer, error) {
	if cfg.Slot == "" {
		return nil, errors.New("open journal writer: empty slot name")
	}
	if j.cfg.Locker == nil {
		return nil, errors.New("open journal writer: no writer lock configured")
	}
	if cfg.Logger == nil {
		cfg.Logger = j.log
	}
	lease, err := j.cfg.Locker.TryLock(ctx)
	if err != nil {
		return nil, err
	}
	st, err := j.loadState(ctx, cfg.Slot)
	if err != nil {
		_ = lease.Unlock()
		return nil, err
	}
	w := &writer{j: j, cfg: cfg, log: cfg.Logger.With("slot", cfg.Slot), lease: lease, partial: st.partial,
		writes: make(chan write), runDone: make(chan struct{}), floor: st.offset}
	w.head.Store(st.head)
	w.offset.Store(uint64(st.offset))
	if st.partial.ok {
		w.log.Info("a large transaction was journaled in part; completing it", "commit_lsn", st.partial.commit.String(), "last_index", st.partial.index)
	}
	return w, nil
}

// writer is the Journal's pipeline.Writer.
type writer struct {
	j     *Journal
	cfg   pipeline.WriterConfig
	log   *slog.Logger
	lease Lease

	head      atomic.Int64
	offset    atomic.Uint64
	highWater atomic.Int64

	// Owned by Run's goroutine (and RecordGap, never beside it).
	partial partial
	floor   entities.LSN
	broken  error

	running   atomic.Bool
	writes    chan write
	runDone   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// write is a system write waiting for Run.
type write struct {
	fn   func(ctx context.Context) ([]entities.Change, error)
	id   func(i int) string // the message id of change i, "" for none
	done chan error
}

func (w *writer) Head() int64          { return w.head.Load() }
func (w *writer) Offset() entities.LSN { return entities.LSN(w.offset.Load()) }
func (w *writer) HighWater() int       { return int(w.highWater.Load()) }

func (w *writer) hold(n int) {
	if int64(n) > w.highWater.Load() {
		w.highWater.Store(int64(n))
	}
}

func (w *writer) raiseOffset(lsn entities.LSN) {
	for {
		cur := w.offset.Load()
		if uint64(lsn) <= cur || w.offset.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Close releases the writer lock. Call it after Run returned.
func (w *writer) Close() error {
	w.closeOnce.Do(func() {
		if w.broken == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := w.j.putOffset(ctx, w.cfg.Slot, w.Offset()); err != nil {
				w.log.Debug("save offset copy", "err", err)
			}
			cancel()
		}
		w.closeErr = w.lease.Unlock()
	})
	return w.closeErr
}

// Run publishes the transactions from in until in closes or ctx ends
// (nil), or the stream fails (the error; close the writer and open a new
// one, which reads the stream's state back).
func (w *writer) Run(ctx context.Context, in <-chan entities.Transaction) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("journal writer: Run is already running")
	}
	defer w.running.Store(false)
	defer func() {
		select {
		case <-w.runDone:
		default:
			close(w.runDone)
		}
	}()
	if w.broken != nil {
		return fmt.Errorf("journal writer failed earlier (%v); close it and open a new one", w.broken)
	}
	err := w.run(ctx, in)
	if err != nil && ctx.Err() == nil {
		w.broken = err
		return fmt.Errorf("append to JetStream journal: %w", err)
	}
	if err != nil {
		w.broken = err // the outcome of an interrupted publish is unknown
	}
	return nil
}

func (w *writer) run(ctx context.Context, in <-chan entities.Transaction) error {
	floor := time.NewTicker(floorInterval)
	defer floor.Stop()
	var next *entities.Transaction
	for {
		var t entities.Transaction
		if next != nil {
			t, next = *next, nil
		} else {
			var ok bool
			select {
			case <-ctx.Done():
				return nil
			case <-floor.C:
				w.saveFloor(ctx)
				continue
			case wr := <-w.writes:
				if err := w.applyWrite(ctx, wr); err != nil {
					return err
				}
				continue
			case t, ok = <-in:
				if !ok {
					return nil
				}
			}
		}
		w.hold(len(t.Changes))
		w.dropPublished(&t)
		var (
			closed bool
			err    error
		)
		switch {
		case t.CommitLSN < w.Offset() && !(w.partial.ok && w.partial.commit == t.CommitLSN):
			w.skipped(t)
			continue
		case t.Final && len(t.Changes) <= w.j.cfg.MaxBatch:
			next, closed, err = w.appendGroup(ctx, in, t)
		default:
			next, closed, err = w.appendLarge(ctx, in, t)
		}
		if err != nil || closed {
			return err
		}
	}
}

// dropPublished removes from t the changes a partly published
// transaction already has in the stream.
func (w *writer) dropPublished(t *entities.Transaction) {
	if !w.partial.ok || t.CommitLSN != w.partial.commit {
		return
	}
	keep := t.Changes[:0]
	for _, c := range t.Changes {
		if c.Index > w.partial.index {
			keep = append(keep, c)
		}
	}
	t.Changes = keep
}

func (w *writer) skipped(t entities.Transaction) {
	if !t.Final {
		return
	}
	w.log.Debug("skipping transaction already journaled", "xid", t.Xid, "commit_lsn", t.CommitLSN, "offset", w.Offset())
	if w.cfg.OnCommit != nil {
		w.cfg.OnCommit(pipeline.Committed{Head: w.Head(), Changes: []entities.Change{}, EndLSN: t.EndLSN})
	}
}

// saveFloor copies the offset to the bucket, best effort.
func (w *writer) saveFloor(ctx context.Context) {
	off := w.Offset()
	if off <= w.floor {
		return
	}
	if err := w.j.putOffset(ctx, w.cfg.Slot, off); err != nil {
		w.log.Debug("save offset copy", "err", err)
		return
	}
	w.floor = off
}

// appendGroup publishes first, a Final transaction, with the Final
// transactions already queued behind it, as one atomic batch.
func (w *writer) appendGroup(ctx context.Context, in <-chan entities.Transaction, first entities.Transaction) (next *entities.Transaction, closed bool, err error) {
	group := first.Changes
	end := max(first.EndLSN, w.Offset())
collect:
	for len(group) < w.j.cfg.MaxBatch {
		select {
		case t, ok := <-in:
			if !ok {
				closed = true
				break collect
			}
			w.hold(len(group) + len(t.Changes))
			w.dropPublished(&t)
			switch {
			case t.CommitLSN < end && !(w.partial.ok && w.partial.commit == t.CommitLSN):
				if t.Final {
					end = max(end, t.EndLSN)
				}
			case !t.Final || len(group)+len(t.Changes) > w.j.cfg.MaxBatch:
				next = &t
				break collect
			default:
				group = append(group, t.Changes...)
				end = max(end, t.EndLSN)
			}
		default:
			break collect
		}
	}
	if err := w.publish(ctx, group, end, nil); err != nil {
		return nil, false, err
	}
	w.partial = partial{}
	w.commit(group, end, end)
	return next, closed, nil
}

// appendLarge publishes a transaction too large for one batch (or
// chunked) as consecutive atomic batches: all but the last keep the
// offset where it was and record how far they got; the last moves it.
// A chunk that does not continue the transaction (the watcher replays
// from its confirmed position) ends it unfinished and is returned as
// next: what was published stays, and the replay skips it.
func (w *writer) appendLarge(ctx context.Context, in <-chan entities.Transaction, first entities.Transaction) (next *entities.Transaction, closed bool, err error) {
	t := first
	var buf []entities.Change
	lastIdx := -1
	lim := w.j.cfg.MaxBatch
	for {
		for _, c := range t.Changes {
			lastIdx = c.Index
		}
		buf = append(buf, t.Changes...)
		for len(buf) > lim || len(buf) == lim && !t.Final {
			part := buf[:lim]
			if err := w.publish(ctx, part, w.Offset(), nil); err != nil {
				return nil, false, err
			}
			w.partial = partial{ok: true, commit: first.CommitLSN, index: part[len(part)-1].Index}
			w.commit(part, 0, w.Offset())
			buf = append([]entities.Change(nil), buf[lim:]...)
		}
		w.hold(len(buf))
		if t.Final {
			if err := w.publish(ctx, buf, t.EndLSN, nil); err != nil {
				return nil, false, err
			}
			w.partial = partial{}
			w.commit(buf, t.EndLSN, t.EndLSN)
			return nil, false, nil
		}
		var ok bool
		select {
		case <-ctx.Done():
			return nil, true, nil
		case t, ok = <-in:
			if !ok {
				return nil, true, nil
			}
		}
		w.dropPublished(&t)
		w.hold(len(buf) + len(t.Changes))
		if t.CommitLSN != first.CommitLSN || t.Xid != first.Xid || len(t.Changes) > 0 && t.Changes[0].Index <= lastIdx {
			w.log.Warn("source transaction restarted before its final chunk; what was published of it stays, the replay skips it",
				"xid", first.Xid, "commit_lsn", first.CommitLSN, "next_xid", t.Xid, "next_commit_lsn", t.CommitLSN)
			return &t, false, nil
		}
	}
}

// commit records a durable publish of changes (cursors set) and reports
// it; end is the offset it made durable (0: none).
func (w *writer) commit(changes []entities.Change, end, offset entities.LSN) {
	w.head.Store(w.head.Load() + int64(len(changes)))
	w.raiseOffset(offset)
	if w.cfg.OnCommit != nil {
		if changes == nil {
			changes = []entities.Change{}
		}
		w.cfg.OnCommit(pipeline.Committed{Head: w.Head(), Changes: changes, EndLSN: end})
	}
	w.hold(0)
}

// publish publishes changes as one atomic batch after the writer's head,
// every message carrying offset, and sets their cursors. ids, when set,
// gives each change's message id (default: its source position). With no
// change it stores offset in the offsets bucket instead.
func (w *writer) publish(ctx context.Context, changes []entities.Change, offset entities.LSN, ids func(int) string) error {
	if len(changes) == 0 {
		if offset > w.Offset() {
			return w.j.putOffset(ctx, w.cfg.Slot, offset)
		}
		return nil
	}
	msgs := make([]*nats.Msg, len(changes))
	for i := range changes {
		id := ""
		switch {
		case ids != nil:
			id = ids(i)
		case changes[i].CommitLSN != 0:
			id = changeID(&changes[i])
		}
		m, err := encodeMsg(&changes[i], offset, id)
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	seq, err := w.j.publishBatch(ctx, msgs, w.Head())
	if err != nil {
		return err
	}
	for i := range changes {
		changes[i].Cursor = int64(seq) - int64(len(changes)) + 1 + int64(i)
	}
	return nil
}

// pubAck is the server's answer to a batch's commit.
type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Count     int    `json:"count"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// ErrConflict is wrapped by a publish the stream refused because its last
// sequence was not the one the writer knew: another writer published.
var ErrConflict = errors.New("the journal stream moved under this writer (another writer published)")

// errDuplicate is wrapped by a publish the stream refused because it
// already holds one of its message ids.
var errDuplicate = errors.New("the journal stream already holds this message")

// publishBatch publishes msgs as one atomic batch expected to follow
// head, and returns the sequence of the last one.
func (j *Journal) publishBatch(ctx context.Context, msgs []*nats.Msg, head int64) (uint64, error) {
	id := nuid.Next()
	n := len(msgs)
	for i, m := range msgs {
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i == 0 {
			m.Header.Set("Nats-Expected-Last-Sequence", strconv.FormatInt(head, 10))
		}
		if i < n-1 {
			if err := j.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
		}
	}
	last := msgs[n-1]
	last.Header.Set("Nats-Batch-Commit", "1")
	rctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	resp, err := j.nc.RequestMsgWithContext(rctx, last)
	if err != nil {
		return 0, fmt.Errorf("publish a batch of %d: %w", n, err)
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("publish a batch of %d: bad acknowledgement %q: %w", n, resp.Data, err)
	}
	if ack.Error != nil {
		err := fmt.Errorf("publish a batch of %d: %s (error %d)", n, ack.Error.Description, ack.Error.ErrCode)
		switch ack.Error.ErrCode {
		case 10071: // wrong last sequence
			err = fmt.Errorf("%w: %w", ErrConflict, err)
		case 10201: // a message id the stream already holds
			err = fmt.Errorf("%w: %w", errDuplicate, err)
		}
		return 0, err
	}
	if ack.Duplicate {
		return 0, fmt.Errorf("publish a batch of %d: %w: the stream already holds it", n, ErrConflict)
	}
	if ack.Seq != uint64(head)+uint64(n) {
		return 0, fmt.Errorf("publish a batch of %d after %d: the stream stored it ending at %d: %w", n, head, ack.Seq, ErrConflict)
	}
	return ack.Seq, nil
}

// Submit runs fn on Run's goroutine, between source transactions, and
// publishes the changes it returns in one batch.
func (w *writer) submit(ctx context.Context, wr write) error {
	wr.done = make(chan error, 1)
	select {
	case w.writes <- wr:
	case <-ctx.Done():
		return fmt.Errorf("journal write: %w", ctx.Err())
	case <-w.runDone:
		return fmt.Errorf("journal write: %w", pipeline.ErrWriterStopped)
	}
	return <-wr.done
}

// applyWrite runs one system write on Run's goroutine. fn's own errors go
// to the submitter; a failed publish stops the writer.
func (w *writer) applyWrite(ctx context.Context, wr write) error {
	changes, err := wr.fn(ctx)
	if err != nil {
		wr.done <- err
		return nil
	}
	w.hold(len(changes))
	for len(changes) > 0 {
		part := changes[:min(len(changes), w.j.cfg.MaxBatch)]
		changes = changes[len(part):]
		err := w.publish(ctx, part, w.Offset(), wr.id)
		if errors.Is(err, errDuplicate) && wr.id != nil && len(part) == 1 {
			continue // journaled before: a retried event
		}
		if err != nil {
			wr.done <- fmt.Errorf("%w: %w", pipeline.ErrWriteFailed, err)
			return err
		}
		w.commit(part, 0, 0)
	}
	wr.done <- nil
	return nil
}

func (w *writer) events() (Events, error) {
	if w.j.cfg.Events == nil {
		return nil, errors.New("journal writer: no events table configured")
	}
	return w.j.cfg.Events, nil
}

// PersistEvent stores a system event (sanitized first) in the events
// table and journals it; idempotent by event id.
func (w *writer) PersistEvent(ctx context.Context, ev entities.Event) error {
	if w.cfg.SanitizeEvent == nil {
		return errors.New("persist event: the writer has no SanitizeEvent; refusing to store unsanitized metadata")
	}
	clean, err := w.cfg.SanitizeEvent(ev)
	if err != nil {
		return fmt.Errorf("persist event: sanitize: %w", err)
	}
	evs, err := w.events()
	if err != nil {
		return err
	}
	return w.submit(ctx, write{
		fn: func(ctx context.Context) ([]entities.Change, error) {
			ch, err := evs.InsertEvent(ctx, clean)
			if err != nil {
				return nil, err
			}
			return []entities.Change{ch}, nil
		},
		id: func(int) string { return "e:" + clean.ID.String() },
	})
}

func (w *writer) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	evs, err := w.events()
	if err != nil {
		return err
	}
	return w.submit(ctx, write{fn: func(ctx context.Context) ([]entities.Change, error) {
		return evs.SetEventStatus(ctx, owner, ids, status)
	}})
}

func (w *writer) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	evs, err := w.events()
	if err != nil {
		return err
	}
	return w.submit(ctx, write{fn: func(ctx context.Context) ([]entities.Change, error) {
		return evs.DeleteEvents(ctx, owner, ids)
	}})
}

// SavePosition stores lsn as the offset in the offsets bucket (never
// backwards).
func (w *writer) SavePosition(ctx context.Context, lsn entities.LSN) error {
	if lsn <= w.Offset() {
		return nil
	}
	if err := w.j.putOffset(ctx, w.cfg.Slot, lsn); err != nil {
		return err
	}
	w.raiseOffset(lsn)
	return nil
}

// RecordGap stores marker in the events table and publishes it on
// GapSubject with the lost range in its headers and gap.ToLSN as its
// offset. Run must not be running.
func (w *writer) RecordGap(ctx context.Context, gap pipeline.Gap, marker entities.Event) (pipeline.Gap, error) {
	if w.running.Load() {
		return pipeline.Gap{}, errors.New("record gap: the writer is running")
	}
	if w.broken != nil {
		return pipeline.Gap{}, fmt.Errorf("record gap: writer failed earlier (%v); close it and open a new one", w.broken)
	}
	if w.cfg.SanitizeEvent == nil {
		return pipeline.Gap{}, errors.New("record gap: the writer has no SanitizeEvent; refusing to store unsanitized metadata")
	}
	clean, err := w.cfg.SanitizeEvent(marker)
	if err != nil {
		return pipeline.Gap{}, fmt.Errorf("record gap: sanitize marker: %w", err)
	}
	evs, err := w.events()
	if err != nil {
		return pipeline.Gap{}, err
	}
	ch, err := evs.InsertEvent(ctx, clean)
	if err != nil {
		return pipeline.Gap{}, fmt.Errorf("record gap: %w", err)
	}
	m, err := encodeMsg(&ch, gap.ToLSN, "g:"+clean.ID.String())
	if err != nil {
		return pipeline.Gap{}, err
	}
	m.Subject = GapSubject
	m.Header.Set(hdrGapFrom, strconv.FormatUint(uint64(gap.FromLSN), 10))
	m.Header.Set(hdrGapTo, strconv.FormatUint(uint64(gap.ToLSN), 10))
	m.Header.Set(hdrGapReason, gap.Reason)
	seq, err := w.j.publishBatch(ctx, []*nats.Msg{m}, w.Head())
	if err != nil {
		w.broken = err
		return pipeline.Gap{}, fmt.Errorf("record gap: %w", err)
	}
	ch.Cursor = int64(seq)
	gap.Seq, gap.RecordedAt = int64(seq), time.Now().UTC()
	w.j.noteGap(gap)
	w.partial = partial{}
	w.commit([]entities.Change{ch}, 0, gap.ToLSN)
	return gap, nil
}
