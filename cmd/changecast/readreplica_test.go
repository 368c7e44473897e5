package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/localpg"
	"github.com/changecast/changecast/natsjournal/natstest"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/store/storetest"
)

// standbyScans returns how many scans the standby made of public.users
// and changecast.events: only a gateway's reads touch those tables there.
func standbyScans(t testing.TB, standby *localpg.Cluster) (users, events int64) {
	t.Helper()
	c := connect(t, standby.URL())
	defer c.Close(context.Background())
	err := c.QueryRow(context.Background(), `SELECT
		coalesce(sum(seq_scan + coalesce(idx_scan, 0)) FILTER (WHERE schemaname = 'public' AND relname = 'users'), 0)::bigint,
		coalesce(sum(seq_scan + coalesce(idx_scan, 0)) FILTER (WHERE schemaname = 'changecast' AND relname = 'events'), 0)::bigint
		FROM pg_stat_user_tables`).Scan(&users, &events)
	if err != nil {
		t.Fatal(err)
	}
	return users, events
}

// waitScans waits until the standby's scans of the table pick chooses
// exceed before: a read the standby served (its statistics reach the
// view within a second or so).
func waitScans(t testing.TB, standby *localpg.Cluster, what string, before int64, pick func(u, e int64) int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := pick(standbyScans(t, standby))
		if now > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby served no read of %s (scans stay at %d): the gateway did not read from --read-url", what, now)
		}
		time.Sleep(50 * time.Millisecond) // polling the standby's statistics
	}
}

// replay pauses (false) or resumes (true) the standby's WAL replay.
func replay(t testing.TB, standby *localpg.Cluster, on bool) {
	t.Helper()
	if err := setReplay(standby, on); err != nil {
		t.Fatal(err)
	}
}

// resumeSoon resumes the standby's replay after d, from another
// goroutine; the returned channel closes once it has.
func resumeSoon(t testing.TB, standby *localpg.Cluster, d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d) // the standby stays behind for d
		if err := setReplay(standby, true); err != nil {
			t.Error(err)
		}
	}()
	return done
}

func setReplay(standby *localpg.Cluster, on bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, standby.URL())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	f := "pg_wal_replay_pause()"
	if on {
		f = "pg_wal_replay_resume()"
	}
	_, err = c.Exec(ctx, "SELECT "+f)
	return err
}

