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
	"github.com/changecast/changecast/localpg"
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
	lagWarnBytes      uint64
	loginTTL          time.Duration
	onSlotLoss        string // slotLossResync or slotLossStop
	loginFailuresUser int
	loginFailuresAddr int
	loginWindow       time.Duration
	loginMaxDelay     time.Duration

	// beforeWatch, when set (tests only), runs once the HTTP listener is up
	// and before the watcher starts, with the listen address.
	beforeWatch func(addr string)
	// wrapUsers, when set (tests only), wraps the user table the hub
	// checks logins and sessions against.
	wrapUsers func(wsapi.Users) wsapi.Users
	// started, when set (demo and tests), runs once the HTTP listener is up
	// and the pipeline is starting, with what a caller needs to drive the
	// server: its address, the database URL it watches and its Auth.
	started func(serveInfo)
	// slotLost, when set (tests only), runs when the pipeline starts to
	// recover a lost slot, after new connections are refused.
	slotLost func()
}

// serveInfo describes a running serve, for the started hook.
type serveInfo struct {
	Addr        string           // HTTP listen address, host:port
	DatabaseURL string           // the database watched (embedded or given); contains its password
	Local       *localpg.Cluster // the embedded PostgreSQL, nil when a URL was given
	Auth        *wsapi.Auth      // mints tokens the server accepts
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
	fs.Uint64Var(&cfg.lagWarnBytes, "lag-warn-bytes", 64<<20, "emit a lag_high system event when replication lag exceeds this many bytes; 0 disables")
	fs.DurationVar(&cfg.loginTTL, "login-ttl", wsapi.DefaultLoginTTL, "lifetime of tokens issued by POST /api/v1/auth/login")
	fs.IntVar(&cfg.loginFailuresUser, "login-max-failures-user", wsapi.DefaultLoginFailuresPerUser, "failed logins for one username allowed within --login-window before further attempts wait (429); negative disables")
	fs.IntVar(&cfg.loginFailuresAddr, "login-max-failures-addr", wsapi.DefaultLoginFailuresPerAddr, "failed logins from one remote address (IPv6: /64) allowed within --login-window before further attempts wait (429); negative disables")
	fs.DurationVar(&cfg.loginWindow, "login-window", wsapi.DefaultLoginWindow, "how long failed logins are remembered after the last one or the end of a lock-out")
	fs.DurationVar(&cfg.loginMaxDelay, "login-max-delay", wsapi.DefaultLoginMaxDelay, "longest lock-out after repeated failed logins (it doubles from 1s)")
	fs.StringVar(&cfg.onSlotLoss, "on-slot-loss", envOr(envOnSlotLoss, slotLossResync), "when the replication slot was dropped or invalidated: resync (record the gap, tell every client to resync, continue on a new slot) or stop (exit with the fix) (env "+envOnSlotLoss+")")
	return nil
}

// What serve does when the replication slot is lost (--on-slot-loss).
const (
	slotLossResync = "resync"
	slotLossStop   = "stop"
)

// check validates the flags that parsing alone cannot.
func (cfg *serveConfig) check() error {
	if cfg.onSlotLoss != slotLossResync && cfg.onSlotLoss != slotLossStop {
		return fmt.Errorf("--on-slot-loss %q: use %q or %q", cfg.onSlotLoss, slotLossResync, slotLossStop)
	}
	return nil
}

