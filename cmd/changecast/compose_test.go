package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// composeFile is the part of a compose file the checks read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
}

// runsChangecast reports whether the service runs the changecast image:
// built from this repository's Dockerfile (whose entrypoint is
// changecast) or an image named changecast.
func (s composeService) runsChangecast() bool {
	return s.Build == "." || strings.Contains(s.Image, "changecast")
}

// composeVar is compose's interpolation: ${NAME}, ${NAME:-default},
// ${NAME-default}, ${NAME:?error}, ${NAME?error}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate applies compose's interpolation with the variables env.
func interpolate(s string, env map[string]string) (string, error) {
	var err error
	out := composeVar.ReplaceAllStringFunc(s, func(m string) string {
		g := composeVar.FindStringSubmatch(m)
		v, set := env[g[1]]
		switch {
		case set && (v != "" || !strings.HasPrefix(g[2], ":")):
			return v
		case strings.HasSuffix(g[2], "-"):
			return g[3]
		case strings.HasSuffix(g[2], "?"):
			err = fmt.Errorf("%s: %s", g[1], g[3])
		default:
			err = fmt.Errorf("%s is not set and has no default", g[1])
		}
		return ""
	})
	if strings.Contains(strings.ReplaceAll(out, "$$", ""), "$") {
		return "", fmt.Errorf("%q: unsupported interpolation", s)
	}
	return strings.ReplaceAll(out, "$$", "$"), err
}

// loadCompose reads and interpolates the compose file at path.
func loadCompose(t *testing.T, path string, env map[string]string) composeFile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for name, s := range f.Services {
		for i, a := range s.Command {
			if s.Command[i], err = interpolate(a, env); err != nil {
				t.Fatalf("%s: service %s: command: %v", path, name, err)
			}
		}
		for k, v := range s.Environment {
			if s.Environment[k], err = interpolate(v, env); err != nil {
				t.Fatalf("%s: service %s: %s: %v", path, name, k, err)
			}
		}
		f.Services[name] = s
	}
	return f
}

// composeServe parses a changecast service's command and environment as
// "changecast serve" does (parseServe), with no other CHANGECAST_*
// variable set.
func composeServe(t *testing.T, name string, s composeService) serveConfig {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CHANGECAST_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range s.Environment {
		t.Setenv(k, v)
	}
	if len(s.Entrypoint) > 0 {
		t.Fatalf("service %s: sets an entrypoint; the checks expect the image's (changecast)", name)
	}
	if len(s.Command) == 0 || s.Command[0] != "serve" {
		t.Fatalf("service %s: command %q does not run changecast serve", name, s.Command)
	}
	cfg, err := parseServe(s.Command[1:], io.Discard)
	if err != nil {
		t.Fatalf("service %s: changecast serve %q refuses its configuration: %v", name, s.Command[1:], err)
	}
	return cfg
}

