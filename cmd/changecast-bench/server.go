package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is a running `changecast serve` child process.
type server struct {
	cmd     *exec.Cmd
	addr    string // host:port of its HTTP listener
	logPath string
	ready   time.Time // when it printed its "serving on" line

	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// serveLine is the start of the line changecast serve prints once its
// listener is up and its replication slot exists.
const serveLine = "changecast serving on http://"

// cutServeLine returns what follows "serving on http://" in changecast's
// serving line, also in the form a role prints ("changecast gateway
// serving on http://…", with --journal-url nats://…).
func cutServeLine(line string) (string, bool) {
	if rest, ok := strings.CutPrefix(line, serveLine); ok {
		return rest, true
	}
	for _, role := range []string{"all", "watcher", "gateway"} {
		if rest, ok := strings.CutPrefix(line, "changecast "+role+" serving on http://"); ok {
			return rest, true
		}
	}
	return "", false
}

// startTimeout bounds a changecast start (migrations included).
const startTimeout = 2 * time.Minute

// startServer runs `changecast serve` with args and waits for its
// "serving on" line. Its stdout and stderr go to logPath. The process runs
// in its own process group (a Ctrl-C at the terminal reaches only the
// harness, which stops it in order) and gets SIGTERM if the harness dies.
func startServer(ctx context.Context, bin, logPath string, args ...string) (*server, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start changecast: %w", err)
	}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start changecast: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start changecast %s: %w", bin, err)
	}
	s := &server{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	addrc := make(chan string, 1)
	var copying sync.WaitGroup
	copying.Add(1)
	go func() {
		// Owned by the process: ends at its exit (EOF on the pipe).
		defer copying.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if rest, ok := cutServeLine(line); ok {
				addr, _, _ := strings.Cut(rest, " ")
				select {
				case addrc <- addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		copying.Wait() // Wait closes the pipe: read everything first
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.done)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case s.addr = <-addrc:
		s.ready = time.Now()
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("changecast serve exited before serving (%v); its log: %s\n%s", s.waitErr, logPath, tailFile(logPath, 15))
	case <-ctx.Done():
		_ = s.stop()
		return nil, ctx.Err()
	case <-timer.C:
		_ = s.stop()
		return nil, fmt.Errorf("changecast serve did not print %q within %s; its log: %s\n%s", serveLine, startTimeout, logPath, tailFile(logPath, 15))
	}
}

// pid returns the server's process id.
func (s *server) pid() int { return s.cmd.Process.Pid }

// stop asks the server to shut down in order (SIGTERM) and waits; after
// 30 s it kills it. Stopping a stopped server does nothing.
func (s *server) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-s.done:
		var ee *exec.ExitError
		if s.waitErr != nil && !errors.As(s.waitErr, &ee) {
			return fmt.Errorf("stop changecast: %w", s.waitErr)
		}
		if ee != nil && ee.ExitCode() != 0 {
			return fmt.Errorf("changecast exited with %v on SIGTERM; its log: %s", s.waitErr, s.logPath)
		}
		return nil
	case <-timer.C:
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("changecast did not stop within 30s of SIGTERM and was killed; its log: %s", s.logPath)
	}
}

// exited reports whether the server has exited.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// httpClient is for /metrics and /readyz.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// metrics scrapes /metrics and returns every sample without labels (and,
// for labelled ones, the sum over labels) by metric name.
func (s *server) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// Plain text: gzip would cost the server CPU the measurement
	// charges to changecast (a scraper every 15 s does not matter; the
	// harness polls during the drains).
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: status %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: "name value" and
// "name{labels} value" lines; labelled samples are summed per name.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest, ok = line[:i], strings.TrimSpace(line[j+1:]), true
		}
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// metric returns one metric, or an error naming it if it is missing.
// metricsPoll is how often the harness scrapes /metrics while it waits
// during a measurement: each scrape costs changecast CPU that the
// measurement would charge to it (a few per cent at 50 scrapes/s).
const metricsPoll = 100 * time.Millisecond

func (s *server) metric(ctx context.Context, name string) (float64, error) {
	m, err := s.metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("metric %s not exported by changecast", name)
	}
	return v, nil
}

// waitReady polls /readyz until it answers 200 (the watcher is streaming).
func (s *server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := httpClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if s.exited() {
			return fmt.Errorf("changecast exited (%v); its log: %s", s.waitErr, s.logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("changecast not ready within %s; its log: %s", startTimeout, s.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
}

// mintToken runs `changecast token` for an admin token valid for a day.
// The token is returned, never printed.
func mintToken(ctx context.Context, bin, dataDir string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, "token", "--data-dir", dataDir, "--user", "bench", "--role", "admin", "--ttl", "24h")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("changecast token: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	tok := strings.TrimSpace(stdout.String())
	if tok == "" || strings.ContainsAny(tok, " \n") {
		return "", errors.New("changecast token printed something other than one token")
	}
	return tok, nil
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// perfRecorder records a process's CPU profile with perf (call graphs),
// for the server side of a scenario. Without perf it does nothing.
type perfRecorder struct {
	cmd  *exec.Cmd
	data string
}

// startPerf starts `perf record` on pid, writing dir/name.perf.data. It
// returns nil (and explains once) when perf cannot run.
func startPerf(dir, name string, pid int, warn io.Writer) *perfRecorder {
	perf, err := exec.LookPath("perf")
	if err != nil {
		fmt.Fprintln(warn, "changecast-bench: --server-profile needs perf (linux-perf); not profiling")
		return nil
	}
	data := filepath.Join(dir, name+".perf.data")
	cmd := exec.Command(perf, "record", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(warn, "changecast-bench: perf record: %v\n", err)
		return nil
	}
	return &perfRecorder{cmd: cmd, data: data}
}

// stop ends the recording and writes name-self.txt (flat) and
// name-cumulative.txt (with callees) next to the data; it returns the top
// lines of the flat report.
func (p *perfRecorder) stop(top int) []string {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	base := strings.TrimSuffix(p.data, ".perf.data")
	var lines []string
	for _, v := range []struct {
		suffix string
		args   []string
	}{
		{"-self.txt", []string{"--no-children"}},
		{"-cumulative.txt", []string{"--children"}},
	} {
		args := append([]string{"report", "-i", p.data, "--stdio", "--sort", "symbol", "-g", "none", "--percent-limit", "0.5"}, v.args...)
		out, err := exec.Command("perf", args...).Output()
		if err != nil {
			continue
		}
		_ = os.WriteFile(base+v.suffix, out, 0o644)
		if v.suffix == "-self.txt" {
			for _, l := range strings.Split(string(out), "\n") {
				if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") && len(lines) < top {
					lines = append(lines, strings.Join(strings.Fields(t), " "))
				}
			}
		}
	}
	return lines
}
