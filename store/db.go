package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// DB is changecast's connection pool to its PostgreSQL database. It is safe
// for concurrent use.
//
// It keeps gorm for what gorm does well: the entity models and their
// migrations (Migrate, EnsurePublication), where declaring tables from Go
// structs is worth its reflection and allocations. The hot paths use pgx
// directly: journal reads (ReadJournal), retention, offsets, events and
// users go through a pgxpool, and the Appender writes the journal on its
// own pgx connection with COPY. There gorm's per-row reflection would cost
// on every change, and the journal needs what only pgx offers: COPY, a
// session advisory lock held on one connection, and transactions that the
// appender keeps open across chunks.
type DB struct {
	gdb   *gorm.DB
	sqlDB *sql.DB
	// pool serves the journal's hot paths (ReadJournal, retention)
	// without gorm's overhead. It connects lazily.
	pool *pgxpool.Pool
	url  string
	// users remembers where login users live (users_table.go).
	users usersCache
}

// Open connects to the database at url (a postgres:// URL or a key=value
// DSN) and pings it. Errors never contain the password.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, redactErr(fmt.Errorf("open database %s: %w", RedactURL(url), err), url)
	}
	sqlDB := stdlib.OpenDB(*cfg)
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{
		Logger:               logger.Discard,
		DisableAutomaticPing: true,
		// Migrations must not add foreign keys the entity structs do not
		// declare: the watched database may be owned by another app.
		DisableForeignKeyConstraintWhenMigrating: true,
	})
	if err != nil {
		sqlDB.Close()
		return nil, redactErr(fmt.Errorf("open database %s: %w", RedactURL(url), err), url)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, redactErr(fmt.Errorf("connect to database %s: %w", RedactURL(url), err), url)
	}
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		sqlDB.Close()
		return nil, redactErr(fmt.Errorf("open database %s: %w", RedactURL(url), err), url)
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		sqlDB.Close()
		return nil, redactErr(fmt.Errorf("open database %s: %w", RedactURL(url), err), url)
	}
	return &DB{gdb: gdb, sqlDB: sqlDB, pool: pool, url: url}, nil
}

// Close closes the connection pools.
func (db *DB) Close() error {
	db.pool.Close()
	return db.sqlDB.Close()
}

// URL returns the database URL with its password redacted.
func (db *DB) URL() string { return RedactURL(db.url) }

// redactMask replaces passwords.
const redactMask = "xxxxx"

var (
	dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.|'')*'|[^\s]*)`)
	urlUserinfo = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:)[^/?#]*@`)
)

// RedactURL returns s, a URL or DSN, with its password replaced by xxxxx. It handles
// postgres:// URLs (user info and a password query parameter) and key=value
// DSNs (password=... or password='...').
func RedactURL(s string) string {
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), redactMask)
			}
			q := u.Query()
			if q.Has("password") {
				q.Set("password", redactMask)
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		// Unparseable: mask what looks like user:password@.
		s = urlUserinfo.ReplaceAllString(s, "${1}"+redactMask+"@")
		return dsnPassword.ReplaceAllString(s, "${1}"+redactMask)
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+redactMask)
}

// passwordOf extracts the password from a URL or DSN, best effort.
func passwordOf(s string) string {
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			if p, ok := u.User.Password(); ok {
				return p
			}
			return u.Query().Get("password")
		}
	}
	if m := dsnPassword.FindStringSubmatch(s); m != nil {
		p := m[2]
		if strings.HasPrefix(p, "'") && strings.HasSuffix(p, "'") && len(p) >= 2 {
			p = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(p[1 : len(p)-1])
		}
		return p
	}
	return ""
}

// redactedError hides a password that a wrapped error may still print.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr returns err with every occurrence of conn's password masked in
// its message. errors.Is and errors.As still see the cause.
func redactErr(err error, conn string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if p := passwordOf(conn); p != "" {
		msg = strings.ReplaceAll(msg, p, redactMask)
		if esc := url.QueryEscape(p); esc != p {
			msg = strings.ReplaceAll(msg, esc, redactMask)
		}
		if esc := url.PathEscape(p); esc != p {
			msg = strings.ReplaceAll(msg, esc, redactMask)
		}
	}
	return &redactedError{msg: msg, err: err}
}

// errNoSchema explains an empty search path.
var errNoSchema = errors.New("no schema of the search path exists (other than changecast's own); create one, or set search_path in the database URL (e.g. ?search_path=public)")
