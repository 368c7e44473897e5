package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// reloadPath is the admin endpoint "changecast reload" calls: POST, admin
// token. It answers 200 {"changes": [...]} when the configuration was
// reloaded (or was unchanged: no changes), and 422 {"error": "..."} when
// it was refused, the previous configuration staying in force.
const reloadPath = "/api/v1/admin/reload"

// reloadTimeout bounds one reload: re-reading the sources, checking the
// tables, and switching the pipeline.
const reloadTimeout = time.Minute

// reloader re-reads serve's configuration sources on SIGHUP or a POST to
// reloadPath and applies them to the running server without a restart
// (docs/configuration.md, "Reloading"): it checks the new entity types as
// start-up does (the file, the tables, their keys and replica identity,
// store.DB.Migrate), then has the pipeline switch to them while it
// changes the publication (pipeline.Pipeline.Reload), then lets the hub's
// filters know the new types. Anything refused leaves the running
// configuration fully in force.
type reloader struct {
	src      sources
	db       *store.DB
	embedded bool
	pipe     *pipeline.Pipeline
	log      *slog.Logger
	// clients is the registry the hub checks filters against: a copy of
	// the pipeline's, replaced once the pipeline runs with a new one.
	clients *entities.Registry
	hup     chan os.Signal

	mu      sync.Mutex         // one reload at a time
	current *entities.Registry // the pipeline's registry; under mu

	// onReload, if set, hears each new registry once it is in force.
	onReload func(*entities.Registry)
}

// newReloader starts catching SIGHUP at once (its default action would end
// the process); run handles the signals, stop releases them.
func newReloader(src sources, db *store.DB, embedded bool, reg *entities.Registry, pipe *pipeline.Pipeline, log *slog.Logger) *reloader {
	r := &reloader{
		src: src, db: db, embedded: embedded, pipe: pipe, current: reg,
		log:     log.With("component", "reload"),
		clients: entities.NewRegistry(),
		hup:     make(chan os.Signal, 1),
	}
	r.clients.Replace(reg)
	signal.Notify(r.hup, syscall.SIGHUP)
	return r
}

// stop stops catching SIGHUP.
func (r *reloader) stop() { signal.Stop(r.hup) }

// run reloads on every SIGHUP until ctx ends, logging what changed or why
// the reload was refused.
func (r *reloader) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.hup:
			r.log.Info("SIGHUP: reloading the configuration")
			rctx, cancel := context.WithTimeout(ctx, reloadTimeout)
			_, _ = r.reload(rctx) // logged by reload
			cancel()
		}
	}
}

// reload re-reads the sources and applies them. It returns what changed,
// one line per entity type (none when nothing did), or why the new
// configuration was refused.
func (r *reloader) reload(ctx context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changes, err := r.reloadLocked(ctx)
	if err != nil {
		r.log.Error("configuration reload refused; the previous configuration stays in force", "err", err)
		return nil, err
	}
	if len(changes) == 0 {
		r.log.Info("configuration reloaded: nothing changed")
		return nil, nil
	}
	for _, c := range changes {
		r.log.Info("configuration reloaded", "change", c)
	}
	return changes, nil
}

