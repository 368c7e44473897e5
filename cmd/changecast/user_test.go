package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// userRun is the output of one "changecast ..." run.
type userRun struct {
	stdout, stderr string
	err            error
}

// userCLI runs changecast with args, with the user command's environment
// variables cleared, and collects everything it printed in seen so that a
// test can check no password ever appeared.
type userCLI struct {
	seen strings.Builder
}

func (c *userCLI) run(t testing.TB, args ...string) userRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	r := userRun{stdout: out.String(), stderr: errb.String(), err: err}
	c.seen.WriteString(r.stdout + r.stderr)
	if err != nil {
		// What main would print.
		exitCode(err, &c.seen)
	}
	return r
}

// ok runs args and fails the test unless it succeeds.
func (c *userCLI) ok(t testing.TB, args ...string) userRun {
	t.Helper()
	r := c.run(t, args...)
	if r.err != nil {
		t.Fatalf("changecast %s: %v\nstderr:\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r
}

// noSecrets fails if any secret was printed by any run so far.
func (c *userCLI) noSecrets(t testing.TB, secrets ...string) {
	t.Helper()
	out := c.seen.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("a password (%d bytes) appeared in the output", len(s))
		}
	}
	if strings.Contains(out, "$2a$") {
		t.Errorf("a bcrypt hash appeared in the output")
	}
}

