package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/store"
)

// envUserPassword is the third way to give "changecast user" a password
// (after --password-file and --password-stdin). Passwords are never flags.
const envUserPassword = "CHANGECAST_USER_PASSWORD"

// userStdin is what --password-stdin reads. Tests replace it.
var userStdin io.Reader = os.Stdin

// maxPasswordLine bounds what is read for a password (file or stdin):
// the first line only, and bcrypt uses at most 72 bytes anyway.
const maxPasswordLine = 4096

const userUsage = `Usage:
  changecast user add     --username NAME [--admin] [--email E] [--full-name F] PASSWORD
  changecast user passwd  --username NAME PASSWORD   (also ends the user's existing tokens)
  changecast user disable --username NAME            (the user can no longer log in)
  changecast user enable  --username NAME
  changecast user list                               (username, admin, enabled, email)

PASSWORD is never a flag. Give it as one of:
  --password-file PATH    the file's first line
  --password-stdin        the first line of standard input
  env ` + envUserPassword + `
Passwords have 8 to 72 bytes (at least 8 characters) and no control characters.

Every action also takes --database-url (env ` + envDatabaseURL + `; empty = the
embedded PostgreSQL in <data-dir>/postgres, used while "changecast serve" runs
or started for the command), --journal-url (env ` + envJournalURL + `; users live
with the journal when serve keeps it apart), --data-dir, --log-level and
--log-format.
Run "changecast user <action> -h" for an action's flags.
`

// userSynopsis is each action's first usage line.
var userSynopsis = map[string]string{
	"add":     "changecast user add --username NAME [--admin] [--email E] [--full-name F] (--password-file PATH | --password-stdin | env " + envUserPassword + ")",
	"passwd":  "changecast user passwd --username NAME (--password-file PATH | --password-stdin | env " + envUserPassword + ")",
	"disable": "changecast user disable --username NAME",
	"enable":  "changecast user enable --username NAME",
	"list":    "changecast user list",
}

// errNoPassword lists the ways to give a password.
var errNoPassword = errors.New("no password given; use --password-file PATH, --password-stdin (first line of standard input), or env " + envUserPassword + " (passwords are never flags)")

// userFlags are the settings of every "changecast user" action.
type userFlags struct {
	common
	databaseURL string
	journalURL  string // --journal-url: users live with the journal
	username    string
	// passwordFile and passwordStdin: add and passwd only.
	passwordFile  string
	passwordStdin bool
}

