package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store/storetest"
	"github.com/changecast/changecast/wsapi/client"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files: testdata/tail, and (TestProtocol*) ../../testdata/protocol with the examples of docs/protocol.md")

// tailProc is one "changecast tail" running in-process.
type tailProc struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan struct{} // closed when tail returns; err is then set
	err            error
}

// startTail runs run(ctx, args) in a goroutine; t's cleanup stops it.
func startTail(t testing.TB, args []string) *tailProc {
	t.Helper()
	return startTailFunc(t, func(ctx context.Context, stdout, stderr io.Writer) error {
		return run(ctx, args, stdout, stderr)
	})
}

func startTailFunc(t testing.TB, f func(ctx context.Context, stdout, stderr io.Writer) error) *tailProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &tailProc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		p.err = f(ctx, p.stdout, p.stderr)
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// lines returns the complete stdout lines so far.
func (p *tailProc) lines() []string {
	out := p.stdout.String()
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		return strings.Split(out[:i], "\n")
	}
	return nil
}

// waitLines waits for at least n stdout lines and returns them all.
func (p *tailProc) waitLines(t testing.TB, n int) []string {
	t.Helper()
	p.waitFor(t, fmt.Sprintf("%d output lines", n), func() bool { return len(p.lines()) >= n })
	return p.lines()
}

func (p *tailProc) waitStderr(t testing.TB, substr string) {
	t.Helper()
	p.waitFor(t, fmt.Sprintf("%q on stderr", substr), func() bool { return strings.Contains(p.stderr.String(), substr) })
}

func (p *tailProc) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		select {
		case <-p.done:
			if cond() {
				return
			}
			t.Fatalf("tail exited (%v) before %s\nstdout:\n%s\nstderr:\n%s", p.err, what, p.stdout.String(), p.stderr.String())
		case <-time.After(5 * time.Millisecond): // polling interval, not synchronisation
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\nstdout:\n%s\nstderr:\n%s", what, p.stdout.String(), p.stderr.String())
		}
	}
}

// stop cancels tail as Ctrl-C does and returns its error.
func (p *tailProc) stop(t testing.TB) error {
	t.Helper()
	p.cancel()
	select {
	case <-p.done:
		return p.err
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop within 10s of Ctrl-C")
		return nil
	}
}

