package localpg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoServerBinaries is returned (wrapped, with an install hint) by
// Start when initdb, pg_ctl and postgres cannot be found.
var ErrNoServerBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")

// ErrAlreadyRunning is returned (wrapped) by Start when a live server
// already owns the data directory.
var ErrAlreadyRunning = errors.New("a PostgreSQL server is already running")

// Config configures a PostgreSQL cluster that changecast runs itself (the
// embedded default that serve starts when no database URL is given, and
// the clusters tests use).
type Config struct {
	// Dir holds everything: the cluster in Dir/pgdata, the unix socket in
	// Dir/run, the server log in Dir/postgres.log, the password file for
	// TCP connections in Dir/pgpass. Created if missing. Required.
	Dir string
	// BinDir holds initdb, pg_ctl and postgres. Default: $CHANGECAST_PG_BIN,
	// else the newest /usr/lib/postgresql/*/bin with a postgres binary,
	// else the directory of postgres (or pg_ctl) on PATH.
	BinDir string
	// Port is the TCP port on 127.0.0.1 (it also names the unix socket).
	// Zero means the port of the previous start in Dir if it is free, else
	// a free port.
	Port int
	// OSUser is the OS user the server runs as when changecast runs as
	// root (PostgreSQL refuses to run as root). Default: "postgres".
	// Ignored otherwise: the server runs as the calling user.
	OSUser string
	// User is the database superuser role. Default: "changecast".
	User string
	// Database is created on first start. Default: "changecast".
	Database string
	// Settings are extra postgresql.conf settings (e.g. fsync=off for
	// tests). They override changecast's own, are rewritten on every
	// Start, and are overridden in turn by ALTER SYSTEM.
	Settings map[string]string
}

// Default values of Config fields.
const (
	DefaultOSUser   = "postgres"
	DefaultUser     = "changecast"
	DefaultDatabase = "changecast"
)

// defaultStartTimeout bounds pg_ctl -w when the context has no deadline.
const defaultStartTimeout = 60 * time.Second

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// minus the terminating NUL).
const maxSocketPath = 107

// Cluster is a PostgreSQL cluster started by Start (or attached to by
// Attach). Its methods are safe for concurrent use.
//
// The server runs in its own process group so that a Ctrl-C aimed at
// changecast does not stop PostgreSQL before changecast has shut down in
// order; Close stops it. If changecast dies without Close, the server keeps
// running and the next Start on the same Dir reports ErrAlreadyRunning.
type Cluster struct {
	cfg      Config
	pgdata   string
	runDir   string
	logPath  string
	passPath string
	cred     *syscall.Credential // nil unless running as root
	port     atomic.Int64        // set before the first start, then fixed

	// mu serialises starts and stops.
	mu struct {
		sync.Mutex
		running bool
		closed  bool
	}
}

