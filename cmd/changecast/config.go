package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Stable names (README.md, "Configuration"): scripts rely on them.
const (
	envDatabaseURL   = "CHANGECAST_DATABASE_URL"
	envListen        = "CHANGECAST_LISTEN"
	envDataDir       = "CHANGECAST_DATA_DIR"
	envJWTSecret     = "CHANGECAST_JWT_SECRET"
	envJWTSecretFile = "CHANGECAST_JWT_SECRET_FILE"
	envLogLevel      = "CHANGECAST_LOG_LEVEL"
	envLogFormat     = "CHANGECAST_LOG_FORMAT"
	envSlot          = "CHANGECAST_SLOT"
	envOnSlotLoss    = "CHANGECAST_ON_SLOT_LOSS"
	envRetentionAge  = "CHANGECAST_RETENTION_AGE"
	envRetentionRows = "CHANGECAST_RETENTION_ROWS"

	defaultListen = "127.0.0.1:8080"
	secretFile    = "jwt-secret"
	minSecretLen  = 32
)

// common holds the settings serve and token share, so a token minted by
// "changecast token" verifies in "changecast serve" with the same env.
type common struct {
	dataDir   string
	logLevel  string
	logFormat string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", envOr(envDataDir, defaultDataDir()), "directory for the embedded PostgreSQL and the generated JWT secret (env "+envDataDir+")")
	fs.StringVar(&c.logLevel, "log-level", envOr(envLogLevel, "info"), "debug, info, warn or error (env "+envLogLevel+")")
	fs.StringVar(&c.logFormat, "log-format", envOr(envLogFormat, "text"), "text or json (env "+envLogFormat+")")
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// defaultDataDir is /var/lib/changecast for root (a system daemon's place,
// traversable by the postgres user the embedded server runs as), otherwise
// the XDG data directory.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/changecast"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "changecast")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "changecast")
	}
	return ".changecast"
}

// envName is the environment variable that gives flag name its default
// in serve and demo: CHANGECAST_ and the name in upper case, dashes as
// underscores (--retention-age: CHANGECAST_RETENTION_AGE).
func envName(flagName string) string {
	return "CHANGECAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag of fs whose environment variable (envName) is
// set and not empty, so that a flag given on the command line still wins.
// Call it once, after every flag is registered and before parsing. A value
// the flag rejects is a usage error naming the variable. The usage text
// keeps showing the built-in defaults, never the environment's values: a
// database URL may hold a password.
func applyEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || v == "" || err != nil {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = usageError{fmt.Errorf("%s: %v (it sets --%s)", envName(f.Name), serr, f.Name)}
			return
		}
	})
	return err
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "info", "":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, usageError{fmt.Errorf("log level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("log format %q: want text or json", format)}
	}
}

// loadSecret returns the JWT signing key: CHANGECAST_JWT_SECRET, else the
// file named by CHANGECAST_JWT_SECRET_FILE, else <data-dir>/jwt-secret,
// created (mode 0600) when create is true and it does not exist. The key
// never appears in errors.
func loadSecret(dataDir string, create bool) ([]byte, error) {
	if v := os.Getenv(envJWTSecret); v != "" {
		if len(v) < minSecretLen {
			return nil, fmt.Errorf("%s is %d bytes; use at least %d random bytes (e.g. openssl rand -hex 32)", envJWTSecret, len(v), minSecretLen)
		}
		return []byte(v), nil
	}
	path := os.Getenv(envJWTSecretFile)
	explicit := path != ""
	if !explicit {
		path = filepath.Join(dataDir, secretFile)
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := strings.TrimSpace(string(b))
		if len(s) < minSecretLen {
			return nil, fmt.Errorf("JWT secret file %s holds %d bytes; it needs at least %d", path, len(s), minSecretLen)
		}
		return []byte(s), nil
	case errors.Is(err, os.ErrNotExist) && !explicit && create:
		return createSecret(path)
	case errors.Is(err, os.ErrNotExist) && !explicit:
		return nil, fmt.Errorf("no JWT secret: %s does not exist; run \"changecast serve\" once with the same --data-dir, or set %s or %s", path, envJWTSecret, envJWTSecretFile)
	default:
		return nil, fmt.Errorf("read JWT secret: %w", err)
	}
}

// createSecret writes a new random key to path, unless another process
// does first: the key is written in full to a temporary file that is then
// linked to path, which fails if path exists, so a process that starts at
// the same moment with the same data dir reads either nothing or the whole
// key, never an empty or partial file, and both end up with the same key.
func createSecret(path string) ([]byte, error) {
	if err := ensureDataDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate JWT secret: %w", err)
	}
	s := hex.EncodeToString(raw)
	f, err := os.CreateTemp(filepath.Dir(path), "."+secretFile+".new-*")
	if err != nil {
		return nil, fmt.Errorf("create JWT secret: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(s + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("write JWT secret: %w", err)
	}
	if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
		return loadSecret(filepath.Dir(path), false) // another process won the race
	} else if err != nil {
		return nil, fmt.Errorf("create JWT secret: %w", err)
	}
	return []byte(s), nil
}

// ensureDataDir creates dir. Mode 0711: others may traverse it (the
// embedded PostgreSQL runs as the postgres user when we are root) but not
// list it; files inside carry their own modes.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	return nil
}
