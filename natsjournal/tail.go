package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// Tail timings.
const (
	// probeInterval is how often Tail checks that the stream answers.
	probeInterval = 2 * time.Second
	// unreadableAfter is how long the stream may not answer before Tail
	// says it is unavailable.
	unreadableAfter = 6 * time.Second
	// tailBatch is the most changes Tail hands over in one Publish.
	tailBatch = 512
)

// batchCommitHeader marks the last message of an atomic batch; the
// server stores it with the message.
const batchCommitHeader = "Nats-Batch-Commit"

// tailState is Tail's progress, for Ready and the metrics.
type tailState struct {
	running atomic.Bool
	okAt    atomic.Int64  // unix nanoseconds of the last answer of the stream
	pending atomic.Uint64 // messages the consumer had yet to deliver, at the last one
	last    atomic.Uint64 // the stream's last sequence, at the last probe
	// pos is an offset and a sequence handed to the sink such that
	// every change up to that offset is at or below that sequence
	// (SnapshotPosition).
	pos atomic.Pointer[deliveredPos]
}

// deliveredPos is tailState.pos.
type deliveredPos struct {
	offset entities.LSN
	seq    int64
}

// StreamEvent reports a change in whether the stream can be read.
type StreamEvent struct {
	// Available is false when the stream stopped answering, true when it
	// answers again.
	Available bool
	// Down is how long it did not answer (when Available).
	Down time.Duration
	// Err is why it cannot be read (when not Available).
	Err error
}

// Tail delivers the stream to sink until ctx ends, as the pipeline does to
// its sinks: Publish(head, nil) once with the stream's head, then every
// message after it in order (a gap marker also as Gap), and
// SetUnavailable while the stream does not answer. notify, if set, hears
// when the stream stops and starts answering. It returns nil when ctx ends.
func (j *Journal) Tail(ctx context.Context, sink pipeline.Sink, notify func(StreamEvent)) error {
	var head int64
	for {
		h, err := j.Head(ctx)
		if err == nil {
			head = h
			break
		}
		j.log.Warn("read the journal stream's head; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
	j.tail.okAt.Store(time.Now().UnixNano())
	j.tail.last.Store(uint64(head))
	j.seen.Store(head) // before Publish: ReadAfter must reach what the sink knows
	j.tail.pos.Store(nil)
	sink.Publish(head, nil)
	j.tail.running.Store(true)
	defer j.tail.running.Store(false)

	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		j.probe(ctx, sink, notify)
	}()
	defer func() { <-probeDone }()

	cons, err := j.js.OrderedConsumer(ctx, j.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   uint64(head) + 1,
	})
	for err != nil {
		if ctx.Err() != nil {
			return nil
		}
		j.log.Warn("follow the journal stream; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
		cons, err = j.js.OrderedConsumer(ctx, j.cfg.Stream, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   uint64(head) + 1,
		})
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(tailBatch))
	if err != nil {
		return fmt.Errorf("follow the journal stream: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	last := head
	// Every message of an atomic batch carries the batch's offset, so
	// an offset is known complete at sequence s only when s is the
	// batch's last message (the server keeps its Nats-Batch-Commit
	// header), or the message after s carries a higher offset. Not
	// when s is the stream's last message: a server stores a batch's
	// messages one by one, and a reader may see part of it.
	var prevOffset entities.LSN
	var done deliveredPos
	var batch []entities.Change
	deliver := func(seq int64) {
		j.seen.Store(seq)
		if done.seq <= seq {
			d := done
			j.tail.pos.Store(&d)
		}
	}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		deliver(last)
		sink.Publish(last, batch)
		batch = batch[:0]
	}
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			j.log.Debug("follow the journal stream", "err", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := int64(md.Sequence.Stream)
		j.tail.pending.Store(md.NumPending)
		j.tail.okAt.Store(time.Now().UnixNano())
		if seq <= last {
			continue
		}
		if seq != last+1 {
			// Retention removed messages before this follower read
			// them: its readers catch up from the stream, which
			// tells them the cursor expired.
			flush()
			j.log.Warn("the journal stream removed messages before they were followed", "from", last+1, "to", seq-1)
			deliver(seq - 1)
			sink.Publish(seq-1, nil)
		}
		last = seq
		if off := lsnHeader(msg.Headers(), hdrOffset); off > prevOffset {
			done = deliveredPos{offset: prevOffset, seq: seq - 1}
			prevOffset = off
		}
		if msg.Headers().Get(batchCommitHeader) != "" {
			done = deliveredPos{offset: prevOffset, seq: seq}
		}
		c, err := decodeChange(uint64(seq), msg.Data())
		if err != nil {
			flush()
			j.log.Error("a journal message cannot be read; skipped", "cursor", seq, "err", err)
			deliver(seq)
			sink.Publish(seq, nil)
			continue
		}
		batch = append(batch, c)
		if msg.Subject() == GapSubject {
			flush()
			g := gapOf(uint64(seq), msg.Headers(), c.CommitTime)
			j.noteGap(g)
			sink.Gap(seq, pipeline.GapMessage(g))
			continue
		}
		if md.NumPending == 0 || len(batch) >= tailBatch {
			flush()
		}
	}
}

// probe checks the stream every probeInterval and says when it stops or
// starts answering.
func (j *Journal) probe(ctx context.Context, sink pipeline.Sink, notify func(StreamEvent)) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	var downSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeInterval)
		info, err := j.stream.Info(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			j.tail.okAt.Store(time.Now().UnixNano())
			j.tail.last.Store(info.State.LastSeq)
			if !downSince.IsZero() {
				down := time.Since(downSince)
				downSince = time.Time{}
				j.log.Info("the journal stream answers again", "down", down.Round(time.Millisecond))
				sink.SetUnavailable("")
				if notify != nil {
					notify(StreamEvent{Available: true, Down: down})
				}
			}
			continue
		}
		ok := time.Unix(0, j.tail.okAt.Load())
		if downSince.IsZero() && time.Since(ok) > unreadableAfter {
			downSince = ok
			j.log.Error("the journal stream does not answer", "err", err)
			sink.SetUnavailable("the journal stream (NATS JetStream) does not answer; reconnect shortly, with since")
			if notify != nil {
				notify(StreamEvent{Err: err})
			}
		}
	}
}

// Readable reports whether Tail is following the stream and the stream
// answered recently: a gateway is ready only then.
func (j *Journal) Readable() bool {
	return j.tail.running.Load() && time.Since(time.Unix(0, j.tail.okAt.Load())) < unreadableAfter
}

// TailStats is Tail's progress.
type TailStats struct {
	// Delivered is the highest cursor handed to the sink.
	Delivered int64
	// StreamLast is the stream's last sequence at the last check.
	StreamLast uint64
	// Pending is how many messages the consumer had yet to deliver.
	Pending uint64
}

// TailStats returns Tail's progress.
func (j *Journal) TailStats() TailStats {
	return TailStats{Delivered: j.seen.Load(), StreamLast: j.tail.last.Load(), Pending: j.tail.pending.Load()}
}
