package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/changecast/changecast/internal/backoff"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wsapi/client"
)

// Stable names for tail (README.md, "A 60-second tour"): scripts rely on
// them.
const (
	envServer     = "CHANGECAST_SERVER"
	envToken      = "CHANGECAST_TOKEN"
	defaultServer = "http://127.0.0.1:8080"
)

// tail's exit codes besides 0 (stopped by Ctrl-C), 1 (anything else) and 2
// (bad flags, a filter the server rejected).
const (
	exitTokenRejected = 3 // no token, or the server refused it (401, expired)
	exitForbidden     = 4 // the token may not see what the filter asks for
	exitUnreachable   = 5 // no server answered at start
)

// exitError makes the process exit with code after printing err. main's
// exitCode maps it; runTail returns it for exit codes 3 to 5.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// mintHint tells a user without a usable token how to get one.
const mintHint = `mint one with "changecast token --user NAME --role admin" (on the server's host, same --data-dir) and pass it in ` + envToken + ` or a file named by --token-file`

const tailUsage = `Usage: changecast tail [flags]

Follow committed changes live, one line per change: commit time, operation,
entity type, id and, for updates, the fields that changed. On a terminal
the output is colored text; otherwise (or with --output json) each line is
the change's JSON frame as the server sent it. A lost connection or a
server restart is survived: tail reconnects and resumes after the last
change printed, so nothing is missed or printed twice; it says so on stderr.

The token comes from ` + envToken + ` or --token-file, never from a flag value.

Examples:
  changecast tail                                   every change the token may see
  changecast tail --filter pool:create,update --filter instance
  changecast tail --filter instance:delete --match pool_id=00000000-0000-4000-8000-000000000004
  changecast tail --since 1207 --output json | jq .
  changecast tail --filter pool --snapshot          the current pools, then their changes

Exit codes:
  0  stopped (Ctrl-C)
  1  any other failure (e.g. the resume cursor is no longer in the journal)
  2  bad flags, or a filter the server rejected
  3  no token, or the server refused it (invalid or expired)
  4  the token may not see what the filter asks for (forbidden)
  5  the server could not be reached at start

Flags:
`

// tailConfig is a parsed "changecast tail" command line.
type tailConfig struct {
	server         string
	token          string
	filters        []client.Filter
	sendEverything bool
	since          string // "" = now
	snapshot       bool   // print the current rows first
	json           bool
	style          tailStyle

	// Reconnect backoff, and how long to keep trying an unreachable
	// server at start. Tests shorten them.
	minBackoff, maxBackoff time.Duration
	startWindow            time.Duration
}

// runTail is "changecast tail".
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseTailFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	return tailRun(ctx, cfg, stdout, stderr)
}

