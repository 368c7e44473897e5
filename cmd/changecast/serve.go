package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/watcher"
	"github.com/changecast/changecast/wsapi"
)

const publicationName = "changecast"

type serveConfig struct {
	common
	databaseURL       string
	listen            string
	slot              string
	chunkSize         int
	retentionAge      time.Duration
	retentionRows     int64
	retentionInterval time.Duration
	maxConnections    int
	catchUpWorkers    int
	lagWarnBytes      uint64
	loginTTL          time.Duration

	// beforeWatch, when set (tests only), runs once the HTTP listener is up
	// and before the watcher starts, with the listen address.
	beforeWatch func(addr string)
	// started, when set (demo and tests), runs once the HTTP listener is up
	// and the pipeline is starting, with what a caller needs to drive the
	// server: its address, the database URL it watches and its Auth.
	started func(serveInfo)
}

// serveInfo describes a running serve, for the started hook.
type serveInfo struct {
	Addr        string       // HTTP listen address, host:port
	DatabaseURL string       // the database watched (embedded or given); contains its password
	Local       *store.Local // the embedded PostgreSQL, nil when a URL was given
	Auth        *wsapi.Auth  // mints tokens the server accepts
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg serveConfig
	fs.StringVar(&cfg.databaseURL, "database-url", envOr(envDatabaseURL, ""), "PostgreSQL URL to watch; empty starts the embedded PostgreSQL in the data dir (env "+envDatabaseURL+")")
	if err := cfg.register(fs); err != nil {
		return err
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stdout, log)
}

// register adds serve's flags (all but --database-url) to fs, with their
// CHANGECAST_* environment defaults; demo runs serve with the same ones.
func (cfg *serveConfig) register(fs *flag.FlagSet) error {
	cfg.common.register(fs)
	fs.StringVar(&cfg.listen, "listen", envOr(envListen, defaultListen), "HTTP listen address (env "+envListen+")")
	fs.StringVar(&cfg.slot, "slot", envOr(envSlot, "changecast"), "replication slot name (env "+envSlot+")")
	var err error
	if cfg.retentionAge, err = envDuration(envRetentionAge, 7*24*time.Hour); err != nil {
		return err
	}
	if cfg.retentionRows, err = envInt(envRetentionRows, 1_000_000); err != nil {
		return err
	}
	fs.DurationVar(&cfg.retentionAge, "retention-age", cfg.retentionAge, "delete journal rows older than this; negative keeps them forever (env "+envRetentionAge+")")
	fs.Int64Var(&cfg.retentionRows, "retention-rows", cfg.retentionRows, "keep at most this many journal rows; negative keeps all (env "+envRetentionRows+")")
	fs.DurationVar(&cfg.retentionInterval, "retention-interval", time.Minute, "how often retention runs")
	fs.IntVar(&cfg.chunkSize, "chunk-size", 1000, "changes per chunk of a large transaction: bounds memory per transaction")
	fs.IntVar(&cfg.maxConnections, "max-connections", wsapi.DefaultMaxConnections, "most concurrent WebSocket connections; more get 503")
	fs.IntVar(&cfg.catchUpWorkers, "catchup-workers", 0, "most clients reading and encoding a catch-up page from the journal at once, server-wide; 0: min(2, CPUs/2), at least 1")
	fs.Uint64Var(&cfg.lagWarnBytes, "lag-warn-bytes", 64<<20, "emit a lag_high system event when replication lag exceeds this many bytes; 0 disables")
	fs.DurationVar(&cfg.loginTTL, "login-ttl", wsapi.DefaultLoginTTL, "lifetime of tokens issued by POST /api/v1/auth/login")
	return nil
}

