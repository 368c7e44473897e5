package pipeline

import (
	"context"

	"github.com/changecast/changecast/entities"
)

// BatchWriter is a Writer that also takes its transactions in batches.
// The pipeline prefers it: it hands the writer, in one receive, everything
// that queued up while the writer was busy, so one commit can take all of
// it (group commit) rather than only what a channel's buffer held. A batch
// is never empty, and its transactions come in commit order; RunBatches
// otherwise follows Run's contract.
type BatchWriter interface {
	Writer
	RunBatches(ctx context.Context, in <-chan []entities.Transaction) error
}

// relayBatches passes transactions from src to dst in order, as batches:
// it holds up to budget changes (and always at least one transaction) and
// hands everything it holds to the writer the moment the writer asks (dst
// is unbuffered), so a writer that was busy finds all that arrived
// meanwhile in one batch. Memory stays bounded: the writer's batch plus at
// most budget changes (and one transaction) here. It closes dst once src
// is closed and everything held has been passed on, or when ctx ends.
func relayBatches(ctx context.Context, src <-chan entities.Transaction, dst chan<- []entities.Transaction, budget int) error {
	return feed(ctx, src, nil, dst, budget, nil, nil)
}