// Start starts the cluster in cfg.Dir, creating it (initdb) on first
// use, and creates cfg.Database if missing. It returns once the server
// accepts connections; ctx bounds the whole start.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start local postgres: localpg.Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start local postgres: %w", err)
	}
	cfg.Dir = dir
	if cfg.OSUser == "" {
		cfg.OSUser = DefaultOSUser
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("start local postgres: port %d out of range", cfg.Port)
	}
	for k := range cfg.Settings {
		if !settingName.MatchString(k) {
			return nil, fmt.Errorf("start local postgres: invalid setting name %q", k)
		}
	}
	bin, err := findBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	cfg.BinDir = bin

	l := &Cluster{
		cfg:      cfg,
		pgdata:   filepath.Join(dir, "pgdata"),
		runDir:   filepath.Join(dir, "run"),
		logPath:  filepath.Join(dir, "postgres.log"),
		passPath: filepath.Join(dir, "pgpass"),
	}
	if os.Geteuid() == 0 {
		cred, groups, err := lookupCredential(cfg.OSUser)
		if err != nil {
			return nil, fmt.Errorf("start local postgres: %w", err)
		}
		l.cred = cred
		if err := prepareDir(dir, 0o711); err != nil {
			return nil, err
		}
		if err := checkTraversable(dir, cred.Uid, groups, cfg.OSUser); err != nil {
			return nil, err
		}
	} else if err := prepareDir(dir, 0o700); err != nil {
		return nil, err
	}
	if n := len(filepath.Join(l.runDir, ".s.PGSQL.65535")); n > maxSocketPath {
		return nil, fmt.Errorf("start local postgres: data dir %s is too long for a unix socket path (%d bytes, limit %d); choose a shorter path", dir, n, maxSocketPath)
	}
	if err := l.checkNotRunning(); err != nil {
		return nil, err
	}
	if err := l.mkdirOwned(l.runDir); err != nil {
		return nil, err
	}

	fresh, err := l.ensureCluster(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.configure(); err != nil {
		return nil, err
	}
	if err := l.ensureLogFile(); err != nil {
		return nil, err
	}

	// Pick a port and start; with an automatic port, retry on a lost race
	// for the port with another process.
	for attempt := 0; ; attempt++ {
		port, auto, err := l.choosePort(attempt > 0)
		if err != nil {
			return nil, err
		}
		if err := l.writeConf(port); err != nil {
			return nil, err
		}
		l.port.Store(int64(port))
		err = l.pgCtl(ctx, "start", "-l", l.logPath)
		if err == nil {
			break
		}
		if auto && attempt < 3 && errors.Is(err, errPortInUse) && ctx.Err() == nil {
			continue
		}
		l.stopAfterFailedStart()
		return nil, fmt.Errorf("start local postgres in %s: %w", dir, err)
	}
	l.mu.running = true
	_ = os.WriteFile(filepath.Join(dir, "port"), []byte(strconv.Itoa(l.Port())+"\n"), 0o644)

	if err := l.bootstrap(ctx, fresh); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("start local postgres in %s: %w", dir, err)
	}
	return l, nil
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// URL returns the URL of cfg.Database over the unix socket (trust
// authentication; the socket directory is private to the server user).
func (l *Cluster) URL() string { return l.DatabaseURL(l.cfg.Database) }

// DatabaseURL returns the URL of database db over the unix socket.
func (l *Cluster) DatabaseURL(db string) string {
	q := url.Values{}
	q.Set("host", l.runDir)
	q.Set("port", strconv.Itoa(l.Port()))
	u := url.URL{Scheme: "postgres", User: url.User(l.cfg.User), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// PsqlCommand returns the shell command a human runs to connect with psql
// over TCP (scram-sha-256). The password stays in the pass file Dir/pgpass
// (mode 0600, owned by the calling user), named by PGPASSFILE; it is never
// printed.
func (l *Cluster) PsqlCommand() string {
	psql := "psql"
	if _, err := exec.LookPath("psql"); err != nil {
		psql = shellQuote(filepath.Join(l.cfg.BinDir, "psql"))
	}
	u := url.URL{Scheme: "postgres", User: url.User(l.cfg.User), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port())), Path: "/" + l.cfg.Database}
	us := u.String()
	if strings.ContainsAny(us, "\"$`\\!") {
		us = shellQuote(us)
	} else {
		us = `"` + us + `"`
	}
	return "PGPASSFILE=" + shellQuote(l.passPath) + " " + psql + " " + us
}

// Port returns the server's TCP port (also the unix socket's number).
func (l *Cluster) Port() int { return int(l.port.Load()) }

// Dir returns the cluster's directory (Config.Dir, made absolute).
func (l *Cluster) Dir() string { return l.cfg.Dir }

// Config returns the configuration with defaults filled in.
func (l *Cluster) Config() Config { return l.cfg }

// Restart restarts the server (pg_ctl restart -m fast), dropping every
// connection. For tests.
func (l *Cluster) Restart(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return errors.New("restart local postgres: closed")
	}
	if err := l.pgCtl(ctx, "restart", "-m", "fast", "-l", l.logPath); err != nil {
		return fmt.Errorf("restart local postgres: %w", err)
	}
	l.mu.running = true
	return nil
}

// Stop stops the server (pg_ctl stop -m fast) and waits; Start starts it
// again. Stopping a stopped server does nothing.
func (l *Cluster) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopLocked(ctx)
}