// serve runs changecast: the replication pipeline (watcher → sanitize →
// journal → hub), the HTTP server, and journal retention. It returns when
// ctx ends (orderly shutdown) or a part fails in a way retrying cannot fix.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, log *slog.Logger) (err error) {
	if err := ensureDataDir(cfg.dataDir); err != nil {
		return err
	}
	secret, err := loadSecret(cfg.dataDir, true)
	if err != nil {
		return err
	}
	auth, err := wsapi.NewAuth(secret)
	if err != nil {
		return err
	}

	dbURL := cfg.databaseURL
	var local *store.Local
	if dbURL == "" {
		local, err = store.StartLocal(ctx, store.LocalConfig{Dir: filepath.Join(cfg.dataDir, "postgres")})
		if err != nil {
			return fmt.Errorf("start embedded PostgreSQL: %w", err)
		}
		defer func() {
			if cerr := local.Close(); cerr != nil {
				log.Error("stop embedded PostgreSQL", "err", cerr)
			}
		}()
		dbURL = local.URL()
	}

	reg := entities.DefaultRegistry()
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx, reg); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := db.EnsurePublication(ctx, publicationName, reg); err != nil {
		return fmt.Errorf("publication: %w", err)
	}

	// Create the slot before announcing anything: from here on PostgreSQL
	// keeps every committed change for us, even before the pipeline runs.
	// (Changes committed before the slot existed are never streamed.)
	probe, err := watcher.New(watcher.Config{URL: dbURL, Slot: cfg.slot, Publication: publicationName, Registry: reg, Logger: log})
	if err != nil {
		return err
	}
	// Prerequisites first, so a misconfigured server gets Check's one clear
	// message rather than the error of whatever step trips over it. A slot
	// in use means another changecast runs: this one will wait as standby.
	checkErr := probe.Check(ctx)
	if checkErr != nil && !errors.Is(checkErr, watcher.ErrSlotInUse) {
		return checkErr
	}
	if err := probe.EnsureSlot(ctx); err != nil {
		return fmt.Errorf("replication slot: %w", err)
	}

	pipe := &pipeline{
		db:     db,
		reg:    reg,
		san:    sanitize.New(reg),
		url:    dbURL,
		slot:   cfg.slot,
		chunk:  cfg.chunkSize,
		log:    log,
		events: newEmitter(cfg.slot, log.With("component", "events")),
	}
	pipe.lagMon.threshold = cfg.lagWarnBytes
	// The first pipeline need not repeat the check that just passed.
	pipe.checked = checkErr == nil
	hub, err := wsapi.NewServer(wsapi.Config{
		Registry: reg,
		Auth:     auth,
		Journal:  journalReader{db},
		// A filter may not test a field that sanitize would strip.
		SecretField:     sanitize.Stripped,
		Logger:          log.With("component", "wsapi"),
		Ready:           pipe.streaming,
		Users:           users{db},
		LoginTTL:        cfg.loginTTL,
		MaxConnections:  cfg.maxConnections,
		CatchUpWorkers:  cfg.catchUpWorkers,
		SystemState:     pipe.systemState,
		OnCursorExpired: pipe.events.retentionGap,
		Events:          eventStore{db: db, pipe: pipe},
	})
	if err != nil {
		return err
	}
	pipe.hub = hub
	// The hub knows the journal's head before the first client can
	// connect: a client resuming with since=<cursor> must not be told its
	// cursor is unknown just because the pipeline has not started yet.
	head, err := db.JournalHead(ctx)
	if err != nil {
		return fmt.Errorf("read journal head: %w", err)
	}
	hub.Publish(head, nil)

	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(pipe, hub))
	mux.Handle("/", hub.Handler())
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	addr := ln.Addr().String()
	fmt.Fprintf(stdout, "changecast serving on http://%s (WebSocket ws://%s/api/v1/ws/events)\n", addr, addr)
	if local != nil {
		fmt.Fprintf(stdout, "embedded PostgreSQL in %s\n  connect: %s\n", filepath.Join(cfg.dataDir, "postgres"), local.PsqlCommand())
	}
	fmt.Fprintf(stdout, "  token:   changecast token --data-dir %s --user admin --role admin\n", cfg.dataDir)
	log.Info("serving", "addr", addr, "database", store.RedactURL(dbURL), "slot", cfg.slot)

	var parts errgroup.Group
	httpErr := make(chan error, 1)
	parts.Go(func() error {
		err := httpSrv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		httpErr <- err
		return err
	})
	if cfg.beforeWatch != nil {
		cfg.beforeWatch(addr)
	}

	// The pipeline stops first (its context), so that everything the
	// watcher handed over is journaled and published while clients are
	// still connected; then the hub says goodbye; then HTTP closes.
	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipe()
	pipeDone := make(chan error, 1)
	parts.Go(func() error {
		err := pipe.run(pipeCtx)
		pipeDone <- err
		return err
	})
	if cfg.started != nil {
		cfg.started(serveInfo{Addr: addr, DatabaseURL: dbURL, Local: local, Auth: auth})
	}
	retCtx, stopRetention := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRetention()
	parts.Go(func() error {
		return db.RunRetention(retCtx, store.RetentionConfig{
			MaxAge: cfg.retentionAge, MaxRows: cfg.retentionRows, Interval: cfg.retentionInterval,
			Logger: log.With("component", "retention"),
		})
	})

	var cause error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		pipe.events.shutdown(hub.Head())
	case cause = <-httpErr:
		log.Error("http server stopped", "err", cause)
	case cause = <-pipeDone:
		log.Error("replication pipeline stopped", "err", cause)
		pipeDone <- cause
	}

	stopPipe()
	if perr := <-pipeDone; perr != nil && cause == nil {
		cause = perr
	}
	stopRetention()
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := hub.Close(shutCtx); err != nil {
		log.Warn("close WebSocket clients", "err", err)
	}
	if err := httpSrv.Shutdown(shutCtx); err != nil {
		log.Warn("shut down HTTP server", "err", err)
	}
	if err := parts.Wait(); err != nil && cause == nil {
		cause = err
	}
	log.Info("stopped", "journal_head", hub.Head())
	return cause
}

