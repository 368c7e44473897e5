package store

import "gorm.io/gorm"

// Gorm returns the underlying gorm handle for the external tests, which
// run raw SQL through it. It is not part of the package's API: only store
// imports gorm, and callers outside it get store's own methods.
func (db *DB) Gorm() *gorm.DB { return db.gdb }

// CopiedGroups reports how many groups a has journaled by COPY rather
// than by one statement, for the test of the threshold between the two.
func (a *Appender) CopiedGroups() int64 { return a.copied.Load() }