// parseTailFlags parses and checks the command line (entity types and
// operations against the built-in registry), reads the token and decides
// the output format.
func parseTailFlags(args []string, stdout, stderr io.Writer) (tailConfig, error) {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), tailUsage)
		fs.PrintDefaults()
	}
	cfg := tailConfig{minBackoff: 250 * time.Millisecond, maxBackoff: 10 * time.Second, startWindow: 3 * time.Second}
	var filterArgs, matchArgs []string
	server := fs.String("server", envOr(envServer, defaultServer), "changecast server, http(s)://host:port; the WebSocket URL is derived (env "+envServer+")")
	tokenFile := fs.String("token-file", "", "read the token from this file (default: env "+envToken+")")
	fs.Func("filter", "`TYPE[:OPS]` to receive, e.g. pool:create,update or instance; repeatable; all = everything (default all)", func(s string) error {
		filterArgs = append(filterArgs, s)
		return nil
	})
	fs.Func("match", "`FIELD=VALUE` every --filter's rows must have; VALUE is JSON if it parses (5, true, [\"a\",\"b\"] = any of), else a string; repeatable", func(s string) error {
		matchArgs = append(matchArgs, s)
		return nil
	})
	since := fs.String("since", "now", "`CURSOR` to resume after (a frame's \"cursor\"), or now")
	snapshot := fs.Bool("snapshot", false, "print the current rows of the filtered types first (operation snapshot), then follow from them with no gap and no duplicate; not with --since")
	output := fs.String("output", "", "pretty or json (default: pretty on a terminal, JSON lines otherwise)")
	system := fs.Bool("system", false, "also receive system events (entity type \"event\")")
	noColor := fs.Bool("no-color", false, "never color the output (also: env NO_COLOR)")
	utc := fs.Bool("utc", false, "print times in UTC rather than local time")
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}

	cfg.server = *server
	if _, err := client.EventsURL(*server); err != nil {
		return cfg, usageError{fmt.Errorf("tail: --server: %w", err)}
	}

	match, err := parseMatches(matchArgs)
	if err != nil {
		return cfg, usageError{fmt.Errorf("tail: %w", err)}
	}
	if len(filterArgs) == 0 {
		filterArgs = []string{"all"}
	}
	for _, a := range filterArgs {
		if a == "all" {
			cfg.sendEverything = true
			continue
		}
		f, err := parseTailFilter(a)
		if err != nil {
			return cfg, usageError{fmt.Errorf("tail: --filter %q: %w", a, err)}
		}
		f.Match = match
		cfg.filters = append(cfg.filters, f)
	}
	if cfg.sendEverything {
		if len(match) > 0 {
			return cfg, usageError{errors.New("tail: --match needs --filter with entity types; it cannot narrow \"all\"")}
		}
		cfg.filters = nil // everything already includes system events
	} else if *system && !slices.ContainsFunc(cfg.filters, func(f client.Filter) bool { return f.EntityType == entities.EventEntityType && f.Match == nil }) {
		cfg.filters = append(cfg.filters, client.Filter{EntityType: entities.EventEntityType})
	}

	switch *since {
	case "now", "":
	default:
		n, err := strconv.ParseInt(*since, 10, 64)
		if err != nil || n < 0 {
			return cfg, usageError{fmt.Errorf("tail: --since %q: want a cursor (a frame's \"cursor\", a non-negative integer) or now", *since)}
		}
		cfg.since = strconv.FormatInt(n, 10)
	}
	if *snapshot && cfg.since != "" {
		return cfg, usageError{errors.New("tail: --snapshot starts from the current rows; it cannot be combined with --since")}
	}
	cfg.snapshot = *snapshot

	terminal := isTerminal(stdout)
	switch *output {
	case "":
		cfg.json = !terminal
	case "json":
		cfg.json = true
	case "pretty":
	default:
		return cfg, usageError{fmt.Errorf("tail: --output %q: want pretty or json", *output)}
	}
	cfg.style.color = !cfg.json && terminal && !*noColor && os.Getenv("NO_COLOR") == ""
	cfg.style.loc = time.Local
	if *utc {
		cfg.style.loc = time.UTC
	}

	tok, err := readTailToken(*tokenFile)
	if err != nil {
		return cfg, exitError{exitTokenRejected, err}
	}
	cfg.token = tok
	return cfg, nil
}

// parseTailFilter parses TYPE[:OP,OP...].
func parseTailFilter(s string) (client.Filter, error) {
	name, opList, hasOps := strings.Cut(s, ":")
	if name != entities.EventEntityType {
		// Types declared in the server's configuration are not known
		// here: a well-formed name goes to the server, which refuses
		// one it does not watch (naming the ones it does).
		if _, err := tailRegistry().Lookup(name); err != nil && !typeName.MatchString(name) {
			return client.Filter{}, fmt.Errorf("%q is not an entity type name (snake_case); built-in ones: all, %s", name, strings.Join(knownTailTypes(), ", "))
		}
	}
	f := client.Filter{EntityType: name}
	if hasOps {
		for _, o := range strings.Split(opList, ",") {
			op, err := entities.ParseOperation(strings.TrimSpace(o))
			if err != nil {
				return client.Filter{}, err
			}
			f.Operations = append(f.Operations, op)
		}
	}
	return f, nil
}