// journalReader adapts the store's journal to the hub's narrow interface.
type journalReader struct{ db *store.DB }

func (j journalReader) ReadAfter(ctx context.Context, after int64, limit int, types []string) ([]entities.Change, error) {
	return j.db.ReadJournal(ctx, after, limit, types)
}

func (j journalReader) Horizon(ctx context.Context) (int64, error) {
	return j.db.JournalHorizon(ctx)
}

// pipeline owns the replication path: watcher → sanitize → journal appender,
// whose commits are published to the hub and only then acknowledged to
// PostgreSQL. When a part fails (PostgreSQL restarted, connection lost,
// slot or journal held by another process) the whole path is rebuilt from
// the journal's stored offset after a capped, jittered backoff, while HTTP
// and the connected clients stay up.
type pipeline struct {
	db    *store.DB
	hub   *wsapi.Server
	reg   *entities.Registry
	san   *sanitize.Sanitizer
	url   string
	slot  string
	chunk int
	log   *slog.Logger

	current   atomic.Pointer[watcher.Watcher] // the running watcher, for readiness and metrics
	appender  atomic.Pointer[store.Appender]  // the running appender, for metrics and system writes
	highWater atomic.Int64                    // most changes a finished appender held in memory at once
	restarts  atomic.Uint64

	events  *emitter    // changecast's own system events
	standby atomic.Bool // waiting for another process's slot or journal
	rate    rateMeter   // journal changes per second, for system-state
	started bool        // the pipeline has streamed once (run's goroutine only)
	downAt  time.Time   // when the running pipeline last failed (run's goroutine only)
	lagMon  lagMonitor  // (once's lag goroutine only)
	checked bool        // prerequisites checked just before the first once; then false
}

func (p *pipeline) streaming() bool {
	w := p.current.Load()
	return w != nil && w.Streaming()
}