// Start starts a server stopped by Stop, on the same port.
func (l *Cluster) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return errors.New("start local postgres: closed")
	}
	if l.mu.running {
		return nil
	}
	if err := l.pgCtl(ctx, "start", "-l", l.logPath); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	l.mu.running = true
	return nil
}

// Close stops the server (pg_ctl stop -m fast) and waits for it to exit.
// It is idempotent; the data directory is kept.
func (l *Cluster) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.closed = true
	return l.stopLocked(context.Background())
}

func (l *Cluster) stopLocked(ctx context.Context) error {
	if !l.mu.running {
		return nil
	}
	if err := l.pgCtl(ctx, "stop", "-m", "fast"); err != nil {
		if !l.serverAlive() {
			l.mu.running = false
			return nil
		}
		return fmt.Errorf("stop local postgres: %w", err)
	}
	l.mu.running = false
	return nil
}

// stopAfterFailedStart stops a server that pg_ctl may have left starting
// (for example when ctx expired during pg_ctl -w).
func (l *Cluster) stopAfterFailedStart() {
	if l.serverAlive() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = l.pgCtl(ctx, "stop", "-m", "immediate")
	}
}

// ---- cluster creation ----

// ensureCluster runs initdb unless Dir/pgdata already holds a cluster. It
// reports whether it created one.
func (l *Cluster) ensureCluster(ctx context.Context) (bool, error) {
	verPath := filepath.Join(l.pgdata, "PG_VERSION")
	if b, err := os.ReadFile(verPath); err == nil {
		return false, l.checkVersion(ctx, strings.TrimSpace(string(b)))
	}
	if ents, err := os.ReadDir(l.pgdata); err == nil && len(ents) > 0 {
		return false, fmt.Errorf("start local postgres: %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); remove it or choose another data dir", l.pgdata)
	}
	// initdb writes into a sibling directory that is renamed into place
	// only once it has finished: a start interrupted during initdb
	// (Ctrl-C on the first run) leaves no half-made cluster behind.
	staging := l.pgdata + ".initdb"
	if err := os.RemoveAll(staging); err != nil {
		return false, fmt.Errorf("initdb: remove the leftover %s: %w", staging, err)
	}
	if err := l.mkdirOwned(staging); err != nil {
		return false, err
	}
	defer os.RemoveAll(staging) // gone after the rename; a failure's leftovers otherwise
	password, err := randomHex(24)
	if err != nil {
		return false, fmt.Errorf("initdb: generate password: %w", err)
	}
	pwfile, err := l.writeOwnedTemp(password + "\n")
	if err != nil {
		return false, fmt.Errorf("initdb: %w", err)
	}
	defer os.Remove(pwfile)

	args := []string{
		"-D", staging,
		"-U", l.cfg.User,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--pwfile=" + pwfile,
		"--encoding=UTF8",
		"--locale=C",
	}
	if strings.EqualFold(l.cfg.Settings["fsync"], "off") {
		// A cluster that will run without fsync gains nothing from
		// initdb's final sync; skipping it saves seconds per test cluster.
		args = append(args, "--no-sync")
	}
	if out, err := l.command(ctx, "initdb", args...).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("initdb %s: %w", l.pgdata, ctx.Err())
		}
		return false, fmt.Errorf("initdb %s: %w: %s", l.pgdata, err, lastLines(out, 15))
	}
	// pgdata is missing or empty (checked above): rename replaces it.
	if err := os.Rename(staging, l.pgdata); err != nil {
		return false, fmt.Errorf("initdb: move the new cluster into %s: %w", l.pgdata, err)
	}
	if err := l.writePassFile(password); err != nil {
		return false, err
	}
	return true, nil
}

