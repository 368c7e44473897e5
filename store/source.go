package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// A journal kept in another database than the one it follows (serve
// --journal-url) records which database that is, in
// changecast.journal_source: its stored offsets are positions in that
// database's WAL, so the journal must never be continued from another
// one, where the same numbers mean other transactions.

// Source identifies a PostgreSQL database: the system identifier of its
// cluster (kept by physical copies, so by a promoted standby too) and its
// oid there. Name is for people.
type Source struct {
	SystemID int64
	OID      int64
	Name     string
}

// String names the database for messages.
func (s Source) String() string {
	return fmt.Sprintf("database %q (oid %d) of cluster %d", s.Name, s.OID, s.SystemID)
}

// Identity returns the Source of the database db is connected to.
func (db *DB) Identity(ctx context.Context) (Source, error) {
	var s Source
	err := db.pool.QueryRow(ctx, `SELECT (SELECT system_identifier FROM pg_control_system()),
			d.oid::bigint, d.datname FROM pg_database d WHERE d.datname = current_database()`).
		Scan(&s.SystemID, &s.OID, &s.Name)
	if err != nil {
		return Source{}, redactErr(fmt.Errorf("identify database: %w", err), db.url)
	}
	return s, nil
}

// ErrJournalOfAnother is wrapped by ClaimJournal's error when the journal
// follows another database.
var ErrJournalOfAnother = errors.New("the journal follows another database")

// ClaimJournal makes db's journal (migrated with MigrateJournal) the
// journal of src, the watched database: on first use it records src; a
// journal that already holds changes but no record was written beside
// its own data (serve without --journal-url), so db itself is recorded.
// It returns an error wrapping ErrJournalOfAnother, and changes nothing,
// when the recorded database is not src.
func (db *DB) ClaimJournal(ctx context.Context, src Source) error {
	own, err := db.Identity(ctx)
	if err != nil {
		return err
	}
	var rec Source
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", ddlLockKey); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		err := tx.QueryRow(ctx, "SELECT system_identifier, database_oid, database_name FROM changecast.journal_source").
			Scan(&rec.SystemID, &rec.OID, &rec.Name)
		if err == nil || !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var used bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM changecast.journal)
				OR EXISTS (SELECT 1 FROM changecast.offsets)
				OR (SELECT horizon FROM changecast.journal_meta) > 0`).Scan(&used); err != nil {
			return err
		}
		rec = src
		if used {
			rec = own
		}
		_, err = tx.Exec(ctx, "INSERT INTO changecast.journal_source (system_identifier, database_oid, database_name) VALUES ($1, $2, $3)",
			rec.SystemID, rec.OID, rec.Name)
		return err
	})
	if err != nil {
		return redactErr(fmt.Errorf("claim journal in %s: %w", RedactURL(db.url), hintMigrate(err)), db.url)
	}
	if rec.SystemID != src.SystemID || rec.OID != src.OID {
		return fmt.Errorf("%w: the journal in %s follows %s, not the watched %s; its offsets are positions in that database's WAL and mean nothing in this one. Give each watched database its own journal database (or the default, no --journal-url), or point --database-url at the database this journal follows",
			ErrJournalOfAnother, RedactURL(db.url), rec, src)
	}
	return nil
}