// appenderHighWater is the most changes any appender held in memory at once.
func (p *pipeline) appenderHighWater() int64 {
	hw := p.highWater.Load()
	if a := p.appender.Load(); a != nil {
		hw = max(hw, int64(a.HighWater()))
	}
	return hw
}

func (p *pipeline) stats() watcher.Stats {
	if w := p.current.Load(); w != nil {
		return w.Stats()
	}
	return watcher.Stats{}
}

// relay passes transactions from src to dst in order, holding up to budget
// changes (and always at least one transaction) in between, so the
// appender finds what arrived while it was committing and takes it in one
// journal commit. It closes dst once src is closed and everything held has
// been passed on, or when ctx ends.
func relay(ctx context.Context, src <-chan entities.Transaction, dst chan<- entities.Transaction, budget int) error {
	defer close(dst)
	var q []entities.Transaction
	held := 0
	for {
		var out chan<- entities.Transaction
		var next entities.Transaction
		if len(q) > 0 {
			out, next = dst, q[0]
		}
		in := src
		if len(q) > 0 && held >= budget {
			in = nil // full: wait for the appender
		}
		if in == nil && out == nil {
			return nil // src closed and everything passed on
		}
		select {
		case tx, ok := <-in:
			if !ok {
				src = nil
				continue
			}
			q = append(q, tx)
			held += len(tx.Changes)
		case out <- next:
			q[0] = entities.Transaction{}
			q = q[1:]
			held -= len(next.Changes)
		case <-ctx.Done():
			return nil
		}
	}
}

