package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/gcfloor"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

const publicationName = "changecast"

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stdout, log)
}

// serve runs changecast: the replication pipeline (watcher → sanitize →
// journal → hub), the HTTP server, and journal retention. It returns when
// ctx ends (orderly shutdown) or a part fails in a way retrying cannot fix.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, log *slog.Logger) (err error) {
	// Fewer garbage collections while the live heap is small
	// (internal/gcfloor); released when serve returns.
	defer gcfloor.Set(uint64(cfg.gcHeapFloorMiB) << 20)()
	if isNATSURL(cfg.journalURL) {
		return serveNATS(ctx, cfg, stdout, log) // the journal in JetStream (serve_nats.go)
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

	watched, closeWatched, err := openWatched(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeWatched()
	dbURL, local, db, reg := watched.url, watched.local, watched.db, watched.reg
	// The journal, offsets, events and users: in db, or apart
	// (--journal-url, journaldb.go).
	jdb, err := prepareDatabases(ctx, cfg, db, dbURL, local, reg, log)
	if err != nil {
		return err
	}
	defer jdb.Close()
	if err := db.EnsurePublication(ctx, publicationName, reg); err != nil {
		return fmt.Errorf("publication: %w", err)
	}

	journal := &store.Journal{DB: jdb.DB, Retention: store.RetentionConfig{
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
	// SIGHUP and POST /api/v1/admin/reload re-read the configuration.
	rl := newReloader(cfg.sources, db, local != nil, reg, pipe, log)
	defer rl.stop()
	snaps, err := newSnapshots(dbURL, jdb.URL, rl.clients, pipe.Sanitize, cfg.slot, log)
	if err != nil {
		return err
	}
	var hubUsers wsapi.Users = users{jdb.DB}
	if cfg.wrapUsers != nil {
		hubUsers = cfg.wrapUsers(hubUsers)
	}
	var hub *wsapi.Server
	hub, err = wsapi.NewServer(cfg.hubLimits(wsapi.Config{
		Registry: rl.clients, // follows reloads
		Auth:     auth,
		Journal:  journal,
		// A filter may not test a field that sanitize would strip.
		SecretField: pipe.SecretField,
		Logger:      log.With("component", "wsapi"),
		Ready:       pipe.Streaming,
		Users:       hubUsers,
		SystemState: func() any {
			st := pipe.SystemState()
			st["connected_clients"] = hub.Clients()
			return st
		},
		OnCursorExpired: pipe.ReportRetentionGap,
		Events:          eventStore{db: jdb.DB, pipe: pipe},
		Snapshots:       snaps,
	}))
	if err != nil {
		return err
	}
	pipe.AddSink(hub)
	// A user's sessions end when the user changes. The garm domain's
	// users table streams like any watched table and the hub sees its
	// changes at once; login users anywhere else (changecast.users, a
	// journal database apart, a users table not watched) do not stream,
	// so the table is polled for changes too.
	defer watchUsers(jdb.DB, hub, log.With("component", "users"))()
	if n, err := jdb.DB.OwnUsersUnused(ctx); err == nil && n > 0 {
		log.Warn("login users in "+store.OwnUsersTable+" cannot log in: with the garm domain, login users are its users table; add them again with changecast user add",
			"users", n)
	}
	// The slot exists (or its loss is known) before anything is
	// announced: from here on PostgreSQL keeps every committed change.
	if err := pipe.Prepare(ctx); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(pipe, hub))
	mux.Handle(reloadPath, hub.AdminOnly(rl))
	mux.Handle("/", hub.Handler())
	mountDashboard(mux)
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	addr := ln.Addr().String()
	dash, dashNote, err := dashboardURL(ctx, hub, jdb.DB, addr, local != nil, cfg.signInLink)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "changecast serving on http://%s (WebSocket ws://%s/api/v1/ws/events)\n", addr, addr)
	printDashboard(stdout, dash, dashNote)
	if local != nil {
		fmt.Fprintf(stdout, "embedded PostgreSQL in %s\n  connect: %s\n", filepath.Join(cfg.dataDir, "postgres"), local.PsqlCommand())
	}
	fmt.Fprintf(stdout, "  token:   changecast token --data-dir %s --user admin --role admin\n", cfg.dataDir)
	log.Info("serving", "addr", addr, "database", store.RedactURL(dbURL), "journal", store.RedactURL(jdb.URL), "slot", cfg.slot)

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
	parts.Go(func() error { rl.run(pipeCtx); return nil })
	if cfg.started != nil {
		cfg.started(serveInfo{Addr: addr, DatabaseURL: dbURL, JournalURL: jdb.URL, Local: local, Auth: auth, Dashboard: dash, DashboardNote: dashNote})
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

// watchedDatabase is the database changecast watches, opened: the
// embedded PostgreSQL in the data directory when cfg names none (started
// here), with the registry of entity types cfg declares. close stops
// what it opened, in reverse order.
type watchedDatabase struct {
	url   string
	local *localpg.Cluster
	db    *store.DB
	reg   *entities.Registry
}

// openWatched opens the watched database for serve and serveNATS; the
// caller defers close.
func openWatched(ctx context.Context, cfg serveConfig, log *slog.Logger) (w watchedDatabase, close func(), err error) {
	var closers []func()
	close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	w.url = cfg.databaseURL
	if w.url == "" {
		if w.local, err = localpg.Start(ctx, localpg.Config{Dir: filepath.Join(cfg.dataDir, "postgres")}); err != nil {
			return w, close, fmt.Errorf("start embedded PostgreSQL: %w", err)
		}
		local := w.local
		closers = append(closers, func() {
			if cerr := local.Close(); cerr != nil {
				log.Error("stop embedded PostgreSQL", "err", cerr)
			}
		})
		w.url = w.local.URL()
	}
	if w.db, err = store.Open(ctx, w.url); err != nil {
		return w, close, err
	}
	closers = append(closers, func() { w.db.Close() })
	if w.reg, err = cfg.sources.registry(ctx, w.db, w.local != nil); err != nil {
		return w, close, err
	}
	return w, close, nil
}
