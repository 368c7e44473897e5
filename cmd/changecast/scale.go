package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/changecast/changecast/natsjournal"
)

// Scaling out (docs/scale-out.md): with --journal-url nats://… the journal
// is a NATS JetStream stream, and serve runs in one of three roles.
const (
	roleAll     = "all"     // watcher and gateway in one process
	roleWatcher = "watcher" // holds the slot (one active, others stand by) and writes the stream
	roleGateway = "gateway" // serves clients from the stream and PostgreSQL
)

// Environment variables with NATS credentials: never flags, never logged.
const (
	envNATSCreds    = "CHANGECAST_NATS_CREDS"    // path of a .creds file (JWT and NKey seed)
	envNATSUser     = "CHANGECAST_NATS_USER"     // user name ...
	envNATSPassword = "CHANGECAST_NATS_PASSWORD" // ... and password
	envNATSToken    = "CHANGECAST_NATS_TOKEN"    // or a token
)

// envReadURL sets --read-url, a database URL that may hold a password.
const envReadURL = "CHANGECAST_READ_URL"

// scaleConfig is serve's scale-out settings.
type scaleConfig struct {
	role            string
	journalStream   string
	journalReplicas int
	// readURL (--read-url) is a hot standby of the watched database that
	// gateways read users and events from (readreplica.go); it may hold
	// a password: never shown without store.RedactURL.
	readURL    string
	readMaxLag time.Duration
}

func (s *scaleConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&s.role, "role", roleAll, "with a nats:// --journal-url: all (watcher and gateway), watcher (holds the slot; one is active, others stand by) or gateway (serves clients from the stream) (env CHANGECAST_ROLE)")
	fs.StringVar(&s.journalStream, "journal-stream", natsjournal.DefaultStream, "with a nats:// --journal-url: the JetStream stream of the journal (env CHANGECAST_JOURNAL_STREAM)")
	fs.IntVar(&s.journalReplicas, "journal-replicas", 1, "with a nats:// --journal-url: the stream's replicas (1, 3 or 5; at most the NATS cluster's size) (env CHANGECAST_JOURNAL_REPLICAS)")
	fs.StringVar(&s.readURL, "read-url", "", "role gateway or all with a nats:// --journal-url: PostgreSQL URL of a hot standby of the watched database to read users and events from; empty reads them from --database-url (env "+envReadURL+")")
	fs.DurationVar(&s.readMaxLag, "read-max-lag", defaultReadMaxLag, "with --read-url: read from the primary while the standby is further behind than this (env CHANGECAST_READ_MAX_LAG)")
}

// check validates the scale-out flags against --journal-url.
func (s scaleConfig) check(journalURL string) error {
	switch s.role {
	case roleAll, roleWatcher, roleGateway:
	default:
		return fmt.Errorf("--role %q: use %s, %s or %s", s.role, roleAll, roleWatcher, roleGateway)
	}
	if s.role != roleAll && !isNATSURL(journalURL) {
		return fmt.Errorf("--role %s needs the journal in NATS JetStream: --journal-url nats://host:4222", s.role)
	}
	if s.journalReplicas < 1 || s.journalReplicas > 5 {
		return fmt.Errorf("--journal-replicas %d: use 1 to 5 (JetStream's limit)", s.journalReplicas)
	}
	if s.readURL != "" {
		switch {
		case !isNATSURL(journalURL):
			return fmt.Errorf("--read-url is for the gateways of a scaled-out changecast (--journal-url nats://… with --role gateway or all); without it, leave --read-url (%s) out", envReadURL)
		case s.role == roleWatcher:
			return fmt.Errorf("--read-url is for gateways only: a watcher reads and writes the primary (--database-url); leave --read-url (%s) out of the watchers' flags and environment", envReadURL)
		}
	}
	if s.readMaxLag <= 0 {
		return fmt.Errorf("--read-max-lag %s: must be positive", s.readMaxLag)
	}
	if isNATSURL(journalURL) {
		for _, p := range strings.Split(journalURL, ",") {
			if strings.Contains(p, "@") {
				return fmt.Errorf("--journal-url holds credentials: pass them in %s, or %s and %s, or %s, never in a flag", envNATSCreds, envNATSUser, envNATSPassword, envNATSToken)
			}
		}
	}
	return nil
}

// isNATSURL reports whether --journal-url selects NATS JetStream.
func isNATSURL(u string) bool {
	return strings.HasPrefix(u, "nats://") || strings.HasPrefix(u, "tls://")
}

// natsCredentials returns the connection options the environment's
// credentials call for.
func natsCredentials() ([]nats.Option, error) {
	var opts []nats.Option
	if f := os.Getenv(envNATSCreds); f != "" {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%s: %w", envNATSCreds, err)
		}
		opts = append(opts, nats.UserCredentials(f))
	}
	if u := os.Getenv(envNATSUser); u != "" {
		opts = append(opts, nats.UserInfo(u, os.Getenv(envNATSPassword)))
	}
	if tok := os.Getenv(envNATSToken); tok != "" {
		opts = append(opts, nats.Token(tok))
	}
	return opts, nil
}

// openNATSJournal opens the JetStream journal for cfg; source is the
// watched database's identity ("" for a gateway, which never changes the
// stream).
func openNATSJournal(ctx context.Context, cfg serveConfig, source string, locker natsjournal.Locker, events natsjournal.Events, log *slog.Logger) (*natsjournal.Journal, error) {
	opts, err := natsCredentials()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	maxAge := cfg.retentionAge
	if maxAge < 0 {
		maxAge = 0
	}
	j, err := natsjournal.Open(ctx, natsjournal.Config{
		URL: cfg.journalURL, Options: opts, Stream: cfg.scale.journalStream, Replicas: cfg.scale.journalReplicas,
		MaxAge: maxAge, MaxMsgs: cfg.retentionRows, Source: source, Locker: locker, Events: events,
		Name: "changecast " + cfg.scale.role + " " + host, Logger: log.With("component", "natsjournal"),
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

var errNoWatcher = errors.New("no changecast watcher is active")
