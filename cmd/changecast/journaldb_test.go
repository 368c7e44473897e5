package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// assertOnlySlotAndPublication fails unless the watched database at url
// holds nothing of changecast's own but its slot and its publication: no
// schema changecast (the journal, offsets, gaps, events), no users table
// unless the domain brings one.
func assertOnlySlotAndPublication(t *testing.T, url, slot string, usersAllowed bool) {
	t.Helper()
	c := connect(t, url)
	ctx := context.Background()
	var schema, users, slots, pubs int
	if err := c.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_namespace WHERE nspname = 'changecast'),
			(SELECT count(*) FROM pg_class WHERE relname = 'users' AND relkind = 'r'),
			(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()),
			(SELECT count(*) FROM pg_publication WHERE pubname = 'changecast')`, slot).
		Scan(&schema, &users, &slots, &pubs); err != nil {
		t.Fatal(err)
	}
	if schema != 0 {
		t.Errorf("the watched database has schema changecast; with --journal-url it must hold only the slot and the publication")
	}
	if users != 0 && !usersAllowed {
		t.Errorf("the watched database has a users table; login users live with the journal")
	}
	if slots != 1 || pubs != 1 {
		t.Errorf("the watched database has %d slots %q and %d publications changecast, want one of each", slots, slot, pubs)
	}
}

// TestJournalURL_SIGKILLLosesAndRepeatsNothing: with the journal in a
// second database, a real serve killed with SIGKILL at random moments
// while writers commit loses and repeats nothing: the offset commits with
// the journal, in the journal's database, and the slot lives in the
// watched one.
func TestJournalURL_SIGKILLLosesAndRepeatsNothing(t *testing.T) {
	watched, journal := storetest.NewDatabase(t), storetest.NewDatabase(t)
	crashTest(t, watched, journal, 10_000, 6)
	assertOnlySlotAndPublication(t, watched, "cc_crash", true) // garm's users table is a domain table

	// The journal records which database it follows.
	var name string
	if err := connect(t, journal).QueryRow(context.Background(), "SELECT database_name FROM changecast.journal_source").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(watched, "/"+name) && !strings.Contains(watched, "/"+name+"?") {
		t.Errorf("journal_source names %q, want the watched database of %s", name, watched)
	}
}

// TestJournalURL_Local: --journal-url local keeps the journal and the
// users in the embedded PostgreSQL of the data directory while an external
// database is watched; changes arrive, a user added with --journal-url
// local logs in, and after a restart a client resumes from its cursor.
func TestJournalURL_Local(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, `CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, api_key text)`)
	dataDir := storetest.TempDir(t) // the embedded server's OS user must reach it
	started := make(chan serveInfo, 2)
	cfg := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, journalURL: journalLocal, slot: "cc_jlocal"}
	if err := cfg.tables.Set("order=public.orders"); err != nil {
		t.Fatal(err)
	}
	cfg.started = func(info serveInfo) { started <- info }
	srv := startServe(t, cfg, nil)
	srv.waitReady(t)
	info := <-started
	if u, err := neturl.Parse(info.JournalURL); err != nil || !strings.HasPrefix(u.Query().Get("host"), filepath.Join(dataDir, "postgres")) {
		t.Fatalf("journal URL %s: want the embedded PostgreSQL in %s", store.RedactURL(info.JournalURL), dataDir)
	}

	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"filters": [{"entity-type": "order"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO orders VALUES (1, 'new', 'CANARY-order-key')`)
	f, _ := readChange(t, ws, 30*time.Second)
	if f.EntityType != "order" || fmt.Sprint(f.Payload["id"]) != "1" || strings.Contains(string(f.raw), "CANARY") {
		t.Fatalf("got %s", f.raw)
	}
	var inJournal int
	if err := connect(t, info.JournalURL).QueryRow(context.Background(),
		"SELECT count(*) FROM changecast.journal WHERE entity_type = 'order' AND entity_id = '1'").Scan(&inJournal); err != nil || inJournal != 1 {
		t.Fatalf("embedded journal holds %d rows of order 1 (%v), want 1", inJournal, err)
	}

	// Users live with the journal: "changecast user" reaches them with
	// the same --journal-url, attaching to the running embedded server.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	userCmd(t, "user", "add", "--data-dir", dataDir, "--journal-url", journalLocal, "--username", "ada", "--password-file", pwFile)
	status, adaToken, _ := login(t, srv.addr, "ada", "correct horse battery")
	if status != http.StatusOK || adaToken == "" {
		t.Fatalf("login of a user in the embedded journal database: status %d", status)
	}
	// Their sessions end with them, though no replication stream carries
	// the journal database's users table.
	adaWS := dialWS(t, srv.addr, adaToken)
	sendJSON(t, adaWS, `{"filters": [{"entity-type": "order"}]}`)
	filterApplied(t, adaWS)
	userCmd(t, "user", "disable", "--data-dir", dataDir, "--journal-url", journalLocal, "--username", "ada")
	if d := expectRevoked(t, adaWS, "user disabled"); d > 2*time.Second {
		t.Errorf("revoked %s after the user was disabled, want within a second or so", d)
	}
	assertOnlySlotAndPublication(t, url, "cc_jlocal", false)

	// Restart: the embedded server stops with serve and starts again; a
	// client resuming after the first change gets the next one only.
	cursor := cursorOf(t, f)
	srv.stop(t)
	srv = startServe(t, cfg, nil)
	srv.waitReady(t)
	exec1(t, sql, `INSERT INTO orders VALUES (2, 'new', NULL)`)
	ws = dialSince(t, srv.addr, mintToken(t, dataDir, "admin"), cursor)
	sendJSON(t, ws, `{"filters": [{"entity-type": "order"}]}`)
	f, _ = readChange(t, ws, 30*time.Second)
	if fmt.Sprint(f.Payload["id"]) != "2" {
		t.Fatalf("after restart, resuming from %d: got %s, want order 2", cursor, f.raw)
	}
}

