package wsapi

import (
	"fmt"
	"sync"
)

// frameQueue is a client's queue of live change frames. Publish pushes
// (never blocking), the client's writer takes. It costs nothing until a
// frame is queued: the ring starts empty, doubles as frames wait, up to
// the queue's bound, and is let go once the writer empties it after a
// burst, so an idle connection holds no queue memory (a channel of
// QueueLen slots would hold 8 KiB from the start).
//
// Its bound is counted in frames (Config.QueueLen) and in bytes
// (Config.QueueBytes, the frames' sizes): whichever is reached first makes
// the client fall behind, so a client of large rows is bounded as well as
// one of small rows. A frame is always accepted into an empty queue,
// however large.
type frameQueue struct {
	mu       sync.Mutex
	ring     []*outFrame
	head     int // index of the oldest frame
	n        int // frames queued
	bytes    int // their total size
	maxN     int
	maxBytes int
	// ready holds a token while frames are queued and the writer has
	// not yet been told: push puts one when the queue becomes non-empty,
	// and the writer puts one back when it leaves frames behind.
	ready chan struct{}
}

// minRing is the ring's first size; keepRing is the largest ring kept
// once emptied.
const (
	minRing  = 8
	keepRing = 32
)

// push queues f if the bounds allow and reports whether it did, and the
// queue's length after it.
func (q *frameQueue) push(f *outFrame) (ok bool, n int) {
	q.mu.Lock()
	if q.n >= q.maxN || (q.n > 0 && q.bytes+len(f.wire) > q.maxBytes) {
		n = q.n
		q.mu.Unlock()
		return false, n
	}
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = f
	q.n++
	q.bytes += len(f.wire)
	n = q.n
	q.mu.Unlock()
	if n == 1 {
		q.signal()
	}
	return true, n
}

// grow doubles the ring (under mu), keeping the frames in order.
func (q *frameQueue) grow() {
	size := max(minRing, 2*len(q.ring))
	ring := make([]*outFrame, size)
	for i := range q.n {
		ring[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = ring, 0
}

// signal tells the writer that frames are queued.
func (q *frameQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take moves up to len(dst) of the oldest frames into dst and returns how
// many, and how many are left; when frames remain, the writer is told
// again.
func (q *frameQueue) take(dst []*outFrame) (k, left int) {
	q.mu.Lock()
	k = min(len(dst), q.n)
	for i := range k {
		j := (q.head + i) % len(q.ring)
		dst[i] = q.ring[j]
		q.ring[j] = nil
		q.bytes -= len(dst[i].wire)
	}
	q.n -= k
	if q.n == 0 {
		q.head = 0
		if len(q.ring) > keepRing {
			q.ring = nil // a burst is over: give its memory back
		}
	} else {
		q.head = (q.head + k) % len(q.ring)
	}
	left = q.n
	q.mu.Unlock()
	if left > 0 {
		q.signal()
	}
	return k, left
}

// len returns the number of frames queued.
func (q *frameQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// behind says how far behind a client fell when its queue overflowed, for
// the lagging and resync-required messages.
func (cfg *Config) behind() string {
	return fmt.Sprintf("more than %d frames behind (or more than %s)", cfg.QueueLen, byteSize(cfg.QueueBytes))
}

// byteSize prints n bytes in the largest binary unit that divides it.
func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