func (r *reloader) reloadLocked(ctx context.Context) ([]string, error) {
	next, err := r.src.registry(ctx, r.db, r.embedded)
	if err != nil {
		return nil, err
	}
	changes := registryChanges(r.current, next)
	if len(changes) == 0 {
		return nil, nil
	}
	if r.pipe == nil {
		// A gateway (docs/scale-out.md): no pipeline, no publication;
		// the watchers reload those. Its hub and snapshots take the
		// new types.
		r.current = next
		r.clients.Replace(next)
		if r.onReload != nil {
			r.onReload(next)
		}
		return changes, nil
	}
	// The start-up checks and consented changes (replica identity, the
	// domain's tables), before anything stops.
	// (The journal's own schema is in place since start: only the
	// watched database's side can change.)
	if err := r.db.MigrateWatched(ctx, next); err != nil {
		return nil, err // "migrate: ..."
	}
	err = r.pipe.Reload(ctx, next, func(ctx context.Context) error {
		if err := r.db.EnsurePublication(ctx, publicationName, next); err != nil {
			return fmt.Errorf("publication: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.current = next
	r.clients.Replace(next)
	if r.onReload != nil {
		r.onReload(next)
	}
	return changes, nil
}

// reloadResponse is reloadPath's answer body.
type reloadResponse struct {
	Changes []string `json:"changes"`
	Error   string   `json:"error,omitempty"`
}

// ServeHTTP reloads for a POST to reloadPath (the caller wraps it in the
// hub's admin check).
func (r *reloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeReloadResponse(w, http.StatusMethodNotAllowed, reloadResponse{Error: "use POST to reload the configuration"})
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), reloadTimeout)
	defer cancel()
	changes, err := r.reload(ctx)
	if err != nil {
		writeReloadResponse(w, http.StatusUnprocessableEntity, reloadResponse{Changes: []string{}, Error: err.Error()})
		return
	}
	if changes == nil {
		changes = []string{}
	}
	writeReloadResponse(w, http.StatusOK, reloadResponse{Changes: changes})
}

func writeReloadResponse(w http.ResponseWriter, status int, body reloadResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// registryChanges describes how next differs from cur, one line per
// entity type, sorted by name: "added NAME (TABLE)", "removed NAME
// (TABLE)", or "changed NAME: what changed". It names columns, never
// values.
func registryChanges(cur, next *entities.Registry) []string {
	var out []string
	for _, et := range next.Types() {
		old, err := cur.Lookup(et.Name)
		if err != nil {
			out = append(out, fmt.Sprintf("added %s (%s)", et.Name, tableOf(et)))
			continue
		}
		if d := typeChanges(old, et); len(d) > 0 {
			out = append(out, fmt.Sprintf("changed %s: %s", et.Name, strings.Join(d, "; ")))
		}
	}
	for _, et := range cur.Types() {
		if _, err := next.Lookup(et.Name); err != nil {
			out = append(out, fmt.Sprintf("removed %s (%s)", et.Name, tableOf(et)))
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(nameOfChange(a), nameOfChange(b)) })
	return out
}

// nameOfChange is the entity type a registryChanges line is about.
func nameOfChange(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return strings.TrimSuffix(f[1], ":")
}

func tableOf(et entities.EntityType) string {
	if et.Schema == "" {
		return et.Table
	}
	return et.QualifiedTable()
}

// typeChanges lists what differs between two versions of a type.
func typeChanges(old, cur entities.EntityType) []string {
	var d []string
	if tableOf(old) != tableOf(cur) {
		d = append(d, fmt.Sprintf("table %s → %s", tableOf(old), tableOf(cur)))
	}
	if k, nk := keyOf(old), keyOf(cur); k != nk {
		d = append(d, fmt.Sprintf("key %s → %s", k, nk))
	}
	if s := listChange("secrets", old.Secrets, cur.Secrets); s != "" {
		d = append(d, s)
	}
	if s := listChange("columns", old.Allowed, cur.Allowed); s != "" {
		switch {
		case len(old.Allowed) == 0:
			s = "columns: now only " + strings.Join(cur.Allowed, ", ")
		case len(cur.Allowed) == 0:
			s = "columns: no allow-list any more"
		}
		d = append(d, s)
	}
	if s := listChange("public", old.Public, cur.Public); s != "" {
		d = append(d, s)
	}
	if old.ReplicaIdentityFull != cur.ReplicaIdentityFull {
		d = append(d, fmt.Sprintf("replica_identity full: %t → %t", old.ReplicaIdentityFull, cur.ReplicaIdentityFull))
	}
	return d
}

func keyOf(et entities.EntityType) string {
	if len(et.KeyColumns) > 1 {
		return "[" + strings.Join(et.KeyColumns, ", ") + "]"
	}
	return et.Key
}

// listChange is "what: +added -removed", "" when the sets are equal.
func listChange(what string, old, cur []string) string {
	var parts []string
	for _, c := range cur {
		if !slices.Contains(old, c) {
			parts = append(parts, "+"+c)
		}
	}
	for _, c := range old {
		if !slices.Contains(cur, c) {
			parts = append(parts, "-"+c)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return what + ": " + strings.Join(parts, " ")
}

// runReload is "changecast reload": it asks the running server to reload
// its configuration and prints what changed, or the error.
func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), reloadUsage)
		fs.PrintDefaults()
	}
	var c common
	c.register(fs)
	server := fs.String("server", envOr(envServer, defaultServer), "the running changecast server, http(s)://host:port (env "+envServer+")")
	tokenFile := fs.String("token-file", "", "read an admin token from this file (default: env "+envToken+", else one is minted with the data directory's secret)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("reload: unexpected argument %q", fs.Arg(0))}
	}
	tok, err := reloadToken(c.dataDir, *tokenFile)
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(*server, "/") + reloadPath
	ctx, cancel := context.WithTimeout(ctx, reloadTimeout+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return usageError{fmt.Errorf("reload: --server %q: %w", *server, err)}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reload: %w; is changecast serving at %s? (--server, env %s)", err, *server, envServer)
	}
	defer resp.Body.Close()
	var body reloadResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return fmt.Errorf("reload: %s answered %s, not a reload result; is --server a changecast server?", *server, resp.Status)
	}
	switch {
	case resp.StatusCode == http.StatusOK && len(body.Changes) == 0:
		fmt.Fprintln(stdout, "configuration reloaded: nothing changed")
		return nil
	case resp.StatusCode == http.StatusOK:
		fmt.Fprintln(stdout, "configuration reloaded:")
		for _, c := range body.Changes {
			fmt.Fprintln(stdout, "  "+c)
		}
		return nil
	case resp.StatusCode == http.StatusUnprocessableEntity:
		return fmt.Errorf("reload refused, the running configuration stays in force: %s", body.Error)
	default:
		return fmt.Errorf("reload: %s: %s", resp.Status, body.Error)
	}
}