// knownEnv reports whether changecast serve reads the variable k: a
// flag's (envName) or one of the secrets' that are never flags.
func knownEnv(t *testing.T, k string) bool {
	switch k {
	case envJWTSecret, envJWTSecretFile, envNATSCreds, envNATSUser, envNATSPassword, envNATSToken:
		return true
	}
	var cfg serveConfig
	fs, err := serveFlags(&cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	known := false
	fs.VisitAll(func(f *flag.Flag) { known = known || envName(f.Name) == k })
	return known
}

// credentialArg matches a command-line argument that carries a
// credential: a URL with a password, a password or token option.
var credentialArg = regexp.MustCompile(`(?i)://[^/@\s]*:[^/@\s]*@|pass(word)?|secret|token|--user\b|--auth\b|\bcreds\b`)

// docker-compose.scale.yml, which cannot run here, checked: each
// changecast service's command and environment are accepted by changecast
// serve with the role its name says; two watchers, two gateways and a
// three-node NATS cluster the journal URL names; no credential on a
// command line.
func TestComposeScale(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	f := loadCompose(t, "../../docker-compose.scale.yml", map[string]string{"CHANGECAST_JWT_SECRET": secret})
	if _, err := interpolate("${CHANGECAST_JWT_SECRET:?set it}", nil); err == nil {
		t.Fatal("interpolation accepts a missing required variable")
	}

	// No credential on any command line (PostgreSQL's, NATS's,
	// changecast's): they come from the environment or files.
	names := make([]string, 0, len(f.Services))
	for name := range f.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, a := range f.Services[name].Command {
			if credentialArg.MatchString(a) {
				t.Errorf("service %s: command argument %q carries a credential: pass it in the environment or a file", name, a)
			}
		}
	}

	// NATS: three nodes, one cluster, every node routing to the others.
	nats := map[string]map[string]string{} // service → its options
	for _, name := range names {
		s := f.Services[name]
		if !strings.HasPrefix(s.Image, "nats:") {
			continue
		}
		opts := map[string]string{}
		for i := 0; i < len(s.Command); i++ {
			a := s.Command[i]
			if !strings.HasPrefix(a, "-") {
				t.Fatalf("service %s: unexpected argument %q", name, a)
			}
			if i+1 < len(s.Command) && !strings.HasPrefix(s.Command[i+1], "-") {
				opts[a] = s.Command[i+1]
				i++
			} else {
				opts[a] = ""
			}
		}
		nats[name] = opts
	}
	if len(nats) != 3 {
		t.Fatalf("%d NATS services, want 3", len(nats))
	}
	cluster := ""
	for name, o := range nats {
		if _, ok := o["-js"]; !ok {
			t.Errorf("NATS %s: JetStream is not enabled (-js)", name)
		}
		if o["--name"] != name {
			t.Errorf("NATS %s: server name %q, want the service's (JetStream needs unique names)", name, o["--name"])
		}
		if cluster == "" {
			cluster = o["--cluster_name"]
		}
		if o["--cluster_name"] == "" || o["--cluster_name"] != cluster {
			t.Errorf("NATS %s: cluster name %q, want one shared name (%q)", name, o["--cluster_name"], cluster)
		}
		if o["--cluster"] != "nats://0.0.0.0:6222" {
			t.Errorf("NATS %s: cluster listener %q, want nats://0.0.0.0:6222", name, o["--cluster"])
		}
		var routes []string
		for _, r := range strings.Split(o["--routes"], ",") {
			routes = append(routes, strings.TrimSpace(r))
		}
		for other := range nats {
			if other != name && !slices.Contains(routes, "nats://"+other+":6222") {
				t.Errorf("NATS %s: no route to %s (routes %q)", name, other, o["--routes"])
			}
		}
	}

	// changecast: two watchers and two gateways, each accepted by
	// changecast serve in the role its name says.
	roles := map[string][]string{}
	var cfgs = map[string]serveConfig{}
	for _, name := range names {
		s := f.Services[name]
		if !s.runsChangecast() {
			continue
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "CHANGECAST_") && !knownEnv(t, k) {
				t.Errorf("service %s: changecast serve reads no variable %s", name, k)
			}
		}
		cfg := composeServe(t, name, s)
		cfgs[name] = cfg
		role := cfg.scale.role
		roles[role] = append(roles[role], name)
		if !strings.HasPrefix(name, role) {
			t.Errorf("service %s runs role %s", name, role)
		}
		if !isNATSURL(cfg.journalURL) {
			t.Errorf("service %s: journal %q is not in NATS", name, cfg.journalURL)
		}
		var hosts []string
		for _, u := range strings.Split(cfg.journalURL, ",") {
			host, _, _ := strings.Cut(strings.TrimPrefix(u, "nats://"), ":")
			hosts = append(hosts, host)
			if nats[host] == nil {
				t.Errorf("service %s: journal URL %s names no NATS service", name, u)
			}
		}
		if len(hosts) != len(nats) {
			t.Errorf("service %s: journal URL %q lists %d of the %d NATS nodes", name, cfg.journalURL, len(hosts), len(nats))
		}
		if cfg.scale.journalReplicas != len(nats) {
			t.Errorf("service %s: %d stream replicas, want one per NATS node (%d)", name, cfg.scale.journalReplicas, len(nats))
		}
		if cfg.databaseURL == "" {
			t.Errorf("service %s: no database URL: the processes must share one database", name)
		}
		if role == roleGateway && s.Environment[envJWTSecret] != secret && s.Environment[envJWTSecretFile] == "" {
			t.Errorf("service %s: a gateway without the shared JWT secret", name)
		}
	}
	if len(roles[roleWatcher]) != 2 || len(roles[roleGateway]) != 2 || len(roles[roleAll]) != 0 {
		t.Fatalf("roles: %v, want two watchers and two gateways", roles)
	}
	var first *serveConfig
	for _, name := range append(roles[roleWatcher], roles[roleGateway]...) {
		c := cfgs[name]
		if first == nil {
			first = &c
			continue
		}
		if c.databaseURL != first.databaseURL || c.journalURL != first.journalURL || c.slot != first.slot || c.scale.journalStream != first.scale.journalStream {
			t.Errorf("service %s: database, journal, stream or slot differ from the others'", name)
		}
	}
}

// The checks themselves: a faulty compose file is caught.
func TestComposeScale_CatchesFaults(t *testing.T) {
	env := map[string]string{"X": "1"}
	for _, tc := range []struct{ in, want string }{
		{"${X}", "1"}, {"${Y:-d}", "d"}, {"${X:?no}", "1"}, {"a$$b", "a$b"},
	} {
		if got, err := interpolate(tc.in, env); err != nil || got != tc.want {
			t.Errorf("interpolate(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"${Y}", "${Y:?set Y}", "$Y"} {
		if _, err := interpolate(bad, env); err == nil {
			t.Errorf("interpolate(%q) accepted", bad)
		}
	}
	for _, a := range []string{"postgres://app:change-me@postgres/app", "--pass", "--user", "CHANGECAST_JWT_SECRET=x"} {
		if !credentialArg.MatchString(a) {
			t.Errorf("%q is not taken for a credential", a)
		}
	}
	for _, a := range []string{"serve", "--role", "gateway", "nats://nats1:4222,nats://nats2:4222", "--routes", "-js", "/data"} {
		if credentialArg.MatchString(a) {
			t.Errorf("%q is taken for a credential", a)
		}
	}
	// A command changecast serve refuses fails the parse.
	if _, err := parseServe([]string{"--role", "gateway"}, io.Discard); err == nil || !errors.As(err, new(usageError)) {
		t.Errorf("a gateway without a nats:// journal: %v, want a usage error", err)
	}
}