// typeName is the form of an entity type name.
var typeName = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// tailRegistry is the registry tail checks --filter against: the built-in
// types, as serve registers them.
var tailRegistry = sync.OnceValue(entities.DefaultRegistry)

func knownTailTypes() []string {
	names := append(tailRegistry().Names(), entities.EventEntityType)
	slices.Sort(names)
	return names
}

// parseMatches parses --match FIELD=VALUE flags into a filter's match.
func parseMatches(args []string) (map[string]any, error) {
	if len(args) == 0 {
		return nil, nil
	}
	m := map[string]any{}
	for _, a := range args {
		field, value, ok := strings.Cut(a, "=")
		if !ok || field == "" {
			return nil, fmt.Errorf("--match %q: want FIELD=VALUE, e.g. status=running", a)
		}
		if _, dup := m[field]; dup {
			return nil, fmt.Errorf("--match %s given twice; for any of several values use %s='[\"a\",\"b\"]'", field, field)
		}
		m[field] = matchValue(value)
	}
	return m, nil
}

// matchValue is value as JSON when it parses as JSON, else the string
// itself: 5 is a number, running a string, "5" the string 5.
func matchValue(value string) any {
	dec := json.NewDecoder(strings.NewReader(value))
	dec.UseNumber() // large integers stay exact
	var v any
	if err := dec.Decode(&v); err == nil && !dec.More() {
		if _, err := dec.Token(); err == io.EOF {
			return v
		}
	}
	return value
}

// readTailToken returns the token from path, or from CHANGECAST_TOKEN when
// path is empty. Its errors never contain the token.
func readTailToken(path string) (string, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("tail: read --token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("tail: --token-file %s is empty; %s", path, mintHint)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv(envToken)); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("tail: no token: %s is not set and no --token-file was given; %s", envToken, mintHint)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tailRun subscribes and prints until ctx ends (nil) or the subscription
// fails in a way reconnecting cannot fix.
func tailRun(ctx context.Context, cfg tailConfig, stdout, stderr io.Writer) error {
	first := true
	opts := client.Options{
		Filters:        cfg.filters,
		SendEverything: cfg.sendEverything,
		Since:          cfg.since,
		Snapshot:       cfg.snapshot,
		MinBackoff:     cfg.minBackoff,
		MaxBackoff:     cfg.maxBackoff,
		Handler: func(ch entities.Change) error {
			line, err := tailLine(ch, cfg)
			if err != nil {
				return err
			}
			if _, err := stdout.Write(line); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			return nil
		},
		OnEvent: func(ev client.Event) {
			switch ev.Type {
			case client.EventConnected:
				if first {
					first = false
					fmt.Fprintf(stderr, "connected to %s after cursor %d (Ctrl-C to stop)\n", cfg.server, ev.Cursor)
				} else {
					fmt.Fprintf(stderr, "resumed at cursor %d\n", ev.Cursor)
				}
			case client.EventDisconnected:
				fmt.Fprintf(stderr, "reconnecting… (%s)\n", serverSaid(ev.Err))
			case client.EventLagging:
				fmt.Fprintf(stderr, "lagging behind at cursor %d; catching up from the journal\n", ev.Cursor)
			case client.EventCaughtUp:
				fmt.Fprintf(stderr, "caught up at cursor %d\n", ev.Cursor)
			case client.EventSnapshotComplete:
				fmt.Fprintf(stderr, "current rows printed; following changes after cursor %d\n", ev.Cursor)
			case client.EventSnapshotRestarted:
				fmt.Fprintln(stderr, "the connection dropped before every current row was printed; printing them again from the start (rows printed before this line may be out of date)")
			}
		},
	}

	var sub *client.Subscription
	start := time.Now()
	retry := backoff.Backoff{Min: cfg.minBackoff, Max: cfg.maxBackoff}
	for {
		var err error
		sub, err = client.Dial(ctx, cfg.server, cfg.token, opts)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if !client.Retryable(err) {
			return tailError(err)
		}
		delay := retry.Next()
		if time.Since(start)+delay > cfg.startWindow {
			return exitError{exitUnreachable, fmt.Errorf("tail: cannot reach the changecast server at %s: %w; is \"changecast serve\" running there? (set --server or %s)", cfg.server, err, envServer)}
		}
		if !backoff.Sleep(ctx, delay) {
			return nil
		}
	}
	select {
	case <-ctx.Done():
		return tailError(sub.Close())
	case <-sub.Done():
		return tailError(sub.Err())
	}
}

// tailError maps a subscription's terminal error to tail's exit codes.
func tailError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrTokenExpired):
		return exitError{exitTokenRejected, explained{"tail: the token expired; " + mintHint, err}}
	case errors.Is(err, client.ErrUnauthorized):
		return exitError{exitTokenRejected, explained{fmt.Sprintf("tail: the server refused the token (%s); %s", serverSaid(err), mintHint), err}}
	case errors.Is(err, client.ErrForbidden):
		return exitError{exitForbidden, explained{fmt.Sprintf("tail: forbidden: %s; use a token whose role and scope allow it (changecast token --role admin, or --scope)", serverSaid(err)), err}}
	case errors.Is(err, client.ErrBadFilter):
		return usageError{fmt.Errorf("tail: the server rejected the filter: %w", err)}
	case errors.Is(err, client.ErrResyncRequired):
		return fmt.Errorf("tail: %w; to follow from now, run again with --since now", err)
	}
	return fmt.Errorf("tail: %w", err)
}