// TestJournalURL_RefusesAnotherDatabasesJournal: a journal database that
// follows one watched database is refused for another, before anything is
// written, with an error that says why and shows no password.
func TestJournalURL_RefusesAnotherDatabasesJournal(t *testing.T) {
	a, b, journal := storetest.NewDatabase(t), storetest.NewDatabase(t), storetest.NewDatabase(t)
	exec1(t, connect(t, a), `CREATE TABLE orders (id bigint PRIMARY KEY)`)
	exec1(t, connect(t, b), `CREATE TABLE orders (id bigint PRIMARY KEY)`)
	cfgFor := func(url string) serveConfig {
		cfg := serveConfig{common: common{dataDir: t.TempDir()}, databaseURL: url, journalURL: journal, slot: "cc_jrefuse"}
		if err := cfg.tables.Set("order=public.orders"); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	srv := startServe(t, cfgFor(a), nil)
	srv.waitReady(t)
	srv.stop(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs syncBuffer
	err := serve(ctx, cfgFor(b), &syncBuffer{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if !errors.Is(err, store.ErrJournalOfAnother) {
		t.Fatalf("err = %v, want ErrJournalOfAnother\nlogs:\n%s", err, logs.String())
	}
	t.Logf("refused: %v", err)
	if p := passwordInURL(journal); p != "" && strings.Contains(err.Error(), p) {
		t.Fatalf("error shows the journal database's password: %v", err)
	}
	var slots int
	if err := connect(t, b).QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()").Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("refused serve left %d slots in the watched database (%v)", slots, err)
	}
}

// passwordInURL returns the password of a postgres URL, "" if none.
func passwordInURL(u string) string {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	userinfo, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	_, pw, _ := strings.Cut(userinfo, ":")
	return pw
}
