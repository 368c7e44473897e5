package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/changecast/changecast/internal/gcfloor"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/watcher"
	"github.com/changecast/changecast/wsapi"
)

// serveConfig is serve's (and demo's) settings, bound from flags and
// CHANGECAST_* variables by register.
type serveConfig struct {
	common
	sources
	databaseURL       string
	journalURL        string // --journal-url: see journaldb.go (nats://: scale.go)
	scale             scaleConfig
	listen            string
	slot              string
	chunkSize         int
	retentionAge      time.Duration
	retentionRows     int64
	retentionInterval time.Duration
	maxConnections    int
	catchUpWorkers    int
	maxSnapshots      int
	snapshotPageTTL   time.Duration
	snapshotMaxTime   time.Duration
	lagWarnBytes      uint64
	loginTTL          time.Duration
	onSlotLoss        string // a pipeline.SlotLossPolicy
	loginFailuresUser int
	loginFailuresAddr int
	loginWindow       time.Duration
	loginMaxDelay     time.Duration
	gcHeapFloorMiB    int // internal/gcfloor: the Go heap target's floor

	// beforeWatch, when set (tests only), runs once the HTTP listener is up
	// and before the watcher starts, with the listen address.
	beforeWatch func(addr string)
	// wrapUsers, when set (tests only), wraps the user table the hub
	// checks logins and sessions against.
	wrapUsers func(wsapi.Users) wsapi.Users
	// started, when set (demo and tests), runs once the HTTP listener is up
	// and the pipeline is starting, with what a caller needs to drive the
	// server: its address, the database URL it watches and its Auth.
	started func(serveInfo)
	// signInLink, when set (demo), makes serve print a one-time sign-in
	// link for the dashboard even when users exist.
	signInLink bool
	// slotLost, when set (tests only), runs when the pipeline starts to
	// recover a lost slot, after new connections are refused.
	slotLost func()
}

// serveInfo describes a running serve, for the started hook.
type serveInfo struct {
	Addr        string           // HTTP listen address, host:port
	DatabaseURL string           // the database watched (embedded or given); contains its password
	JournalURL  string           // the database of the journal: DatabaseURL unless --journal-url; contains its password
	Local       *localpg.Cluster // the embedded PostgreSQL, nil when a URL was given
	Auth        *wsapi.Auth      // mints tokens the server accepts
	// Dashboard is the dashboard's URL, with a one-time sign-in link when
	// serve made one; DashboardNote says how to use it.
	Dashboard, DashboardNote string
}

// serveFlags returns serve's flag set, bound to cfg; its usage goes to
// stderr.
func serveFlags(cfg *serveConfig, stderr io.Writer) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.databaseURL, "database-url", "", "PostgreSQL URL to watch; empty starts the embedded PostgreSQL in the data dir (env "+envDatabaseURL+")")
	if err := cfg.register(fs); err != nil {
		return nil, err
	}
	return fs, nil
}