// runUser manages the users who can log in: add, passwd, disable, enable
// and list. It works on the database serve watches: --database-url, or the
// embedded default in <data-dir>/postgres.
func runUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return usageError{errors.New("user: missing action; want add, passwd, disable, enable or list")}
	}
	action := args[0]
	switch action {
	case "add", "passwd", "disable", "enable", "list":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, userUsage)
		return nil
	default:
		fmt.Fprint(stderr, userUsage)
		return usageError{fmt.Errorf("user: unknown action %q; want add, passwd, disable, enable or list", action)}
	}

	fs := flag.NewFlagSet("user "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\nFlags:\n", userSynopsis[action])
		fs.PrintDefaults()
	}
	var f userFlags
	f.common.register(fs)
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL; empty uses the embedded PostgreSQL in the data dir (env "+envDatabaseURL+")")
	fs.StringVar(&f.journalURL, "journal-url", "", "the journal database of a serve run with --journal-url, where users live: a PostgreSQL URL, or "+journalLocal+" for the embedded PostgreSQL in the data dir; it overrides --database-url (env "+envJournalURL+")")
	var (
		email, fullName string
		admin           bool
	)
	if action != "list" {
		fs.StringVar(&f.username, "username", "", "the user's login name (required)")
	}
	if action == "add" || action == "passwd" {
		fs.StringVar(&f.passwordFile, "password-file", "", "read the password from the first line of this file")
		fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	}
	if action == "add" {
		fs.BoolVar(&admin, "admin", false, "make the user an administrator (default: viewer)")
		fs.StringVar(&email, "email", "", "the user's email address (optional)")
		fs.StringVar(&fullName, "full-name", "", "the user's full name (optional)")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if action != "list" && f.username == "" {
		return usageError{fmt.Errorf("user %s: --username is required", action)}
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	var password string
	if action == "add" || action == "passwd" {
		// Before touching the database: a missing password is a usage
		// error, and starting PostgreSQL for nothing takes seconds.
		if password, err = readUserPassword(f); err != nil {
			return fmt.Errorf("user %s: %w", action, err)
		}
	}

	db, closeDB, err := openUserDB(ctx, f, action, log)
	if err != nil {
		return fmt.Errorf("user %s: %w", action, err)
	}
	defer closeDB()

	switch action {
	case "add":
		u, err := db.AddUser(ctx, store.NewUser{Username: f.username, Email: email, FullName: fullName, Password: password, Admin: admin})
		if err != nil {
			return userError(f.username, err)
		}
		role := "viewer"
		if u.IsAdmin {
			role = "admin"
		}
		fmt.Fprintf(stdout, "user %q added (%s)\n", u.Username, role)
	case "passwd":
		if err := db.SetPassword(ctx, f.username, password); err != nil {
			return userError(f.username, err)
		}
		fmt.Fprintf(stdout, "password of user %q changed; every token issued to %q before now no longer works\n", f.username, f.username)
	case "disable", "enable":
		enabled := action == "enable"
		if err := db.SetUserEnabled(ctx, f.username, enabled); err != nil {
			return userError(f.username, err)
		}
		if enabled {
			fmt.Fprintf(stdout, "user %q enabled\n", f.username)
		} else {
			fmt.Fprintf(stdout, "user %q disabled; it can no longer log in and its tokens no longer work\n", f.username)
		}
	case "list":
		users, err := db.ListUsers(ctx)
		if err != nil {
			return err
		}
		return printUsers(stdout, users)
	}
	return nil
}

// userError turns a store error into what the user should read and do.
// Store errors already name their step ("add user \"alice\": ...").
func userError(username string, err error) error {
	switch {
	case errors.Is(err, store.ErrUserNotFound):
		return fmt.Errorf("user %q not found; see \"changecast user list\"", username)
	case errors.Is(err, store.ErrUserExists):
		return fmt.Errorf("%w; see \"changecast user list\", or change the password with \"changecast user passwd --username %s\"", err, username)
	case errors.Is(err, store.ErrInvalidUser), errors.Is(err, store.ErrInvalidPassword):
		return usageError{err}
	default:
		return err
	}
}

// readUserPassword returns the password from --password-file,
// --password-stdin or CHANGECAST_USER_PASSWORD, validated. Errors never
// contain the password.
func readUserPassword(f userFlags) (string, error) {
	var (
		pw, source string
		err        error
	)
	switch {
	case f.passwordFile != "" && f.passwordStdin:
		return "", usageError{errors.New("give the password with only one of --password-file and --password-stdin")}
	case f.passwordFile != "":
		source = "--password-file " + f.passwordFile
		file, ferr := os.Open(f.passwordFile)
		if ferr != nil {
			return "", fmt.Errorf("read password: %w", ferr)
		}
		pw, err = firstLine(file)
		file.Close()
		if err != nil {
			return "", fmt.Errorf("read password from %s: %w", f.passwordFile, err)
		}
	case f.passwordStdin:
		source = "--password-stdin"
		if pw, err = firstLine(userStdin); err != nil {
			return "", fmt.Errorf("read password from standard input: %w", err)
		}
	default:
		v, ok := os.LookupEnv(envUserPassword)
		if !ok || v == "" {
			return "", usageError{errNoPassword}
		}
		source = envUserPassword
		pw = strings.TrimRight(v, "\r\n")
	}
	if err := store.ValidatePassword(pw); err != nil {
		return "", usageError{fmt.Errorf("%s: %w", source, err)}
	}
	return pw, nil
}

// firstLine reads r's first line without its line ending.
func firstLine(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxPasswordLine), maxPasswordLine).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}

