package store

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Where login users live.
//
// The garm domain has its own users table, and with it changecast's login
// users are GARM's: they stream as entity type "user", and a change to one
// ends its sessions through the replication stream. A database watched
// through a configuration has no such table, and changecast must not
// create one in the application's schema: its login users then live in
// changecast.users, beside the journal. A journal database kept apart
// (MigrateJournal) has a users table of its own.

// OwnUsersTable is the login users' table when the database has no users
// table of the login shape.
const OwnUsersTable = "changecast.users"

// usersCache remembers a resolved users table of the search path (which
// never goes away while changecast runs); changecast.users is re-checked,
// since a later Migrate may create the domain's.
type usersCache struct{ found atomic.Bool }

// UsersTable returns the table login users live in: the search path's
// users table when it has the login shape (the garm domain's, or a journal
// database's), else OwnUsersTable.
func (db *DB) UsersTable(ctx context.Context) (string, error) {
	if db.users.found.Load() {
		return "users", nil
	}
	var domain bool
	err := db.pool.QueryRow(ctx, `SELECT count(*) = 5 FROM pg_attribute
		WHERE attrelid = to_regclass('users') AND NOT attisdropped
		AND attname IN ('username', 'password', 'generation', 'is_admin', 'enabled')`).Scan(&domain)
	if err != nil {
		return "", redactErr(fmt.Errorf("find the users table: %w", err), db.url)
	}
	if domain {
		db.users.found.Store(true)
		return "users", nil
	}
	return OwnUsersTable, nil
}

// OwnUsersUnused reports how many login users wait in OwnUsersTable while
// the search path's users table is the one in use: users added with
// "changecast user" before the garm domain's table existed, which cannot
// log in.
func (db *DB) OwnUsersUnused(ctx context.Context) (int, error) {
	table, err := db.UsersTable(ctx)
	if err != nil || table == OwnUsersTable {
		return 0, err
	}
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM changecast.users`).Scan(&n); err != nil {
		return 0, redactErr(fmt.Errorf("count %s: %w", OwnUsersTable, hintMigrate(err)), db.url)
	}
	return n, nil
}
