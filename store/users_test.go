package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/changecast/changecast/store"
)

// secretsOut collects everything a user API call hands back (errors and
// values) to check that no password or hash is in it.
type secretsOut struct{ b strings.Builder }

func (s *secretsOut) add(vs ...any) {
	for _, v := range vs {
		switch v := v.(type) {
		case nil:
		case error:
			fmt.Fprintf(&s.b, "%v\n%+v\n%#v\n", v, v, v)
		default:
			j, _ := json.Marshal(v)
			fmt.Fprintf(&s.b, "%+v\n%#v\n%s\n", v, v, j)
		}
	}
}

// check fails if any of secrets occurs in what was collected.
func (s *secretsOut) check(t testing.TB, secrets ...string) {
	t.Helper()
	out := s.b.String()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(out, sec) {
			t.Errorf("a password or hash (%d bytes) leaked into returned values or errors", len(sec))
		}
	}
	if strings.Contains(out, "$2a$") || strings.Contains(out, "$2b$") {
		t.Errorf("a bcrypt hash leaked into returned values or errors")
	}
}

func storedHash(t testing.TB, db *store.DB, username string) string {
	t.Helper()
	h := strings1(t, db, "SELECT password FROM users WHERE username = ?", username)
	if len(h) != 1 {
		t.Fatalf("user %q: %d rows, want 1", username, len(h))
	}
	return h[0]
}

func TestAddUser(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	var out secretsOut
	const pw = "correct horse battery"

	u, err := db.AddUser(ctx, store.NewUser{Username: "alice", Email: "alice@example.com", FullName: "Alice Liddell", Password: pw, Admin: true})
	out.add(u, err)
	if err != nil {
		t.Fatalf("AddUser: %v", err)
	}
	if u.ID == uuid.Nil || u.Username != "alice" || u.Email != "alice@example.com" || u.FullName != "Alice Liddell" ||
		!u.IsAdmin || !u.Enabled || u.Generation != 0 || u.Password != "" || u.CreatedAt.IsZero() {
		t.Errorf("AddUser returned %+v", u)
	}
	hash := storedHash(t, db, "alice")
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)); err != nil {
		t.Errorf("stored hash does not match the password: %v", err)
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != bcrypt.DefaultCost {
		t.Errorf("hash cost %d (%v), want %d", cost, err, bcrypt.DefaultCost)
	}

	// A viewer with only the required fields.
	v, err := db.AddUser(ctx, store.NewUser{Username: "bob", Password: "another password"})
	out.add(v, err)
	if err != nil || v.IsAdmin || !v.Enabled {
		t.Errorf("AddUser(bob) = %+v, %v; want an enabled viewer", v, err)
	}

	_, err = db.AddUser(ctx, store.NewUser{Username: "alice", Password: "yet another one"})
	out.add(err)
	if !errors.Is(err, store.ErrUserExists) || !strings.Contains(err.Error(), `"alice"`) {
		t.Errorf("duplicate AddUser: got %v, want ErrUserExists naming alice", err)
	}

	cases := []struct {
		name string
		u    store.NewUser
		want error
		msg  string
	}{
		{"empty username", store.NewUser{Password: pw}, store.ErrInvalidUser, "username is empty"},
		{"space in username", store.NewUser{Username: "al ice", Password: pw}, store.ErrInvalidUser, "whitespace"},
		{"tab in username", store.NewUser{Username: "al\tice", Password: pw}, store.ErrInvalidUser, "whitespace"},
		{"control in username", store.NewUser{Username: "al\x00ice", Password: pw}, store.ErrInvalidUser, "control"},
		{"long username", store.NewUser{Username: strings.Repeat("a", 65), Password: pw}, store.ErrInvalidUser, "longer than 64"},
		{"bad email", store.NewUser{Username: "carol", Email: "Carol <carol@example.com>", Password: pw}, store.ErrInvalidUser, "plain address"},
		{"control in full name", store.NewUser{Username: "carol", FullName: "Carol\nX", Password: pw}, store.ErrInvalidUser, "control"},
		{"empty password", store.NewUser{Username: "carol"}, store.ErrInvalidPassword, "password is empty"},
		{"short password", store.NewUser{Username: "carol", Password: "s3cr3t!"}, store.ErrInvalidPassword, "shorter than 8"},
		{"long password", store.NewUser{Username: "carol", Password: strings.Repeat("p", 73)}, store.ErrInvalidPassword, "73 bytes"},
		{"newline in password", store.NewUser{Username: "carol", Password: "password\nsecond"}, store.ErrInvalidPassword, "control character"},
		{"blank password", store.NewUser{Username: "carol", Password: "          "}, store.ErrInvalidPassword, "whitespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := db.AddUser(ctx, tc.u)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.msg)
			}
			var pwOut secretsOut
			pwOut.add(u, err)
			pwOut.check(t, tc.u.Password)
		})
	}
	if n := strings1(t, db, "SELECT count(*)::text FROM users"); n[0] != "2" {
		t.Errorf("%s users after the failed adds, want 2", n[0])
	}
	out.check(t, pw, "another password", hash, storedHash(t, db, "bob"))
}

