package main

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/changecast/changecast/internal/backoff"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"

	"github.com/changecast/changecast/wire"
	"github.com/changecast/changecast/wsapi"
)

// Demo settings.
const (
	defaultDemoRate = 20    // changes per second
	maxDemoRate     = 10000 // changes per second
	defaultDemoSeed = 1
	demoTokenName   = "demo-admin"
	demoTokenTTL    = 24 * time.Hour
	// demoAppName is the workload's application_name, for pg_stat_activity.
	demoAppName = "changecast demo"
	// demoRotateEvery is how many changes pass between credential rotations.
	demoRotateEvery = 150
)

// demoConfig is what "changecast demo" runs: serve on the embedded
// PostgreSQL plus a workload.
type demoConfig struct {
	serve serveConfig
	// rate is the workload's pace in changes (row writes) per second,
	// 1 to maxDemoRate. Default defaultDemoRate.
	rate int
	// seed seeds the workload's choices (which entity, which state, which
	// name): the same seed on an empty data dir gives the same sequence.
	// Secret values are drawn from crypto/rand regardless.
	seed uint64
	// onSecret, when set (tests), receives every secret value the workload
	// writes, before it is written, from the workload's goroutine.
	onSecret func(string)
}

// runDemo is "changecast demo": serve on the embedded default, plus a
// workload writing every built-in entity type, plus an admin token and a
// ready-to-paste tail command on stdout.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseDemoFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.serve.logLevel, cfg.serve.logFormat)
	if err != nil {
		return err
	}
	return demo(ctx, cfg, stdout, log)
}

func parseDemoFlags(args []string, stderr io.Writer) (demoConfig, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg demoConfig
	if err := cfg.serve.register(fs); err != nil { // serve's own flags and defaults
		return cfg, err
	}
	fs.IntVar(&cfg.rate, "rate", defaultDemoRate, fmt.Sprintf("changes per second the workload writes, 1 to %d", maxDemoRate))
	fs.Uint64Var(&cfg.seed, "seed", defaultDemoSeed, "seed of the workload's choices: the same seed on an empty data dir writes the same sequence")
	if err := applyEnv(fs); err != nil { // serve's variables, and CHANGECAST_RATE, CHANGECAST_SEED
		return cfg, err
	}
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	if cfg.rate < 1 || cfg.rate > maxDemoRate {
		return cfg, usageError{fmt.Errorf("demo: --rate %d: want changes per second from 1 to %d", cfg.rate, maxDemoRate)}
	}
	return cfg, nil
}

// demo runs serve on the embedded PostgreSQL and, once it has started, the
// workload. When ctx ends the workload stops first, then serve shuts down
// in its own order; demo then returns nil. A workload failure that retrying
// cannot fix, or serve failing, ends the demo with that error.
func demo(ctx context.Context, cfg demoConfig, stdout io.Writer, log *slog.Logger) error {
	scfg := cfg.serve
	scfg.databaseURL = ""    // always the embedded default
	scfg.domain = domainGARM // the workload writes the runner-fleet tables
	scfg.signInLink = true   // the demo's users have no password anyone knows

	// serve gets its own context so that it shuts down only after the
	// workload has stopped writing.
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()

	var (
		mu struct {
			sync.Mutex
			stopping bool // no workload starts once set
		}
		work sync.WaitGroup
	)
	workDone := make(chan error, 1) // the workload's result, or the banner's error
	scfg.started = func(info serveInfo) {
		mu.Lock()
		defer mu.Unlock()
		if mu.stopping {
			return
		}
		if err := printDemoBanner(stdout, info, cfg.rate); err != nil {
			workDone <- err
			return
		}
		w := newWorkload(info.DatabaseURL, cfg.rate, cfg.seed, log.With("component", "demo"), cfg.onSecret)
		work.Add(1)
		go func() {
			defer work.Done()
			workDone <- w.run(workCtx)
		}()
	}

	// serve prints its own connection help; the banner replaces it.
	serveDone := make(chan error, 1)
	go func() { serveDone <- serve(serveCtx, scfg, io.Discard, log) }()

	var cause error
	serveEnded := false
	select {
	case <-ctx.Done():
	case cause = <-workDone:
	case cause = <-serveDone:
		serveEnded = true
	}

	mu.Lock()
	mu.stopping = true
	mu.Unlock()
	stopWork()
	work.Wait()
	stopServe()
	if !serveEnded {
		err := <-serveDone
		// Ctrl-C while the embedded PostgreSQL is still starting cancels
		// that start: an orderly stop, not a failure.
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = nil
		}
		if err != nil && cause == nil {
			cause = err
		}
	}
	return cause
}