func writeTokenFile(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTail_Golden pins the output formats on fixed frames: pretty (plain
// and colored, fixed zone) and JSON lines, which must be the frames
// exactly as received.
func TestTail_Golden(t *testing.T) {
	input, err := os.ReadFile("testdata/tail/frames.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var changes []entities.Change
	for _, line := range strings.Split(strings.TrimSuffix(string(input), "\n"), "\n") {
		ch, err := client.ParseFrame([]byte(line), nil)
		if err != nil {
			t.Fatalf("frame %s: %v", line, err)
		}
		changes = append(changes, ch)
	}
	for _, tc := range []struct {
		golden string
		cfg    tailConfig
	}{
		{"pretty.golden", tailConfig{style: tailStyle{loc: time.UTC}}},
		{"pretty-color.golden", tailConfig{style: tailStyle{loc: time.UTC, color: true}}},
		{"pretty-cet.golden", tailConfig{style: tailStyle{loc: time.FixedZone("CET", 3600)}}},
		{"json.golden", tailConfig{json: true}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			var out bytes.Buffer
			for _, ch := range changes {
				line, err := tailLine(ch, tc.cfg)
				if err != nil {
					t.Fatalf("tailLine: %v", err)
				}
				out.Write(line)
			}
			path := filepath.Join("testdata", "tail", tc.golden)
			if *updateGolden {
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("output differs from %s (run go test -update after checking):\n got:\n%s\nwant:\n%s", path, out.Bytes(), want)
			}
			if tc.cfg.json && !bytes.Equal(out.Bytes(), input) {
				t.Fatalf("JSON output is not the frames as received:\n got:\n%s\nwant:\n%s", out.Bytes(), input)
			}
			if !tc.cfg.style.color && bytes.Contains(out.Bytes(), []byte("\x1b[")) {
				t.Fatal("uncolored output contains escape sequences")
			}
		})
	}
}

// prettyTime matches the commit time that starts every pretty line.
var prettyTime = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z  `)

// TestTail_Live follows real SQL changes on a real server: pretty lines for
// a filtered subscription, then a JSON replay from the journal (--since 0)
// that must match what a plain WebSocket client receives byte for byte.
func TestTail_Live(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_tail_live")
	token := mintToken(t, dataDir, "admin")
	base := []string{"tail", "--server", "http://" + srv.addr, "--token-file", writeTokenFile(t, token)}

	tl := startTail(t, append(base, "--filter", "pool", "--filter", "instance:create,delete", "--output", "pretty", "--utc"))
	tl.waitStderr(t, "connected to")
	const pool, inst = "00000000-0000-4000-8000-000000000004", "00000000-0000-4000-8000-000000000006"
	db := connect(t, url)
	for _, sql := range []string{
		`INSERT INTO pools (id, provider_name, max_runners) VALUES ('` + pool + `', 'lxd', 5)`,
		`UPDATE pools SET max_runners = 7 WHERE id = '` + pool + `'`,
		`INSERT INTO instances (id, name, status, jit_configuration) VALUES ('` + inst + `', 'runner-1', 'pending', 'CANARY-jit')`,
		`UPDATE instances SET status = 'running' WHERE id = '` + inst + `'`, // not selected: instance updates
		`INSERT INTO jobs (id, status) VALUES (4711, 'queued')`,             // not selected: jobs
		`DELETE FROM instances WHERE id = '` + inst + `'`,
		`DELETE FROM pools WHERE id = '` + pool + `'`,
	} {
		exec1(t, db, sql)
	}
	lines := tl.waitLines(t, 5)
	want := []string{
		"create    pool          " + pool,
		"update    pool          " + pool + "  max_runners: 5 → 7",
		"create    instance      " + inst,
		"delete    instance      " + inst,
		"delete    pool          " + pool,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, line := range lines {
		if !prettyTime.MatchString(line) {
			t.Fatalf("line %d %q does not start with a UTC commit time", i, line)
		}
		if got := prettyTime.ReplaceAllString(line, ""); got != want[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, got, want[i])
		}
	}
	if err := tl.stop(t); err != nil {
		t.Fatalf("tail after Ctrl-C: %v, want nil (exit 0)", err)
	}

	// Replay everything from the journal as JSON lines, and compare with
	// a plain WebSocket client's frames.
	raw := dialSince(t, srv.addr, token, 0)
	sendJSON(t, raw, `{"send-everything": true}`)
	var frames []frame
	for range 7 {
		frames = append(frames, readFrame(t, raw, 10*time.Second))
	}
	js := startTail(t, append(base, "--since", "0", "--output", "json"))
	lines = js.waitLines(t, len(frames))
	for i, f := range frames {
		if lines[i] != string(f.raw) {
			t.Errorf("JSON line %d:\n got %s\nwant %s", i, lines[i], f.raw)
		}
	}
	if out := tl.stdout.String() + js.stdout.String() + tl.stderr.String() + js.stderr.String(); strings.Contains(out, "CANARY") || strings.Contains(out, token) {
		t.Fatal("tail printed a secret column value or the token")
	}
	if err := js.stop(t); err != nil {
		t.Fatalf("tail after Ctrl-C: %v", err)
	}
}

// TestTail_System subscribes to system events besides a table and replays
// the one serve journals when replication starts.
func TestTail_System(t *testing.T) {
	srv, _, dataDir := readyServer(t, "cc_tail_system")
	tl := startTail(t, []string{"tail", "--server", "http://" + srv.addr, "--token-file", writeTokenFile(t, mintToken(t, dataDir, "admin")),
		"--filter", "controller", "--system", "--since", "0", "--output", "pretty", "--utc"})
	lines := tl.waitLines(t, 1)
	eventLine := regexp.MustCompile(`^\S+ \S+Z  (emergency|alert|critical|error|warning|informational|success|debug) +event +[a-z_]+/[a-z_]+`)
	if !eventLine.MatchString(lines[0]) {
		t.Fatalf("first line %q is not a system event", lines[0])
	}
	if err := tl.stop(t); err != nil {
		t.Fatalf("tail --system: %v", err)
	}
}

// TestTail_ResumesAcrossServerRestart stops serve mid-stream, writes while
// it is down, starts a new serve on the same database and address, and
// checks that tail printed every change exactly once, in order.
func TestTail_ResumesAcrossServerRestart(t *testing.T) {
	url := storetest.NewDatabase(t)
	dataDir := t.TempDir()
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_tail_restart"}
	first := startServe(t, cfg, nil)
	first.waitReady(t)
	token := writeTokenFile(t, mintToken(t, dataDir, "admin"))
	db := connect(t, url)

	tc, err := parseTailFlags([]string{"--server", "http://" + first.addr, "--token-file", token, "--filter", "enterprise:create"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tc.minBackoff, tc.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	tl := startTailFunc(t, func(ctx context.Context, stdout, stderr io.Writer) error { return tailRun(ctx, tc, stdout, stderr) })
	tl.waitStderr(t, "connected to")

	n := 0
	insert := func(k int) {
		for range k {
			n++
			exec1(t, db, fmt.Sprintf("INSERT INTO enterprises (name) VALUES ('e%02d')", n))
		}
	}
	insert(5)
	tl.waitLines(t, 5)
	first.stop(t)
	insert(5) // while no server runs
	cfg.listen = first.addr
	second := startServe(t, cfg, nil)
	second.waitReady(t)
	insert(5)
	lines := tl.waitLines(t, n)

	var last int64
	for i, line := range lines {
		var f struct {
			Payload struct {
				Name string `json:"name"`
			} `json:"payload"`
			Cursor string `json:"cursor"`
		}
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if want := fmt.Sprintf("e%02d", i+1); f.Payload.Name != want {
			t.Fatalf("line %d is %s, want %s (a gap or a duplicate):\n%s", i, f.Payload.Name, want, strings.Join(lines, "\n"))
		}
		c, _ := strconv.ParseInt(f.Cursor, 10, 64)
		if c <= last {
			t.Fatalf("line %d: cursor %d after %d", i, c, last)
		}
		last = c
	}
	if len(lines) != n {
		t.Fatalf("got %d lines, want %d", len(lines), n)
	}
	t.Logf("stderr:\n%s", tl.stderr.String())
	for _, s := range []string{"reconnecting…", "resumed at cursor"} {
		if !strings.Contains(tl.stderr.String(), s) {
			t.Errorf("stderr does not say %q:\n%s", s, tl.stderr.String())
		}
	}
	if err := tl.stop(t); err != nil {
		t.Fatalf("tail after Ctrl-C: %v", err)
	}
}

// TestTail_Errors checks each failure's exit code and message.
func TestTail_Errors(t *testing.T) {
	srv, _, dataDir := readyServer(t, "cc_tail_errors")
	server := "http://" + srv.addr
	admin := writeTokenFile(t, mintToken(t, dataDir, "admin"))
	t.Setenv(envToken, "")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "bogus"},
		{"bad output", []string{"--output", "yaml"}, `--output "yaml": want pretty or json`},
		{"not a type name", []string{"--filter", "Pools!"}, `"Pools!" is not an entity type name (snake_case); built-in ones: all, controller`},
		// A well-formed name may be a type declared in the server's
		// configuration: the server decides, naming what it watches.
		{"unknown type", []string{"--server", server, "--token-file", admin, "--filter", "pools"}, `unknown entity type "pools"; known: controller`},
		{"unknown operation", []string{"--filter", "pool:upsert"}, `unknown operation "upsert"`},
		{"bad match", []string{"--filter", "pool", "--match", "max_runners"}, "want FIELD=VALUE"},
		{"match on all", []string{"--match", "status=running"}, "cannot narrow \"all\""},
		{"bad since", []string{"--since", "yesterday"}, `--since "yesterday"`},
		{"bad server", []string{"--server", "ftp://example.com"}, "want http(s)://host:port"},
		{"argument", []string{"pool"}, `unexpected argument "pool"`},
		{"rejected match field", []string{"--server", server, "--token-file", admin, "--filter", "pool", "--match", "colour=blue"}, `the server rejected the filter`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), append([]string{"tail"}, tc.args...), io.Discard, io.Discard)
			if !errors.As(err, new(usageError)) || exitCode(err, io.Discard) != 2 {
				t.Fatalf("got %v, want a usage error (exit 2)", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}

	badToken := writeTokenFile(t, "eyJhbGciOiJIUzI1NiJ9.CANARY-not-a-token.c2ln")
	unreachable := "http://" + freeAddr(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"missing token", []string{"--server", server}, exitTokenRejected, []string{"no token", "changecast token --user NAME --role admin"}},
		{"empty token file", []string{"--server", server, "--token-file", writeTokenFile(t, "")}, exitTokenRejected, []string{"is empty", "changecast token --user NAME --role admin"}},
		{"bad token", []string{"--server", server, "--token-file", badToken}, exitTokenRejected, []string{"the server refused the token (invalid token: malformed)", "changecast token --user NAME --role admin"}},
		{"viewer asks for user", []string{"--server", server, "--token-file", writeTokenFile(t, mintToken(t, dataDir, "viewer")), "--filter", "user"}, exitForbidden, []string{`forbidden: entity type "user" is not allowed for this token; allowed: controller`, "changecast token --role admin"}},
		{"unreachable", []string{"--server", unreachable, "--token-file", admin}, exitUnreachable, []string{"cannot reach the changecast server at " + unreachable, "connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"tail"}, tc.args...), &stdout, &stderr)
			t.Logf("exit %d: %v", tc.code, err)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != tc.code {
				t.Fatalf("got %v (%T), want exit code %d", err, err, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if out := err.Error() + stdout.String() + stderr.String(); strings.Contains(out, "CANARY") {
				t.Fatalf("the token leaked: %s", out)
			}
		})
	}
}

func TestTail_Help(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"tail", "-h"}, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) || exitCode(err, io.Discard) != 0 {
		t.Fatalf("tail -h: %v, want flag.ErrHelp (exit 0)", err)
	}
	for _, s := range []string{"Exit codes:", "3  no token", "4  the token may not see", "5  the server could not be reached", "--token-file", envToken} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("help does not mention %q:\n%s", s, stderr.String())
		}
	}
}

func TestTail_MatchValues(t *testing.T) {
	m, err := parseMatches([]string{"status=running", "max_runners=5", "os_type=[\"linux\",\"windows\"]", "name=\"5\"", "flag=true", "note=a=b", "big=9007199254740993"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(m)
	want := `{"big":9007199254740993,"flag":true,"max_runners":5,"name":"5","note":"a=b","os_type":["linux","windows"],"status":"running"}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestTail_PrettyEscapesControlCharacters checks that row text cannot send
// escape sequences to the terminal.
func TestTail_PrettyEscapesControlCharacters(t *testing.T) {
	if got := safeText("ghes\x1b]0;pwned\x07"); got != `"ghes\x1b]0;pwned\a"` {
		t.Errorf("safeText = %s, want the Go-quoted form", got)
	}
	if got := safeText("on-prem GitHub, rack 4"); got != "on-prem GitHub, rack 4" {
		t.Errorf("safeText changed printable text: %s", got)
	}
}
