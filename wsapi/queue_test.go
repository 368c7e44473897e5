package wsapi

import (
	"strings"
	"testing"
)

func frameOf(cursor int64, size int) *outFrame {
	return &outFrame{wire: []byte(strings.Repeat("x", size)), cursor: cursor}
}

// TestFrameQueue checks a client's live queue: frames come out in order
// across growth and wrap-around, the bounds in frames and in bytes both
// refuse (an empty queue takes any frame), the writer is told exactly
// while frames wait, and an emptied queue gives a large ring back.
func TestFrameQueue(t *testing.T) {
	q := frameQueue{maxN: 100, maxBytes: 1000, ready: make(chan struct{}, 1)}
	if q.ring != nil {
		t.Fatal("a new queue holds a ring")
	}
	next, want := int64(1), int64(1)
	var dst [7]*outFrame
	for round := range 20 {
		for range 3 + round%5 {
			if ok, _ := q.push(frameOf(next, 5)); !ok {
				t.Fatalf("push %d refused", next)
			}
			next++
		}
		select {
		case <-q.ready:
		default:
			t.Fatalf("round %d: frames queued and the writer not told", round)
		}
		for {
			k, left := q.take(dst[:])
			for _, f := range dst[:k] {
				if f.cursor != want {
					t.Fatalf("took cursor %d, want %d", f.cursor, want)
				}
				want++
			}
			if left == 0 {
				break
			}
			<-q.ready // told again while frames are left
		}
	}
	if want != next {
		t.Fatalf("took up to %d, pushed up to %d", want-1, next-1)
	}

	// Bound in frames.
	for i := range 100 {
		if ok, n := q.push(frameOf(int64(i), 1)); !ok || n != i+1 {
			t.Fatalf("push %d: ok %t, len %d", i, ok, n)
		}
	}
	if ok, n := q.push(frameOf(100, 1)); ok || n != 100 {
		t.Fatalf("push beyond 100 frames: ok %t, len %d; want refused at 100", ok, n)
	}
	for q.len() > 0 {
		q.take(dst[:])
	}
	if q.ring != nil {
		t.Errorf("emptied after a burst of 100, the queue keeps a ring of %d", len(q.ring))
	}

	// Bound in bytes: one frame larger than the bound is taken alone.
	if ok, _ := q.push(frameOf(1, 2000)); !ok {
		t.Fatal("an empty queue refused a frame larger than its byte bound")
	}
	if ok, _ := q.push(frameOf(2, 1)); ok {
		t.Fatal("a queue over its byte bound took another frame")
	}
	q.take(dst[:])
	for i := range 4 {
		if ok, _ := q.push(frameOf(int64(i), 250)); !ok {
			t.Fatalf("push %d of 250 bytes refused under a 1,000-byte bound", i)
		}
	}
	if ok, _ := q.push(frameOf(5, 1)); ok {
		t.Fatal("a queue at its byte bound took another frame")
	}
}

// TestFrameQueue_Allocs: once its ring has grown, queueing and taking
// frames allocates nothing (Publish runs it for every interested client
// under the hub lock).
func TestFrameQueue_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are inflated by the race detector")
	}
	q := frameQueue{maxN: 1024, maxBytes: 1 << 20, ready: make(chan struct{}, 1)}
	f := frameOf(1, 100)
	var dst [64]*outFrame
	for range 20 {
		q.push(f)
	}
	q.take(dst[:])
	allocs := testing.AllocsPerRun(1000, func() {
		for range 20 {
			q.push(f)
		}
		for q.len() > 0 {
			q.take(dst[:])
		}
		select {
		case <-q.ready:
		default:
		}
	})
	if allocs != 0 {
		t.Errorf("push and take: %.1f allocations per run, want 0", allocs)
	}
}
