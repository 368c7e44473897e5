package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/sanitize"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// serveNATS is serve with the journal in NATS JetStream (--journal-url
// nats://…), in the role --role names (docs/scale-out.md):
//
//   - watcher: migrates the watched database, holds the slot and writes
//     the stream. One is active (the watcher lock on the watched
//     database elects it); the others stand by and take over when it
//     dies. It also takes the system writes gateways send.
//   - gateway: serves clients (WebSocket, login, the events API) from the
//     stream and from the watched database's changecast schema (users,
//     events); it never writes the database or the stream itself.
//   - all: both in one process.
func serveNATS(ctx context.Context, cfg serveConfig, stdout io.Writer, log *slog.Logger) (err error) {
	role := cfg.scale.role
	log = log.With("role", role)
	watcherRole, gatewayRole := role != roleGateway, role != roleWatcher
	if err := ensureDataDir(cfg.dataDir); err != nil {
		return err
	}
	if cfg.databaseURL == "" && role != roleAll {
		return usageError{fmt.Errorf("--role %s needs --database-url: the processes of a scaled-out changecast share one database", role)}
	}
	watched, closeWatched, err := openWatched(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeWatched()
	dbURL, local, db, reg := watched.url, watched.local, watched.db, watched.reg
	source := ""
	if watcherRole {
		// Users, events and offsets live in the watched database's
		// changecast schema; the journal in the stream.
		if err := db.Migrate(ctx, reg); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if err := db.EnsurePublication(ctx, publicationName, reg); err != nil {
			return fmt.Errorf("publication: %w", err)
		}
		id, err := db.Identity(ctx)
		if err != nil {
			return err
		}
		source = fmt.Sprintf("%d/%d/%s", id.SystemID, id.OID, id.Name)
	}
	// A gateway's reads of users and events may come from a hot standby
	// (--read-url, readreplica.go); check() refused it for a watcher.
	var replica *readReplica
	if cfg.scale.readURL != "" && gatewayRole {
		maxLag := cfg.scale.readMaxLag
		if maxLag <= 0 {
			maxLag = defaultReadMaxLag
		}
		if replica, err = openReadReplica(ctx, cfg.scale.readURL, maxLag, db, log.With("component", "read-replica")); err != nil {
			return err
		}
		defer replica.Close()
	}
	var (
		reads       userReads  = db
		eventsReads eventReads = db
		fence       func()
	)
	if replica != nil {
		reads, eventsReads, fence = replica, replica, replica.Fence
	}
	nj, err := openNATSJournal(ctx, cfg, source, natsjournal.PGLocker{DB: db}, db, log)
	if err != nil {
		return err
	}
	defer nj.Close()
	remote := remoteWrites{nc: nj.Conn(), subject: rpcSubject(nj.StreamName())}

	var (
		pipe *pipeline.Pipeline
		rl   *reloader
		hub  *wsapi.Server
	)
	if watcherRole {
		pipe, err = pipeline.New(pipeline.Config{
			DatabaseURL:  dbURL,
			Registry:     reg,
			Journal:      nj,
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
	}
	// SIGHUP and POST /api/v1/admin/reload: a watcher reloads its
	// pipeline, a gateway its hub's and snapshots' types (gatewayReload).
	rl = newReloader(cfg.sources, db, local != nil, reg, pipe, log)
	defer rl.stop()
	var (
		events *eventSender
		auth   *wsapi.Auth
	)
	if gatewayRole {
		secret, err := loadSecret(cfg.dataDir, true)
		if err != nil {
			return err
		}
		if auth, err = wsapi.NewAuth(secret); err != nil {
			return err
		}
		events = newEventSender(remote, log.With("component", "events"))
		host, _ := os.Hostname()
		gatewayID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("changecast:gateway:"+host+":"+cfg.listen))
		clients := rl.clients
		sanitizer := gatewaySanitizer(pipe, rl)
		snaps, err := newNATSSnapshots(dbURL, clients, sanitizer, cfg.slot, nj, log)
		if err != nil {
			return err
		}
		var hubUsers wsapi.Users = users{reads}
		if cfg.wrapUsers != nil {
			hubUsers = cfg.wrapUsers(hubUsers)
		}
		hub, err = wsapi.NewServer(cfg.hubLimits(wsapi.Config{
			Registry:    clients,
			Auth:        auth,
			Journal:     nj,
			SecretField: sanitize.Stripped,
			Logger:      log.With("component", "wsapi"),
			Ready:       nj.Readable,
			Users:       hubUsers,
			SystemState: func() any {
				st := map[string]any{"role": role, "journal": "jetstream"}
				if pipe != nil {
					st = pipe.SystemState()
					st["role"] = role
				}
				ts := nj.TailStats()
				st["journal_head"] = ts.Delivered
				st["stream_readable"] = nj.Readable()
				st["connected_clients"] = hub.Clients()
				return st
			},
			OnCursorExpired: func(subject string, cursor, horizon int64) {
				b := entities.NewEvent().FromSystem(gatewayID).WithCategory("journal").WithAction("retention_gap").
					WithSeverity(entities.Warning).
					WithDescription(fmt.Sprintf("a client resumed after cursor %d, but retention had removed the journal up to %d; it was told to resynchronise", cursor, horizon)).
					WithMetadata(map[string]any{"cursor": fmt.Sprint(cursor), "horizon": fmt.Sprint(horizon)})
				if id, err := uuid.Parse(subject); err == nil {
					b = b.FromUser(id)
				}
				events.send(b)
			},
			Events:    natsEventStore{db: eventsReads, remote: remote, wrote: fence},
			Snapshots: snaps,
		}))
		if err != nil {
			return err
		}
		usersTable, err := db.UsersTable(ctx)
		if err != nil {
			return err
		}
		if usersTable == store.OwnUsersTable {
			var polled interface {
				UsersVersion(context.Context) (string, error)
			} = db
			if replica != nil {
				polled = replica
			}
			defer watchUsers(polled, hub, log.With("component", "users"))()
		}
	}
	if pipe != nil {
		if err := pipe.Prepare(ctx); err != nil {
			return err
		}
	}

	mux := http.NewServeMux()
	var active atomic.Bool
	mux.Handle("/metrics", natsMetricsHandler(pipe, hub, nj, &active, replica))
	if hub != nil {
		mux.Handle(reloadPath, hub.AdminOnly(rl))
		mux.Handle("/", awaitResume(hub.Handler(), hub, nj))
		mountDashboard(mux)
	} else {
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			switch {
			case pipe.Streaming():
				_, _ = io.WriteString(w, "active\n")
			case pipe.Stats().Standby:
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "standby\n")
			default:
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "not streaming\n")
			}
		})
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	addr := ln.Addr().String()
	switch {
	case hub != nil:
		dash, dashNote, err := dashboardURL(ctx, hub, db, addr, local != nil, cfg.signInLink)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "changecast %s serving on http://%s (WebSocket ws://%s/api/v1/ws/events), journal in JetStream stream %s\n", role, addr, addr, nj.StreamName())
		printDashboard(stdout, dash, dashNote)
		fmt.Fprintf(stdout, "  token:   changecast token --data-dir %s --user admin --role admin\n", cfg.dataDir)
	default:
		fmt.Fprintf(stdout, "changecast watcher serving on http://%s (/metrics, /readyz), journal in JetStream stream %s\n", addr, nj.StreamName())
	}
	log.Info("serving", "addr", addr, "database", store.RedactURL(dbURL), "journal", natsjournal.RedactURL(cfg.journalURL), "stream", nj.StreamName(), "slot", cfg.slot)

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

	// Helpers stop after the pipeline and the tail (bgCtx).
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	defer func() { stopBG(); bg.Wait() }()
	if events != nil {
		bg.Add(1)
		go func() { defer bg.Done(); events.run(bgCtx) }()
	}
	var tailDone chan error
	if hub != nil {
		tailDone = make(chan error, 1)
		notify := func(e natsjournal.StreamEvent) {
			b := entities.NewEvent().WithCategory("journal")
			if e.Available {
				b = b.WithAction("stream_available").WithSeverity(entities.Informational).
					WithDescription(fmt.Sprintf("a gateway reads the journal stream again after %s", e.Down.Round(time.Second))).
					WithMetadata(map[string]any{"down_seconds": fmt.Sprint(int64(e.Down.Seconds())), "gateway": addr})
			} else {
				b = b.WithAction("stream_unavailable").WithSeverity(entities.Warning).
					WithDescription("a gateway cannot read the journal stream; its clients are told and may reconnect").
					WithMetadata(map[string]any{"gateway": addr})
			}
			events.send(b)
		}
		bg.Add(1)
		var sink pipeline.Sink = hub
		if replica != nil {
			sink = fencingSink{hub, replica}
		}
		go func() { defer bg.Done(); tailDone <- nj.Tail(bgCtx, sink, notify) }()
	}

	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipe()
	pipeDone := make(chan error, 1)
	if pipe != nil {
		parts.Go(func() error {
			err := pipe.Run(pipeCtx)
			pipeDone <- err
			return err
		})
		bg.Add(2)
		go func() { defer bg.Done(); serveSystemWrites(bgCtx, nj.Conn(), nj.StreamName(), pipe, log) }()
		go func() { defer bg.Done(); watchLeadership(bgCtx, pipe, &active, addr, log) }()
	}
	parts.Go(func() error { rl.run(pipeCtx); return nil })
	if cfg.started != nil {
		cfg.started(serveInfo{Addr: addr, DatabaseURL: dbURL, JournalURL: cfg.journalURL, Local: local, Auth: auth})
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
	case cause = <-tailDone:
		log.Error("following the journal stream stopped", "err", cause)
	}
	stopPipe()
	if pipe != nil {
		if perr := <-pipeDone; perr != nil && cause == nil {
			cause = perr
		}
	}
	// The shutdown event went through the stream: let the tail deliver
	// it before clients are told goodbye.
	if hub != nil && pipe != nil {
		waitDelivered(nj, pipe.Stats().JournalHead, 2*time.Second)
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if hub != nil {
		if err := hub.Close(shutCtx); err != nil {
			log.Warn("close WebSocket clients", "err", err)
		}
	}
	if err := httpSrv.Shutdown(shutCtx); err != nil {
		log.Warn("shut down HTTP server", "err", err)
	}
	if err := parts.Wait(); err != nil && cause == nil {
		cause = err
	}
	log.Info("stopped", "journal_head", nj.TailStats().Delivered)
	return cause
}

// waitDelivered waits (at most d) until the tail has delivered head.
func waitDelivered(nj *natsjournal.Journal, head int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for nj.TailStats().Delivered < head && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the tail's progress
	}
}

// watchLeadership follows whether this watcher is the active one, logs
// and records each change (active mirrors it for /metrics), and raises
// the event saying a watcher became active, until ctx ends.
func watchLeadership(ctx context.Context, pipe *pipeline.Pipeline, active *atomic.Bool, addr string, log *slog.Logger) {
	host, _ := os.Hostname()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		now := pipe.Streaming()
		if now != active.Swap(now) {
			if now {
				log.Info("this watcher is the active one")
				ev, err := entities.NewEvent().WithCategory("watcher").WithAction("active").WithSeverity(entities.Informational).
					WithDescription("a changecast watcher became the active one: it holds the slot and writes the journal stream").
					WithMetadata(map[string]any{"host": host, "addr": addr}).Build()
				if err == nil {
					pctx, cancel := context.WithTimeout(ctx, rpcTimeout)
					if err := pipe.PersistEvent(pctx, ev); err != nil {
						log.Warn("record the leadership change", "err", err)
					}
					cancel()
				}
			} else {
				log.Warn("this watcher is no longer the active one")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