// configure writes changecast's access rules and makes postgresql.conf
// include changecast.conf. It runs on every start, so a cluster whose first
// start failed half-way heals.
func (l *Cluster) configure() error {
	// Trust on the private unix socket, scram over loopback TCP, for
	// ordinary and replication connections alike.
	hba := "# Written by changecast on every start; edits are lost.\n" +
		"# TYPE  DATABASE        USER            ADDRESS                 METHOD\n" +
		"local   all             all                                     trust\n" +
		"local   replication     all                                     trust\n" +
		"host    all             all             127.0.0.1/32            scram-sha-256\n" +
		"host    replication     all             127.0.0.1/32            scram-sha-256\n"
	if err := l.writeOwned(filepath.Join(l.pgdata, "pg_hba.conf"), hba); err != nil {
		return err
	}
	const include = "include_if_exists = 'changecast.conf'"
	confPath := filepath.Join(l.pgdata, "postgresql.conf")
	conf, err := os.ReadFile(confPath)
	if err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	if bytes.Contains(conf, []byte("\n"+include)) {
		return nil
	}
	f, err := os.OpenFile(confPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	_, werr := f.WriteString("\n# changecast's settings, rewritten on every start.\n" + include + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	return nil
}

// checkVersion compares the cluster's major version with the binaries'.
func (l *Cluster) checkVersion(ctx context.Context, clusterVersion string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, "postgres"), "-V").Output()
	if err != nil {
		return nil // let pg_ctl report whatever is wrong
	}
	m := regexp.MustCompile(`\(PostgreSQL\) (\d+)`).FindSubmatch(out)
	if m != nil && string(m[1]) != clusterVersion {
		return fmt.Errorf("start local postgres: the cluster in %s was created by PostgreSQL %s but the binaries in %s are PostgreSQL %s; set CHANGECAST_PG_BIN to PostgreSQL %s's bin directory, or move the data dir aside to start afresh", l.pgdata, clusterVersion, l.cfg.BinDir, m[1], clusterVersion)
	}
	return nil
}

// writeConf writes changecast.conf, which postgresql.conf includes.
func (l *Cluster) writeConf(port int) error {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": l.runDir,
		"unix_socket_permissions": "0700",
		"wal_level":               "logical",
		"max_wal_senders":         "10",
		"max_replication_slots":   "10",
		// The superuser is called changecast, like changecast's own
		// schema: with the default "$user", public, unqualified names
		// would resolve to that schema. Entity tables live in public.
		"search_path": "public",
	}
	for k, v := range l.cfg.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by changecast on every start; edits are lost. Use ALTER SYSTEM instead.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	return l.writeOwned(filepath.Join(l.pgdata, "changecast.conf"), b.String())
}

// bootstrap creates the database and, when the password file is gone,
// sets a new password and writes a new one.
func (l *Cluster) bootstrap(ctx context.Context, fresh bool) error {
	conn, err := pgx.Connect(ctx, l.DatabaseURL("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", l.cfg.Database).Scan(&exists); err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{l.cfg.Database}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", l.cfg.Database, err)
		}
	}
	if _, err := os.Stat(l.passPath); !fresh && errors.Is(err, os.ErrNotExist) {
		password, err := randomHex(24)
		if err != nil {
			return err
		}
		// Keep the statement out of the server log: log_statement could be
		// set to ddl or all, and a failing statement is logged by default;
		// the log's tail is copied into start-up errors.
		for _, set := range []string{"SET log_statement = 'none'", "SET log_min_error_statement = 'panic'"} {
			if _, err := conn.Exec(ctx, set); err != nil {
				return fmt.Errorf("reset password of %s: %w", l.cfg.User, err)
			}
		}
		// The password is hex, so quoting it is trivial.
		if _, err := conn.Exec(ctx, "ALTER ROLE "+pgx.Identifier{l.cfg.User}.Sanitize()+" PASSWORD '"+password+"'"); err != nil {
			return fmt.Errorf("reset password of %s: %w", l.cfg.User, err)
		}
		if err := l.writePassFile(password); err != nil {
			return err
		}
	}
	return nil
}

func (l *Cluster) writePassFile(password string) error {
	var b strings.Builder
	for _, host := range []string{"127.0.0.1", "localhost"} {
		fmt.Fprintf(&b, "%s:*:*:%s:%s\n", host, pgpassEscape(l.cfg.User), password)
	}
	tmp := l.passPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", l.passPath, err)
	}
	if err := os.Rename(tmp, l.passPath); err != nil {
		return fmt.Errorf("write %s: %w", l.passPath, err)
	}
	return nil
}