func TestValidatePassword(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"12345678", "ünïcödé!", strings.Repeat("x", 72), "with inner spaces"} {
		if err := store.ValidatePassword(ok); err != nil {
			t.Errorf("ValidatePassword(%d bytes) = %v, want nil", len(ok), err)
		}
	}
	// Eight characters but more bytes count as eight; 72 bytes is the
	// limit whatever the character count.
	if err := store.ValidatePassword("ééé"); err == nil || !strings.Contains(err.Error(), "shorter than 8") {
		t.Errorf("3 two-byte characters: got %v, want too short", err)
	}
	if err := store.ValidatePassword(strings.Repeat("é", 37)); err == nil || !strings.Contains(err.Error(), "74 bytes") {
		t.Errorf("37 two-byte characters: got %v, want too long", err)
	}
	if err := store.ValidatePassword("bad\xffutf8!"); !errors.Is(err, store.ErrInvalidPassword) || strings.Contains(err.Error(), "bad") {
		t.Errorf("invalid UTF-8: got %v, want ErrInvalidPassword without the password", err)
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	var out secretsOut
	const pw = "correct horse battery"
	added, err := db.AddUser(ctx, store.NewUser{Username: "alice", Password: pw, Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddUser(ctx, store.NewUser{Username: "nopass", Password: pw}); err != nil {
		t.Fatal(err)
	}
	execSQL(t, db, "UPDATE users SET password = '' WHERE username = 'nopass'")
	// bcrypt ignores bytes past 72: a longer password with the right
	// first 72 bytes must not pass.
	long := strings.Repeat("L", store.MaxPasswordBytes)
	if _, err := db.AddUser(ctx, store.NewUser{Username: "long", Password: long}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, "long", long); err != nil {
		t.Errorf("72-byte password: %v", err)
	}

	u, err := db.Authenticate(ctx, "alice", pw)
	out.add(u, err)
	if err != nil {
		t.Fatalf("Authenticate(good) = %v", err)
	}
	if u.ID != added.ID || u.Username != "alice" || !u.IsAdmin || u.Password != "" {
		t.Errorf("Authenticate returned %+v, want alice with id %s and no password", u, added.ID)
	}

	bad := []struct{ name, user, pw string }{
		{"wrong password", "alice", "wrong horse battery"},
		{"password prefix", "alice", pw[:10]},
		{"password over 72 bytes with the right prefix", "long", long + "extra"},
		{"unknown user", "mallory", pw},
		{"no password set", "nopass", pw},
		{"empty password", "alice", ""},
		{"username case", "Alice", pw},
	}
	for _, tc := range bad {
		u, err := db.Authenticate(ctx, tc.user, tc.pw)
		out.add(u, err)
		if err != store.ErrBadCredentials || u.ID != uuid.Nil {
			t.Errorf("%s: got %+v, %v; want ErrBadCredentials", tc.name, u, err)
		}
	}

	if err := db.SetUserEnabled(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}
	u, err = db.Authenticate(ctx, "alice", pw)
	out.add(u, err)
	if err != store.ErrBadCredentials {
		t.Errorf("disabled user: got %v, want ErrBadCredentials", err)
	}
	if err := db.SetUserEnabled(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, "alice", pw); err != nil {
		t.Errorf("re-enabled user: %v", err)
	}
	out.check(t, pw, storedHash(t, db, "alice"))
}

// An unknown username costs a bcrypt comparison like a known one, so the
// time taken does not tell whether a username exists. The bound is loose:
// without the dummy comparison the unknown case is hundreds of times
// faster; with it both take about the same.
//
// Not parallel: other tests' bcrypt work would skew the measurement.
func TestAuthenticate_UnknownUserTiming(t *testing.T) {
	db := migrated(t)
	ctx := testCtx(t)
	if _, err := db.AddUser(ctx, store.NewUser{Username: "alice", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	measure := func(user string) time.Duration {
		start := time.Now()
		if _, err := db.Authenticate(ctx, user, "wrong horse battery"); err != store.ErrBadCredentials {
			t.Fatalf("Authenticate(%s) = %v", user, err)
		}
		return time.Since(start)
	}
	// Interleaved, fastest of three each: the least disturbed runs.
	known, unknown := time.Duration(1<<63-1), time.Duration(1<<63-1)
	for range 3 {
		known = min(known, measure("alice"))
		unknown = min(unknown, measure("mallory"))
	}
	if unknown < known/3 {
		t.Errorf("unknown user took %v, known user %v: the time reveals which usernames exist", unknown, known)
	}
}

func TestSetPassword(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	var out secretsOut
	const oldPW, newPW = "correct horse battery", "staple battery horse"
	u, err := db.AddUser(ctx, store.NewUser{Username: "alice", Password: oldPW})
	if err != nil {
		t.Fatal(err)
	}
	oldHash := storedHash(t, db, "alice")
	before := strings1(t, db, "SELECT updated_at::text FROM users WHERE username = 'alice'")[0]

	err = db.SetPassword(ctx, "alice", newPW)
	out.add(err)
	if err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	s, err := db.UserSession(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != u.Generation+1 {
		t.Errorf("generation %d after SetPassword, want %d", s.Generation, u.Generation+1)
	}
	if after := strings1(t, db, "SELECT updated_at::text FROM users WHERE username = 'alice'")[0]; after <= before {
		t.Errorf("updated_at %s after SetPassword, want later than %s", after, before)
	}
	if _, err := db.Authenticate(ctx, "alice", oldPW); err != store.ErrBadCredentials {
		t.Errorf("old password: got %v, want ErrBadCredentials", err)
	}
	got, err := db.Authenticate(ctx, "alice", newPW)
	out.add(got, err)
	if err != nil || got.Generation != 1 {
		t.Errorf("new password: got %+v, %v; want generation 1", got, err)
	}

	err = db.SetPassword(ctx, "bob", newPW)
	out.add(err)
	if !errors.Is(err, store.ErrUserNotFound) || !strings.Contains(err.Error(), `"bob"`) {
		t.Errorf("unknown user: got %v, want ErrUserNotFound naming bob", err)
	}
	err = db.SetPassword(ctx, "alice", "Zq9#k")
	out.add(err)
	if !errors.Is(err, store.ErrInvalidPassword) {
		t.Errorf("short password: got %v, want ErrInvalidPassword", err)
	}
	if s, _ := db.UserSession(ctx, u.ID); s.Generation != 1 {
		t.Errorf("a rejected SetPassword changed the generation to %d", s.Generation)
	}
	out.check(t, oldPW, newPW, "Zq9#k", oldHash, storedHash(t, db, "alice"))
}

func TestUserSessionAndList(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	var out secretsOut
	pws := map[string]string{"carol": "carol's password", "alice": "alice's password", "bob": "bob's password"}
	ids := map[string]uuid.UUID{}
	for _, name := range []string{"carol", "alice", "bob"} {
		u, err := db.AddUser(ctx, store.NewUser{Username: name, Email: name + "@example.com", Password: pws[name], Admin: name == "alice"})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = u.ID
	}
	if err := db.SetUserEnabled(ctx, "bob", false); err != nil {
		t.Fatal(err)
	}

	for name, want := range map[string]store.UserSession{
		"alice": {Enabled: true, Generation: 0, Admin: true, Username: "alice"},
		"bob":   {Enabled: false, Generation: 0, Admin: false, Username: "bob"},
	} {
		got, err := db.UserSession(ctx, ids[name])
		out.add(got, err)
		if err != nil || got != want {
			t.Errorf("UserSession(%s) = %+v, %v; want %+v", name, got, err, want)
		}
	}
	missing := uuid.New()
	_, err := db.UserSession(ctx, missing)
	out.add(err)
	if !errors.Is(err, store.ErrUserNotFound) || !strings.Contains(err.Error(), missing.String()) {
		t.Errorf("UserSession(unknown) = %v, want ErrUserNotFound naming the id", err)
	}

	for _, name := range []string{"dave", ""} {
		for _, enabled := range []bool{true, false} {
			if err := db.SetUserEnabled(ctx, name, enabled); !errors.Is(err, store.ErrUserNotFound) {
				t.Errorf("SetUserEnabled(%q, %v) = %v, want ErrUserNotFound", name, enabled, err)
			}
		}
	}

	list, err := db.ListUsers(ctx)
	out.add(list, err)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list {
		names = append(names, u.Username)
		if u.Password != "" {
			t.Errorf("ListUsers: %s has a password field", u.Username)
		}
		if u.ID != ids[u.Username] || u.Email != u.Username+"@example.com" || u.IsAdmin != (u.Username == "alice") || u.Enabled != (u.Username != "bob") {
			t.Errorf("ListUsers: %+v", u)
		}
	}
	if got := strings.Join(names, ","); got != "alice,bob,carol" {
		t.Errorf("ListUsers order %s, want alice,bob,carol", got)
	}
	secrets := []string{}
	for name, pw := range pws {
		secrets = append(secrets, pw, storedHash(t, db, name))
	}
	out.check(t, secrets...)
}

func TestUsers_BeforeMigrate(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	ctx := testCtx(t)
	if _, err := db.ListUsers(ctx); err == nil || !strings.Contains(err.Error(), "run changecast migrate first") {
		t.Errorf("ListUsers before Migrate: got %v, want a hint to migrate", err)
	}
	if _, err := db.Authenticate(ctx, "alice", "correct horse battery"); err == nil || errors.Is(err, store.ErrBadCredentials) {
		t.Errorf("Authenticate before Migrate: got %v, want a database error, not ErrBadCredentials", err)
	}
}
