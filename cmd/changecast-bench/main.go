// Command changecast-bench measures changecast against its targets (issue
// 8): backlog drain against pg_recvlogical on the same WAL, commit→client
// latency, fan-out, live latency while clients catch up from the journal
// (issue 17), and memory per idle connection. It starts its own
// PostgreSQL (localpg.Start) and runs the changecast binary given with
// --changecast as a child process, on loopback only, and removes every
// process and temporary file it created when it ends, also on Ctrl-C.
//
// Usage:
//
//	go build -o /tmp/changecast ./cmd/changecast
//	go run ./cmd/changecast-bench --changecast /tmp/changecast [--quick] [--out results.md]
//
// make bench and make bench-quick do this; see docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		first := true
		for range sigs {
			if first {
				fmt.Fprintln(os.Stderr, "changecast-bench: interrupted; stopping changecast and PostgreSQL and removing temporary files")
				cancel()
				first = false
				continue
			}
			fmt.Fprintln(os.Stderr, "changecast-bench: still cleaning up (bounded by timeouts); please wait")
		}
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(usageError)):
		fmt.Fprintf(os.Stderr, "changecast-bench: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "changecast-bench: %v\n", err)
		os.Exit(1)
	}
}

// usageError marks a bad command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Scenario names, in the order they run.
const (
	scenarioDrain    = "drain"
	scenarioLatency  = "latency"
	scenarioSingle   = "single"
	scenarioFanout   = "fanout"
	scenarioConns    = "conns"
	scenarioCatchUp  = "catchup"
	scenarioWAL      = "wal"
	scenarioSnapshot = "snapshot"
	// scenarioJetStream runs only when --nats-server is given.
	scenarioJetStream = "jetstream"
)

var allScenarios = []string{scenarioDrain, scenarioLatency, scenarioSingle, scenarioFanout, scenarioConns, scenarioCatchUp, scenarioWAL, scenarioSnapshot, scenarioJetStream}

// config is the parsed command line.
type config struct {
	changecast string   // path of the changecast binary
	quick      bool     // the small preset
	repeat     int      // repetitions of each scenario
	scenarios  []string // which scenarios run, in allScenarios order

	changes int // backlog size (drain)
	txRows  int // rows per backlog transaction

	latencyClients int   // send-everything clients (latency)
	rates          []int // offered changes/s (latency)
	liveTxRows     int   // rows per live transaction (latency, fan-out)
	writers        int   // writer connections (latency, fan-out)
	duration       time.Duration
	warmup         time.Duration

	fanoutClients int // half send-everything, half narrow (fan-out)
	fanoutRate    int // offered changes/s (fan-out)

	singleRate int // single-row transactions/s (single)

	catchupChanges int // backlog the catching-up clients replay (catchup)
	catchupClients int // clients resuming from the start of the journal (catchup)
	catchupLive    int // live send-everything clients whose latency is measured (catchup)
	catchupRate    int // offered changes/s while they catch up (catchup)

	conns     int           // idle connections (conns)
	connsIdle time.Duration // conns: measure again after this long idle (0: not)

	walChanges int // single-row inserts measured per mode (wal)

	snapshotRows int    // rows of the snapshotted table (snapshot; live clients and rate as catchup's)
	natsServer   string // path of a nats-server binary (jetstream)
	jsChanges    int    // backlog each journal drains (jetstream)

	drainTimeout  time.Duration // how long to wait for clients to receive everything
	out           string        // Markdown results file
	cpuprofile    string        // the harness's own CPU profile
	serverProfile string        // directory for perf profiles of the changecast server
	workDir       string        // parent of the temporary directory
}

// presets: the full suite, and the quick one (< 2 minutes).
var (
	fullPreset = config{
		repeat: 3, changes: 270_000, txRows: 1000,
		latencyClients: 100, rates: []int{1000, 5000}, liveTxRows: 5, writers: 4,
		duration: 10 * time.Second, warmup: time.Second,
		fanoutClients: 500, fanoutRate: 2400, singleRate: 1000,
		catchupChanges: 300_000, catchupClients: 10, catchupLive: 9, catchupRate: 1000,
		conns:        10_000,
		walChanges:   10_000,
		snapshotRows: 200_000,
		jsChanges:    100_000,
		drainTimeout: 3 * time.Minute,
	}
	quickPreset = config{
		repeat: 1, changes: 30_000, txRows: 1000,
		latencyClients: 100, rates: []int{1000, 5000}, liveTxRows: 5, writers: 4,
		duration: 3 * time.Second, warmup: 500 * time.Millisecond,
		fanoutClients: 500, fanoutRate: 2400, singleRate: 1000,
		catchupChanges: 30_000, catchupClients: 10, catchupLive: 9, catchupRate: 1000,
		conns:        1000,
		walChanges:   2000,
		snapshotRows: 20_000,
		jsChanges:    10_000,
		drainTimeout: time.Minute,
	}
)

