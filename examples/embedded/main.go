// Command embedded shows changecast embedded in a Go program that owns its
// schema: it declares its own entity (a note, whose share token is
// secret), starts the embedded PostgreSQL, runs the replication pipeline
// and the WebSocket hub in-process, subscribes to its own hub with the Go
// client, writes a note and prints the change it receives: the note
// without its share token.
//
//	go run ./examples/embedded
//
// The pieces are the ones "changecast serve" wires: localpg (the embedded
// PostgreSQL), store (migrations, publication, the journal), pipeline (the
// replication path), wsapi (the hub, a pipeline sink) and wsapi/client.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
	"github.com/changecast/changecast/wsapi/client"
)

// Note is the program's own entity: table notes, key id. ShareToken is
// tagged secret: sanitize strips it before the journal, so no client ever
// receives it.
type Note struct {
	ID         uuid.UUID `json:"id" gorm:"type:uuid;primaryKey"`
	Title      string    `json:"title" gorm:"not null"`
	ShareToken string    `json:"share_token" gorm:"not null;default:''" changecast:"secret"`
	CreatedAt  time.Time `json:"created_at"`
}

// TableName is the table gorm creates and changecast watches.
func (Note) TableName() string { return "notes" }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "embedded: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("embedded", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "directory for the embedded PostgreSQL (default: a new temporary directory, removed at exit)")
	verbose := fs.Bool("v", false, "log what changecast does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *dataDir == "" {
		dir, err := os.MkdirTemp("", "changecast-embedded-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		// The server may run as another OS user (postgres, when we are
		// root): it must be able to enter the directory.
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		*dataDir = dir
	}

	// 1. The embedded PostgreSQL (wal_level=logical).
	pg, err := localpg.Start(ctx, localpg.Config{Dir: *dataDir})
	if err != nil {
		return err
	}
	defer pg.Close()

	// 2. The program's own entity type, and the schema: changecast's own
	// tables and the notes table (REPLICA IDENTITY FULL), nothing else.
	reg := entities.NewRegistry()
	if err := reg.Register(entities.EntityType{Name: "note", Table: "notes", GoType: reflect.TypeOf(Note{})}); err != nil {
		return err
	}
	db, err := store.Open(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx, reg); err != nil {
		return err
	}
	if err := db.EnsurePublication(ctx, "changecast", reg); err != nil {
		return err
	}

	// 3. The pipeline, and the hub as its sink.
	journal := &store.Journal{DB: db}
	pipe, err := pipeline.New(pipeline.Config{DatabaseURL: pg.URL(), Registry: reg, Journal: journal, Logger: log})
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	auth, err := wsapi.NewAuth(secret)
	if err != nil {
		return err
	}
	hub, err := wsapi.NewServer(wsapi.Config{Registry: reg, Auth: auth, Journal: journal,
		SecretField: pipe.SecretField, Ready: pipe.Streaming, Logger: log})
	if err != nil {
		return err
	}
	pipe.AddSink(hub)
	if err := pipe.Prepare(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 10 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()
	pipeCtx, stopPipe := context.WithCancel(context.WithoutCancel(ctx))
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- pipe.Run(pipeCtx) }()
	// Orderly stop: the pipeline, then the hub's clients, then HTTP.
	defer func() {
		stopPipe()
		if err := <-pipeDone; err != nil {
			log.Error("pipeline", "err", err)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hub.Close(sctx)
		_ = httpSrv.Shutdown(sctx)
		<-httpDone
	}()
	if err := waitStreaming(ctx, pipe, pipeDone); err != nil {
		return err
	}

	// 4. Subscribe to our own hub, as any client would.
	token, err := auth.Mint(wsapi.Claims{Name: "embedded", Role: wsapi.RoleViewer,
		RegisteredClaims: jwt.RegisteredClaims{Subject: "embedded"}}, time.Hour)
	if err != nil {
		return err
	}
	sub, err := client.Dial(ctx, "http://"+ln.Addr().String(), token, client.Options{
		Registry: reg,
		Filters:  []client.Filter{{EntityType: "note"}},
	})
	if err != nil {
		return err
	}
	defer sub.Close()

	// 5. Write a note with a secret, and print the change that arrives.
	note := Note{ID: uuid.New(), Title: "hello from an embedded changecast", ShareToken: "never-leaves-" + uuid.NewString()}
	app, err := pgx.Connect(ctx, pg.URL()) // the program's own connection
	if err != nil {
		return err
	}
	defer app.Close(context.WithoutCancel(ctx))
	if _, err := app.Exec(ctx, `INSERT INTO notes (id, title, share_token, created_at) VALUES ($1, $2, $3, now())`,
		note.ID, note.Title, note.ShareToken); err != nil {
		return err
	}
	select {
	case ch := <-sub.Changes():
		if ch.EntityID != note.ID.String() {
			return fmt.Errorf("received a change of %s %s, want note %s", ch.EntityType, ch.EntityID, note.ID)
		}
		payload, err := json.Marshal(ch.Payload)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s %s cursor=%d payload=%s\n", ch.Operation, ch.EntityType, ch.EntityID, ch.Cursor, payload)
		return nil
	case <-sub.Done():
		return fmt.Errorf("subscription ended: %w", sub.Err())
	case <-time.After(30 * time.Second):
		return errors.New("no change arrived within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitStreaming waits until the pipeline streams (or fails).
func waitStreaming(ctx context.Context, pipe *pipeline.Pipeline, done chan error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for !pipe.Streaming() {
		select {
		case err := <-done:
			done <- err // for the deferred stop, which waits for it
			return fmt.Errorf("pipeline stopped before streaming: %w", err)
		case <-deadline:
			return errors.New("the pipeline did not start streaming within 60s")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
