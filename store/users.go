package store

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"

	"github.com/changecast/changecast/entities"
)

// Users live in the table UsersTable resolves (users_table.go): the users
// table of the search path's schema when it has the login shape
// (entities.User), else changecast.users.

// ErrUserNotFound is returned (wrapped, naming the user) when no user has
// the given username or id.
var ErrUserNotFound = errors.New("user not found")

// ErrUserExists is returned (wrapped, naming the username) by AddUser when
// the username (or the email, where the table makes it unique) is taken.
var ErrUserExists = errors.New("user already exists")

// ErrBadCredentials is returned by Authenticate for an unknown user, a wrong
// password, a disabled user or a user without a password: one error, so
// that callers cannot tell (or tell others) which.
var ErrBadCredentials = errors.New("invalid username or password")

// ErrInvalidUser is wrapped by AddUser's errors for an unacceptable
// username, email or full name.
var ErrInvalidUser = errors.New("invalid user")

// ErrInvalidPassword is wrapped by ValidatePassword's errors (and so by
// AddUser's and SetPassword's) for an unacceptable password.
var ErrInvalidPassword = errors.New("invalid password")

// Password and username limits.
const (
	// MinPasswordLen is the least number of characters (not bytes) a
	// password must have.
	MinPasswordLen = 8
	// MaxPasswordBytes is the most bytes bcrypt uses; longer passwords
	// are rejected rather than silently truncated.
	MaxPasswordBytes = 72
	// MaxUsernameLen is the most characters a username may have.
	MaxUsernameLen = 64
	// maxFieldLen bounds email and full name, in characters.
	maxFieldLen = 256
)

// dummyHash is a bcrypt hash (DefaultCost) of a random string nobody
// knows. Authenticate compares against it when there is no real hash, so
// the answer for an unknown user takes as long as for a known one.
const dummyHash = "$2a$10$rqg8mi8eH0lPZ16g9BrI.O3u/I0VkQ.XdO2K5kbFcBE2eATN5vzwS"

// invalidError is a validation failure: its message says what is wrong
// (never the offending password) and it wraps a sentinel for errors.Is.
type invalidError struct {
	msg  string
	kind error
}

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return e.kind }

func invalidPassword(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...), kind: ErrInvalidPassword}
}

func invalidUser(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...), kind: ErrInvalidUser}
}

// NewUser describes a user for AddUser. Password is the clear text; only
// its bcrypt hash is stored.
type NewUser struct {
	// Username is the login name: 1 to 64 characters, no whitespace or
	// control characters. Required.
	Username string
	// Email is optional; when set it must be a plain address (a@b.c).
	Email string
	// FullName is optional, free text without control characters.
	FullName string
	// Password is checked by ValidatePassword. Required.
	Password string
	// Admin makes the user an administrator (role admin); otherwise a
	// viewer.
	Admin bool
}

// ValidatePassword reports whether pw is acceptable as a password: at
// least MinPasswordLen characters, at most MaxPasswordBytes bytes (bcrypt's
// limit), valid UTF-8, no control characters (a stray newline from a file
// is a mistake, not a password). The error describes the problem and never
// contains the password; it wraps ErrInvalidPassword.
func ValidatePassword(pw string) error {
	switch {
	case pw == "":
		return invalidPassword("password is empty")
	case !utf8.ValidString(pw):
		return invalidPassword("password is not valid UTF-8")
	case utf8.RuneCountInString(pw) < MinPasswordLen:
		return invalidPassword("password is shorter than %d characters", MinPasswordLen)
	case len(pw) > MaxPasswordBytes:
		return invalidPassword("password is %d bytes long; bcrypt uses at most %d bytes, so choose a shorter one", len(pw), MaxPasswordBytes)
	case strings.IndexFunc(pw, unicode.IsControl) >= 0:
		return invalidPassword("password contains a control character (such as a newline or tab); remove it")
	case strings.TrimSpace(pw) == "":
		return invalidPassword("password is only whitespace")
	}
	return nil
}

// validateUsername checks a username for AddUser.
func validateUsername(name string) error {
	switch {
	case name == "":
		return invalidUser("username is empty")
	case !utf8.ValidString(name):
		return invalidUser("username is not valid UTF-8")
	case utf8.RuneCountInString(name) > MaxUsernameLen:
		return invalidUser("username %q is longer than %d characters", name, MaxUsernameLen)
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return invalidUser("username %q contains whitespace or a control character; use letters, digits and punctuation only", name)
	}
	return nil
}

