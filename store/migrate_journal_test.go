package store_test

import (
	"reflect"
	"testing"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

// A journal made before payload and previous were text held them as json:
// Migrate converts the columns and keeps every value byte for byte.
func TestMigrate_JournalJSONColumnsBecomeText(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	oldJournal(t, db, "payload json, previous json")
	execSQL(t, db, `INSERT INTO changecast.journal (seq, commit_lsn, tx_index, xid, committed_at, entity_type, operation, entity_id, payload, previous)
		VALUES (1, 100, 0, 7, now(), 'note', 'create', '1', '{"id":1,"big":9007199254740993,"s":"é\u00e9"}', NULL),
		       (2, 200, 0, 8, now(), 'note', 'update', '1', '{"id":1,"s":"b"}', '{"id":1,"s":"a"}')`)
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	types := strings1(t, db, `SELECT column_name || ' ' || data_type FROM information_schema.columns
		WHERE table_schema = 'changecast' AND table_name = 'journal' AND column_name IN ('payload', 'previous') ORDER BY column_name`)
	if want := []string{"payload text", "previous text"}; !reflect.DeepEqual(types, want) {
		t.Errorf("journal columns after Migrate: got %v, want %v", types, want)
	}
	got := strings1(t, db, `SELECT payload || ' ' || coalesce(previous, 'NULL') FROM changecast.journal ORDER BY seq`)
	want := []string{`{"id":1,"big":9007199254740993,"s":"é\u00e9"} NULL`, `{"id":1,"s":"b"} {"id":1,"s":"a"}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("journal values after Migrate: got %q, want %q", got, want)
	}
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
}

// Only the columns still json are converted: one already text (or
// missing) does not stop the other's conversion.
func TestMigrate_JournalOneJSONColumn(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	oldJournal(t, db, "payload json")
	execSQL(t, db, `INSERT INTO changecast.journal (seq, commit_lsn, tx_index, xid, committed_at, entity_type, operation, entity_id, payload)
		VALUES (1, 100, 0, 7, now(), 'note', 'create', '1', '{"id":1}')`)
	if err := db.Migrate(testCtx(t), entities.DefaultRegistry()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	types := strings1(t, db, `SELECT column_name || ' ' || data_type FROM information_schema.columns
		WHERE table_schema = 'changecast' AND table_name = 'journal' AND column_name IN ('payload', 'previous') ORDER BY column_name`)
	if want := []string{"payload text"}; !reflect.DeepEqual(types, want) {
		t.Errorf("journal columns after Migrate: got %v, want %v", types, want)
	}
}

// oldJournal creates changecast.journal as versions before the text
// columns did, with payloadCols in place of its payload and previous.
func oldJournal(t *testing.T, db *store.DB, payloadCols string) {
	t.Helper()
	execSQL(t, db, `CREATE SCHEMA changecast;
		CREATE TABLE changecast.journal (
			seq bigint PRIMARY KEY,
			commit_lsn bigint NOT NULL,
			tx_index int NOT NULL,
			xid bigint NOT NULL,
			committed_at timestamptz NOT NULL,
			journaled_at timestamptz NOT NULL DEFAULT now(),
			entity_type text NOT NULL,
			operation text NOT NULL,
			entity_id text NOT NULL,
			`+payloadCols+`,
			unchanged text[]
		)`)
}
