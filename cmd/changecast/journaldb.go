package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// envJournalURL sets --journal-url (serve, demo, user).
const envJournalURL = "CHANGECAST_JOURNAL_URL"

// journalLocal is the --journal-url value that keeps the journal in the
// embedded PostgreSQL of the data directory.
const journalLocal = "local"

// journalUsage is --journal-url's help.
const journalUsage = "PostgreSQL URL of the database that keeps changecast's journal, offsets, events and login users, so the watched database carries only the replication slot and the publication; " +
	journalLocal + ": the embedded PostgreSQL in the data dir; empty: the watched database (env " + envJournalURL + ")"

// journalDB is where changecast's own bookkeeping lives: the journal,
// offsets, gaps, system events and the users who log in. By default that
// is the watched database; with --journal-url another one, and then
// nothing of changecast's own is written to the watched database, which
// keeps only the replication slot and the publication
// (docs/configuration.md, "Where the journal lives").
type journalDB struct {
	*store.DB
	// URL is the journal database's URL (with its password, if any).
	URL string
	// Separate is true when the journal lives apart from the watched
	// database.
	Separate bool
	close    func()
}

// Close closes the journal database (when separate) and stops an
// embedded PostgreSQL started for it.
func (j *journalDB) Close() {
	if j.close != nil {
		j.close()
	}
}

// prepareDatabases migrates the watched database (db, at watchedURL;
// local when it is the embedded PostgreSQL) for reg, and opens and
// migrates the journal database cfg.journalURL names. Without
// --journal-url (or with "local" when the watched database is itself the
// embedded one) the journal lives in db, migrated as it always was.
// Otherwise the watched database gets only its entity tables (the
// domain's, when asked) and replica identities, the journal database
// gets schema changecast and the users table, and the journal is claimed
// for the watched database: a journal that follows another database is
// refused.
func prepareDatabases(ctx context.Context, cfg serveConfig, db *store.DB, watchedURL string, local *localpg.Cluster, reg *entities.Registry, log *slog.Logger) (*journalDB, error) {
	jurl := cfg.journalURL
	if jurl == "" || jurl == journalLocal && local != nil {
		if err := db.Migrate(ctx, reg); err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		return &journalDB{DB: db, URL: watchedURL}, nil
	}
	if err := db.MigrateWatched(ctx, reg); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	j := &journalDB{URL: jurl, Separate: true}
	var embedded *localpg.Cluster
	if jurl == journalLocal {
		dir := filepath.Join(cfg.dataDir, "postgres")
		c, err := localpg.Start(ctx, localpg.Config{Dir: dir})
		if err != nil {
			return nil, fmt.Errorf("start the embedded PostgreSQL for the journal (--journal-url %s): %w", journalLocal, err)
		}
		embedded = c
		j.URL = c.URL()
	}
	stopEmbedded := func() {
		if embedded == nil {
			return
		}
		if err := embedded.Close(); err != nil {
			log.Error("stop embedded PostgreSQL", "err", err)
		}
	}
	jdb, err := store.Open(ctx, j.URL)
	if err != nil {
		stopEmbedded()
		return nil, fmt.Errorf("journal database: %w", err)
	}
	j.DB = jdb
	j.close = func() { jdb.Close(); stopEmbedded() }
	if err := claimJournal(ctx, jdb, db); err != nil {
		j.Close()
		return nil, err
	}
	log.Info("journal kept apart from the watched database", "journal", store.RedactURL(j.URL), "database", store.RedactURL(watchedURL))
	return j, nil
}

// claimJournal migrates the journal database jdb and claims its journal
// for the watched database db.
func claimJournal(ctx context.Context, jdb, db *store.DB) error {
	if err := jdb.MigrateJournal(ctx); err != nil {
		return fmt.Errorf("journal database: %w", err)
	}
	src, err := db.Identity(ctx)
	if err != nil {
		return err
	}
	return jdb.ClaimJournal(ctx, src)
}

// usersPollInterval is how often a journal database's users table is
// checked for changes.
const usersPollInterval = 500 * time.Millisecond

// watchUsers ends the sessions of users changed outside the replication
// stream (changecast.users, a journal database kept apart, a users table
// not watched): the hub learns of user changes from the stream of the
// watched database, which does not carry those tables, so a goroutine
// polls the users table and has every session re-checked when it changed. The returned function stops the goroutine and waits
// for it.
func watchUsers(jdb interface {
	UsersVersion(context.Context) (string, error)
}, hub *wsapi.Server, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// The first version is read before anyone can log in, so a change
	// made right after start is not taken for the starting point.
	last, err := jdb.UsersVersion(ctx)
	failing := err != nil
	go func() {
		defer close(done)
		t := time.NewTicker(usersPollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			v, err := jdb.UsersVersion(ctx)
			switch {
			case err != nil:
				if !failing && ctx.Err() == nil {
					log.Warn("check the journal database's users for changes; retrying", "err", err)
				}
				failing = true
				continue
			case failing:
				// Whatever changed while the checks failed is unknown:
				// every session is checked again.
				log.Info("checking the journal database's users again")
				failing = false
				hub.RecheckSessions()
			}
			if last != "" && v != last {
				hub.RecheckSessions()
			}
			last = v
		}
	}()
	return func() { cancel(); <-done }
}