// apiCall makes an authenticated request to the gateway and returns the
// status and body.
func apiCall(t testing.TB, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// metricsText returns /metrics at addr.
func metricsText(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type eventsPage struct {
	Events []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"events"`
}

// A gateway with --read-url reads users (login, session checks) and the
// events it lists from a real streaming hot standby, and never shows
// something older than it already knows: a revocation delivered by the
// stream and a mark-read it made wait for the standby to replay them
// (here: while its replay is paused), and reads go to the primary while
// the standby lags more than --read-max-lag. Snapshots stay on the
// primary.
func TestScale_GatewayReadsFromAReplica(t *testing.T) {
	nurl := natstest.URL(natstest.Server(t))
	primary := storetest.NewCluster(t)
	standby := storetest.NewStandby(t, primary)
	url := primary.URL()
	dataDir := t.TempDir()
	base := serveConfig{common: common{dataDir: dataDir}, databaseURL: url, slot: "cc_replica"}
	wcfg := base
	onNATS(nurl, roleWatcher, 1)(&wcfg)
	watcher := startServe(t, wcfg, nil)
	watcher.waitReady(t)
	addUser(t, url, "ada", "ada-password-1", true)
	addUser(t, url, "bob", "bob-password-1", false)
	storetest.WaitReplayed(t, primary, standby)

	const maxLag = 3 * time.Second
	gcfg := base
	onNATS(nurl, roleGateway, 1)(&gcfg)
	gcfg.scale.readURL, gcfg.scale.readMaxLag = standby.URL(), maxLag
	gw := startServe(t, gcfg, nil)
	gw.waitReady(t)
	api := "http://" + gw.addr + "/api/v1"

	// Login and the session check of a connection: from the standby.
	u0, e0 := standbyScans(t, standby)
	code, adaTok, _ := login(t, gw.addr, "ada", "ada-password-1")
	if code != 200 {
		t.Fatalf("login through the gateway: %d", code)
	}
	waitScans(t, standby, "users", u0, func(u, _ int64) int64 { return u })
	ws := dialWS(t, gw.addr, adaTok)
	sendJSON(t, ws, `{"send-everything": false, "filters": [{"entity-type": "event"}]}`)
	filterApplied(t, ws)

	// The events list: from the standby.
	var page eventsPage
	code, body := apiCall(t, http.MethodGet, api+"/events?pagesize=1", adaTok, "")
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Events) == 0 {
		t.Fatalf("list events: %d %v %s", code, err, body)
	}
	waitScans(t, standby, "events", e0, func(_, e int64) int64 { return e })
	id := page.Events[0].ID

	// Read your own writes: with the standby's replay paused, a
	// mark-read through the gateway (a write the active watcher makes on
	// the primary) is in the next list, which waits for the standby.
	replay(t, standby, false)
	resumed := resumeSoon(t, standby, 500*time.Millisecond) // well within maxLag
	if code, body := apiCall(t, http.MethodPut, api+"/events/"+id+"/status", adaTok, `{"status": "read"}`); code/100 != 2 {
		t.Fatalf("mark read: %d %s", code, body)
	}
	code, body = apiCall(t, http.MethodGet, api+"/events?pagesize=100", adaTok, "")
	page = eventsPage{}
	if err := json.Unmarshal(body, &page); code != 200 || err != nil {
		t.Fatalf("list events: %d %v %s", code, err, body)
	}
	found := false
	for _, ev := range page.Events {
		if ev.ID == id {
			found = true
			if ev.Status != "read" {
				t.Fatalf("the list right after marking event %s read shows it %q: the gateway read a standby that had not replayed its own write", id, ev.Status)
			}
		}
	}
	if !found {
		t.Fatalf("event %s missing from %s", id, body)
	}
	<-resumed

	// A revocation the stream delivers is checked against the row that
	// caused it, though the standby has not replayed it yet.
	_, bobTok, _ := login(t, gw.addr, "bob", "bob-password-1")
	bobWS := dialWS(t, gw.addr, bobTok)
	sendJSON(t, bobWS, `{"send-everything": false, "filters": [{"entity-type": "pool"}]}`)
	filterApplied(t, bobWS)
	replay(t, standby, false)
	userCmd(t, "user", "disable", "--database-url", url, "--username", "bob")
	resumed = resumeSoon(t, standby, 500*time.Millisecond)
	expectRevoked(t, bobWS, "user disabled")
	<-resumed

	// Bounded staleness: while the standby stays behind more than
	// maxLag, reads go to the primary: a user added meanwhile logs in.
	replay(t, standby, false)
	addUser(t, url, "cy", "cy-password-1", false)
	deadline := time.Now().Add(maxLag + 10*time.Second)
	for !strings.Contains(metricsText(gw.addr), "changecast_read_replica_fresh 0") {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway still reads the paused standby %s later:\n%s", maxLag+10*time.Second, metricsText(gw.addr))
		}
		time.Sleep(100 * time.Millisecond) // polling /metrics
	}
	if code, _, _ := login(t, gw.addr, "cy", "cy-password-1"); code != 200 {
		t.Fatalf("login of a user the lagging standby lacks: %d, want 200 from the primary", code)
	}
	replay(t, standby, true)
	deadline = time.Now().Add(maxLag + 10*time.Second)
	for !strings.Contains(metricsText(gw.addr), "changecast_read_replica_fresh 1") {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not read the standby again after it caught up:\n%s", metricsText(gw.addr))
		}
		time.Sleep(100 * time.Millisecond) // polling /metrics
	}

	// Snapshots (rows from the primary) work on such a gateway.
	exec1(t, connect(t, url), `INSERT INTO pools (provider_name) VALUES ('p1')`)
	if code, body := apiCall(t, http.MethodGet, api+"/entities/pool?limit=10", adaTok, ""); code != 200 || !strings.Contains(string(body), `"p1"`) {
		t.Fatalf("snapshot through the gateway: %d %s", code, body)
	}
	if strings.Contains(gw.logs.String(), "password-1") {
		t.Fatal("the gateway logged a password")
	}
}

// A --read-url that cannot serve is refused at start, with what to do,
// and without its password.
func TestScale_ReadURLRefused(t *testing.T) {
	primary := storetest.NewCluster(t)
	other := storetest.NewDatabase(t) // another cluster
	const pw = "s3cret-read-pw"
	for _, tc := range []struct {
		name, readURL, want string
	}{
		{"unreachable", "postgres://reader:" + pw + "@127.0.0.1:1/changecast?connect_timeout=5", "give a hot standby of the watched database that this process can reach"},
		{"another cluster", other, "their system identifiers differ"},
		{"another database", primary.DatabaseURL("postgres"), `name database "changecast" in --read-url`},
		{"not a standby", primary.URL(), "is not a hot standby"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := serveConfig{common: common{dataDir: t.TempDir()}, databaseURL: primary.URL(), slot: "cc_refused", listen: "127.0.0.1:0"}
			cfg.domain = domainGARM
			onNATS("nats://127.0.0.1:1", roleGateway, 1)(&cfg)
			cfg.scale.readURL, cfg.scale.readMaxLag = tc.readURL, time.Second
			var logs syncBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := serve(ctx, cfg, io.Discard, slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "--read-url") {
				t.Fatalf("the error %q does not name --read-url", err)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(logs.String(), pw) {
				t.Fatalf("the password shows: %v\n%s", err, logs.String())
			}
		})
	}

	// Flags: only for gateways of a scaled-out changecast.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--read-url", "postgres://r:" + pw + "@h/db"}, "--read-url is for the gateways of a scaled-out changecast"},
		{[]string{"serve", "--journal-url", "nats://127.0.0.1:1", "--role", "watcher", "--read-url", "postgres://r:" + pw + "@h/db"}, "--read-url is for gateways only"},
		{[]string{"serve", "--journal-url", "nats://127.0.0.1:1", "--role", "gateway", "--read-url", "postgres://r@h/db", "--read-max-lag", "0s"}, "--read-max-lag 0s: must be positive"},
	} {
		var out, errb strings.Builder
		err := run(context.Background(), tc.args, &out, &errb)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%v: got %v, want a usage error saying %q", tc.args, err, tc.want)
		}
		if strings.Contains(fmt.Sprint(err)+out.String()+errb.String(), pw) {
			t.Fatalf("%v: the password shows: %v %s", tc.args, err, errb.String())
		}
	}
}

// The read replica's two rules on their own, against a real standby: a
// fence makes the next read wait for the standby to replay what the
// primary held (or fall back to it), and without a fence the standby may
// show older rows, up to --read-max-lag; beyond that, reads go to the
// primary.
func TestReadReplica_FenceAndBound(t *testing.T) {
	ctx := context.Background()
	primary := storetest.NewCluster(t)
	standby := storetest.NewStandby(t, primary)
	pdb, err := store.Open(ctx, primary.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	if err := pdb.MigrateOwn(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.WaitReplayed(t, primary, standby)
	const maxLag = 2 * time.Second
	r, err := openReadReplica(ctx, standby.URL(), maxLag, pdb, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.lagging() {
		time.Sleep(10 * time.Millisecond) // polling the checker's first rounds
	}
	count := func() int {
		t.Helper()
		page, err := r.ListEvents(ctx, entities.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Events)
	}
	if n := count(); n != 0 || r.fromReplica.Load() != 1 {
		t.Fatalf("first list: %d events, %d reads from the standby", n, r.fromReplica.Load())
	}

	replay(t, standby, false)
	ev, err := entities.NewEvent().WithCategory("test").WithAction("fence").WithSeverity(entities.Informational).WithDescription("d").Build()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pdb.InsertEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// Unfenced, within maxLag: the standby answers, without the event.
	if n := count(); n != 0 {
		t.Fatalf("the paused standby shows %d events", n)
	}
	// Fenced: the read waits for the standby's replay.
	r.Fence()
	resumed := resumeSoon(t, standby, 300*time.Millisecond)
	start := time.Now()
	if n := count(); n != 1 {
		t.Fatalf("after a fence: %d events, want 1", n)
	}
	if d := time.Since(start); d < 200*time.Millisecond || r.fromPrimary.Load() != 0 {
		t.Fatalf("the fenced read took %s, %d reads from the primary: it did not wait for the standby", d, r.fromPrimary.Load())
	}
	<-resumed

	// Beyond maxLag, the primary answers.
	replay(t, standby, false)
	defer replay(t, standby, true)
	ev2, _ := entities.NewEvent().WithCategory("test").WithAction("bound").WithSeverity(entities.Informational).WithDescription("d").Build()
	if _, err := pdb.InsertEvent(ctx, ev2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(maxLag + 5*time.Second)
	for !r.lagging() {
		if time.Now().After(deadline) {
			t.Fatalf("the paused standby is still taken as within %s", maxLag)
		}
		time.Sleep(20 * time.Millisecond) // polling the checker
	}
	if n := count(); n != 2 || r.fromPrimary.Load() != 1 {
		t.Fatalf("while the standby lags: %d events (want 2), %d reads from the primary (want 1)", n, r.fromPrimary.Load())
	}
}