const reloadUsage = `Usage: changecast reload [flags]

Asks the running server to re-read its configuration (--config file,
--table, --domain) and apply it without a restart, then prints what
changed, or why the new configuration was refused (the running one then
stays in force). Sending SIGHUP to the server does the same, with the
result in its log. See docs/configuration.md, "Reloading".

The admin token comes from --token-file or ` + envToken + `; without either,
reload mints a short-lived one with the server's secret (run it on the
server's host, with its --data-dir or CHANGECAST_JWT_SECRET[_FILE]).

Flags:
`

// reloadToken returns the admin token to send: from path, from
// CHANGECAST_TOKEN, or minted for a minute with the data directory's
// secret. Its errors never contain a token.
func reloadToken(dataDir, path string) (string, error) {
	if path != "" || strings.TrimSpace(os.Getenv(envToken)) != "" {
		tok, err := readTailToken(path)
		if err != nil {
			return "", errors.New(strings.Replace(err.Error(), "tail:", "reload:", 1))
		}
		return tok, nil
	}
	secret, err := loadSecret(dataDir, false)
	if err != nil {
		return "", fmt.Errorf("reload: no token: %s is not set and no --token-file was given, and the server's secret cannot be read (%w); run reload on the server's host with its --data-dir, or pass an admin token", envToken, err)
	}
	auth, err := wsapi.NewAuth(secret)
	if err != nil {
		return "", err
	}
	return auth.Mint(wsapi.Claims{Name: "changecast-reload", Role: wsapi.RoleAdmin,
		RegisteredClaims: jwt.RegisteredClaims{Subject: "changecast-reload"}}, time.Minute)
}
