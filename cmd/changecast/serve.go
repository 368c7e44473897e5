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
	databaseURL string
	listen      string
	slot        string

	// beforeWatch, when set (tests only), runs once the HTTP listener is up
	// and before the watcher starts, with the listen address.
	beforeWatch func(addr string)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg serveConfig
	cfg.common.register(fs)
	fs.StringVar(&cfg.databaseURL, "database-url", envOr(envDatabaseURL, ""), "PostgreSQL URL to watch; empty starts the embedded PostgreSQL in the data dir (env "+envDatabaseURL+")")
	fs.StringVar(&cfg.listen, "listen", envOr(envListen, defaultListen), "HTTP listen address (env "+envListen+")")
	fs.StringVar(&cfg.slot, "slot", envOr(envSlot, "changecast"), "replication slot name (env "+envSlot+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stdout, log)
}

// serve wires the pipeline: watcher → sanitize → hub, acknowledging a
// transaction to PostgreSQL only after the hub accepted it and its end LSN is
// stored. It returns when ctx ends (orderly shutdown) or a part fails.
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
	start, err := db.LoadOffset(ctx, cfg.slot)
	if err != nil {
		return err
	}

	w, err := watcher.New(watcher.Config{
		URL:         dbURL,
		Slot:        cfg.slot,
		Publication: publicationName,
		Registry:    reg,
		StartLSN:    start,
		Logger:      log.With("component", "watcher"),
	})
	if err != nil {
		return err
	}
	if err := w.Check(ctx); err != nil {
		return err
	}

	hub, err := wsapi.NewServer(wsapi.Config{
		Registry: reg,
		Auth:     auth,
		Logger:   log.With("component", "wsapi"),
		Ready:    w.Streaming,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	httpSrv := &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 10 * time.Second}

	addr := ln.Addr().String()
	fmt.Fprintf(stdout, "changecast serving on http://%s (WebSocket ws://%s/api/v1/ws/events)\n", addr, addr)
	if local != nil {
		fmt.Fprintf(stdout, "embedded PostgreSQL in %s\n  connect: %s\n", filepath.Join(cfg.dataDir, "postgres"), local.PsqlCommand())
	}
	fmt.Fprintf(stdout, "  token:   changecast token --data-dir %s --user admin --role admin\n", cfg.dataDir)
	log.Info("serving", "addr", addr, "database", store.RedactURL(dbURL), "slot", cfg.slot, "start_lsn", start.String())

	// The watcher and the pipeline stop first so that every transaction the
	// watcher emitted is published while clients are still connected; then
	// the hub says goodbye; then HTTP closes.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	txs := make(chan watcher.Transaction, 16)
	san := sanitize.New(reg)

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
	parts.Go(func() error {
		defer close(txs)
		return runWatcher(watchCtx, w, txs, log)
	})
	pipeDone := make(chan error, 1)
	parts.Go(func() error {
		err := pipeline(ctx, txs, san, hub, db, w, cfg.slot, log)
		pipeDone <- err
		return err
	})

	var cause error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case cause = <-httpErr:
		log.Error("http server stopped", "err", cause)
	case cause = <-pipeDone:
		log.Error("pipeline stopped", "err", cause)
		pipeDone <- cause
	}

	stopWatch()
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
	log.Info("stopped", "confirmed_lsn", w.Confirmed().String())
	return cause
}

// runWatcher runs the watcher until ctx ends, reconnecting after connection
// failures with capped, jittered backoff. Errors that retrying cannot fix
// (a prerequisite missing) end it.
func runWatcher(ctx context.Context, w *watcher.Watcher, out chan<- watcher.Transaction, log *slog.Logger) error {
	const minBackoff, maxBackoff = 500 * time.Millisecond, 30 * time.Second
	backoff := minBackoff
	for {
		started := time.Now()
		err := w.Run(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		if !watcher.Retryable(err) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("replication interrupted; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// pipeline sanitizes each committed transaction, hands it to the hub, stores
// its end LSN and only then acknowledges it to PostgreSQL. It drains txs until
// the watcher closes it.
func pipeline(ctx context.Context, txs <-chan watcher.Transaction, san *sanitize.Sanitizer, hub *wsapi.Server, db *store.DB, w *watcher.Watcher, slot string, log *slog.Logger) error {
	for tx := range txs {
		changes, err := san.Changes(tx.Changes)
		if err != nil {
			// Fail closed: an unsanitizable change is never sent. The
			// transaction is not acknowledged, so nothing is lost.
			return fmt.Errorf("transaction %d: %w", tx.Xid, err)
		}
		if len(changes) > 0 {
			hub.Publish(changes)
		}
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = db.SaveOffset(saveCtx, slot, tx.EndLSN)
		cancel()
		if err != nil {
			// Not acknowledged: PostgreSQL keeps the transaction and a later
			// offset covers it.
			log.Error("store offset", "lsn", tx.EndLSN.String(), "err", err)
			continue
		}
		w.Ack(tx.EndLSN)
	}
	return nil
}