// explained is an error whose text replaces its cause's, which it keeps for
// errors.Is.
type explained struct {
	msg   string
	cause error
}

func (e explained) Error() string { return e.msg }
func (e explained) Unwrap() error { return e.cause }

// serverSaid returns the server's explanation carried by a client error.
func serverSaid(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Message != "" {
		return ce.Message
	}
	return err.Error()
}

// tailLine renders one change as an output line, with its newline.
func tailLine(ch entities.Change, cfg tailConfig) ([]byte, error) {
	if cfg.json {
		b, err := client.MarshalFrame(ch)
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	return []byte(formatPretty(ch, cfg.style) + "\n"), nil
}

// tailStyle is how pretty output looks.
type tailStyle struct {
	color bool
	loc   *time.Location // nil: UTC
}

// ANSI SGR sequences for pretty output.
const (
	sgrReset   = "\x1b[0m"
	sgrRed     = "\x1b[31m"
	sgrBoldRed = "\x1b[1;31m"
	sgrGreen   = "\x1b[32m"
	sgrYellow  = "\x1b[33m"
	sgrMagenta = "\x1b[35m"
	sgrCyan    = "\x1b[36m"
	sgrGray    = "\x1b[90m"
)

// prettyTimeLayout has millisecond precision and the zone (Z for UTC).
const prettyTimeLayout = "2006-01-02 15:04:05.000Z07:00"

// formatPretty renders one change as a line (without newline): commit
// time, operation, entity type, id, and for an update the changed fields
// (previous → new). A system event shows its severity in place of the
// operation, then category/action and description. It depends only on its
// arguments, so golden files pin it.
func formatPretty(ch entities.Change, st tailStyle) string {
	loc := st.loc
	if loc == nil {
		loc = time.UTC
	}
	var b strings.Builder
	if ch.Operation == entities.OpSnapshot {
		b.WriteString(pad("(current row)", len(prettyTimeLayout)-len("Z07:00")+1)) // a row has no commit time
	} else {
		b.WriteString(ch.CommitTime.In(loc).Format(prettyTimeLayout))
	}
	b.WriteString("  ")
	if ch.EntityType == entities.EventEntityType {
		sev := rowText(ch.Payload, "severity")
		b.WriteString(padPainted(st, severityColor(sev), sev, 8))
		b.WriteString("  " + pad(ch.EntityType, 12) + "  ")
		b.WriteString(safeText(rowText(ch.Payload, "category")) + "/" + safeText(rowText(ch.Payload, "action")))
		if d := rowText(ch.Payload, "description"); d != "" {
			b.WriteString("  " + safeText(d))
		}
	} else {
		b.WriteString(padPainted(st, operationColor(ch.Operation), string(ch.Operation), 8))
		b.WriteString("  " + pad(ch.EntityType, 12))
		switch {
		case ch.Operation == entities.OpTruncate:
			b.WriteString("  (all rows)")
		case ch.EntityID != "":
			b.WriteString("  " + safeText(ch.EntityID))
		}
	}
	if ch.Operation == entities.OpUpdate {
		if d := diffFields(ch.Previous, ch.Payload); len(d) > 0 {
			b.WriteString("  " + strings.Join(d, ", "))
		}
	}
	return strings.TrimRight(b.String(), " ")
}

func operationColor(op entities.Operation) string {
	switch op {
	case entities.OpCreate:
		return sgrGreen
	case entities.OpUpdate:
		return sgrYellow
	case entities.OpDelete:
		return sgrRed
	}
	return sgrMagenta
}

func severityColor(sev string) string {
	switch entities.Severity(sev) {
	case entities.Emergency, entities.Alert, entities.Critical:
		return sgrBoldRed
	case entities.Error:
		return sgrRed
	case entities.Warning:
		return sgrYellow
	case entities.Informational:
		return sgrCyan
	case entities.Success:
		return sgrGreen
	}
	return sgrGray
}

// padPainted colors s (when st says so) and pads it to width columns.
func padPainted(st tailStyle, sgr, s string, width int) string {
	padded := pad(s, width)
	if !st.color {
		return padded
	}
	return sgr + s + sgrReset + padded[len(s):]
}

func pad(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}

// diffFields lists the fields present in both rows whose values differ, in
// field order: "status: pending → running".
func diffFields(prev, cur *entities.Row) []string {
	if prev == nil {
		return nil
	}
	keys := cur.Names()
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		was, ok := prev.Get(k)
		if !ok {
			continue
		}
		now, _ := cur.Get(k)
		if bytes.Equal(was, now) {
			continue
		}
		out = append(out, safeText(k)+": "+showValue(was)+" → "+showValue(now))
	}
	return out
}

// maxValueRunes bounds a value shown in a diff.
const maxValueRunes = 40

// showValue renders a JSON value for a diff: a plain word without quotes,
// other strings quoted, anything else as compact JSON; long values cut.
func showValue(raw []byte) string {
	s := string(raw)
	var str string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &str) == nil && plainWord(str) {
		s = str
	}
	if utf8.RuneCountInString(s) > maxValueRunes {
		r := []rune(s)
		s = string(r[:maxValueRunes-1]) + "…"
	}
	return s
}

// safeText returns s as is when every rune is printable, else quoted with
// Go escapes: row values reach the terminal, and an escape sequence in a
// key or description must not drive it.
func safeText(s string) string {
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// plainWord reports whether s can be shown without quotes unambiguously:
// non-empty, printable, no spaces, commas or arrows, and not something
// that would read as another JSON value (5, true, null).
func plainWord(s string) bool {
	if s == "" || strings.ContainsAny(s, ",\"→") || json.Valid([]byte(s)) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// rowText returns a string field of a row ("" when absent or not a string).
func rowText(row *entities.Row, key string) string {
	var s string
	if raw, ok := row.Get(key); ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}
