// Command changecast streams committed PostgreSQL row changes, secrets
// stripped, to WebSocket subscribers. It binds flags, environment and
// signals to the library packages (pipeline, store, wsapi) and holds no
// logic a program embedding changecast would need.
//
// Subcommands: serve, demo, tail, token, user, secrets, inspect, reload,
// version.
// Run "changecast help" for usage. Every flag of serve and demo takes its
// default from CHANGECAST_ and its name in upper case with dashes as
// underscores (--retention-age: CHANGECAST_RETENTION_AGE); tail reads
// CHANGECAST_SERVER and CHANGECAST_TOKEN; secrets come only from the
// environment or files, never from flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A second signal, once shutdown has begun, forces exit: NotifyContext
	// stops catching after the first, so the default handler kills us.
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError marks a bad command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "changecast: %v\n", err)
		return 2
	case errors.As(err, new(exitError)):
		var ee exitError
		errors.As(err, &ee)
		fmt.Fprintf(stderr, "changecast: %v\n", err)
		return ee.code
	default:
		fmt.Fprintf(stderr, "changecast: %v\n", err)
		return 1
	}
}

const usage = `changecast streams committed PostgreSQL changes to WebSocket clients.

Usage:
  changecast serve   [flags]   watch the database and serve /api/v1/ws/events
  changecast token   [flags]   mint a JWT for a user and role (prints only the token)
  changecast tail    [flags]   follow committed changes live (colored lines, or JSON lines)
  changecast demo    [flags]   serve the embedded PostgreSQL with a sample workload and a token
  changecast user    ACTION    manage who can log in: add, passwd, disable, enable, list
  changecast secrets           print which columns are stripped from every entity type, and why
  changecast inspect [flags]   list a database's tables, what watching each needs, and a starter config
  changecast reload  [flags]   make the running server re-read its configuration; prints what changed
  changecast version           print the build version

Run "changecast <command> -h" for a command's flags. Every flag of serve
and demo takes its default from CHANGECAST_<FLAG> (--retention-age:
CHANGECAST_RETENTION_AGE).
`

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("missing command")}
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "user":
		return runUser(ctx, args[1:], stdout, stderr)
	case "tail":
		return runTail(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "secrets":
		return runSecrets(args[1:], stdout, stderr)
	case "inspect":
		return runInspect(ctx, args[1:], stdout, stderr)
	case "reload":
		return runReload(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", args[0])}
	}
}
