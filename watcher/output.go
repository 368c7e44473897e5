package watcher

import (
	"context"
	"time"

	"github.com/changecast/changecast/entities"
)

// Output takes a Watcher's transactions in place of a channel (RunTo): a
// consumer that queues them itself, bounded as it likes, receives each
// one on Run's goroutine with no goroutine hand-off in between.
type Output interface {
	// Offer takes tx if there is room for it now and reports whether it
	// did. An error stops Run, which returns it; tx was not taken.
	Offer(tx Transaction) (bool, error)
	// Room returns a channel that receives after the consumer made room:
	// Run waits on it (answering the server meanwhile) before it offers
	// the same transaction again. A receive that finds no room is
	// harmless.
	Room() <-chan struct{}
}

// RunTo is Run with an Output instead of a channel: every guarantee of
// Run holds, a transaction counting as sent once Offer took it.
func (w *Watcher) RunTo(ctx context.Context, out Output) error {
	return w.runOnce(ctx, nil, out)
}

// offer is send for an Output: it offers tx until it is taken.
func (s *session) offer(tx *entities.Transaction, sent func()) error {
	ok, err := s.q.Offer(*tx)
	if !ok && err == nil {
		err = s.offerAgain(tx)
	}
	if err != nil {
		return err
	}
	sent()
	return nil
}

// offerAgain offers tx each time the consumer has made room, until it is
// taken, keeping the heartbeat going meanwhile (rule 5, 6).
func (s *session) offerAgain(tx *entities.Transaction) error {
	s.sending = true
	defer func() { s.sending = false }()
	tick := time.NewTicker(receiveTimeout)
	defer tick.Stop()
	for {
		select {
		case <-s.q.Room():
			if ok, err := s.q.Offer(*tx); ok || err != nil {
				return err
			}
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-tick.C:
			if err := s.status(false); err != nil {
				return err
			}
		}
	}
}