// validateProfile checks the optional email and full name.
func validateProfile(u NewUser) error {
	for _, f := range []struct{ name, value string }{{"email", u.Email}, {"full name", u.FullName}} {
		switch {
		case !utf8.ValidString(f.value):
			return invalidUser("%s is not valid UTF-8", f.name)
		case utf8.RuneCountInString(f.value) > maxFieldLen:
			return invalidUser("%s is longer than %d characters", f.name, maxFieldLen)
		case strings.IndexFunc(f.value, unicode.IsControl) >= 0:
			return invalidUser("%s contains a control character", f.name)
		}
	}
	if u.Email != "" {
		a, err := mail.ParseAddress(u.Email)
		if err != nil || a.Address != u.Email || a.Name != "" {
			return invalidUser("email %q is not a plain address such as alice@example.com", u.Email)
		}
	}
	return nil
}

// hashPassword validates pw and returns its bcrypt hash (DefaultCost).
func hashPassword(pw string) (string, error) {
	if err := ValidatePassword(pw); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		// bcrypt's errors never quote the password.
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

const userColumns = "id, username, email, full_name, generation, is_admin, enabled, created_at, updated_at"

// scanUser scans userColumns; the password is never read.
func scanUser(row pgx.Row, u *entities.User) error {
	return row.Scan(&u.ID, &u.Username, &u.Email, &u.FullName, &u.Generation, &u.IsAdmin, &u.Enabled, &u.CreatedAt, &u.UpdatedAt)
}

// AddUser validates u and inserts it, enabled, with a bcrypt hash
// (DefaultCost) of its password. The returned user has Password empty.
// Errors: a validation error wrapping ErrInvalidUser or ErrInvalidPassword,
// or ErrUserExists (wrapped, naming the username) when it is taken.
func (db *DB) AddUser(ctx context.Context, u NewUser) (entities.User, error) {
	if err := validateUsername(u.Username); err != nil {
		return entities.User{}, fmt.Errorf("add user: %w", err)
	}
	if err := validateProfile(u); err != nil {
		return entities.User{}, fmt.Errorf("add user %q: %w", u.Username, err)
	}
	hash, err := hashPassword(u.Password)
	if err != nil {
		return entities.User{}, fmt.Errorf("add user %q: %w", u.Username, err)
	}
	t, err := db.UsersTable(ctx)
	if err != nil {
		return entities.User{}, err
	}
	var out entities.User
	err = scanUser(db.pool.QueryRow(ctx,
		`INSERT INTO `+t+` (username, email, full_name, password, is_admin, enabled)
		VALUES ($1, $2, $3, $4, $5, true)
		RETURNING `+userColumns,
		u.Username, u.Email, u.FullName, hash, u.Admin), &out)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
			if strings.Contains(pgErr.ConstraintName, "email") {
				return entities.User{}, fmt.Errorf("add user %q: email %q belongs to another user: %w", u.Username, u.Email, ErrUserExists)
			}
			return entities.User{}, fmt.Errorf("add user %q: %w", u.Username, ErrUserExists)
		}
		return entities.User{}, redactErr(fmt.Errorf("add user %q: %w", u.Username, hintMigrate(err)), db.url)
	}
	return out, nil
}

// SetPassword replaces username's password hash and increments its
// generation in one statement, so every token minted before (whose gen
// claim holds the old generation) stops working. Errors: a validation error
// wrapping ErrInvalidPassword, or ErrUserNotFound (wrapped).
func (db *DB) SetPassword(ctx context.Context, username, password string) error {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return fmt.Errorf("set password of %q: %w", username, err)
	}
	tag, err := db.pool.Exec(ctx,
		`UPDATE `+t+` SET password = $1, generation = generation + 1, updated_at = now() WHERE username = $2`,
		hash, username)
	if err != nil {
		return redactErr(fmt.Errorf("set password of %q: %w", username, hintMigrate(err)), db.url)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set password of %q: %w", username, ErrUserNotFound)
	}
	return nil
}

// SetUserEnabled enables or disables username. A disabled user cannot log
// in (Authenticate), and UserSession reports Enabled false so that session
// checks reject its tokens. Nothing else changes: password and generation
// stay, so enabling the user again restores it as it was. Errors:
// ErrUserNotFound (wrapped).
func (db *DB) SetUserEnabled(ctx context.Context, username string, enabled bool) error {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `UPDATE `+t+` SET enabled = $1, updated_at = now() WHERE username = $2`, enabled, username)
	if err != nil {
		return redactErr(fmt.Errorf("set enabled of %q: %w", username, hintMigrate(err)), db.url)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set enabled of %q: %w", username, ErrUserNotFound)
	}
	return nil
}

