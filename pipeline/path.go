package pipeline

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/watcher"
)

// startPath starts, in g, the watcher and the journal writer of one
// pipeline instance and what carries transactions between them, each
// prepared (sanitized) by prep on its way. wctx stops the watcher (an
// orderly stop: the writer journals what was handed over, then its input
// closes); gctx, a failed stage, stops everything.
//
// Each hand-off between goroutines costs a thread wake-up, and at a
// thousand small transactions a second those, not the work, are most of
// the CPU (docs/benchmarks.md). With a QueueWriter (store's appender), the
// watcher sanitizes each transaction on its own goroutine and puts it in a
// Queue the writer takes everything from: one hand-off. Any other Writer
// gets its transactions from feed, which sanitizes them and holds them
// for group commit: two.
//
// System events queued before an orderly stop are written while the
// writer still runs: its input closes only once eventsDone is closed,
// unless the watcher stopped inside a chunked transaction, whose open
// journal transaction the writer must first roll back (it takes system
// writes only between source transactions).
func (p *Pipeline) startPath(g *errgroup.Group, gctx, wctx context.Context, w *watcher.Watcher, jw Writer,
	prep func(entities.Transaction) (entities.Transaction, error), eventsDone <-chan struct{}) {
	// The queue holds up to 4 chunks' worth of changes (at least one
	// transaction) besides the batch the writer is journaling.
	budget := 4 * p.cfg.ChunkSize
	if qw, ok := jw.(QueueWriter); ok {
		q := newQueue(budget, prep)
		g.Go(func() error {
			err := w.RunTo(wctx, q)
			if err == nil && !q.insideChunked() {
				select {
				case <-eventsDone:
				case <-gctx.Done():
				}
			}
			q.close()
			return err
		})
		g.Go(func() error { return qw.RunQueue(gctx, q) })
		return
	}

	// Small buffers: each item can be a whole chunk (ChunkSize changes).
	raw := make(chan entities.Transaction, 4)
	g.Go(func() error {
		defer close(raw)
		return w.Run(wctx, raw)
	})
	if bw, ok := jw.(BatchWriter); ok {
		// Everything feed holds in one receive (relay_batches.go).
		batches := make(chan []entities.Transaction)
		g.Go(func() error { return feed(gctx, raw, nil, batches, budget, prep, eventsDone) })
		g.Go(func() error { return bw.RunBatches(gctx, batches) })
		return
	}
	// The writer's channel keeps a few items buffered so its non-blocking
	// collection finds the next one while feed refills it.
	one := make(chan entities.Transaction, 4)
	g.Go(func() error { return feed(gctx, raw, one, nil, budget, prep, eventsDone) })
	g.Go(func() error { return jw.Run(gctx, one) })
}
