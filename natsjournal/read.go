package natsjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
)

// readBatch is the most messages one direct get asks for.
const readBatch = 1000

// replicaWait bounds how long ReadAfter waits for a replica that has not
// yet stored what Tail already delivered.
const replicaWait = 3 * time.Second

// ReadAfter returns up to limit changes with a cursor above after, in
// cursor order, of the given entity types (nil: all). It reads the stream
// with direct gets (any replica answers) and scans every message after
// after, so it sees every change up to the highest cursor Tail handed to
// its sink, waiting briefly for a replica that lags. It fails with a
// *store.GapError when a gap marker lies after after, and with an error
// wrapping store.ErrCursorExpired when retention removed messages after
// after.
func (j *Journal) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	if limit <= 0 || types != nil && len(types) == 0 {
		return nil, nil
	}
	if g, ok := j.gapAfter(after); ok {
		return nil, fmt.Errorf("read journal: %w", &store.GapError{After: after, Gap: g})
	}
	target := j.seen.Load()
	var want map[string]bool
	if types != nil {
		want = make(map[string]bool, len(types))
		for _, t := range types {
			want[t] = true
		}
	}
	pos := after
	var out []entities.Change
	deadline := time.Now().Add(replicaWait)
	for len(out) < limit {
		msgs, pending, err := j.directBatch(ctx, uint64(pos)+1, readBatch)
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		if len(msgs) == 0 {
			info, err := j.stream.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("read journal: %w", err)
			}
			if first := int64(info.State.FirstSeq); pos < first-1 && int64(info.State.LastSeq) > pos {
				return nil, expired(after, first-1)
			}
			if pos >= target || int64(info.State.LastSeq) <= pos {
				break
			}
			// A replica that has not stored what the leader has.
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("read journal: the stream's replica has nothing after %d, but %d was delivered: a replica lags", pos, target)
			}
			if !sleep(ctx, 20*time.Millisecond) {
				return nil, ctx.Err()
			}
			continue
		}
		for _, m := range msgs {
			if int64(m.Seq) <= pos {
				continue
			}
			if int64(m.Seq) != pos+1 {
				// The stream is dense: a hole is what retention removed.
				return nil, expired(after, int64(m.Seq)-1)
			}
			pos = int64(m.Seq)
			c, err := decodeChange(m.Seq, m.Data)
			if err != nil {
				return nil, fmt.Errorf("read journal: %w", err)
			}
			if m.Subject == GapSubject {
				g := gapOf(m.Seq, m.Header, c.CommitTime)
				j.noteGap(g)
				return nil, fmt.Errorf("read journal: %w", &store.GapError{After: after, Gap: g})
			}
			if want == nil || want[c.EntityType] {
				out = append(out, c)
				if len(out) == limit {
					break
				}
			}
		}
		if pending == 0 && pos >= target {
			break
		}
	}
	return out, nil
}

func expired(after, horizon int64) error {
	return fmt.Errorf("read journal after cursor %d: %w (%d)", after, store.ErrCursorExpired, horizon)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Horizon returns the lowest cursor a reader can resume after: the
// highest sequence retention removed, or the latest gap marker, whichever
// is higher.
func (j *Journal) Horizon(ctx context.Context) (int64, error) {
	info, err := j.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("journal horizon: %w", err)
	}
	h := int64(info.State.FirstSeq) - 1
	if info.State.Msgs == 0 {
		h = int64(info.State.LastSeq)
	}
	m, err := j.leaderGetReq(ctx, map[string]any{"last_by_subj": GapSubject})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return 0, fmt.Errorf("journal horizon: %w", err)
	default:
		c, _ := decodeChange(m.Seq, m.Data)
		j.noteGap(gapOf(m.Seq, m.Header, c.CommitTime))
	}
	j.gapMu.Lock()
	defer j.gapMu.Unlock()
	if n := len(j.gaps); n > 0 {
		h = max(h, j.gaps[n-1].Seq)
	}
	return h, nil
}

// Gaps returns the recorded gaps still in the stream, oldest first.
func (j *Journal) Gaps() []pipeline.Gap {
	j.gapMu.Lock()
	defer j.gapMu.Unlock()
	return slices.Clone(j.gaps)
}

// loadGaps reads every gap marker the stream holds.
func (j *Journal) loadGaps(ctx context.Context) error {
	var seq uint64 = 1
	for {
		m, err := j.leaderGetReq(ctx, map[string]any{"seq": seq, "next_by_subj": GapSubject})
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("read the journal's gaps: %w", err)
		}
		c, _ := decodeChange(m.Seq, m.Data)
		j.noteGap(gapOf(m.Seq, m.Header, c.CommitTime))
		seq = m.Seq + 1
	}
}

func (j *Journal) noteGap(g pipeline.Gap) {
	j.gapMu.Lock()
	defer j.gapMu.Unlock()
	i, found := slices.BinarySearchFunc(j.gaps, g.Seq, func(a pipeline.Gap, s int64) int { return int(a.Seq - s) })
	if !found {
		j.gaps = slices.Insert(j.gaps, i, g)
	}
}

// gapAfter returns the first known gap whose marker is after after.
func (j *Journal) gapAfter(after int64) (pipeline.Gap, bool) {
	j.gapMu.Lock()
	defer j.gapMu.Unlock()
	for _, g := range j.gaps {
		if g.Seq > after {
			return g, true
		}
	}
	return pipeline.Gap{}, false
}

// directBatch reads up to n messages from sequence from on, through any
// replica, and the number of messages after the last one returned.
func (j *Journal) directBatch(ctx context.Context, from uint64, n int) ([]storedMsg, uint64, error) {
	inbox := nats.NewInbox()
	sub, err := j.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, _ := json.Marshal(map[string]any{"seq": from, "batch": n})
	if err := j.nc.PublishRequest("$JS.API.DIRECT.GET."+j.cfg.Stream, inbox, body); err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []storedMsg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("direct get from %d: %w", from, err)
		}
		switch m.Header.Get("Status") {
		case "":
		case "404":
			return out, 0, nil
		case "204": // end of batch
			p, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return out, p, nil
		default:
			return nil, 0, fmt.Errorf("direct get from %d: %s %s", from, m.Header.Get("Status"), m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("direct get from %d: no sequence", from)
		}
		out = append(out, storedMsg{Subject: m.Header.Get(jetstream.SubjectHeader), Seq: seq, Header: m.Header, Data: m.Data})
	}
}