// Authenticate returns the user whose username and password match, with
// Password empty. An unknown user, a wrong password, a disabled user and a
// user without a password all give ErrBadCredentials (unwrapped), and all
// cost one bcrypt comparison, so neither the error nor the time taken
// tells which usernames exist. Other errors are database failures.
func (db *DB) Authenticate(ctx context.Context, username, password string) (entities.User, error) {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return entities.User{}, err
	}
	var (
		u    entities.User
		hash string
	)
	err = db.pool.QueryRow(ctx,
		`SELECT password, `+userColumns+` FROM `+t+` WHERE username = $1`, username).
		Scan(&hash, &u.ID, &u.Username, &u.Email, &u.FullName, &u.Generation, &u.IsAdmin, &u.Enabled, &u.CreatedAt, &u.UpdatedAt)
	found := true
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		found = false
	case err != nil:
		return entities.User{}, redactErr(fmt.Errorf("authenticate: %w", hintMigrate(err)), db.url)
	}
	compareTo := hash
	if !found || hash == "" {
		compareTo = dummyHash
	}
	// Compare even when the outcome is already known (unknown user,
	// empty hash, too long a password): the cost is the same either way.
	cmpErr := bcrypt.CompareHashAndPassword([]byte(compareTo), []byte(password))
	if !found || hash == "" || cmpErr != nil || !u.Enabled || len(password) > MaxPasswordBytes {
		return entities.User{}, ErrBadCredentials
	}
	return u, nil
}

// UserSession is what a session check needs to know about a user: whether
// a token for it still holds (enabled, same generation) and its role.
type UserSession struct {
	// Enabled is false for a disabled user: its tokens must be rejected.
	Enabled bool
	// Generation is the password generation; a token whose gen claim
	// differs predates a password change and must be rejected.
	Generation int64
	// Admin is true for administrators.
	Admin bool
	// Username is the current username.
	Username string
}

// UserSession returns the session facts of the user with id, or
// ErrUserNotFound (wrapped) when there is none (it was deleted).
func (db *DB) UserSession(ctx context.Context, id uuid.UUID) (UserSession, error) {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return UserSession{}, err
	}
	var s UserSession
	err = db.pool.QueryRow(ctx, `SELECT enabled, generation, is_admin, username FROM `+t+` WHERE id = $1`, id).
		Scan(&s.Enabled, &s.Generation, &s.Admin, &s.Username)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return UserSession{}, fmt.Errorf("user %s: %w", id, ErrUserNotFound)
	case err != nil:
		return UserSession{}, redactErr(fmt.Errorf("user session %s: %w", id, hintMigrate(err)), db.url)
	}
	return s, nil
}

// ListUsers returns every user ordered by username, with Password empty.
func (db *DB) ListUsers(ctx context.Context) ([]entities.User, error) {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `SELECT `+userColumns+` FROM `+t+` ORDER BY username`)
	if err != nil {
		return nil, redactErr(fmt.Errorf("list users: %w", hintMigrate(err)), db.url)
	}
	defer rows.Close()
	var out []entities.User
	for rows.Next() {
		var u entities.User
		if err := scanUser(rows, &u); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, redactErr(fmt.Errorf("list users: %w", err), db.url)
	}
	return out, nil
}

// UsersVersion returns a value that changes whenever a user is added or
// removed or what its sessions depend on changes (generation, enabled,
// admin, name), for callers that cannot see those changes in a
// replication stream and poll instead.
func (db *DB) UsersVersion(ctx context.Context) (string, error) {
	t, err := db.UsersTable(ctx)
	if err != nil {
		return "", err
	}
	// A digest of what sessions depend on, not row versions: xmin
	// values wrap around and need not grow.
	var v string
	err = db.pool.QueryRow(ctx, `SELECT count(*)::text || '/' || coalesce(md5(string_agg(
			id::text || ':' || generation::text || ':' || enabled::text || ':' || is_admin::text || ':' || username,
			',' ORDER BY id)), '') FROM `+t).Scan(&v)
	if err != nil {
		return "", redactErr(fmt.Errorf("users version: %w", hintMigrate(err)), db.url)
	}
	return v, nil
}