func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// ---- ports ----

var errPortInUse = errors.New("port in use")

// choosePort returns the port to start on and whether it was chosen
// automatically.
func (l *Cluster) choosePort(retry bool) (int, bool, error) {
	if l.cfg.Port != 0 {
		return l.cfg.Port, false, nil
	}
	if !retry {
		if b, err := os.ReadFile(filepath.Join(l.cfg.Dir, "port")); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 && p <= 65535 && portFree(p) {
				return p, true, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, true, fmt.Errorf("start local postgres: find a free port: %w", err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p, true, nil
}

func portFree(p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// ---- processes ----

// command returns a command running bin/name as the server user.
func (l *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, name), args...)
	cmd.Dir = l.cfg.Dir
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		// PGDATA, PGPORT, PGHOST... of the caller must not leak into
		// the server or its tools.
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	// Own process group: a terminal's Ctrl-C reaches changecast, which
	// then stops the server in order (see Cluster).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if l.cred != nil {
		cmd.SysProcAttr.Credential = l.cred
		cmd.Env = append(cmd.Env, "HOME="+l.cfg.Dir)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// pgCtl runs pg_ctl -w with the timeout of ctx. On failure the error
// carries pg_ctl's output and the end of the server log.
func (l *Cluster) pgCtl(ctx context.Context, action string, args ...string) error {
	timeout := defaultStartTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	secs := int(math.Ceil(timeout.Seconds()))
	if secs < 1 {
		secs = 1
	}
	full := append([]string{action, "-w", "-s", "-t", strconv.Itoa(secs), "-D", l.pgdata}, args...)
	var logSize int64
	if fi, err := os.Stat(l.logPath); err == nil {
		logSize = fi.Size()
	}
	out, err := l.command(ctx, "pg_ctl", full...).CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	logTail := l.logSince(logSize)
	msg := fmt.Sprintf("pg_ctl %s: %v", action, err)
	if s := strings.TrimSpace(string(out)); s != "" {
		msg += ": " + s
	}
	if logTail != "" {
		msg += "\nlast lines of " + l.logPath + ":\n" + logTail
	}
	if strings.Contains(logTail, "Address already in use") {
		return fmt.Errorf("%s: %w", msg, errPortInUse)
	}
	return errors.New(msg)
}

// logSince returns the last lines the server logged after offset.
func (l *Cluster) logSince(offset int64) string {
	b, err := os.ReadFile(l.logPath)
	if err != nil {
		return ""
	}
	if offset > 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	return lastLines(b, 20)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// checkNotRunning returns ErrAlreadyRunning when postmaster.pid names a
// live postgres process.
func (l *Cluster) checkNotRunning() error {
	if pid, ok := l.pidFromFile(); ok && processIsPostgres(pid) {
		return fmt.Errorf("%w on %s (pid %d): is another changecast using this data dir?", ErrAlreadyRunning, l.cfg.Dir, pid)
	}
	return nil
}

func (l *Cluster) serverAlive() bool {
	pid, ok := l.pidFromFile()
	return ok && processIsPostgres(pid)
}

func (l *Cluster) pidFromFile() (int, bool) {
	f, err := os.Open(filepath.Join(l.pgdata, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processIsPostgres reports whether pid is alive and, where /proc tells,
// a postgres process (a stale pid file's pid may have been reused).
func processIsPostgres(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": comm may contain spaces; the state follows the
	// last ')'. A zombie has exited.
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return true
	}
	comm := s[open+1 : end]
	return s[end+2] != 'Z' && (strings.HasPrefix(comm, "postgres") || strings.HasPrefix(comm, "postmaster"))
}

// ---- binaries ----

func findBinDir(configured string) (string, error) {
	var tried []string
	check := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if configured != "" {
		if check(configured) {
			return filepath.Abs(configured)
		}
		return "", fmt.Errorf("%w in %s; install them (Debian/Ubuntu: apt-get install -y postgresql) or set CHANGECAST_PG_BIN", ErrNoServerBinaries, configured)
	}
	if env := os.Getenv("CHANGECAST_PG_BIN"); env != "" {
		if check(env) {
			return filepath.Abs(env)
		}
		return "", fmt.Errorf("%w in %s (CHANGECAST_PG_BIN); install them (Debian/Ubuntu: apt-get install -y postgresql) or set CHANGECAST_PG_BIN", ErrNoServerBinaries, env)
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(matches, func(i, j int) bool { return pgDirVersion(matches[i]) > pgDirVersion(matches[j]) })
	for _, m := range matches {
		if dir := filepath.Dir(m); check(dir) {
			return dir, nil
		}
	}
	tried = append(tried, "/usr/lib/postgresql/*/bin")
	for _, name := range []string{"postgres", "pg_ctl"} {
		if p, err := exec.LookPath(name); err == nil {
			if dir := filepath.Dir(p); check(dir) {
				return filepath.Abs(dir)
			}
		}
	}
	tried = append(tried, "PATH")
	return "", fmt.Errorf("%w in %s; install them (Debian/Ubuntu: apt-get install -y postgresql) or set CHANGECAST_PG_BIN", ErrNoServerBinaries, strings.Join(tried, " or "))
}

// pgDirVersion extracts the version from /usr/lib/postgresql/<v>/bin/postgres.
func pgDirVersion(p string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
	return v
}

// ---- files and ownership ----

func lookupCredential(name string) (*syscall.Credential, []uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, nil, fmt.Errorf("running as root, so PostgreSQL must run as another OS user, but user %q does not exist (%v); create it (useradd --system %s) or set another with localpg.Config.OSUser", name, err, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, nil, fmt.Errorf("user %q: non-numeric uid/gid %s/%s", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return nil, nil, fmt.Errorf("OS user %q is root; PostgreSQL refuses to run as root, set localpg.Config.OSUser to an unprivileged user", name)
	}
	groups := []uint32{uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != uint32(gid) {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups[1:]}, groups, nil
}

// prepareDir creates dir with mode if it does not exist.
func prepareDir(dir string, mode os.FileMode) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("start local postgres: create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("start local postgres: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	return nil
}

// checkTraversable checks that the server user can reach dir: every
// directory from / to dir must grant it search (x) permission.
func checkTraversable(dir string, uid uint32, groups []uint32, osUser string) error {
	p := dir
	var chain []string
	for {
		chain = append(chain, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		d := chain[i]
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("start local postgres: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var can bool
		switch {
		case st.Uid == uid:
			can = mode&0o100 != 0
		case containsGID(groups, st.Gid):
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			return fmt.Errorf("start local postgres: running as root, PostgreSQL runs as OS user %s, which cannot reach %s because %s (mode %04o, owner uid %d) is not traversable by %s; run `chmod o+x %s` or choose a data dir that %s can reach (e.g. under /var/lib or /tmp)", osUser, dir, d, mode, st.Uid, osUser, shellQuote(d), osUser)
		}
	}
	return nil
}

func containsGID(list []uint32, g uint32) bool {
	for _, v := range list {
		if v == g {
			return true
		}
	}
	return false
}

// mkdirOwned creates dir with mode 0700, owned by the server user.
func (l *Cluster) mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("start local postgres: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	return l.chown(dir)
}

func (l *Cluster) chown(path string) error {
	if l.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(l.cred.Uid), int(l.cred.Gid)); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	return nil
}

// writeOwned writes a file (mode 0600) owned by the server user.
func (l *Cluster) writeOwned(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	if err := l.chown(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	return nil
}

// writeOwnedTemp writes content to a new file in Dir readable only by the
// server user and returns its path.
func (l *Cluster) writeOwnedTemp(content string) (string, error) {
	f, err := os.CreateTemp(l.cfg.Dir, ".pwfile-*")
	if err != nil {
		return "", err
	}
	_, werr := f.WriteString(content)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	if err := l.chown(f.Name()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func (l *Cluster) ensureLogFile() error {
	f, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("start local postgres: %w", err)
	}
	f.Close()
	return l.chown(l.logPath)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && !bytes.ContainsAny([]byte(s), " \t\n'\"\\$`&|;<>()*?[]{}!#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
