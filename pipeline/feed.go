package pipeline

import (
	"context"

	"github.com/changecast/changecast/entities"
)

// feed is the one goroutine between the watcher and the journal writer.
// It prepares each transaction as it arrives (prep: sanitize; nil passes
// it as it is), then queues it for the writer exactly as relay and
// relayBatches do: it holds up to budget changes (and always at least one
// transaction) while the writer is busy, and hands them over in order,
// one at a time on one or, when many is set, all at once on many
// (BatchWriter). Sanitizing here rather than on a goroutine of its own
// saves a hand-off, and so a thread wake-up, per source transaction.
//
// Once src is closed, feed passes on everything it holds and closes its
// output. With eventsDone set, it first waits for eventsDone to close
// (system events queued before an orderly stop are written while the
// writer still runs), unless the last transaction it received was a
// non-final chunk: then the writer must see its input close (and roll
// that chunk back) before it can take a system write. It returns prep's
// error at once, and nil when ctx ends.
func feed(ctx context.Context, src <-chan entities.Transaction, one chan<- entities.Transaction, many chan<- []entities.Transaction,
	budget int, prep func(entities.Transaction) (entities.Transaction, error), eventsDone <-chan struct{}) error {
	if many != nil {
		defer close(many)
	} else {
		defer close(one)
	}
	var q []entities.Transaction
	held := 0
	inside := false // the last transaction received was a non-final chunk
	for {
		var (
			outOne  chan<- entities.Transaction
			outMany chan<- []entities.Transaction
			next    entities.Transaction
		)
		if len(q) > 0 {
			if many != nil {
				outMany = many
			} else {
				outOne, next = one, q[0]
			}
		}
		in := src
		if len(q) > 0 && held >= budget {
			in = nil // full: wait for the writer
		}
		var events <-chan struct{}
		if src == nil {
			if inside {
				eventsDone = nil // the writer must see its input close first
			}
			if eventsDone == nil && len(q) == 0 {
				return nil // src closed and everything passed on
			}
			events = eventsDone
		}
		select {
		case tx, ok := <-in:
			if !ok {
				src = nil
				continue
			}
			if prep != nil {
				var err error
				if tx, err = prep(tx); err != nil {
					return err
				}
			}
			inside = !tx.Final
			q = append(q, tx)
			held += len(tx.Changes)
		case outMany <- q:
			q, held = nil, 0
		case outOne <- next:
			q[0] = entities.Transaction{}
			q = q[1:]
			held -= len(next.Changes)
		case <-events:
			eventsDone = nil
		case <-ctx.Done():
			return nil
		}
	}
}

// relay passes transactions from src to dst in order, holding up to budget
// changes (and always at least one transaction) in between, so the
// journal writer finds what arrived while it was committing and takes it
// in one commit (group commit). It closes dst once src is closed and
// everything held has been passed on, or when ctx ends.
func relay(ctx context.Context, src <-chan entities.Transaction, dst chan<- entities.Transaction, budget int) error {
	return feed(ctx, src, dst, nil, budget, nil, nil)
}