// openUserDB opens the database of a user command, migrated (users table
// included): --database-url when given, else the embedded PostgreSQL in
// <data-dir>/postgres — attached when another process (serve) runs it,
// otherwise started for the command. closeDB closes the connection and
// stops a server this command started.
func openUserDB(ctx context.Context, f userFlags, action string, log *slog.Logger) (db *store.DB, closeDB func(), err error) {
	url := f.databaseURL
	if url == "" {
		url = os.Getenv(envDatabaseURL) // not the flag's default: usage would print its password
	}
	jurl := f.journalURL
	if jurl == "" {
		jurl = os.Getenv(envJournalURL)
	}
	if isNATSURL(jurl) {
		jurl = "" // the JetStream journal keeps users in the watched database
	}
	// With the journal apart (serve --journal-url), users live with it.
	journalOnly := jurl != ""
	switch jurl {
	case "":
	case journalLocal:
		url = ""
	default:
		url = jurl
	}
	var local *localpg.Cluster
	if url == "" {
		dir := filepath.Join(f.dataDir, "postgres")
		local, err = embeddedForUser(ctx, dir, action, log)
		if err != nil {
			return nil, nil, err
		}
		url = local.URL()
	}
	stopLocal := func() {
		if local == nil {
			return
		}
		if err := local.Close(); err != nil {
			log.Error("stop embedded PostgreSQL", "err", err)
		}
	}
	db, err = store.Open(ctx, url)
	if err != nil {
		stopLocal()
		return nil, nil, err
	}
	// Login users live in the users table of the garm domain (which the
	// embedded default uses), in the journal database's when the journal
	// is kept apart, and otherwise in changecast.users: an application's
	// database gets nothing but schema changecast (store.UsersTable).
	var migrate func() error
	switch {
	case journalOnly:
		migrate = func() error { return db.MigrateJournal(ctx) }
	case local != nil:
		migrate = func() error { return db.Migrate(ctx, entities.DefaultRegistry()) }
	default:
		migrate = func() error { return db.MigrateOwn(ctx) }
	}
	if err := migrate(); err != nil {
		db.Close()
		stopLocal()
		return nil, nil, err
	}
	return db, func() { db.Close(); stopLocal() }, nil
}

// embeddedForUser returns the embedded PostgreSQL in dir: attached when
// it runs (its Close then leaves it running), else started. Only add may
// create the cluster: the other actions on a data dir without one would
// only find no users, which more likely means a wrong --data-dir.
func embeddedForUser(ctx context.Context, dir, action string, log *slog.Logger) (*localpg.Cluster, error) {
	cfg := localpg.Config{Dir: dir}
	local, err := localpg.Attach(ctx, cfg)
	if err == nil {
		log.Debug("using the running embedded PostgreSQL", "dir", dir)
		return local, nil
	}
	if !errors.Is(err, localpg.ErrNotRunning) {
		return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
	}
	if action != "add" {
		if _, err := os.Stat(filepath.Join(dir, "pgdata", "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no embedded PostgreSQL in %s yet (\"changecast serve\" or \"changecast user add\" creates it); check --data-dir, or give --database-url", dir)
		}
	}
	if err := ensureDataDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	log.Info("starting the embedded PostgreSQL for this command", "dir", dir)
	local, err = localpg.Start(ctx, cfg)
	if errors.Is(err, localpg.ErrAlreadyRunning) {
		// serve started it meanwhile.
		local, err = localpg.Attach(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("start embedded PostgreSQL: %w", err)
	}
	return local, nil
}

// printUsers writes the user table. It never shows hashes or generations.
func printUsers(w io.Writer, users []entities.User) error {
	if len(users) == 0 {
		_, err := fmt.Fprintln(w, "no users; add one with \"changecast user add --username NAME --admin --password-file PATH\"")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tADMIN\tENABLED\tEMAIL")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Username, yesNo(u.IsAdmin), yesNo(u.Enabled), u.Email)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