// parseConfig parses the command line. Flags not given take the preset's
// value: --quick's, or the full suite's.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("changecast-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: changecast-bench --changecast PATH [flags]\n\nMeasures changecast against the targets of issues 8 and 18; see docs/benchmarks.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var c config
	var scenarios, rates string
	fs.StringVar(&c.changecast, "changecast", "", "path of the changecast binary to run (required; go build -o PATH ./cmd/changecast)")
	fs.BoolVar(&c.quick, "quick", false, "small version of every scenario, about a minute (defaults below are the full suite's)")
	fs.IntVar(&c.repeat, "repeat", fullPreset.repeat, "repetitions of each scenario (quick: 1)")
	fs.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
	fs.IntVar(&c.changes, "changes", fullPreset.changes, "drain: changes committed while nothing consumes (quick: 30000)")
	fs.IntVar(&c.txRows, "tx-rows", fullPreset.txRows, "drain: rows per committed transaction")
	fs.IntVar(&c.latencyClients, "latency-clients", fullPreset.latencyClients, "latency: connected send-everything clients")
	fs.StringVar(&rates, "rates", "1000,5000", "latency: comma-separated offered rates, changes/s")
	fs.IntVar(&c.liveTxRows, "live-tx-rows", fullPreset.liveTxRows, "latency and fan-out: rows per transaction")
	fs.IntVar(&c.writers, "writers", fullPreset.writers, "latency and fan-out: writer connections")
	fs.DurationVar(&c.duration, "duration", fullPreset.duration, "latency and fan-out: measured time per rate (quick: 3s)")
	fs.DurationVar(&c.warmup, "warmup", fullPreset.warmup, "latency and fan-out: unmeasured time before each measurement (quick: 500ms)")
	fs.IntVar(&c.fanoutClients, "fanout-clients", fullPreset.fanoutClients, "fan-out: clients, half send-everything, half one entity type and operation")
	fs.IntVar(&c.fanoutRate, "fanout-rate", fullPreset.fanoutRate, "fan-out: offered changes/s")
	fs.IntVar(&c.singleRate, "single-rate", fullPreset.singleRate, "single: offered single-row transactions/s")
	fs.IntVar(&c.catchupChanges, "catchup-changes", fullPreset.catchupChanges, "catchup: backlog the catching-up clients replay (quick: 30000)")
	fs.IntVar(&c.catchupClients, "catchup-clients", fullPreset.catchupClients, "catchup: clients resuming with since=0")
	fs.IntVar(&c.catchupLive, "catchup-live-clients", fullPreset.catchupLive, "catchup: live send-everything clients whose latency is measured")
	fs.IntVar(&c.catchupRate, "catchup-rate", fullPreset.catchupRate, "catchup: offered changes/s while the clients catch up")
	fs.IntVar(&c.conns, "conns", fullPreset.conns, "conns: idle authenticated connections (quick: 1000)")
	fs.DurationVar(&c.connsIdle, "conns-idle", 0, "conns: also measure memory again once the connections have been idle this long (2m30s passes the Go runtime's 2-minute periodic collection); 0 measures once, when memory first settles")
	fs.IntVar(&c.walChanges, "wal-changes", fullPreset.walChanges, "wal: single-row inserts measured in each mode (quick: 2000)")
	fs.IntVar(&c.snapshotRows, "snapshot-rows", fullPreset.snapshotRows, "snapshot: rows of the table a client takes snapshots of, next to --catchup-live-clients live clients at --catchup-rate (quick: 20000)")
	fs.StringVar(&c.natsServer, "nats-server", "", "jetstream: path of a nats-server binary (go build -o PATH github.com/nats-io/nats-server/v2); without it the jetstream scenario is skipped")
	fs.IntVar(&c.jsChanges, "js-changes", fullPreset.jsChanges, "jetstream: backlog each journal drains (quick: 10000)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", fullPreset.drainTimeout, "how long clients may take to receive every change once writing stops (quick: 1m)")
	fs.StringVar(&c.out, "out", "", "also write the results as Markdown to this file")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write the harness's CPU profile (clients, writers) to this file")
	fs.StringVar(&c.serverProfile, "server-profile", "", "record the changecast server with perf during each scenario's first measurement; perf.data and reports go in this directory")
	fs.StringVar(&c.workDir, "work-dir", os.TempDir(), "where the temporary directory (PostgreSQL cluster, changecast data dir) is created")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q := quickPreset
		for name, apply := range map[string]func(){
			"repeat": func() { c.repeat = q.repeat }, "changes": func() { c.changes = q.changes },
			"duration": func() { c.duration = q.duration }, "warmup": func() { c.warmup = q.warmup },
			"conns": func() { c.conns = q.conns }, "drain-timeout": func() { c.drainTimeout = q.drainTimeout },
			"catchup-changes": func() { c.catchupChanges = q.catchupChanges },
			"wal-changes":     func() { c.walChanges = q.walChanges },
			"snapshot-rows":   func() { c.snapshotRows = q.snapshotRows },
			"js-changes":      func() { c.jsChanges = q.jsChanges },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	var err error
	if c.scenarios, err = parseScenarios(scenarios); err != nil {
		return c, usageError{err}
	}
	if c.rates, err = parseRates(rates); err != nil {
		return c, usageError{err}
	}
	if err := c.validate(); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

func (c *config) validate() error {
	if c.changecast == "" {
		return errors.New("--changecast is required: build it with `go build -o /tmp/changecast ./cmd/changecast` and pass its path")
	}
	for _, p := range []struct {
		name string
		v    int
	}{
		{"--repeat", c.repeat}, {"--changes", c.changes}, {"--tx-rows", c.txRows},
		{"--latency-clients", c.latencyClients}, {"--live-tx-rows", c.liveTxRows}, {"--writers", c.writers},
		{"--fanout-clients", c.fanoutClients}, {"--fanout-rate", c.fanoutRate}, {"--single-rate", c.singleRate}, {"--conns", c.conns},
		{"--catchup-changes", c.catchupChanges}, {"--catchup-clients", c.catchupClients},
		{"--catchup-live-clients", c.catchupLive}, {"--catchup-rate", c.catchupRate}, {"--wal-changes", c.walChanges}, {"--snapshot-rows", c.snapshotRows},
		{"--js-changes", c.jsChanges},
	} {
		if p.v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", p.name, p.v)
		}
	}
	if c.fanoutClients < 2 {
		return fmt.Errorf("--fanout-clients must be at least 2 (half send everything, half filter), got %d", c.fanoutClients)
	}
	if c.connsIdle < 0 {
		return fmt.Errorf("--conns-idle must not be negative, got %s", c.connsIdle)
	}
	if c.duration <= 0 || c.warmup < 0 || c.drainTimeout <= 0 {
		return errors.New("--duration and --drain-timeout must be positive and --warmup not negative")
	}
	return nil
}