// printDemoBanner prints how to watch the demo: a few lines, with an admin
// token minted by the running server's Auth.
func printDemoBanner(w io.Writer, info serveInfo, rate int) error {
	tok, err := info.Auth.Mint(wsapi.Claims{
		Name:             demoTokenName,
		Role:             wsapi.RoleAdmin,
		RegisteredClaims: jwt.RegisteredClaims{Subject: demoTokenName},
	}, demoTokenTTL)
	if err != nil {
		return fmt.Errorf("mint demo token: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "changecast demo on http://%s: writing about %d changes per second; Ctrl-C stops it\n", info.Addr, rate)
	printDashboard(&b, info.Dashboard, info.DashboardNote)
	fmt.Fprintf(&b, "  WebSocket: ws://%s%s  (then send {\"send-everything\": true})\n", info.Addr, wire.EventsPath)
	fmt.Fprintf(&b, "  token:     %s  (role admin, valid %gh)\n", tok, demoTokenTTL.Hours())
	fmt.Fprintf(&b, "  tail:      CHANGECAST_TOKEN=%s changecast tail --server http://%s\n", tok, info.Addr)
	if info.Local != nil {
		fmt.Fprintf(&b, "  psql:      %s\n", info.Local.PsqlCommand())
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// ---- the workload ----

// workload writes the demo's traffic with pgx: one row change per tick of
// a ticker paced at the configured rate. First it creates the fleet's
// fixed parts (endpoint, credentials, controller, users, organizations, an
// enterprise, repositories and their pools); then it creates instances and
// moves them through their states to deletion, creates jobs and moves them
// to completion, and every demoRotateEvery changes rotates a credential's
// token or key and a webhook secret. Only run's goroutine uses a workload.
type workload struct {
	url      string
	rate     int // changes per second
	interval time.Duration
	rng      *rand.Rand
	log      *slog.Logger
	onSecret func(string)

	conn    *pgx.Conn
	queue   []demoAction // run in order, before any random action; popped on success
	changes int64        // rows written

	creds     []*demoCreds
	owners    []*demoOwner
	pools     []*demoPool
	callback  string
	instances []*demoInstance
	jobs      []*demoJob // in creation order
	nextJobID int64      // 0 until read from the database
	nextRunID int64

	giteaCredsID string // set by createGiteaCreds
	templateID   string // set by createTemplate
}

// demoAction is one row change. run applies its effect on the workload's
// state only once the write succeeded.
type demoAction struct {
	name string
	run  func(ctx context.Context) error
}

type demoCreds struct {
	id, name, authType string
}

// demoOwner is a repository, organization or enterprise.
type demoOwner struct {
	table  string // repositories, organizations or enterprises
	column string // the pools column that points at it
	id     string
	owner  string // for repositories: the owning organization's name
	name   string
}

type demoPool struct {
	id     string
	owner  *demoOwner
	prefix string
	tags   []string
	max    int
	live   int // instance rows that exist
}

type demoInstance struct {
	id, name string
	pool     *demoPool
	state    int // index in instanceStates
}

type demoJob struct {
	id     int64
	status string // queued, in_progress, completed
}

// instanceStates is the life of a runner, GARM's status and runner_status.
// The row is deleted after the last one.
var instanceStates = []struct{ status, runner string }{
	{"pending_create", "pending"},
	{"creating", "pending"},
	{"running", "installing"},
	{"running", "idle"},
	{"running", "active"},
	{"pending_delete", "terminated"},
	{"deleting", "terminated"},
	{"deleted", "terminated"},
}

const (
	demoMaxOpenJobs      = 8 // queued or in progress
	demoMaxCompletedJobs = 5 // kept before the oldest is deleted
)

func newWorkload(url string, rate int, seed uint64, log *slog.Logger, onSecret func(string)) *workload {
	w := &workload{
		url:      url,
		rate:     rate,
		interval: time.Second / time.Duration(rate),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		log:      log,
		onSecret: onSecret,
	}
	w.queue = w.setup()
	return w
}

// run writes until ctx ends (then it returns nil) or a write fails in a way
// retrying cannot fix. Failures that a reconnect may fix (PostgreSQL
// restarting, a dropped connection) pause the workload with a capped,
// jittered backoff; the pause and the recovery are logged once each.
func (w *workload) run(ctx context.Context) error {
	defer w.disconnect()
	defer func() { w.log.Info("demo workload stopped", "changes", w.changes) }()
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	paused, failures := false, 0
	w.log.Info("demo workload started", "changes_per_second", w.rate)
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		err := w.step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			if paused {
				w.log.Info("demo workload resumed", "failed_attempts", failures)
				paused, failures = false, 0
			}
			retry.Reset()
			continue
		}
		var we *workloadError
		if !errors.As(err, &we) || !we.retry {
			return err
		}
		w.disconnect()
		failures++
		wait := retry.Next()
		if !paused {
			w.log.Warn("demo workload paused: the database is unavailable; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
			paused = true
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// step writes one change: the next queued action, else a random one.
func (w *workload) step(ctx context.Context) error {
	if w.conn == nil {
		if err := w.connect(ctx); err != nil {
			return err
		}
	}
	queued := len(w.queue) > 0
	var a demoAction
	if queued {
		a = w.queue[0]
	} else {
		a = w.pick()
	}
	if err := a.run(ctx); err != nil {
		return err
	}
	if queued {
		w.queue = w.queue[1:]
	}
	w.changes++
	if w.changes%demoRotateEvery == 0 {
		w.queue = append(w.queue, w.rotation()...)
	}
	return nil
}

func (w *workload) connect(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(w.url)
	if err != nil {
		return &workloadError{step: "parse database URL", msg: "invalid URL"}
	}
	cfg.RuntimeParams["application_name"] = demoAppName
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return w.fail("connect", err, nil)
	}
	w.conn = conn
	if w.nextJobID == 0 {
		// Job ids are GitHub's: continue after any left by an earlier run.
		var maxID int64
		if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM jobs`).Scan(&maxID); err != nil {
			return w.fail("read job ids", err, nil)
		}
		w.nextJobID = max(maxID+1, 24_000_000_001)
		w.nextRunID = 9_100_000_001
	}
	return nil
}

func (w *workload) disconnect() {
	if w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.conn.Close(ctx)
		w.conn = nil
	}
}

// exec runs one statement. secrets are the secret values among args (or
// inside them); they are cut out of any error, which may quote arguments.
func (w *workload) exec(ctx context.Context, step string, secrets []string, sql string, args ...any) error {
	if _, err := w.conn.Exec(ctx, sql, args...); err != nil {
		return w.fail(step, err, secrets)
	}
	return nil
}

// insert runs an INSERT ... RETURNING id and returns the id as text.
func (w *workload) insert(ctx context.Context, step string, secrets []string, sql string, args ...any) (string, error) {
	var id string
	if err := w.conn.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
		return "", w.fail(step, err, secrets)
	}
	return id, nil
}

// workloadError is a failed write, its text free of the secrets written.
type workloadError struct {
	step  string
	msg   string
	code  string // SQLSTATE, when the server answered
	retry bool   // a reconnect may fix it
}

func (e *workloadError) Error() string {
	s := "demo workload: " + e.step + ": " + e.msg
	switch {
	case e.retry:
	case e.code == "42P01" || e.code == "42703":
		s += "; the tables differ from what this changecast migrates: start the demo with an empty --data-dir"
	default:
		s += "; retrying cannot fix this"
	}
	return s
}

// fail classifies err: the server refusing the statement (a missing table,
// a constraint) is final; a lost connection or a server shutting down,
// starting or overloaded is worth a reconnect. The original error is not
// kept, so its text (which may quote a secret argument) cannot leak
// through Unwrap.
func (w *workload) fail(step string, err error, secrets []string) error {
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	e := &workloadError{step: step, msg: msg}
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		e.code = pgErr.Code
		switch pgErr.Code[:min(2, len(pgErr.Code))] {
		case "08", "40", "53", "57", "58": // connection, rollback, resources, operator, system
			e.retry = true
		}
	case w.conn == nil || w.conn.IsClosed(), errors.As(err, &netErr), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		e.retry = true
	}
	return e
}

// ---- secrets: crypto/rand, so no seed predicts them ----

func (w *workload) secret(s string) string {
	if w.onSecret != nil {
		w.onSecret(s)
	}
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = crand.Read(b) // never fails (crypto/rand.Read documents it)
	return b
}

func (w *workload) newPAT() string { return w.secret("ghp_" + crand.Text() + crand.Text()[:10]) }

func (w *workload) newWebhookSecret() string { return w.secret(hex.EncodeToString(randomBytes(32))) }

// credentialsPayload returns the payload column's JSON and the secrets in it.
func (w *workload) credentialsPayload(authType string) (string, []string) {
	var p map[string]any
	var secrets []string
	if authType == "app" {
		body := w.secret(base64.StdEncoding.EncodeToString(randomBytes(48)))
		p = map[string]any{
			"app_id":          w.rng.IntN(900000) + 100000,
			"installation_id": w.rng.IntN(90000000) + 10000000,
			"private_key":     "-----BEGIN RSA PRIVATE KEY-----\n" + body + "\n-----END RSA PRIVATE KEY-----\n",
		}
		secrets = []string{body}
	} else {
		tok := w.newPAT()
		p = map[string]any{"token": tok}
		secrets = []string{tok}
	}
	b, _ := json.Marshal(p) // a map of strings and ints always encodes
	return string(b), secrets
}

// ---- setup: the fleet's fixed parts ----

func (w *workload) setup() []demoAction {
	acts := []demoAction{
		{"create github endpoint", w.createEndpoint},
		{"create github credentials", w.createCreds("demo-pat", "pat", "github.com")},
		{"create github credentials", w.createCreds("demo-app", "app", "ghes-demo")},
		{"create controller", w.createController},
		{"create user", w.createUser("demo-ada", "Ada Lovelace", true)},
		{"create user", w.createUser("demo-grace", "Grace Hopper", false)},
		{"create organization", w.createOwner("create organization", "organizations", "org_id", "", "acme-ops")},
		{"create organization", w.createOwner("create organization", "organizations", "org_id", "", "globex")},
		{"create enterprise", w.createOwner("create enterprise", "enterprises", "enterprise_id", "", "initech")},
		{"create repository", w.createOwner("create repository", "repositories", "repo_id", "acme-ops", "api")},
		{"create repository", w.createOwner("create repository", "repositories", "repo_id", "acme-ops", "web")},
		{"create repository", w.createOwner("create repository", "repositories", "repo_id", "globex", "ml-pipeline")},
	}
	for i := range 6 { // one pool per owner above
		acts = append(acts, demoAction{"create pool", w.createPool(i)})
	}
	// GARM's other entities, one row each, so every built-in type streams.
	acts = append(acts,
		demoAction{"create gitea credentials", w.createGiteaCreds},
		demoAction{"create forge instance", w.createForgeInstance},
		demoAction{"create template", w.createTemplate},
		demoAction{"create scale set", w.createScaleSet},
		demoAction{"create file object", w.createFileObject},
		demoAction{"create proxy", w.createProxy},
	)
	return acts
}

func (w *workload) createGiteaCreds(ctx context.Context) error {
	tok := w.secret("gta_" + crand.Text())
	payload, _ := json.Marshal(map[string]string{"token": tok}) // a map of strings always encodes
	id, err := w.insert(ctx, "create gitea credentials", []string{tok},
		`INSERT INTO gitea_credentials (name, description, auth_type, endpoint_name, payload) VALUES ('demo-gitea', 'demo Gitea token', 'pat', 'gitea.demo.example', $1) RETURNING id`,
		string(payload))
	if err == nil {
		w.giteaCredsID = id
	}
	return err
}

func (w *workload) createForgeInstance(ctx context.Context) error {
	hook := w.newWebhookSecret()
	var credsID any
	if w.giteaCredsID != "" {
		credsID = w.giteaCredsID
	}
	_, err := w.insert(ctx, "create forge instance", []string{hook},
		`INSERT INTO forge_instances (endpoint_name, gitea_credentials_id, webhook_secret) VALUES ('gitea.demo.example', $1, $2) RETURNING id`,
		credsID, hook)
	return err
}

// createTemplate writes a runner install script that logs in to a
// registry, the kind of secret a template's data holds.
func (w *workload) createTemplate(ctx context.Context) error {
	pass := w.secret(hex.EncodeToString(randomBytes(16)))
	data := "#!/bin/sh\nset -e\necho " + pass + " | docker login --password-stdin registry.demo.example\n"
	id, err := w.insert(ctx, "create template", []string{pass},
		`INSERT INTO templates (name, description, os_type, forge_type, data) VALUES ('demo-linux', 'runner install script', 'linux', 'github', $1) RETURNING id`,
		data)
	if err == nil {
		w.templateID = id
	}
	return err
}

func (w *workload) createScaleSet(ctx context.Context) error {
	var repoID, templateID any
	for _, o := range w.owners {
		if o.table == "repositories" {
			repoID = o.id
			break
		}
	}
	if w.templateID != "" {
		templateID = w.templateID
	}
	_, err := w.insert(ctx, "create scale set", nil,
		`INSERT INTO scalesets (name, provider_name, max_runners, image, flavor, repo_id, template_id) VALUES ('demo-scale', 'lxd', 4, 'ubuntu:24.04', 'small', $1, $2) RETURNING id`,
		repoID, templateID)
	return err
}

// createFileObject stores an uploaded file; its content is secret, and would
// leave as base64, so that form is what the test looks for.
func (w *workload) createFileObject(ctx context.Context) error {
	content := randomBytes(48)
	b64 := base64.StdEncoding.EncodeToString(content)
	w.secret(b64)
	sum := sha256.Sum256(content)
	// A failed insert's error is redacted of both forms the content can
	// take in a message: base64 and PostgreSQL's hex.
	_, err := w.insert(ctx, "create file object", []string{b64, `\x` + hex.EncodeToString(content)},
		`INSERT INTO file_objects (name, description, file_type, size, sha256, tags, content) VALUES ('garm-agent-linux-amd64', 'demo agent binary', 'application/octet-stream', $1, $2, '{agent,linux}', $3) RETURNING id`,
		len(content), hex.EncodeToString(sum[:]), content)
	return err
}

// createProxy writes a proxy whose URLs carry a password, as proxy URLs may.
func (w *workload) createProxy(ctx context.Context) error {
	pass := w.secret(hex.EncodeToString(randomBytes(12)))
	url := "http://ci:" + pass + "@proxy.demo.example:3128"
	creds, _ := json.Marshal(map[string]string{"username": "ci", "password": pass}) // a map of strings always encodes
	_, err := w.insert(ctx, "create proxy", []string{pass},
		`INSERT INTO proxies (name, description, http_proxy, https_proxy, no_proxy, credentials) VALUES ('demo-proxy', 'corporate proxy', $1, $1, 'localhost,.demo.example', $2) RETURNING id`,
		url, string(creds))
	return err
}

func (w *workload) createEndpoint(ctx context.Context) error {
	const name = "ghes-demo"
	err := w.exec(ctx, "create github endpoint", nil,
		`INSERT INTO github_endpoints (name, description, base_url, api_base_url, upload_base_url, ca_cert_bundle)
		 VALUES ($1, 'GitHub Enterprise Server of the changecast demo', 'https://ghes.demo.example', 'https://ghes.demo.example/api/v3', 'https://ghes.demo.example/uploads', $2)
		 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, updated_at = now()`,
		name, []byte("-----BEGIN CERTIFICATE-----\n(demo)\n-----END CERTIFICATE-----\n"))
	return err
}

func (w *workload) createCreds(name, authType, endpoint string) func(context.Context) error {
	return func(ctx context.Context) error {
		payload, secrets := w.credentialsPayload(authType)
		id, err := w.insert(ctx, "create github credentials", secrets,
			`INSERT INTO github_credentials (name, description, auth_type, endpoint_name, payload) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			name, "demo "+authType+" credentials", authType, endpoint, payload)
		if err == nil {
			w.creds = append(w.creds, &demoCreds{id: id, name: name, authType: authType})
		}
		return err
	}
}

func (w *workload) createController(ctx context.Context) error {
	w.callback = "https://garm.demo.example/api/v1/callbacks"
	_, err := w.insert(ctx, "create controller", nil,
		`INSERT INTO controllers (hostname, callback_url, metadata_url, webhook_url) VALUES ($1, $2, $3, $4) RETURNING id`,
		"garm-demo", w.callback, "https://garm.demo.example/api/v1/metadata", "https://garm.demo.example/webhooks")
	return err
}

// createUser adds a user nobody can log in as: the password is random and
// forgotten, only its bcrypt hash is stored (a secret column).
func (w *workload) createUser(username, fullName string, admin bool) func(context.Context) error {
	return func(ctx context.Context) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(crand.Text()), bcrypt.MinCost)
		if err != nil {
			return &workloadError{step: "create user", msg: "bcrypt: " + err.Error()}
		}
		h := w.secret(string(hash))
		return w.exec(ctx, "create user", []string{h},
			`INSERT INTO users (username, email, full_name, password, generation, is_admin) VALUES ($1, $2, $3, $4, 1, $5)
			 ON CONFLICT (username) DO UPDATE SET full_name = EXCLUDED.full_name, updated_at = now()`,
			username, username+"@demo.example", fullName, h, admin)
	}
}

func (w *workload) createOwner(step, table, column, owner, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		hook := w.newWebhookSecret()
		var credsID any
		if len(w.creds) > 0 {
			credsID = w.creds[w.rng.IntN(len(w.creds))].id
		}
		var id string
		var err error
		if table == "repositories" {
			id, err = w.insert(ctx, step, []string{hook},
				`INSERT INTO repositories (owner, name, credentials_id, webhook_secret) VALUES ($1, $2, $3, $4) RETURNING id`,
				owner, name, credsID, hook)
		} else {
			// table is one of two constants, never input.
			id, err = w.insert(ctx, step, []string{hook},
				`INSERT INTO `+table+` (name, credentials_id, webhook_secret) VALUES ($1, $2, $3) RETURNING id`,
				name, credsID, hook)
		}
		if err == nil {
			w.owners = append(w.owners, &demoOwner{table: table, column: column, id: id, owner: owner, name: name})
		}
		return err
	}
}

func (w *workload) createPool(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		if i >= len(w.owners) {
			return &workloadError{step: "create pool", msg: "no owner for the pool (setup out of order)"}
		}
		o := w.owners[i]
		provider := []string{"lxd", "openstack", "aws", "azure"}[w.rng.IntN(4)]
		osType, image := "linux", []string{"ubuntu:24.04", "ubuntu:22.04", "debian:12"}[w.rng.IntN(3)]
		if w.rng.IntN(5) == 0 {
			osType, image = "windows", "windows-2022"
		}
		arch := []string{"amd64", "amd64", "arm64"}[w.rng.IntN(3)]
		flavor := []string{"small", "medium", "large"}[w.rng.IntN(3)]
		tags := []string{"self-hosted", osType, arch}
		if w.rng.IntN(2) == 0 {
			tags = append(tags, "gpu")
		}
		maxRunners := 2 + w.rng.IntN(4)
		prefix := "garm-" + strings.ReplaceAll(o.name, "-", "")
		cost := float64(1+w.rng.IntN(400)) / 1000
		specs, _ := json.Marshal(map[string]any{"disk_gb": 20 + 10*w.rng.IntN(8), "network": "demo-net"})
		// o.column is one of three constants, never input.
		id, err := w.insert(ctx, "create pool", nil,
			`INSERT INTO pools (provider_name, runner_prefix, max_runners, min_idle_runners, image, flavor, os_type, os_arch, tags, cost_per_hour, extra_specs, `+o.column+`)
			 VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
			provider, prefix, maxRunners, image, flavor, osType, arch, tags, cost, string(specs), o.id)
		if err == nil {
			w.pools = append(w.pools, &demoPool{id: id, owner: o, prefix: prefix, tags: tags, max: maxRunners})
		}
		return err
	}
}

// ---- steady state ----

// pick chooses the next random action among those that apply. Creating an
// instance or advancing one always applies once the pools exist.
func (w *workload) pick() demoAction {
	type option struct {
		weight int
		act    demoAction
	}
	var opts []option
	add := func(weight int, name string, run func(context.Context) error) {
		opts = append(opts, option{weight, demoAction{name, run}})
	}

	var free []*demoPool
	for _, p := range w.pools {
		if p.live < p.max {
			free = append(free, p)
		}
	}
	var moving, done []*demoInstance
	for _, in := range w.instances {
		if in.state < len(instanceStates)-1 {
			moving = append(moving, in)
		} else {
			done = append(done, in)
		}
	}
	var open, completed []*demoJob
	for _, j := range w.jobs {
		if j.status == "completed" {
			completed = append(completed, j)
		} else {
			open = append(open, j)
		}
	}

	if len(free) > 0 {
		p := free[w.rng.IntN(len(free))]
		add(3, "create instance", func(ctx context.Context) error { return w.createInstance(ctx, p) })
	}
	if len(moving) > 0 {
		in := moving[w.rng.IntN(len(moving))]
		add(6, "update instance", func(ctx context.Context) error { return w.advanceInstance(ctx, in) })
	}
	if len(done) > 0 {
		in := done[w.rng.IntN(len(done))]
		add(3, "delete instance", func(ctx context.Context) error { return w.deleteInstance(ctx, in) })
	}
	if len(open) < demoMaxOpenJobs && len(w.pools) > 0 {
		p := w.pools[w.rng.IntN(len(w.pools))]
		add(2, "create job", func(ctx context.Context) error { return w.createJob(ctx, p) })
	}
	if len(open) > 0 {
		j := open[w.rng.IntN(len(open))]
		add(3, "update job", func(ctx context.Context) error { return w.advanceJob(ctx, j) })
	}
	if len(completed) > demoMaxCompletedJobs {
		j := completed[0]
		add(2, "delete job", func(ctx context.Context) error { return w.deleteJob(ctx, j) })
	}
	if len(w.pools) > 0 {
		p := w.pools[w.rng.IntN(len(w.pools))]
		add(1, "update pool", func(ctx context.Context) error { return w.updatePool(ctx, p) })
	}
	if len(opts) == 0 { // no pools: cannot happen after setup
		return demoAction{"wait", func(context.Context) error { return nil }}
	}
	total := 0
	for _, o := range opts {
		total += o.weight
	}
	n := w.rng.IntN(total)
	for _, o := range opts {
		if n < o.weight {
			return o.act
		}
		n -= o.weight
	}
	return opts[len(opts)-1].act
}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

func (w *workload) randomName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[w.rng.IntN(len(alnum))]
	}
	return string(b)
}

func (w *workload) createInstance(ctx context.Context, p *demoPool) error {
	name := p.prefix + "-" + w.randomName(10)
	jit := w.secret(base64.StdEncoding.EncodeToString(randomBytes(96)))
	cb := w.secret("gcb_" + crand.Text() + crand.Text())
	id, err := w.insert(ctx, "create instance", []string{jit, cb},
		`INSERT INTO instances (name, pool_id, status, runner_status, callback_url, jit_configuration, callback_token, github_runner_group)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, 'default') RETURNING id`,
		name, p.id, instanceStates[0].status, instanceStates[0].runner, w.callback, jit, cb)
	if err != nil {
		return err
	}
	p.live++
	w.instances = append(w.instances, &demoInstance{id: id, name: name, pool: p})
	return nil
}

func (w *workload) advanceInstance(ctx context.Context, in *demoInstance) error {
	next := instanceStates[in.state+1]
	var err error
	switch {
	case next.status == "creating":
		err = w.exec(ctx, "update instance", nil,
			`UPDATE instances SET status = $2, runner_status = $3, create_attempt = create_attempt + 1, updated_at = now() WHERE id = $1`,
			in.id, next.status, next.runner)
	case next.runner == "installing":
		addrs, _ := json.Marshal([]map[string]string{{"type": "private", "address": fmt.Sprintf("10.%d.%d.%d", w.rng.IntN(256), w.rng.IntN(256), 1+w.rng.IntN(254))}})
		err = w.exec(ctx, "update instance", nil,
			`UPDATE instances SET status = $2, runner_status = $3, provider_id = $4, addresses = $5, heartbeat = now(), updated_at = now() WHERE id = $1`,
			in.id, next.status, next.runner, "i-"+w.randomName(17), string(addrs))
	case next.runner == "idle":
		err = w.exec(ctx, "update instance", nil,
			`UPDATE instances SET status = $2, runner_status = $3, token_fetched = true, agent_id = $4, heartbeat = now(), updated_at = now() WHERE id = $1`,
			in.id, next.status, next.runner, 1000+w.rng.Int64N(1_000_000))
	default:
		err = w.exec(ctx, "update instance", nil,
			`UPDATE instances SET status = $2, runner_status = $3, heartbeat = now(), updated_at = now() WHERE id = $1`,
			in.id, next.status, next.runner)
	}
	if err == nil {
		in.state++
	}
	return err
}

func (w *workload) deleteInstance(ctx context.Context, in *demoInstance) error {
	if err := w.exec(ctx, "delete instance", nil, `DELETE FROM instances WHERE id = $1`, in.id); err != nil {
		return err
	}
	in.pool.live--
	for i, x := range w.instances {
		if x == in {
			w.instances = append(w.instances[:i], w.instances[i+1:]...)
			break
		}
	}
	return nil
}

var demoJobNames = []string{"build", "test (unit)", "test (integration)", "lint", "package", "deploy (staging)"}

func (w *workload) createJob(ctx context.Context, p *demoPool) error {
	// Ids are taken before the write: a write whose reply was lost may
	// have committed, and its id must not be reused.
	id := w.nextJobID
	w.nextJobID++
	if w.rng.IntN(3) == 0 {
		w.nextRunID++
	}
	owner, repo := p.owner.name, "monorepo"
	if p.owner.table == "repositories" {
		owner, repo = p.owner.owner, p.owner.name
	}
	err := w.exec(ctx, "create job", nil,
		`INSERT INTO jobs (id, run_id, action, status, name, repository_owner, repository_name, labels) VALUES ($1, $2, 'queued', 'queued', $3, $4, $5, $6)`,
		id, w.nextRunID, demoJobNames[w.rng.IntN(len(demoJobNames))], owner, repo, p.tags)
	if err == nil {
		w.jobs = append(w.jobs, &demoJob{id: id, status: "queued"})
	}
	return err
}

func (w *workload) advanceJob(ctx context.Context, j *demoJob) error {
	var err error
	var next string
	switch j.status {
	case "queued":
		next = "in_progress"
		runner := ""
		var running []*demoInstance
		for _, in := range w.instances {
			if instanceStates[in.state].status == "running" {
				running = append(running, in)
			}
		}
		if len(running) > 0 {
			runner = running[w.rng.IntN(len(running))].name
		}
		err = w.exec(ctx, "update job", nil,
			`UPDATE jobs SET status = 'in_progress', action = 'in_progress', runner_name = $2, started_at = now(), updated_at = now() WHERE id = $1`,
			j.id, runner)
	default:
		next = "completed"
		conclusion := []string{"success", "success", "success", "failure", "cancelled"}[w.rng.IntN(5)]
		err = w.exec(ctx, "update job", nil,
			`UPDATE jobs SET status = 'completed', action = 'completed', conclusion = $2, completed_at = now(),
			 duration_seconds = round(extract(epoch FROM now() - coalesce(started_at, created_at))::numeric, 3), updated_at = now() WHERE id = $1`,
			j.id, conclusion)
	}
	if err == nil {
		j.status = next
	}
	return err
}

func (w *workload) deleteJob(ctx context.Context, j *demoJob) error {
	if err := w.exec(ctx, "delete job", nil, `DELETE FROM jobs WHERE id = $1`, j.id); err != nil {
		return err
	}
	for i, x := range w.jobs {
		if x == j {
			w.jobs = append(w.jobs[:i], w.jobs[i+1:]...)
			break
		}
	}
	return nil
}

func (w *workload) updatePool(ctx context.Context, p *demoPool) error {
	return w.exec(ctx, "update pool", nil,
		`UPDATE pools SET min_idle_runners = $2, priority = $3, updated_at = now() WHERE id = $1`,
		p.id, w.rng.IntN(p.max+1), w.rng.IntN(10))
}

// rotation returns the two changes of a credential rotation: new token or
// key in a credentials payload, new webhook secret on a repository,
// organization or enterprise.
func (w *workload) rotation() []demoAction {
	return []demoAction{
		{"rotate github credentials", func(ctx context.Context) error {
			if len(w.creds) == 0 {
				return nil
			}
			c := w.creds[w.rng.IntN(len(w.creds))]
			payload, secrets := w.credentialsPayload(c.authType)
			return w.exec(ctx, "rotate github credentials", secrets,
				`UPDATE github_credentials SET payload = $2, description = $3, updated_at = now() WHERE id = $1`,
				c.id, payload, "demo "+c.authType+" credentials, rotated "+time.Now().UTC().Format(time.RFC3339))
		}},
		{"rotate webhook secret", func(ctx context.Context) error {
			if len(w.owners) == 0 {
				return nil
			}
			o := w.owners[w.rng.IntN(len(w.owners))]
			hook := w.newWebhookSecret()
			// o.table is one of three constants, never input.
			return w.exec(ctx, "rotate webhook secret", []string{hook},
				`UPDATE `+o.table+` SET webhook_secret = $2, updated_at = now() WHERE id = $1`, o.id, hook)
		}},
	}
}
