// Command instance-deletes is an example of automation on changecast's Go
// client (package wsapi/client): it follows the deletes of GARM runner
// instances, logs each one and appends it as a JSON line to a file.
//
// It survives server restarts and its own: the client resumes after the
// last cursor processed, and the cursor is kept in a file (written
// atomically after each delete is recorded), so a restarted program
// continues where the previous one stopped. Every record carries its
// cursor, and deletes at or below the highest cursor already in the output
// file are skipped, so a crash between recording a delete and saving the
// cursor does not record it twice: each delete is recorded exactly once.
//
// Usage:
//
//	CHANGECAST_TOKEN=$(changecast token --user deletes-bot --role viewer --scope instance) \
//	  go run ./examples/instance-deletes --server http://127.0.0.1:8080 --out deletes.jsonl
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wsapi/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "instance-deletes: %v\n", err)
		os.Exit(1)
	}
}

// record is one line of the output file.
type record struct {
	Cursor     int64      `json:"cursor"`
	DeletedAt  time.Time  `json:"deleted_at"` // the deleting transaction's commit time
	ID         uuid.UUID  `json:"id"`
	Name       string     `json:"name"`
	PoolID     *uuid.UUID `json:"pool_id"`
	ProviderID string     `json:"provider_id"`
	Status     string     `json:"status"` // the instance's last status
}

// run parses the command line and follows deletes until ctx ends (nil) or
// the subscription fails in a way retrying cannot fix.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("instance-deletes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr("CHANGECAST_SERVER", "http://127.0.0.1:8080"), "changecast server URL (env CHANGECAST_SERVER)")
	tokenFile := fs.String("token-file", "", "file holding the token (default: env CHANGECAST_TOKEN)")
	out := fs.String("out", "instance-deletes.jsonl", "file to append one JSON line per deleted instance to")
	cursorFile := fs.String("cursor-file", "", "file keeping the last cursor processed (default: --out with .cursor appended)")
	maxBackoff := fs.Duration("max-backoff", 30*time.Second, "longest wait between reconnection attempts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *maxBackoff <= 0 {
		return errors.New("--max-backoff must be positive")
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	if *cursorFile == "" {
		*cursorFile = *out + ".cursor"
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	rec, err := openRecorder(*out)
	if err != nil {
		return err
	}
	defer rec.close()

	opts := client.Options{
		Filters:     []client.Filter{{EntityType: "instance", Operations: []entities.Operation{entities.OpDelete}}},
		CursorStore: client.FileCursorStore(*cursorFile),
		MinBackoff:  min(client.DefaultMinBackoff, *maxBackoff),
		MaxBackoff:  *maxBackoff,
		Logger:      log,
		Handler: func(ch entities.Change) error {
			if ch.Cursor <= rec.last {
				return nil // recorded before a crash that lost the cursor
			}
			inst, err := client.Decode[entities.Instance](ch)
			if err != nil {
				return err
			}
			log.Info("instance deleted", "name", inst.Name, "id", inst.ID, "pool_id", inst.PoolID, "status", inst.Status, "cursor", ch.Cursor)
			return rec.append(record{
				Cursor: ch.Cursor, DeletedAt: ch.CommitTime, ID: inst.ID, Name: inst.Name,
				PoolID: inst.PoolID, ProviderID: inst.ProviderID, Status: inst.Status,
			})
		},
	}

	// The server may not be up yet: wait for it, as the subscription
	// itself would after a restart.
	var sub *client.Subscription
	for delay := opts.MinBackoff; ; delay = min(2*delay, opts.MaxBackoff) {
		sub, err = client.Dial(ctx, *server, token, opts)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if !client.Retryable(err) {
			return err
		}
		log.Warn("changecast server unavailable; retrying", "err", err, "delay", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	log.Info("following instance deletes", "server", *server, "out", *out)
	select {
	case <-ctx.Done():
		return sub.Close()
	case <-sub.Done():
		return sub.Err()
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// readToken reads the token from path, or CHANGECAST_TOKEN when path is
// empty. Its errors never contain the token.
func readToken(path string) (string, error) {
	tok := os.Getenv("CHANGECAST_TOKEN")
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read token: %w", err)
		}
		tok = string(b)
	}
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", errors.New("no token: set CHANGECAST_TOKEN or --token-file (changecast token --user NAME --role viewer --scope instance)")
	}
	return tok, nil
}

// recorder appends records to the output file, each synced before the
// cursor that covers it is saved.
type recorder struct {
	f    *os.File
	last int64 // highest cursor in the file
}

// openRecorder opens (or creates) path for appending and finds the highest
// cursor already recorded. A torn last line (a crash mid-write) is cut off.
func openRecorder(path string) (*recorder, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output: %w", err)
	}
	r := &recorder{f: f}
	var good int64 // bytes up to the end of the last complete line
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break // a partial line without its newline is dropped below
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read output: %w", err)
		}
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil {
			f.Close()
			return nil, fmt.Errorf("output %s: line at byte %d is not a record: %w", path, good, err)
		}
		r.last = max(r.last, rec.Cursor)
		good += int64(len(line))
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("trim output: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek output: %w", err)
	}
	return r, nil
}

func (r *recorder) append(rec record) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if _, err := r.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("sync output: %w", err)
	}
	r.last = rec.Cursor
	return nil
}

func (r *recorder) close() { r.f.Close() }