// writePassword writes pw (plus a newline) to a new mode-0600 file.
func writePassword(t testing.TB, pw string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// authenticate checks the stored credentials directly.
func authenticate(t testing.TB, url, user, pw string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Authenticate(ctx, user, pw)
	return err
}

// clearUserEnv unsets the variables that would change the user command's
// behaviour. (t.Setenv: such tests cannot run in parallel.)
func clearUserEnv(t testing.TB) {
	t.Helper()
	for _, k := range []string{envDatabaseURL, envUserPassword, envDataDir} {
		t.Setenv(k, "")
	}
}

func TestUser_Lifecycle(t *testing.T) {
	clearUserEnv(t)
	url := storetest.NewDatabase(t)
	db := []string{"--database-url", url, "--data-dir", t.TempDir()}
	var cli userCLI
	const (
		alicePW  = "alice's first password"
		alicePW2 = "alice's second password"
		bobPW    = "bob's stdin password"
		carolPW  = "carol's env password"
	)
	args := func(a ...string) []string { return append(append([]string{"user"}, a...), db...) }

	r := cli.ok(t, args("add", "--username", "alice", "--admin", "--email", "alice@example.com", "--full-name", "Alice Liddell", "--password-file", writePassword(t, alicePW))...)
	if r.stdout != "user \"alice\" added (admin)\n" {
		t.Errorf("add alice: stdout %q", r.stdout)
	}

	userStdin = strings.NewReader(bobPW + "\r\nsecond line is ignored\n")
	t.Cleanup(func() { userStdin = os.Stdin })
	r = cli.ok(t, args("add", "--username", "bob", "--password-stdin")...)
	if r.stdout != "user \"bob\" added (viewer)\n" {
		t.Errorf("add bob: stdout %q", r.stdout)
	}

	t.Setenv(envUserPassword, carolPW)
	cli.ok(t, args("add", "--username", "carol", "--email", "carol@example.com")...)
	t.Setenv(envUserPassword, "")

	for user, pw := range map[string]string{"alice": alicePW, "bob": bobPW, "carol": carolPW} {
		if err := authenticate(t, url, user, pw); err != nil {
			t.Errorf("%s cannot log in with the password given: %v", user, err)
		}
	}

	r = cli.ok(t, args("list")...)
	want := "USERNAME  ADMIN  ENABLED  EMAIL\n" +
		"alice     yes    yes      alice@example.com\n" +
		"bob       no     yes      \n" +
		"carol     no     yes      carol@example.com\n"
	if r.stdout != want {
		t.Errorf("list:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = cli.ok(t, args("passwd", "--username", "alice", "--password-file", writePassword(t, alicePW2))...)
	if !strings.HasPrefix(r.stdout, "password of user \"alice\" changed;") || !strings.Contains(r.stdout, "token") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("passwd: stdout %q, want one line saying tokens stop working", r.stdout)
	}
	if err := authenticate(t, url, "alice", alicePW); !errors.Is(err, store.ErrBadCredentials) {
		t.Errorf("old password after passwd: %v, want ErrBadCredentials", err)
	}
	if err := authenticate(t, url, "alice", alicePW2); err != nil {
		t.Errorf("new password after passwd: %v", err)
	}

	r = cli.ok(t, args("disable", "--username", "bob")...)
	if !strings.HasPrefix(r.stdout, "user \"bob\" disabled;") {
		t.Errorf("disable: stdout %q", r.stdout)
	}
	if err := authenticate(t, url, "bob", bobPW); !errors.Is(err, store.ErrBadCredentials) {
		t.Errorf("disabled bob logs in: %v", err)
	}
	if r = cli.ok(t, args("list")...); !strings.Contains(r.stdout, "bob       no     no") {
		t.Errorf("list after disable:\n%s", r.stdout)
	}
	if r = cli.ok(t, args("enable", "--username", "bob")...); r.stdout != "user \"bob\" enabled\n" {
		t.Errorf("enable: stdout %q", r.stdout)
	}
	if err := authenticate(t, url, "bob", bobPW); err != nil {
		t.Errorf("re-enabled bob cannot log in: %v", err)
	}

	cli.noSecrets(t, alicePW, alicePW2, bobPW, carolPW)
}

func TestUser_Errors(t *testing.T) {
	clearUserEnv(t)
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	var cli userCLI
	const goodPW, shortPW = "a good long password", "Zq9#k"
	goodFile, shortFile := writePassword(t, goodPW), writePassword(t, shortPW)
	db := []string{"--database-url", url, "--data-dir", dataDir}
	cli.ok(t, append([]string{"user", "add", "--username", "alice", "--password-file", goodFile}, db...)...)

	const (
		usage = 2
		other = 1
	)
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no action", []string{"user"}, usage, "missing action"},
		{"unknown action", []string{"user", "delete"}, usage, `unknown action "delete"`},
		{"no username", []string{"user", "add", "--password-file", goodFile}, usage, "--username is required"},
		{"no password", []string{"user", "add", "--username", "bob"}, usage, "--password-file PATH, --password-stdin (first line of standard input), or env CHANGECAST_USER_PASSWORD"},
		{"password as a flag", []string{"user", "add", "--username", "bob", "--password", goodPW}, usage, "flag provided but not defined: -password"},
		{"two password sources", []string{"user", "add", "--username", "bob", "--password-file", goodFile, "--password-stdin"}, usage, "only one of"},
		{"short password", []string{"user", "add", "--username", "bob", "--password-file", shortFile}, usage, "password is shorter than 8 characters"},
		{"missing password file", []string{"user", "add", "--username", "bob", "--password-file", filepath.Join(dataDir, "nope")}, other, "no such file"},
		{"bad username", []string{"user", "add", "--username", "b\u00a0b", "--password-file", goodFile}, usage, "whitespace"},
		{"bad email", []string{"user", "add", "--username", "bob", "--email", "bob", "--password-file", goodFile}, usage, "plain address"},
		{"positional argument", []string{"user", "add", "bob", "--password-file", goodFile}, usage, "unexpected argument"},
		{"duplicate", []string{"user", "add", "--username", "alice", "--password-file", goodFile}, other, `"alice": user already exists; see "changecast user list"`},
		{"passwd unknown", []string{"user", "passwd", "--username", "bob", "--password-file", goodFile}, other, `user "bob" not found; see "changecast user list"`},
		{"disable unknown", []string{"user", "disable", "--username", "bob"}, other, `user "bob" not found; see "changecast user list"`},
		{"enable unknown", []string{"user", "enable", "--username", "bob"}, other, `user "bob" not found`},
		{"list with a flag of add", []string{"user", "list", "--admin"}, usage, "flag provided but not defined: -admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) > 1 {
				args = append(append([]string{}, args...), db...)
			}
			r := cli.run(t, args...)
			if r.err == nil {
				t.Fatalf("succeeded, stdout %q", r.stdout)
			}
			if code := exitCode(r.err, io.Discard); code != tc.code {
				t.Errorf("exit code %d, want %d (err %v)", code, tc.code, r.err)
			}
			if !strings.Contains(r.err.Error(), tc.msg) {
				t.Errorf("error %q, want it to contain %q", r.err, tc.msg)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}

	// A database URL's password stays out of the error.
	r := cli.run(t, "user", "list", "--database-url", "postgres://u:url-secret-123@127.0.0.1:1/db?connect_timeout=5")
	if r.err == nil || exitCode(r.err, io.Discard) != other {
		t.Errorf("unreachable database: got %v, want exit code 1", r.err)
	}
	// Actions other than add do not create an embedded cluster.
	empty := t.TempDir()
	r = cli.run(t, "user", "list", "--data-dir", empty)
	if r.err == nil || !strings.Contains(r.err.Error(), "no embedded PostgreSQL in "+filepath.Join(empty, "postgres")) {
		t.Errorf("list on an empty data dir: got %v", r.err)
	}
	if _, err := os.Stat(filepath.Join(empty, "postgres", "pgdata")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("list on an empty data dir created a cluster (stat: %v)", err)
	}

	// Help is not an error.
	for _, args := range [][]string{{"user", "help"}, {"user", "-h"}, {"user", "add", "-h"}} {
		r := cli.run(t, args...)
		if code := exitCode(r.err, io.Discard); code != 0 {
			t.Errorf("%v: exit code %d (%v)", args, code, r.err)
		}
		if !strings.Contains(r.stdout+r.stderr, "--password-file") {
			t.Errorf("%v: help does not mention --password-file:\n%s%s", args, r.stdout, r.stderr)
		}
	}
	if r := cli.ok(t, "help"); !strings.Contains(r.stdout, "changecast user ") {
		t.Errorf("changecast help does not list the user command:\n%s", r.stdout)
	}

	if err := authenticate(t, url, "alice", goodPW); err != nil {
		t.Errorf("alice's password changed by a failed command: %v", err)
	}
	cli.noSecrets(t, goodPW, shortPW, "url-secret-123")
}

// With no database URL, "user add" starts the embedded PostgreSQL in the
// data dir (creating it), adds the user and stops the server again; while
// a server runs there (serve), the user commands attach to it instead.
func TestUser_EmbeddedDefault(t *testing.T) {
	clearUserEnv(t)
	dataDir := storetest.TempDir(t)
	pgDir := filepath.Join(dataDir, "postgres")
	var cli userCLI
	const pw = "embedded admin password"

	r := cli.ok(t, "user", "add", "--data-dir", dataDir, "--username", "admin", "--admin", "--password-file", writePassword(t, pw))
	if r.stdout != "user \"admin\" added (admin)\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storetest.StartTimeout)
	defer cancel()
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: pgDir}); !errors.Is(err, localpg.ErrNotRunning) {
		t.Fatalf("after user add, localpg.Attach = %v; want the embedded server stopped (ErrNotRunning)", err)
	}

	// Start it as serve would; the commands now attach and leave it running.
	local, err := localpg.Start(ctx, localpg.Config{Dir: pgDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	if err := authenticate(t, local.URL(), "admin", pw); err != nil {
		t.Errorf("the user added through the embedded default cannot log in: %v", err)
	}
	cli.ok(t, "user", "disable", "--data-dir", dataDir, "--username", "admin")
	r = cli.ok(t, "user", "list", "--data-dir", dataDir)
	if !strings.Contains(r.stdout, "admin     yes    no") {
		t.Errorf("list via the running server:\n%s", r.stdout)
	}
	if err := authenticate(t, local.URL(), "admin", pw); !errors.Is(err, store.ErrBadCredentials) {
		t.Errorf("disabled admin logs in: %v", err)
	}
	if _, err := localpg.Attach(ctx, localpg.Config{Dir: pgDir}); err != nil {
		t.Errorf("the server a user command attached to is gone: %v", err)
	}
	if strings.Contains(r.stderr, "starting the embedded PostgreSQL") {
		t.Errorf("list started a server although one was running:\n%s", r.stderr)
	}
	cli.noSecrets(t, pw)
}
