package pipeline

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/sanitize"
)

// Reloading a configuration without a restart (docs/configuration.md,
// "Reloading").
//
// A reload stops the running instance of the pipeline the way a fault
// does: everything decoded but not yet journaled is abandoned (nothing of
// it was acknowledged), and the next instance decodes it again from the
// stored offset. Between the two instances, with no watcher running, the
// caller's apply step changes the publication and the pipeline switches
// to the new registry, sanitizer and secret guard. So:
//
//   - every change not journaled when the reload is taken is sanitized
//     under the new rules, including changes decoded and sanitized under
//     the old ones that were still queued for the journal;
//   - no watcher decodes under the old registry while the publication
//     already holds a new table (it would ignore that table's changes and
//     could store a position past them, losing them);
//   - the new instance's replication connection starts with an empty
//     relation cache: PostgreSQL sends a Relation message for each table
//     as it first decodes a change to it, and each is resolved against the
//     new registry;
//   - changes to a removed table that were not yet journaled are dropped,
//     wherever they are in the WAL: the new registry does not know the
//     table.
//
// Clients stay connected; live delivery pauses while the replication
// connection is re-established.

// errReload ends a running instance so that a reload can be applied.
var errReload = errors.New("reloading the configuration")

// ErrNotRunning is returned by Reload when Run is not running.
var ErrNotRunning = errors.New("the pipeline is not running")

// reloadRequest is a Reload waiting to be applied by the supervisor.
type reloadRequest struct {
	reg   *entities.Registry
	apply func(context.Context) error
	done  chan error // buffered: the supervisor never blocks on it
}

// sanitizerBox is the sanitizer in force, with the counts of the ones a
// reload retired (so SanitizeStats never goes back).
type sanitizerBox struct {
	s       *sanitize.Sanitizer
	retired sanitize.Stats
}

// Reload switches the pipeline to reg. It stops the running instance
// (abandoning what is not yet journaled), calls apply, if not nil, while
// no watcher runs (the caller changes the publication there), and on
// success continues with reg, a sanitizer and a secret guard built from
// it. If apply fails, the pipeline continues with its former registry,
// and apply's error is returned: apply must then have changed nothing.
// A type stopped because a secret column disappeared stays stopped unless
// reg changes that type's secret columns.
//
// Reload returns once the switch is done or refused; streaming resumes
// right after, asynchronously. It returns ErrNotRunning when Run is not
// running, and ctx's error if ctx ends before the supervisor takes the
// request (once taken, the request is carried out and Reload waits for
// it). Reloads are applied one at a time; safe from any goroutine.
func (p *Pipeline) Reload(ctx context.Context, reg *entities.Registry, apply func(context.Context) error) error {
	if reg == nil {
		return errors.New("pipeline: reload: registry is nil")
	}
	if !p.running.Load() {
		return ErrNotRunning
	}
	r := reloadRequest{reg: reg, apply: apply, done: make(chan error, 1)}
	select {
	case p.reloads <- r:
	case <-p.stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.done
}

// awaitReload runs inside an instance: it takes a reload request and ends
// the instance with errReload, or returns nil when ctx ends.
func (p *Pipeline) awaitReload(ctx context.Context) error {
	select {
	case r := <-p.reloads:
		p.pending = &r // read by supervise after the instance's Wait
		return errReload
	case <-ctx.Done():
		return nil
	}
}

// takeReload applies the reload that ended the last instance, if any, and
// reports whether the instance ended for it alone (then the supervisor
// starts the next instance at once, with no fault to report).
func (p *Pipeline) takeReload(ctx context.Context, err error) bool {
	r := p.pending
	if r == nil {
		return false
	}
	p.pending = nil
	r.done <- p.applyReload(ctx, *r)
	return errors.Is(err, errReload) && ctx.Err() == nil
}

// sleep is backoff.Sleep that applies reloads while it waits: no instance
// runs, so they take effect at once.
func (p *Pipeline) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case r := <-p.reloads:
			r.done <- p.applyReload(ctx, r)
		}
	}
}

// applyReload runs r's apply step and switches to r's registry. It runs on
// the supervisor's goroutine while no instance runs.
func (p *Pipeline) applyReload(ctx context.Context, r reloadRequest) error {
	if err := ctx.Err(); err != nil {
		return ErrNotRunning // shutting down
	}
	// What the journal keeps to complete changes (back-fill states) is
	// forgotten for every type whose history it may have missed or that
	// now means other rows: a type that leaves, one stopped by the
	// secret guard (its changes were dropped), and one whose table or
	// key changes. Forgetting is harmless if the reload then fails: a
	// state not found is simply not used.
	if err := p.cfg.Journal.ForgetStates(ctx, keepStates(p.cfg.Registry, r.reg, p.guard)); err != nil {
		return err
	}
	if r.apply != nil {
		if err := r.apply(ctx); err != nil {
			return err
		}
	}
	p.cfg.Registry = r.reg
	old := p.san.Load()
	p.san.Store(&sanitizerBox{s: sanitize.New(r.reg), retired: addStats(old.retired, old.s.Stats())})
	p.guard = p.guard.follow(r.reg)
	p.log.Info("configuration reloaded; replication restarts from the stored offset", "entity_types", len(r.reg.Names()))
	return nil
}

// keepStates lists the types of next whose back-fill states remain true:
// watched before and after with the same table and key, and not stopped.
func keepStates(cur, next *entities.Registry, g *secretGuard) []string {
	keep := []string{}
	for _, et := range next.Types() {
		old, err := cur.Lookup(et.Name)
		if err != nil || old.Schema != et.Schema || old.Table != et.Table || old.Key != et.Key || !slices.Equal(old.KeyColumns, et.KeyColumns) {
			continue
		}
		if _, stopped := g.blocked[et.Name]; stopped {
			continue
		}
		keep = append(keep, et.Name)
	}
	return keep
}

// follow returns a guard for reg's types. A type stopped by g stays
// stopped when reg declares the same secret columns for it; a reload that
// changes them (declaring a renamed secret's new name, say) lets the type
// flow again, and its next rows are checked afresh.
func (g *secretGuard) follow(reg *entities.Registry) *secretGuard {
	n := newSecretGuard(reg)
	for typ, col := range g.blocked {
		if cols, ok := n.secrets[typ]; ok && slices.Equal(cols, g.secrets[typ]) {
			n.blocked[typ] = col
		}
	}
	return n
}

func addStats(a, b sanitize.Stats) sanitize.Stats {
	return sanitize.Stats{
		NameColumns:   a.NameColumns + b.NameColumns,
		JSONRewritten: a.JSONRewritten + b.JSONRewritten,
		InvalidJSON:   a.InvalidJSON + b.InvalidJSON,
	}
}
