package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
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
	onSlotLoss        string // a pipeline.SlotLossPolicy
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
	fs.StringVar(&cfg.onSlotLoss, "on-slot-loss", envOr(envOnSlotLoss, string(pipeline.SlotLossResync)), "when the replication slot was dropped or invalidated: resync (record the gap, tell every client to resync, continue on a new slot) or stop (exit with the fix) (env "+envOnSlotLoss+")")
	// Every one of these flags has its CHANGECAST_* variable.
	return applyEnv(fs)
}

// check validates the flags that parsing alone cannot.
func (cfg *serveConfig) check() error {
	if p := pipeline.SlotLossPolicy(cfg.onSlotLoss); p != pipeline.SlotLossResync && p != pipeline.SlotLossStop {
		return fmt.Errorf("--on-slot-loss %q: use %q or %q", cfg.onSlotLoss, pipeline.SlotLossResync, pipeline.SlotLossStop)
	}
	return nil
}

// serve runs changecast: the replication pipeline (watcher → sanitize →
// journal → hub), the HTTP server, and journal retention. It returns when
// ctx ends (orderly shutdown) or a part fails in a way retrying cannot fix.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, log *slog.Logger) (err error) {
	if cfg.onSlotLoss == "" {
		cfg.onSlotLoss = string(pipeline.SlotLossResync)
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

	reg := registry()
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

	journal := &store.Journal{DB: db, Retention: store.RetentionConfig{
		MaxAge: cfg.retentionAge, MaxRows: cfg.retentionRows, Interval: cfg.retentionInterval,
		Logger: log.With("component", "retention"),
	}}
	pipe, err := pipeline.New(pipeline.Config{
		DatabaseURL:  dbURL,
		Registry:     reg,
		Journal:      journal,
		Slot:         cfg.slot,
		Publication:  publicationName,
		ChunkSize:    cfg.chunkSize,
		LagWarnBytes: lagWarn(cfg.lagWarnBytes),
		OnSlotLoss:   pipeline.SlotLossPolicy(cfg.onSlotLoss),
		Logger:       log,
		SlotLostHook: cfg.slotLost,
	})
	if err != nil {
		return err
	}
	var hubUsers wsapi.Users = users{db}
	if cfg.wrapUsers != nil {
		hubUsers = cfg.wrapUsers(hubUsers)
	}
	var hub *wsapi.Server
	hub, err = wsapi.NewServer(wsapi.Config{
		Registry: reg,
		Auth:     auth,
		Journal:  journal,
		// A filter may not test a field that sanitize would strip.
		SecretField: pipe.SecretField,
		Logger:      log.With("component", "wsapi"),
		Ready:       pipe.Streaming,
		Users:       hubUsers,
		LoginTTL:    cfg.loginTTL,
		// Login throttling (issue 17).
		LoginFailuresPerUser: cfg.loginFailuresUser,
		LoginFailuresPerAddr: cfg.loginFailuresAddr,
		LoginWindow:          cfg.loginWindow,
		LoginMaxDelay:        cfg.loginMaxDelay,
		MaxConnections:       cfg.maxConnections,
		SystemState: func() any {
			st := pipe.SystemState()
			st["connected_clients"] = hub.Clients()
			return st
		},
		OnCursorExpired: pipe.ReportRetentionGap,
		Events:          eventStore{db: db, pipe: pipe},
	})
	if err != nil {
		return err
	}
	pipe.AddSink(hub)
	// The slot exists (or its loss is known) before anything is
	// announced: from here on PostgreSQL keeps every committed change.
	if err := pipe.Prepare(ctx); err != nil {
		return err
	}

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

	// The pipeline stops first (its context: it writes the shutdown event
	// and lets everything the watcher handed over be journaled and
	// published while clients are still connected); then the hub says
	// goodbye; then HTTP closes.
	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipe()
	pipeDone := make(chan error, 1)
	parts.Go(func() error {
		err := pipe.Run(pipeCtx)
		pipeDone <- err
		return err
	})
	if cfg.started != nil {
		cfg.started(serveInfo{Addr: addr, DatabaseURL: dbURL, Local: local, Auth: auth})
	}

	var cause error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
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

// lagWarn maps --lag-warn-bytes (0 disables) to pipeline.Config's
// LagWarnBytes (negative disables).
func lagWarn(flag uint64) int64 {
	if flag == 0 {
		return -1
	}
	return int64(min(flag, 1<<62))
}