// parseServe is serve's configuration from args and the CHANGECAST_*
// environment, checked: what "changecast serve" runs with.
func parseServe(args []string, stderr io.Writer) (serveConfig, error) {
	var cfg serveConfig
	fs, err := serveFlags(&cfg, stderr)
	if err != nil {
		return cfg, err
	}
	if err := applyEnv(fs); err != nil { // every flag's CHANGECAST_* variable
		return cfg, err
	}
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	if err := cfg.check(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// register adds serve's flags (all but --database-url) to fs, with their
// CHANGECAST_* environment defaults; demo runs serve with the same ones.
func (cfg *serveConfig) register(fs *flag.FlagSet) error {
	cfg.common.register(fs)
	fs.StringVar(&cfg.journalURL, "journal-url", "", journalUsage)
	fs.StringVar(&cfg.listen, "listen", defaultListen, "HTTP listen address (env "+envListen+")")
	fs.StringVar(&cfg.slot, "slot", watcher.DefaultSlot, "replication slot name (env "+envSlot+")")
	fs.DurationVar(&cfg.retentionAge, "retention-age", 7*24*time.Hour, "delete journal rows older than this; negative keeps them forever (env "+envRetentionAge+")")
	fs.Int64Var(&cfg.retentionRows, "retention-rows", 1_000_000, "keep at most this many journal rows; negative keeps all (env "+envRetentionRows+")")
	fs.DurationVar(&cfg.retentionInterval, "retention-interval", time.Minute, "how often retention runs")
	fs.IntVar(&cfg.chunkSize, "chunk-size", 1000, "changes per chunk of a large transaction: bounds memory per transaction")
	fs.IntVar(&cfg.catchUpWorkers, "catchup-workers", 0, "most clients reading and encoding a catch-up page from the journal at once, server-wide; 0: min(2, CPUs/2), at least 1")
	fs.IntVar(&cfg.maxConnections, "max-connections", wsapi.DefaultMaxConnections, "most concurrent WebSocket connections; more get 503")
	fs.IntVar(&cfg.maxSnapshots, "max-snapshots", wsapi.DefaultMaxSnapshots, "most snapshots reading rows at once, server-wide (each holds a database connection and a read-only transaction); more wait their turn")
	fs.DurationVar(&cfg.snapshotMaxTime, "snapshot-max-duration", wsapi.DefaultSnapshotMaxDuration, "longest a snapshot may hold its slot (a database connection and a transaction that holds back vacuum) while its rows are read: a WebSocket snapshot still reading rows then ends its connection with resync-required, a REST snapshot ends (410)")
	fs.DurationVar(&cfg.snapshotPageTTL, "snapshot-page-ttl", wsapi.DefaultSnapshotPageTTL, "how long a REST snapshot (GET /api/v1/entities/{type}) stays open after a page for its next page; it then ends and gives its slot back")
	fs.Uint64Var(&cfg.lagWarnBytes, "lag-warn-bytes", 64<<20, "emit a lag_high system event when replication lag exceeds this many bytes; 0 disables")
	fs.DurationVar(&cfg.loginTTL, "login-ttl", wsapi.DefaultLoginTTL, "lifetime of tokens issued by POST /api/v1/auth/login")
	fs.IntVar(&cfg.loginFailuresUser, "login-max-failures-user", wsapi.DefaultLoginFailuresPerUser, "failed logins for one username allowed within --login-window before further attempts wait (429); negative disables")
	fs.IntVar(&cfg.loginFailuresAddr, "login-max-failures-addr", wsapi.DefaultLoginFailuresPerAddr, "failed logins from one remote address (IPv6: /64) allowed within --login-window before further attempts wait (429); negative disables")
	fs.DurationVar(&cfg.loginWindow, "login-window", wsapi.DefaultLoginWindow, "how long failed logins are remembered after the last one or the end of a lock-out")
	fs.DurationVar(&cfg.loginMaxDelay, "login-max-delay", wsapi.DefaultLoginMaxDelay, "longest lock-out after repeated failed logins (it doubles from 1s)")
	fs.StringVar(&cfg.onSlotLoss, "on-slot-loss", string(pipeline.SlotLossResync), "when the replication slot was dropped or invalidated: resync (record the gap, tell every client to resync, continue on a new slot) or stop (exit with the fix) (env "+envOnSlotLoss+")")
	fs.IntVar(&cfg.gcHeapFloorMiB, "gc-heap-floor", gcfloor.DefaultFloor>>20, "MiB the Go heap may reach before a garbage collection however little of it is live: fewer collections, less CPU per change while draining, for up to this much memory; above it Go paces as usual; 0 leaves Go's default; a GOGC environment variable overrides it")
	cfg.sources.register(fs)
	cfg.scale.register(fs)
	return nil
}

// maxGCHeapFloorMiB bounds --gc-heap-floor (1 TiB), so that its bytes
// cannot overflow.
const maxGCHeapFloorMiB = 1 << 20

// check validates the flags that parsing alone cannot.
func (cfg *serveConfig) check() error {
	if cfg.gcHeapFloorMiB < 0 || cfg.gcHeapFloorMiB > maxGCHeapFloorMiB {
		return fmt.Errorf("--gc-heap-floor %d: must be 0 (Go's default pacing) or a size in MiB up to %d", cfg.gcHeapFloorMiB, maxGCHeapFloorMiB)
	}
	if cfg.maxSnapshots < 1 {
		return fmt.Errorf("--max-snapshots %d: must be at least 1", cfg.maxSnapshots)
	}
	if cfg.snapshotMaxTime <= 0 {
		return fmt.Errorf("--snapshot-max-duration %s: must be positive", cfg.snapshotMaxTime)
	}
	if cfg.snapshotPageTTL <= 0 {
		return fmt.Errorf("--snapshot-page-ttl %s: must be positive", cfg.snapshotPageTTL)
	}
	if p := pipeline.SlotLossPolicy(cfg.onSlotLoss); p != pipeline.SlotLossResync && p != pipeline.SlotLossStop {
		return fmt.Errorf("--on-slot-loss %q: use %q or %q", cfg.onSlotLoss, pipeline.SlotLossResync, pipeline.SlotLossStop)
	}
	return cfg.scale.check(cfg.journalURL)
}

// lagWarn maps --lag-warn-bytes (0 disables) to pipeline.Config's
// LagWarnBytes (negative disables).
func lagWarn(flag uint64) int64 {
	if flag == 0 {
		return -1
	}
	return int64(min(flag, 1<<62))
}

// hubLimits sets in c the WebSocket server's limits that serve's flags
// choose, the same for every role that serves clients.
func (cfg *serveConfig) hubLimits(c wsapi.Config) wsapi.Config {
	c.LoginTTL = cfg.loginTTL
	// Login throttling (issue 17).
	c.LoginFailuresPerUser = cfg.loginFailuresUser
	c.LoginFailuresPerAddr = cfg.loginFailuresAddr
	c.LoginWindow = cfg.loginWindow
	c.LoginMaxDelay = cfg.loginMaxDelay
	c.MaxConnections = cfg.maxConnections
	c.CatchUpWorkers = cfg.catchUpWorkers
	c.MaxSnapshots = cfg.maxSnapshots
	c.SnapshotPageTTL = cfg.snapshotPageTTL
	c.SnapshotMaxDuration = cfg.snapshotMaxTime
	return c
}
