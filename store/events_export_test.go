package store

import "context"

// MigrateEventsTable creates changecast.events for the external tests,
// which cannot call migrateEventsTable. Run Migrate first.
func MigrateEventsTable(ctx context.Context, db *DB) error {
	return db.gdb.WithContext(ctx).Transaction(migrateEventsTable)
}
