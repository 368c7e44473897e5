package store_test

import (
	"errors"
	"testing"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

func identity(t *testing.T, db *store.DB) store.Source {
	t.Helper()
	s, err := db.Identity(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestClaimJournal: a journal database follows the first database it is
// claimed for and refuses any other; a journal written in a database
// before it was claimed follows that database.
func TestClaimJournal(t *testing.T) {
	ctx := testCtx(t)
	a, b := openDB(t), openDB(t)
	ia, ib := identity(t, a), identity(t, b)
	if ia.SystemID != ib.SystemID || ia.OID == ib.OID || ia.Name == ib.Name {
		t.Fatalf("two databases of one cluster: %v and %v", ia, ib)
	}

	j := openDB(t)
	if err := j.MigrateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.ClaimJournal(ctx, ia); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := j.ClaimJournal(ctx, ia); err != nil {
		t.Fatalf("claim again for the same database: %v", err)
	}
	if err := j.ClaimJournal(ctx, ib); !errors.Is(err, store.ErrJournalOfAnother) {
		t.Fatalf("claim for another database: %v, want ErrJournalOfAnother", err)
	}

	// A journal kept beside its data (Migrate, an offset stored) and
	// later pointed at as a journal database follows its own database.
	old := migrated(t)
	if err := old.SaveOffset(ctx, "changecast", 0x1234); err != nil {
		t.Fatal(err)
	}
	if err := old.MigrateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.ClaimJournal(ctx, ia); !errors.Is(err, store.ErrJournalOfAnother) {
		t.Fatalf("claiming a used journal for another database: %v, want ErrJournalOfAnother", err)
	}
	if err := old.ClaimJournal(ctx, identity(t, old)); err != nil {
		t.Fatalf("claiming a used journal for its own database: %v", err)
	}
}

// TestMigrateSplit: MigrateWatched creates the domain's tables and nothing
// of changecast's own; MigrateJournal creates schema changecast and the
// users table, and no other entity table.
func TestMigrateSplit(t *testing.T) {
	ctx := testCtx(t)
	w, j := openDB(t), openDB(t)
	if err := w.MigrateWatched(ctx, entities.DefaultRegistry()); err != nil {
		t.Fatal(err)
	}
	if err := j.MigrateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	count := func(db *store.DB, sql string) string {
		return strings1(t, db, sql)[0]
	}
	if n := count(w, "SELECT count(*)::text FROM pg_namespace WHERE nspname = 'changecast'"); n != "0" {
		t.Errorf("MigrateWatched created schema changecast")
	}
	if n := count(w, "SELECT count(*)::text FROM pg_class WHERE relname IN ('instances', 'pools', 'users') AND relkind = 'r'"); n != "3" {
		t.Errorf("MigrateWatched created %s of the domain's instances, pools, users, want 3", n)
	}
	if n := count(j, "SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'changecast' AND c.relname IN ('journal', 'offsets', 'journal_gaps', 'journal_meta', 'journal_source', 'events') AND relkind = 'r'"); n != "6" {
		t.Errorf("MigrateJournal created %s of changecast's 6 tables", n)
	}
	if n := count(j, "SELECT count(*)::text FROM pg_class WHERE relname IN ('instances', 'pools') AND relkind = 'r'"); n != "0" {
		t.Errorf("MigrateJournal created entity tables")
	}
	// Users work in the journal database.
	if _, err := j.AddUser(ctx, store.NewUser{Username: "ada", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	v1, err := j.UsersVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetUserEnabled(ctx, "ada", false); err != nil {
		t.Fatal(err)
	}
	if v2, err := j.UsersVersion(ctx); err != nil || v2 == v1 {
		t.Fatalf("UsersVersion %q after a change, %q before (%v): want a different value", v2, v1, err)
	}
}
