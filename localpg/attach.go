package localpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotRunning is returned (wrapped) by Attach when no server is running
// in the directory.
var ErrNotRunning = errors.New("no embedded PostgreSQL server is running")

// attachPoll is how often Attach re-reads postmaster.pid while the
// server is starting.
const attachPoll = 50 * time.Millisecond

// postmaster.pid lines (PostgreSQL's pidfile.h), counted from 1.
const (
	pidLinePort      = 4
	pidLineSocketDir = 5
	pidLineStatus    = 8
)

// Attach returns a handle for a cluster in cfg.Dir that another process
// (serve) is running, without starting or owning it: its URL reaches the
// running server (port from postmaster.pid, password from the pass file
// Start wrote). ErrNotRunning when no server is running there.
//
// cfg's defaults are those of Start (User, Database); Port, OSUser and
// Settings are ignored: the running server's own port and socket directory
// (from postmaster.pid) are used. URL and DatabaseURL reach the server over
// its unix socket; PsqlCommand authenticates with the pass file. A server
// still starting is waited for (bounded by ctx, 60 s without a deadline);
// one shutting down is waited out and then reported as ErrNotRunning.
//
// The handle never stops or starts the server: Close and Stop do nothing,
// and Start and Restart fail (the process that started the server owns it).
func Attach(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("attach to local postgres: localpg.Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("attach to local postgres: %w", err)
	}
	cfg.Dir = dir
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	// The binaries only serve PsqlCommand's fallback; attaching needs none.
	if bin, err := findBinDir(cfg.BinDir); err == nil {
		cfg.BinDir = bin
	}
	l := &Cluster{
		cfg:      cfg,
		pgdata:   filepath.Join(dir, "pgdata"),
		runDir:   filepath.Join(dir, "run"),
		logPath:  filepath.Join(dir, "postgres.log"),
		passPath: filepath.Join(dir, "pgpass"),
	}
	// Owned by another process: Close and Stop find nothing running to
	// stop, Start and Restart refuse.
	l.mu.closed = true

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	var lastErr error
	for {
		ready, err := l.readPidFile()
		if err != nil {
			return nil, fmt.Errorf("attach to local postgres in %s: %w", dir, err)
		}
		if ready {
			lastErr = l.ping(ctx)
			if lastErr == nil {
				return l, nil
			}
			// The server answered and refused (unknown role or
			// database, ...): waiting will not help. Starting or
			// shutting down (class 57) and too many connections
			// (class 53) may pass.
			if pgErr := (*pgconn.PgError)(nil); errors.As(lastErr, &pgErr) && !strings.HasPrefix(pgErr.Code, "57") && !strings.HasPrefix(pgErr.Code, "53") {
				return nil, fmt.Errorf("attach to local postgres in %s: %w", dir, lastErr)
			}
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("attach to local postgres in %s: the server is running but did not accept connections in time", dir)
			if lastErr != nil {
				return nil, fmt.Errorf("%s: %w", msg, lastErr)
			}
			return nil, fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-time.After(attachPoll):
		}
	}
}

// readPidFile reads postmaster.pid and sets the port and socket directory
// from it. It reports whether the server is ready for connections, or
// ErrNotRunning when no live server owns the directory.
func (l *Cluster) readPidFile() (ready bool, err error) {
	b, err := os.ReadFile(filepath.Join(l.pgdata, "postmaster.pid"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, ErrNotRunning
		}
		return false, err
	}
	lines := strings.Split(string(b), "\n")
	line := func(n int) string {
		if n-1 < len(lines) {
			return strings.TrimSpace(lines[n-1])
		}
		return ""
	}
	// One read of the file: line 1 is the postmaster's pid.
	if pid, err := strconv.Atoi(line(1)); err != nil || pid <= 0 || !processIsPostgres(pid) {
		return false, ErrNotRunning
	}
	// The postmaster writes the file in steps while it starts; a line
	// still missing means "not yet".
	port, err := strconv.Atoi(line(pidLinePort))
	if err != nil || port <= 0 || port > 65535 {
		return false, nil
	}
	l.port.Store(int64(port))
	if s := line(pidLineSocketDir); s != "" {
		l.runDir = s
	}
	switch line(pidLineStatus) {
	case "ready":
		return true, nil
	default: // "starting", "stopping", "standby" or not yet written
		return false, nil
	}
}

// ping opens and closes one connection to the server.
func (l *Cluster) ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, l.URL())
	if err != nil {
		return err
	}
	return conn.Close(context.Background())
}
