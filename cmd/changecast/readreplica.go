package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
)

// A gateway's reads from a read replica (--read-url, docs/scale-out.md,
// "A read replica for the gateways"): the users it checks logins and
// sessions against and the events its REST API lists are read from a
// streaming hot standby of the watched database. Writes never go there
// (a gateway writes nothing itself; the events API's writes go through
// the active watcher), and neither do snapshots, whose seam needs a
// transaction id and the WAL insert position, which a standby cannot give.
//
// The standby may lag. Two rules keep what a gateway reads no older than
// what it already knows:
//
//   - Bounded staleness. A read goes to the standby only while it is known
//     to have replayed every WAL record the primary had written at most
//     maxLag ago; otherwise it goes to the primary. So a read sees every
//     transaction that committed more than maxLag before it started.
//   - Fences. After something this gateway knows happened on the primary
//     (an events write it sent, a change of a user or an event delivered
//     by the stream, a read it made from the primary), reads wait (at
//     most maxLag) until the standby has replayed everything the primary
//     had written at that moment, or go to the primary. So a revocation
//     the stream delivers is checked against the row that caused it, a
//     mark-read is visible to the next list, and reads never go back in
//     time when they switch between primary and standby.

// readReplicaCheck is how often the standby's replay position is compared
// with the primary's WAL (at most a quarter of maxLag).
const readReplicaCheck = 250 * time.Millisecond

// defaultReadMaxLag is --read-max-lag's default.
const defaultReadMaxLag = 2 * time.Second

// readReplica routes reads to the standby or the primary; see above. Its
// methods are safe for concurrent use; Close stops its checker.
type readReplica struct {
	primary, replica *store.DB
	maxLag           time.Duration
	log              *slog.Logger
	t0               time.Time

	// freshAt: the standby has replayed every WAL record the primary had
	// written at this moment (nanoseconds since t0; negative: unknown).
	freshAt atomic.Int64
	// fenceAt: reads must see every commit made before this moment.
	fenceAt atomic.Int64

	fromReplica, fromPrimary atomic.Int64 // reads served, for /metrics

	catchUp sync.Mutex // one catch-up wait at a time; the others share it
	samples struct {
		sync.Mutex
		list []walSample // ascending, not yet known replayed
	}
	cancel context.CancelFunc
	done   chan struct{}
}

// walSample is the primary's written WAL position, read at at.
type walSample struct {
	at  int64
	lsn entities.LSN
}

// maxWALSamples bounds the samples kept while the standby does not
// replay (a few minutes' worth at readReplicaCheck).
const maxWALSamples = 1024

// openReadReplica opens the read replica at url for the watched database
// primary, refusing a server that is unreachable, of another cluster or
// database, or not a standby; it starts the checker that follows its lag.
// Errors show url without its password.
func openReadReplica(ctx context.Context, url string, maxLag time.Duration, primary *store.DB, log *slog.Logger) (*readReplica, error) {
	shown := store.RedactURL(url)
	rdb, err := store.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("--read-url: %w; give a hot standby of the watched database that this process can reach, or leave --read-url out to read from --database-url", err)
	}
	fail := func(err error) (*readReplica, error) {
		rdb.Close()
		return nil, err
	}
	want, err := primary.Identity(ctx)
	if err != nil {
		return fail(err)
	}
	got, err := rdb.Identity(ctx)
	if err != nil {
		return fail(fmt.Errorf("--read-url: %w", err))
	}
	switch {
	case got.SystemID != want.SystemID:
		return fail(fmt.Errorf("--read-url %s is %s, not a copy of the watched %s (their system identifiers differ): give a streaming standby of --database-url's cluster (one made with pg_basebackup from it), or leave --read-url out", shown, got, want))
	case got.OID != want.OID || got.Name != want.Name:
		return fail(fmt.Errorf("--read-url %s is %s of the watched cluster, not the watched %s: name database %q in --read-url", shown, got, want, want.Name))
	}
	standby, _, err := rdb.WALReplayed(ctx)
	if err != nil {
		return fail(fmt.Errorf("--read-url: %w", err))
	}
	if !standby {
		return fail(fmt.Errorf("--read-url %s is not a hot standby (pg_is_in_recovery() is false there): give a streaming standby of the watched database, or leave --read-url out to read from --database-url", shown))
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &readReplica{
		primary: primary, replica: rdb, maxLag: maxLag, log: log, t0: time.Now(),
		cancel: cancel, done: make(chan struct{}),
	}
	r.freshAt.Store(-1)
	go r.follow(cctx)
	log.Info("gateway reads users and events from a read replica", "read_url", shown, "max_lag", maxLag)
	return r, nil
}

// Close stops the checker and closes the standby's connections.
func (r *readReplica) Close() {
	r.cancel()
	<-r.done
	r.replica.Close()
}

func (r *readReplica) now() int64 { return int64(time.Since(r.t0)) }

