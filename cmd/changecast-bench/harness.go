package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tempPrefix names the harness's temporary directories; ownerFile in each
// holds the pid of the harness that owns it (see reapOrphans).
const (
	tempPrefix = "changecast-bench-"
	ownerFile  = "owner.pid"
)

// harness owns everything a run starts: the temporary directory, the
// PostgreSQL cluster and the changecast servers. close stops and removes
// all of it.
type harness struct {
	cfg       config
	log       io.Writer // progress lines
	dir       string    // temporary directory
	dataDir   string    // changecast's --data-dir (its JWT secret)
	cl        *cluster
	token     string
	serveArgs []string // extra serve flags this changecast supports
	machineV  []string

	mu      sync.Mutex
	servers map[*server]bool // running
}

func newHarness(ctx context.Context, cfg config, log io.Writer) (h *harness, err error) {
	bin, err := exec.LookPath(cfg.changecast)
	if err != nil {
		return nil, fmt.Errorf("--changecast %s: %w; build it with `go build -o %s ./cmd/changecast`", cfg.changecast, err, cfg.changecast)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	cfg.changecast = bin
	if cfg.serverProfile != "" {
		if err := os.MkdirAll(cfg.serverProfile, 0o755); err != nil {
			return nil, fmt.Errorf("--server-profile: %w", err)
		}
	}
	reapOrphans(cfg.workDir)
	dir, err := os.MkdirTemp(cfg.workDir, tempPrefix)
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	h = &harness{cfg: cfg, log: log, dir: dir, dataDir: filepath.Join(dir, "changecast"), servers: map[*server]bool{}}
	defer func() {
		if err != nil {
			_ = h.close()
			h = nil
		}
	}()
	// 0711: when the harness runs as root, PostgreSQL runs as the postgres
	// user and must be able to reach its directory inside.
	if err := os.Chmod(dir, 0o711); err != nil {
		return h, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return h, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return h, err
	}
	h.progress("starting PostgreSQL in %s", dir)
	if h.cl, err = startCluster(ctx, filepath.Join(dir, "pg")); err != nil {
		return h, fmt.Errorf("start the benchmark's PostgreSQL: %w", err)
	}
	if h.token, err = mintToken(ctx, bin, h.dataDir); err != nil {
		return h, err
	}
	h.serveArgs = append(h.serveArgs, "--max-connections", strconv.Itoa(max(cfg.conns, cfg.fanoutClients, cfg.latencyClients)+1000))
	h.machineV = append(machineInfo(), "PostgreSQL: "+h.cl.version(ctx)+" (fsync and synchronous_commit on, other settings default)")
	return h, nil
}

func (h *harness) machine() []string { return h.machineV }

// progress prints a progress line on the log writer.
func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.log, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// close stops every server and PostgreSQL and removes the temporary
// directory.
func (h *harness) close() error {
	h.mu.Lock()
	running := make([]*server, 0, len(h.servers))
	for s := range h.servers {
		running = append(running, s)
	}
	h.mu.Unlock()
	var errs []error
	for _, s := range running {
		errs = append(errs, h.stopServer(s))
	}
	if h.cl != nil {
		if err := h.cl.close(); err != nil {
			errs = append(errs, fmt.Errorf("stop PostgreSQL: %w", err))
		}
	}
	if err := os.RemoveAll(h.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", h.dir, err))
	}
	return errors.Join(errs...)
}

// startServer runs changecast on database db (url) with its own slot.
func (h *harness) startServer(ctx context.Context, db, url, slot string) (*server, error) {
	args := append([]string{
		"--database-url", url, "--domain", "garm", "--listen", "127.0.0.1:0", "--data-dir", h.dataDir, "--slot", slot,
	}, h.serveArgs...)
	s, err := startServer(ctx, h.cfg.changecast, filepath.Join(h.dir, "logs", db+".log"), args...)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.servers[s] = true
	h.mu.Unlock()
	return s, nil
}

// stopServer stops s; a failure carries the end of its log, which the
// harness removes at exit.
func (h *harness) stopServer(s *server) error {
	err := s.stop()
	h.mu.Lock()
	delete(h.servers, s)
	h.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, tailFile(s.logPath, 10))
	}
	return nil
}

// withDatabase creates database bench_<name>_<run>, runs fn with its name
// and URL, and drops it (and its slots) afterwards.
func (h *harness) withDatabase(ctx context.Context, name string, run int, fn func(db, url string) error) error {
	db := fmt.Sprintf("bench_%s_%d", name, run)
	url, err := h.cl.createDB(ctx, db)
	if err != nil {
		return err
	}
	err = fn(db, url)
	if derr := h.cl.dropDB(db); derr != nil && err == nil {
		err = derr
	}
	return err
}

// serverFailure adds the end of the server's log to err.
func serverFailure(s *server, err error) error {
	if err == nil || s == nil {
		return err
	}
	if head := panicHead(s.logPath, 12); head != "" {
		return fmt.Errorf("%w\nchangecast panicked:\n%s", err, head)
	}
	return fmt.Errorf("%w\nlast lines of the changecast log:\n%s", err, tailFile(s.logPath, 10))
}

// panicHead returns the first n lines of a panic in the log at path, or "".
func panicHead(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := strings.Index(string(b), "panic: ")
	if i < 0 {
		return ""
	}
	lines := strings.SplitN(string(b[i:]), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// waitGone waits up to 10 s for pid to exit.
func waitGone(pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			return true
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	return false
}