// parseScenarios parses a comma-separated list of scenario names into
// allScenarios order, without duplicates.
func parseScenarios(s string) ([]string, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(allScenarios, name) {
			return nil, fmt.Errorf("--scenarios: unknown scenario %q; known: %s", name, strings.Join(allScenarios, ", "))
		}
		want[name] = true
	}
	var out []string
	for _, name := range allScenarios {
		if want[name] {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--scenarios: none given; known: %s", strings.Join(allScenarios, ", "))
	}
	return out, nil
}

// parseRates parses a comma-separated list of positive rates.
func parseRates(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--rates: %q is not a positive number of changes per second", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("--rates: give at least one rate, e.g. 1000,5000")
	}
	return out, nil
}

// run is main without the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("write cpu profile: %w", cerr)
			}
		}()
	}
	raiseFileLimit(stderr)
	started := time.Now()
	load0 := loadAverage()
	if load0 > 0.5*float64(runtime.NumCPU()) {
		fmt.Fprintf(stderr, "changecast-bench: warning: the machine is busy (1-minute load average %.2f on %d cores); other processes take CPU from the benchmark and its figures will be low. The \"other processes' CPU\" figures show how much.\n", load0, runtime.NumCPU())
	}

	h, err := newHarness(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	rep := &report{started: started, machine: h.machine(), command: "changecast-bench " + strings.Join(args, " ")}
	for _, name := range cfg.scenarios {
		var sec *section
		switch name {
		case scenarioDrain:
			sec = h.drain(ctx)
		case scenarioLatency:
			sec = h.latency(ctx)
		case scenarioSingle:
			sec = h.single(ctx)
		case scenarioFanout:
			sec = h.fanout(ctx)
		case scenarioCatchUp:
			sec = h.catchUp(ctx)
		case scenarioConns:
			sec = h.connections(ctx)
		case scenarioWAL:
			sec = h.walBytes(ctx)
		case scenarioSnapshot:
			sec = h.snapshots(ctx)
		case scenarioJetStream:
			if cfg.natsServer == "" {
				fmt.Fprintln(stderr, "changecast-bench: the jetstream scenario needs --nats-server PATH (make bench builds one); skipped")
				continue
			}
			sec = h.jetStream(ctx)
		}
		rep.sections = append(rep.sections, sec)
		sec.writeText(stdout)
		if ctx.Err() != nil {
			break
		}
	}
	rep.elapsed = time.Since(rep.started)
	rep.machine = append(rep.machine, fmt.Sprintf("1-minute load average: %.2f at the start, %.2f at the end (includes the benchmark itself)", load0, loadAverage()))
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "Summary:")
	rep.writeText(stdout)
	if cfg.out != "" {
		var b strings.Builder
		rep.writeMarkdown(&b)
		if err := os.WriteFile(cfg.out, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("write --out: %w", err)
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if n := rep.failures(); n > 0 {
		return fmt.Errorf("%d repetition(s) failed; see FAILED lines above and the logs they name", n)
	}
	return nil
}

// raiseFileLimit raises RLIMIT_NOFILE as far as allowed: the harness holds
// one descriptor per client connection, and the changecast child inherits
// the limit for its side.
func raiseFileLimit(stderr io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(stderr, "changecast-bench: read the open-file limit: %v\n", err)
		return
	}
	const want = 1 << 20
	if lim.Max < want {
		// Raising the hard limit needs privilege (root); try, then
		// settle for the hard limit.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(stderr, "changecast-bench: raise the open-file limit to %d: %v\n", lim.Max, err)
	}
}
