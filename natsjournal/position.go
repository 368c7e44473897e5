package natsjournal

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/changecast/changecast/entities"
)

// Position timings.
const (
	// deliverWait bounds how long Position waits for Tail to deliver the
	// stream's head.
	deliverWait = 10 * time.Second
	// bucketEvery is how often, at most, Position reads the offsets
	// bucket and the stream's head while Tail runs.
	bucketEvery = 250 * time.Millisecond
)

// SnapshotPosition reads the journal's head and stored offset from the
// stream, for snapshots on a gateway (package snapshot's
// JournalPosition): the snapshot's rows come from the watched database,
// where the journal is comes from here. Create it with
// Journal.SnapshotPosition; it is safe for concurrent use.
type SnapshotPosition struct {
	j *Journal

	mu     sync.Mutex // one bucket read at a time; guards the fields below
	at     time.Time  // when offset and head were read
	offset entities.LSN
	head   int64
}

// SnapshotPosition returns j's SnapshotPosition.
func (j *Journal) SnapshotPosition() *SnapshotPosition { return &SnapshotPosition{j: j} }

// Head returns the stream's last sequence.
func (p *SnapshotPosition) Head(ctx context.Context) (int64, error) { return p.j.Head(ctx) }

// Position returns slot's replication offset and a cursor at or above
// every change up to it, which this process's reader (ReadAfter) reaches.
//
// While Tail runs, the pair comes from what it delivered (the offset each
// message carries: no request), or from the offsets bucket, which holds
// positions no change covers: its offset, then the stream's last sequence
// read after it, once Tail has delivered that sequence; that read is
// shared by concurrent callers and made at most every bucketEvery.
// Without Tail, both are read from the stream (Journal.Offset, then
// Journal.Head).
func (p *SnapshotPosition) Position(ctx context.Context, slot string) (entities.LSN, int64, error) {
	if !p.j.tail.running.Load() {
		offset, err := p.j.Offset(ctx, slot)
		if err != nil {
			return 0, 0, err
		}
		head, err := p.j.Head(ctx)
		return offset, head, err
	}
	var delivered deliveredPos
	if d := p.j.tail.pos.Load(); d != nil {
		delivered = *d
	}
	offset, head, err := p.fromBucket(ctx, slot)
	if err != nil {
		return 0, 0, err
	}
	if offset > delivered.offset {
		return offset, head, nil
	}
	return delivered.offset, delivered.seq, nil
}

// fromBucket returns the bucket's offset of slot and the stream's head
// read after it, once delivered; cached for bucketEvery.
func (p *SnapshotPosition) fromBucket(ctx context.Context, slot string) (entities.LSN, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < bucketEvery {
		return p.offset, p.head, nil
	}
	offset, err := p.j.getOffset(ctx, slot)
	if err != nil {
		return 0, 0, err
	}
	head, err := p.j.Head(ctx)
	if err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(deliverWait)
	for p.j.seen.Load() < head {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("journal position: this process has delivered the stream up to %d, not yet its head %d, after %s", p.j.seen.Load(), head, deliverWait)
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return 0, 0, ctx.Err()
		}
	}
	p.at, p.offset, p.head = time.Now(), offset, head
	return offset, head, nil
}