// raise sets a to at least v.
func raise(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Fence makes later reads see every commit made before now.
func (r *readReplica) Fence() { raise(&r.fenceAt, r.now()) }

// lagging reports whether the standby is not known to be within maxLag.
func (r *readReplica) lagging() bool {
	f := r.freshAt.Load()
	return f < 0 || time.Duration(r.now()-f) > r.maxLag
}

// follow samples the primary's WAL position and the standby's replay
// position every readReplicaCheck until ctx ends, moving freshAt.
func (r *readReplica) follow(ctx context.Context) {
	defer close(r.done)
	every := max(min(readReplicaCheck, r.maxLag/4), 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	wasLagging := false
	for {
		r.check(ctx)
		if l := r.lagging(); l != wasLagging && ctx.Err() == nil {
			if l {
				r.log.Warn("the read replica is further behind the primary than --read-max-lag allows; users and events are read from the primary until it catches up", "max_lag", r.maxLag)
			} else {
				r.log.Info("the read replica caught up; users and events are read from it again")
			}
			wasLagging = l
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check takes one sample of the primary and compares the standby with
// the samples.
func (r *readReplica) check(ctx context.Context) {
	at := r.now()
	lsn, err := r.primary.WALWritten(ctx)
	if err != nil {
		r.log.Debug("read replica check: primary", "err", err)
		return
	}
	r.samples.Lock()
	if n := len(r.samples.list); n >= maxWALSamples {
		r.samples.list = append(r.samples.list[:0], r.samples.list[n-maxWALSamples+1:]...)
	}
	r.samples.list = append(r.samples.list, walSample{at, lsn})
	r.samples.Unlock()
	standby, replayed, err := r.replica.WALReplayed(ctx)
	switch {
	case err != nil:
		r.log.Debug("read replica check: standby", "err", err)
		return
	case !standby:
		// Promoted: it no longer follows the primary and never
		// becomes fresh again.
		r.log.Debug("read replica check: the read replica is no longer a standby")
		return
	}
	r.samples.Lock()
	i := 0
	for i < len(r.samples.list) && r.samples.list[i].lsn <= replayed {
		i++
	}
	if i > 0 {
		raise(&r.freshAt, r.samples.list[i-1].at)
		r.samples.list = append(r.samples.list[:0], r.samples.list[i:]...)
	}
	r.samples.Unlock()
}

// useReplica decides where a read starting now goes: true for the
// standby, which has then replayed everything the fences ask for and is
// within maxLag.
func (r *readReplica) useReplica(ctx context.Context) bool {
	if r.lagging() {
		return false
	}
	if r.freshAt.Load() >= r.fenceAt.Load() {
		return true
	}
	r.catchUp.Lock()
	defer r.catchUp.Unlock()
	if r.freshAt.Load() >= r.fenceAt.Load() {
		return true // another read waited for it
	}
	// Wait until the standby replays what the primary has written now
	// (after every fence so far).
	at := r.now()
	lsn, err := r.primary.WALWritten(ctx)
	if err != nil {
		return false
	}
	deadline := time.Now().Add(r.maxLag)
	for {
		standby, replayed, err := r.replica.WALReplayed(ctx)
		if err != nil || !standby {
			return false
		}
		if replayed >= lsn {
			raise(&r.freshAt, at)
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond): // polling the standby's replay
		}
	}
}

// isAnswer reports whether err is a read's answer rather than a failure
// of the server that made it.
func isAnswer(err error) bool {
	return err == nil || errors.Is(err, store.ErrBadCredentials) || errors.Is(err, store.ErrUserNotFound)
}

// readFrom runs read on the standby when useReplica allows it and the
// standby answers, else on the primary (and then fences: later reads must
// not see less than this one did).
func readFrom[T any](ctx context.Context, r *readReplica, read func(*store.DB) (T, error)) (T, error) {
	if r.useReplica(ctx) {
		v, err := read(r.replica)
		if isAnswer(err) || ctx.Err() != nil {
			r.fromReplica.Add(1)
			return v, err
		}
		// A standby may cancel a query that conflicts with recovery,
		// or be gone: the primary answers instead.
		r.log.Debug("read from the read replica failed; reading from the primary", "err", err)
	}
	v, err := read(r.primary)
	r.fromPrimary.Add(1)
	r.Fence()
	return v, err
}

// The reads a gateway makes (users, watchUsers, natsEventStore).

func (r *readReplica) Authenticate(ctx context.Context, username, password string) (entities.User, error) {
	return readFrom(ctx, r, func(db *store.DB) (entities.User, error) { return db.Authenticate(ctx, username, password) })
}

func (r *readReplica) UserSession(ctx context.Context, id uuid.UUID) (store.UserSession, error) {
	return readFrom(ctx, r, func(db *store.DB) (store.UserSession, error) { return db.UserSession(ctx, id) })
}

func (r *readReplica) UsersVersion(ctx context.Context) (string, error) {
	return readFrom(ctx, r, func(db *store.DB) (string, error) { return db.UsersVersion(ctx) })
}

func (r *readReplica) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	return readFrom(ctx, r, func(db *store.DB) (entities.EventPage, error) { return db.ListEvents(ctx, q) })
}

func (r *readReplica) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	return readFrom(ctx, r, func(db *store.DB) (entities.EventTypes, error) { return db.EventTypes(ctx, owner) })
}

// fencingSink passes the stream to the hub, fencing the read replica
// before a change of a user or an event (or a batch too large to hand
// over) reaches it: the session checks and event lists that follow then
// see at least that change.
type fencingSink struct {
	pipeline.Sink
	r *readReplica
}

func (s fencingSink) Publish(head int64, batch []entities.Change) {
	fence := batch == nil
	for i := range batch {
		if t := batch[i].EntityType; t == "user" || t == entities.EventEntityType {
			fence = true
			break
		}
	}
	if fence {
		s.r.Fence()
	}
	s.Sink.Publish(head, batch)
}
