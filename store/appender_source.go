package store

import (
	"context"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// RunBatches is Run for a pipeline that hands transactions over in
// batches (pipeline.BatchWriter): each batch is everything that queued up
// while the previous one was being journaled, so group commit takes all of
// it, however many transactions it holds, instead of only what a channel's
// buffer had room for when the commit began. Transactions are journaled
// in batch order, exactly as Run would journal them one by one.
func (a *Appender) RunBatches(ctx context.Context, in <-chan []entities.Transaction) error {
	return a.runFrom(ctx, &txSource{many: in})
}

// RunQueue is Run for a pipeline that queues transactions for the
// appender itself (pipeline.QueueWriter): the watcher puts them in q on
// its own goroutine and the appender takes everything queued at once, so
// group commit takes all of it and no goroutine stands in between.
// Transactions are journaled in queue order, exactly as Run would journal
// them one by one.
func (a *Appender) RunQueue(ctx context.Context, q *pipeline.Queue) error {
	return a.runFrom(ctx, &txSource{queue: q, ready: q.Ready()})
}

// txSource is where Run's transactions come from: a channel of single
// transactions, one of batches, or a pipeline.Queue (whose Ready channel
// is ready), the rest of a batch waiting in buf.
type txSource struct {
	one   <-chan entities.Transaction
	many  <-chan []entities.Transaction
	queue *pipeline.Queue
	ready <-chan struct{}
	buf   []entities.Transaction
}

// takeQueued moves what the queue holds to buf: open=false once the
// queue is closed and empty.
func (s *txSource) takeQueued() (open bool) {
	b, closed := s.queue.Take()
	if closed {
		s.queue, s.ready = nil, nil
		return false
	}
	if len(b) > 0 {
		s.buf = b
	}
	return true
}

// pop takes the next buffered transaction.
func (s *txSource) pop() (entities.Transaction, bool) {
	if len(s.buf) == 0 {
		return entities.Transaction{}, false
	}
	t := s.buf[0]
	s.buf[0] = entities.Transaction{}
	s.buf = s.buf[1:]
	return t, true
}

// take stores a received batch and returns its first transaction.
func (s *txSource) take(b []entities.Transaction, ok bool) (t entities.Transaction, open bool) {
	if !ok {
		s.many = nil
		return entities.Transaction{}, false
	}
	s.buf = b
	if t, got := s.pop(); got {
		return t, true
	}
	return entities.Transaction{}, true // an empty batch: nothing yet
}

// tryNext returns the next transaction if one is already waiting:
// got=false when none is, closed=true once the input is closed.
func (s *txSource) tryNext() (t entities.Transaction, got, closed bool) {
	if t, ok := s.pop(); ok {
		return t, true, false
	}
	if s.queue != nil {
		if !s.takeQueued() {
			return entities.Transaction{}, false, true
		}
		t, ok := s.pop()
		return t, ok, false
	}
	if s.one != nil {
		select {
		case t, ok := <-s.one:
			return t, ok, !ok
		default:
			return entities.Transaction{}, false, false
		}
	}
	select {
	case b, ok := <-s.many:
		t, open := s.take(b, ok)
		return t, open && len(b) > 0, !open
	default:
		return entities.Transaction{}, false, false
	}
}

// next waits for the next transaction: ok=false once the input is closed;
// an error when ctx ends first.
func (s *txSource) next(ctx context.Context) (entities.Transaction, bool, error) {
	for {
		if t, ok := s.pop(); ok {
			return t, true, nil
		}
		if s.queue != nil && !s.takeQueued() {
			return entities.Transaction{}, false, nil
		}
		if len(s.buf) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return entities.Transaction{}, false, ctx.Err()
		case <-s.ready:
		case t, ok := <-s.one:
			return t, ok, nil
		case b, ok := <-s.many:
			t, open := s.take(b, ok)
			if !open {
				return t, false, nil
			}
			if len(b) > 0 {
				return t, true, nil
			}
		}
	}
}