// serve runs changecast: the replication pipeline (watcher → sanitize →
// journal → hub), the HTTP server, and journal retention. It returns when
// ctx ends (orderly shutdown) or a part fails in a way retrying cannot fix.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, log *slog.Logger) (err error) {
	if cfg.onSlotLoss == "" {
		cfg.onSlotLoss = slotLossResync
	}
	if err := cfg.check(); err != nil {
		return err
	}
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
	var local *localpg.Cluster
	if dbURL == "" {
		local, err = localpg.Start(ctx, localpg.Config{Dir: filepath.Join(cfg.dataDir, "postgres")})
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
	// (Changes committed before the slot existed are never streamed.) The
	// slot is created only on a first start: nothing stored, nothing
	// journaled. After that a missing slot is a loss, which the pipeline
	// records (or, with --on-slot-loss stop, serve reports) rather than
	// hides.
	offset, err := db.LoadOffset(ctx, cfg.slot)
	if err != nil {
		return err
	}
	journalHead, err := db.JournalHead(ctx)
	if err != nil {
		return fmt.Errorf("read journal head: %w", err)
	}
	probe, err := watcher.New(watcher.Config{URL: dbURL, Slot: cfg.slot, Publication: publicationName, Registry: reg, Logger: log,
		StartLSN: offset, ExpectSlot: journalHead > 0,
		SavePosition: func(ctx context.Context, lsn entities.LSN) error { return db.SaveOffset(ctx, cfg.slot, lsn) },
	})
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
	var lost *watcher.SlotLostError
	if err := probe.EnsureSlot(ctx); errors.As(err, &lost) {
		if cfg.onSlotLoss == slotLossStop {
			return slotLossStopError(lost)
		}
		// The pipeline records the gap before it streams.
	} else if err != nil {
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
		onLoss: cfg.onSlotLoss,
		onLost: cfg.slotLost,
	}
	pipe.lagMon.threshold = cfg.lagWarnBytes
	// The first pipeline need not repeat the check that just passed.
	pipe.checked = checkErr == nil
	var hubUsers wsapi.Users = users{db}
	if cfg.wrapUsers != nil {
		hubUsers = cfg.wrapUsers(hubUsers)
	}
	hub, err := wsapi.NewServer(wsapi.Config{
		Registry: reg,
		Auth:     auth,
		Journal:  journalReader{db},
		// A filter may not test a field that sanitize would strip.
		SecretField: sanitize.Stripped,
		Logger:      log.With("component", "wsapi"),
		Ready:       pipe.streaming,
		Users:       hubUsers,
		LoginTTL:    cfg.loginTTL,
		// Login throttling (issue 17).
		LoginFailuresPerUser: cfg.loginFailuresUser,
		LoginFailuresPerAddr: cfg.loginFailuresAddr,
		LoginWindow:          cfg.loginWindow,
		LoginMaxDelay:        cfg.loginMaxDelay,
		MaxConnections:       cfg.maxConnections,
		SystemState:          pipe.systemState,
		OnCursorExpired:      pipe.events.retentionGap,
		Events:               eventStore{db: db, pipe: pipe},
	})
	if err != nil {
		return err
	}
	pipe.hub = hub
	// The hub knows the journal's head before the first client can
	// connect: a client resuming with since=<cursor> must not be told its
	// cursor is unknown just because the pipeline has not started yet.
	hub.Publish(journalHead, nil)

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
	changes, err := j.db.ReadJournal(ctx, after, limit, types)
	var gap *store.GapError
	if errors.As(err, &gap) {
		// A gap tells the client why it must resync.
		return nil, &wsapi.CursorLostError{Cursor: after, Reason: gapMessage(gap.Gap)}
	}
	return changes, err
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
	lagMon  lagMonitor  // (once's lag goroutine only)
	checked bool        // prerequisites checked just before the first once; then false
	onLoss  string      // slotLossResync or slotLossStop
	onLost  func()      // serveConfig.slotLost

	// Owned by run's goroutine, and by the watcher's Started callback
	// while once runs (once starts after run writes them and returns
	// after the callback).
	started bool        // the pipeline has streamed once
	downAt  time.Time   // when the running pipeline last failed; zero while streaming
	gaps    []store.Gap // gaps recorded during the current outage
	fault   string      // the current fault, logged and raised once; "" while streaming
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
		var lost *watcher.SlotLostError
		if errors.As(err, &lost) {
			if p.onLoss == slotLossStop {
				return slotLossStopError(lost)
			}
			if err = p.recoverSlot(ctx, lost); err == nil {
				backoff = minBackoff
				continue // stream from the new slot at once
			}
			if ctx.Err() != nil {
				return nil
			}
		}
		kind := classify(err)
		var now string
		switch kind {
		case "slot_in_use":
			now = "replication slot " + p.slot + " is in use by another process; waiting for it to be released"
		case "standby":
			now = "the journal is held by another changecast process; waiting as a standby"
		case "slot_lost":
			now = "replication slot " + p.slot + " was lost; recording the gap failed, retrying"
		default:
			now = "replication interrupted; reconnecting"
		}
		p.standby.Store(kind == "slot_in_use" || kind == "standby")
		wait := backoff/2 + rand.N(backoff/2+1)
		if now != p.fault || kind == "interrupted" {
			p.log.Warn(now, "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if now != p.fault {
			// One event when a fault begins; the end is the
			// resumed event, raised once streaming really restarts.
			switch kind {
			case "slot_in_use", "standby":
				p.events.slotInUse(p.slot)
			case "slot_lost":
				// The slot_lost event is the gap's marker, raised
				// once the gap is recorded.
			default:
				p.events.unreachable(p.slot, err, wait)
			}
		}
		p.fault = now
		p.restarts.Add(1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// slotLossStopError is serve's answer to a lost slot under
// --on-slot-loss stop: what was lost and how to continue.
func slotLossStopError(lost *watcher.SlotLostError) error {
	return fatalError{fmt.Errorf("%w. Stopped (--on-slot-loss stop); nothing was recorded. To continue, restart with --on-slot-loss resync: changecast records the gap, tells every client to resync and streams on from a new slot", lost)}
}

// recoverSlot handles a lost slot under --on-slot-loss resync: it makes
// the slot usable again (watcher.RecoverSlot), records the gap in the
// journal with its marker event (store.Appender.RecordGap), and stops
// every client that started before the gap with resync-required. New
// connections get 503 from the moment the loss is seen until streaming
// resumes. An error leaves the loss to be found again by the next once.
func (p *pipeline) recoverSlot(ctx context.Context, lost *watcher.SlotLostError) error {
	p.hub.SetUnavailable(fmt.Sprintf("replication slot %s was lost (%s); changecast is recording the gap and will continue on a new slot: connect again shortly and resynchronise", p.slot, lost.Kind))
	p.log.Error("replication slot lost; recording the gap and continuing on a new slot (--on-slot-loss resync)", "err", lost)
	if p.onLost != nil {
		p.onLost()
	}
	app, err := p.db.NewAppender(ctx, store.AppenderConfig{
		Slot:          p.slot,
		Logger:        p.log.With("component", "journal"),
		SanitizeEvent: sanitize.Event,
		OnCommit:      func(c store.Committed) { p.hub.Publish(c.Head, c.Changes) },
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := app.Close(); cerr != nil {
			p.log.Debug("close appender", "err", cerr)
		}
	}()
	w, err := watcher.New(watcher.Config{URL: p.url, Slot: p.slot, Publication: publicationName, Registry: p.reg,
		Logger: p.log.With("component", "watcher")})
	if err != nil {
		return fatalError{err}
	}
	start, err := w.RecoverSlot(ctx, lost)
	if err != nil {
		return fmt.Errorf("recover replication slot: %w", err)
	}
	from := max(lost.From, app.Offset())
	marker, err := p.events.slotLost(p.slot, lost, from, start)
	if err != nil {
		return fatalError{err}
	}
	gap, err := app.RecordGap(ctx, store.Gap{FromLSN: from, ToLSN: start, Reason: "replication slot " + lost.Kind}, marker)
	if err != nil {
		return err
	}
	n := p.hub.Resync(gap.Seq, gapMessage(gap))
	p.log.Error("recorded a gap in the journal: changes committed in the lost range were not streamed",
		"from_lsn", from.String(), "to_lsn", start.String(), "gap_cursor", gap.Seq, "clients_told_to_resync", n)
	p.gaps = append(p.gaps, gap)
	return nil
}

// gapMessage is what a client stopped by a gap reads in resync-required.
func gapMessage(g store.Gap) string {
	return fmt.Sprintf("changes committed between LSN %s and %s were lost (%s) and the journal has a gap at cursor %d; re-read the state and reconnect without since (or with since=%d)",
		g.FromLSN, g.ToLSN, g.Reason, g.Seq, g.Seq)
}

// streamingFrom is the watcher's Started callback: replication really runs
// again, from start. It raises the event that ends an outage, with its
// real outcome, and accepts connections again.
func (p *pipeline) streamingFrom(start entities.LSN) {
	p.hub.SetUnavailable("")
	p.standby.Store(false)
	switch {
	case !p.started:
		p.started = true
		p.events.started(p.slot, start, p.hub.Head(), p.gaps)
	case !p.downAt.IsZero() && len(p.gaps) == 0:
		p.log.Info("replication resumed", "start_lsn", start.String(), "downtime", time.Since(p.downAt).Round(time.Millisecond))
		p.events.resumed(p.slot, start, time.Since(p.downAt), p.restarts.Load())
	case !p.downAt.IsZero():
		p.log.Warn("replication resumed on a new slot after a gap", "start_lsn", start.String(), "downtime", time.Since(p.downAt).Round(time.Millisecond))
		p.events.resumedAfterGap(p.slot, start, time.Since(p.downAt), p.gaps)
	}
	p.downAt = time.Time{}
	p.gaps = nil
	p.fault = ""
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
		// The slot may be created only on a first start, and every
		// position it confirms is stored first, so a dropped, moved
		// or invalidated slot is noticed (SlotLostError), never
		// silently replaced.
		ExpectSlot:   app.Head() > 0,
		SavePosition: app.SavePosition,
		Started:      p.streamingFrom,
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
	p.log.Info("replication pipeline starting", "start_lsn", app.Offset().String(), "journal_head", app.Head())

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