// fatalError marks a failure that rebuilding the pipeline cannot fix.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// run rebuilds the pipeline until ctx ends. It returns nil on orderly stop
// and the error of a failure retrying cannot fix.
func (p *pipeline) run(ctx context.Context) error {
	const minBackoff, maxBackoff = 250 * time.Millisecond, 15 * time.Second
	backoff := minBackoff
	state := "" // log once per state change
	for {
		started := time.Now()
		err := p.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		var fatal fatalError
		var pre *watcher.PrerequisiteError
		if errors.As(err, &fatal) || (errors.As(err, &pre) && !watcher.Retryable(err)) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = minBackoff
		}
		if p.downAt.IsZero() {
			p.downAt = time.Now()
		}
		kind := classify(err)
		var now string
		switch kind {
		case "slot_in_use":
			now = "replication slot " + p.slot + " is in use by another process; waiting for it to be released"
		case "standby":
			now = "the journal is held by another changecast process; waiting as a standby"
		case "slot_invalidated":
			now = "replication slot " + p.slot + " was invalidated by PostgreSQL; retrying"
		default:
			now = "replication interrupted; reconnecting"
		}
		p.standby.Store(kind == "slot_in_use" || kind == "standby")
		wait := backoff/2 + rand.N(backoff/2+1)
		if now != state || kind == "interrupted" {
			p.log.Warn(now, "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if now != state {
			switch kind {
			case "slot_in_use", "standby":
				p.events.slotInUse(p.slot)
			case "slot_invalidated":
				p.events.slotInvalidated(p.slot, err)
			default:
				p.events.unreachable(p.slot, err, wait)
			}
		}
		state = now
		p.restarts.Add(1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// once runs one instance of the pipeline until ctx ends (orderly: the
// watcher stops, and everything it handed over is journaled and published)
// or a stage fails (the rest is abandoned: nothing unjournaled was
// acknowledged, so the next instance receives it again).
func (p *pipeline) once(ctx context.Context) error {
	var w *watcher.Watcher
	app, err := p.db.NewAppender(ctx, store.AppenderConfig{
		Slot:          p.slot,
		Logger:        p.log.With("component", "journal"),
		SanitizeEvent: sanitize.Event,
		OnCommit: func(c store.Committed) {
			p.hub.Publish(c.Head, c.Changes)
			if c.EndLSN > 0 {
				w.Ack(c.EndLSN)
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		p.highWater.Store(max(p.highWater.Load(), int64(app.HighWater())))
		if cerr := app.Close(); cerr != nil {
			p.log.Debug("close appender", "err", cerr)
		}
	}()
	p.appender.Store(app)
	p.hub.Publish(app.Head(), nil)

	w, err = watcher.New(watcher.Config{
		URL:         p.url,
		Slot:        p.slot,
		Publication: publicationName,
		Registry:    p.reg,
		StartLSN:    app.Offset(),
		ChunkSize:   p.chunk,
		Logger:      p.log.With("component", "watcher"),
	})
	if err != nil {
		return fatalError{err}
	}
	if !p.checked {
		if err := w.Check(ctx); err != nil {
			return err
		}
	}
	p.checked = false // every rebuild checks again: the server may have changed
	p.current.Store(w)
	p.standby.Store(false)
	p.log.Info("replication pipeline starting", "start_lsn", app.Offset().String(), "journal_head", app.Head())
	if !p.started {
		p.started = true
		p.events.started(p.slot, app.Offset(), app.Head())
	} else if !p.downAt.IsZero() {
		p.log.Info("replication resumed", "start_lsn", app.Offset().String(), "downtime", time.Since(p.downAt).Round(time.Millisecond))
		p.events.resumed(p.slot, app.Offset(), time.Since(p.downAt), p.restarts.Load())
	}
	p.downAt = time.Time{}

	// gctx ends when a stage fails; ctx ends an orderly stop, which only the
	// watcher sees directly: the later stages drain what it handed over.
	g, gctx := errgroup.WithContext(context.WithoutCancel(ctx))
	wctx, stopWatch := context.WithCancel(gctx)
	defer stopWatch()
	unhook := context.AfterFunc(ctx, stopWatch)
	defer unhook()

	// Small buffers: each item can be a whole chunk (--chunk-size changes);
	// with the relay's budget the pipeline holds about 16 × chunk changes.
	raw := make(chan entities.Transaction, 4)
	clean := make(chan entities.Transaction, 4)
	// Between sanitize and the appender, a queue bounded by changes, not
	// transactions: under load many small transactions wait there and one
	// journal commit takes them all (group commit), while a large
	// transaction still holds only a few chunks. The appender's channel
	// keeps a few items buffered so its non-blocking collection finds the
	// next one while the relay refills it.
	toJournal := make(chan entities.Transaction, 4)
	g.Go(func() error { return relay(gctx, clean, toJournal, 4*max(p.chunk, 1)) })
	g.Go(func() error {
		defer close(raw)
		return w.Run(wctx, raw)
	})
	// System events go through the same appender. On an orderly stop the
	// queue is written out (the shutdown event last) before the appender's
	// input closes.
	eventsDone := make(chan struct{})
	g.Go(func() error {
		defer close(eventsDone)
		return p.events.persist(wctx, app)
	})
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return nil
			case <-t.C:
				p.lagMon.observe(p.events, p.slot, w.Stats().LagBytes)
			}
		}
	})
	g.Go(func() error {
		// The appender takes system writes only between source
		// transactions. If the watcher stopped in the middle of a
		// chunked one, the appender must see its input close (and roll
		// that back) before a queued event can be written; otherwise
		// the queued events are written first.
		inside := false // the last transaction forwarded was a non-final chunk
		defer close(clean)
		defer func() {
			if !inside {
				<-eventsDone
			}
		}()
		for tx := range raw {
			changes, err := p.san.Changes(tx.Changes)
			if err != nil {
				// Fail closed: an unsanitizable change is never stored or
				// sent, and nothing after it is acknowledged.
				return fatalError{fmt.Errorf("transaction %d: %w", tx.Xid, err)}
			}
			tx.Changes = changes
			select {
			case clean <- tx:
				inside = !tx.Final
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	g.Go(func() error { return app.Run(gctx, toJournal) })
	return g.Wait()
}
