package store

import (
	"context"

	"github.com/changecast/changecast/entities"
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

// txSource is where Run's transactions come from: a channel of single
// transactions, or one of batches whose rest waits in buf.
type txSource struct {
	one  <-chan entities.Transaction
	many <-chan []entities.Transaction
	buf  []entities.Transaction
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
		select {
		case <-ctx.Done():
			return entities.Transaction{}, false, ctx.Err()
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
