package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/snapshot"
	"github.com/changecast/changecast/wsapi"
)

// newSnapshots is the snapshot source the hub reads current rows from
// (issue 14), on the watched database, whose journal and offset it also
// reads.
func newSnapshots(url, journalURL string, reg *entities.Registry, sanitize func(entities.Change) (entities.Change, error), slot string, log *slog.Logger) (wsapi.Snapshots, error) {
	src, err := snapshot.New(snapshot.Config{
		URL: url, JournalURL: journalURL, Registry: reg, Sanitize: sanitize, Slot: slot, Publication: publicationName,
		Logger: log.With("component", "snapshot"),
	})
	if err != nil {
		return nil, err
	}
	return snapshots{src}, nil
}

// newNATSSnapshots is newSnapshots with the journal in NATS JetStream:
// rows from the watched database, the journal's head and stored offset
// from the stream (docs/scale-out.md). A nil sanitize is the registry's.
func newNATSSnapshots(url string, reg *entities.Registry, sanitize func(entities.Change) (entities.Change, error), slot string, nj *natsjournal.Journal, log *slog.Logger) (wsapi.Snapshots, error) {
	src, err := snapshot.New(snapshot.Config{
		URL: url, Registry: reg, Sanitize: sanitize, Slot: slot, Publication: publicationName,
		Journal: nj.SnapshotPosition(), Logger: log.With("component", "snapshot"),
	})
	if err != nil {
		return nil, err
	}
	return snapshots{src}, nil
}

// snapshots adapts *snapshot.Source to wsapi.Snapshots.
type snapshots struct{ src *snapshot.Source }

func (s snapshots) Begin(ctx context.Context, types []string) (wsapi.Snapshot, error) {
	sn, err := s.src.Begin(ctx, types)
	if err != nil {
		return nil, err
	}
	return sn, nil
}

// gatewaySanitizer is what snapshots sanitize rows with when the journal
// is in NATS JetStream: the pipeline's sanitizer where there is one (role
// all), else a sanitizer of the reloader's registry, replaced on each
// reload so a secret a reload adds is stripped from rows at once.
func gatewaySanitizer(pipe *pipeline.Pipeline, rl *reloader) func(entities.Change) (entities.Change, error) {
	if pipe != nil {
		return pipe.Sanitize
	}
	var cur atomic.Pointer[sanitize.Sanitizer]
	cur.Store(sanitize.New(rl.current))
	rl.onReload = func(reg *entities.Registry) { cur.Store(sanitize.New(reg)) }
	return func(c entities.Change) (entities.Change, error) { return cur.Load().Change(c) }
}
