package pipeline

import (
	"context"
	"sync"

	"github.com/changecast/changecast/entities"
)

// QueueWriter is a Writer that also reads its transactions straight from
// a Queue. The pipeline prefers it to BatchWriter and Writer: the watcher
// sanitizes each transaction and puts it in the queue on its own
// goroutine, and the writer takes everything queued in one go, so a
// transaction crosses one goroutine hand-off on its way to the journal
// instead of three (a sanitize stage and a relay). RunQueue otherwise
// follows Run's contract; the queue's transactions come in commit order.
type QueueWriter interface {
	Writer
	RunQueue(ctx context.Context, q *Queue) error
}

// Queue carries transactions from the watcher to a QueueWriter, bounded
// by changes: it holds up to a budget of changes (and always at least one
// transaction, however large), so under load many small transactions wait
// there and one journal commit takes them all (group commit) while a
// large transaction still holds only a few chunks. One goroutine offers
// (the watcher's, through watcher.Output) and one takes (the writer's).
type Queue struct {
	budget int
	prep   func(entities.Transaction) (entities.Transaction, error)
	ready  chan struct{} // cap 1: something to take, or closed
	room   chan struct{} // cap 1: Take made room

	mu     sync.Mutex
	q      []entities.Transaction
	held   int
	closed bool
	inside bool // the last transaction offered was a non-final chunk
}

// newQueue returns a queue holding up to budget changes, which runs prep
// (sanitize) on each transaction it takes, on the offering goroutine.
func newQueue(budget int, prep func(entities.Transaction) (entities.Transaction, error)) *Queue {
	return &Queue{budget: budget, prep: prep, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// Offer takes tx, prepared, if there is room (watcher.Output). prep's
// error is returned and tx is not taken.
func (q *Queue) Offer(tx entities.Transaction) (bool, error) {
	q.mu.Lock()
	full := len(q.q) > 0 && q.held >= q.budget
	q.mu.Unlock()
	if full {
		return false, nil
	}
	// Only the offering goroutine adds, so there is still room after
	// prep, which runs outside the lock (the taker never waits for it).
	tx, err := q.prep(tx)
	if err != nil {
		return false, err
	}
	q.mu.Lock()
	q.q = append(q.q, tx)
	q.held += len(tx.Changes)
	q.inside = !tx.Final
	q.mu.Unlock()
	signal(q.ready)
	return true, nil
}

// Room receives after Take made room (watcher.Output).
func (q *Queue) Room() <-chan struct{} { return q.room }

// Ready receives when there may be something to Take, or the queue was
// closed. A receive that finds nothing is harmless.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Take returns, without waiting, everything queued, in order (nil when
// nothing is), and closed=true once the queue is closed and empty. The
// caller owns the batch.
func (q *Queue) Take() (batch []entities.Transaction, closed bool) {
	q.mu.Lock()
	batch, q.q, q.held = q.q, nil, 0
	closed = q.closed && len(batch) == 0
	if q.closed {
		signal(q.ready) // whoever waits next finds the end
	}
	q.mu.Unlock()
	if len(batch) > 0 {
		signal(q.room)
	}
	return batch, closed
}

// close says nothing more will be offered.
func (q *Queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.ready)
}

// insideChunked reports whether the last transaction offered was a
// non-final chunk. Call it from the offering goroutine.
func (q *Queue) insideChunked() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inside
}

// signal wakes whoever waits on c (cap 1) without blocking: a signal
// already pending covers this one.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
