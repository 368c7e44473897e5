package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
)

// canaries hands out unique secret values and remembers every one, so the
// test can look for each in every byte that left changecast.
type canaries struct {
	n    int
	seen []string
}

// text returns a new canary string.
func (c *canaries) text(what string) string {
	c.n++
	v := fmt.Sprintf("CANARY-%s-%04d-x9q", what, c.n)
	c.seen = append(c.seen, v)
	return v
}

// number returns a new canary integer, large enough to be unique in output.
func (c *canaries) number() string {
	c.n++
	v := fmt.Sprintf("%d", 9_731_000_000+c.n)
	c.seen = append(c.seen, v)
	return v
}

// bytes returns a new canary for a bytea column as a SQL expression, and
// remembers it both as text and as base64, the form bytea takes in a frame.
func (c *canaries) bytes(what string) string {
	v := c.text(what)
	c.seen = append(c.seen, base64.StdEncoding.EncodeToString([]byte(v)))
	return fmt.Sprintf("convert_to('%s', 'UTF8')", v)
}

// leaks returns the canaries found in b.
func (c *canaries) leaks(b []byte) []string {
	var out []string
	for _, v := range c.seen {
		if bytes.Contains(b, []byte(v)) {
			out = append(out, v)
		}
	}
	return out
}

// canaryEntity knows how to write one built-in entity type's rows with a
// canary in every secret column, in a runtime-added secret-named column and
// in a secret-named key nested two levels deep in a runtime jsonb column.
type canaryEntity struct {
	et      entities.EntityType
	key     string // SQL literal of the row's key
	visible string // a non-secret text column whose value the test checks
	kinds   map[string]reflect.Kind
}

func newCanaryEntity(et entities.EntityType, i int) canaryEntity {
	ce := canaryEntity{et: et, kinds: map[string]reflect.Kind{}}
	for i := 0; i < et.GoType.NumField(); i++ {
		f := et.GoType.Field(i)
		col, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		k := f.Type.Kind()
		switch f.Type {
		case reflect.TypeOf(json.RawMessage{}):
			k = reflect.Map // jsonb
		case reflect.TypeOf([]byte(nil)):
			k = reflect.Uint8 // bytea
		}
		ce.kinds[col] = k
		if ce.visible == "" && k == reflect.String && col != et.Key && !et.IsSecret(col) && f.Type.Name() == "string" {
			ce.visible = col
		}
	}
	switch ce.kinds[et.Key] {
	case reflect.Int64:
		ce.key = fmt.Sprint(9000 + i)
	case reflect.String:
		ce.key = fmt.Sprintf("'%s-canary'", et.Name)
	default:
		ce.key = fmt.Sprintf("'00000000-0000-4000-8000-%012d'", 9000+i)
	}
	return ce
}

// secretValues returns a SQL literal for every secret column plus the
// runtime-added ones, each holding fresh canaries.
func (ce canaryEntity) secretValues(c *canaries) map[string]string {
	vals := map[string]string{}
	for _, col := range ce.et.Secrets {
		switch ce.kinds[col] {
		case reflect.Int64:
			vals[col] = c.number()
		case reflect.Uint8:
			vals[col] = c.bytes(ce.et.Name + "-" + col)
		case reflect.Map:
			vals[col] = fmt.Sprintf(`'{"token": "%s", "nested": {"private_key": "%s"}}'`, c.text(ce.et.Name+"-"+col), c.text(ce.et.Name+"-"+col+"-pk"))
		default:
			vals[col] = "'" + c.text(ce.et.Name+"-"+col) + "'"
		}
	}
	vals["api_token"] = "'" + c.text(ce.et.Name+"-api_token") + "'"
	vals["extra"] = fmt.Sprintf(`'{"outer": {"inner": {"password": "%s", "keep": "inner-ok"}, "keep": "outer-ok"}, "n": 9007199254740993}'`, c.text(ce.et.Name+"-nested"))
	return vals
}

func (ce canaryEntity) where() string { return fmt.Sprintf("%s = %s", ce.et.Key, ce.key) }

func TestCanary_NoSecretLeavesByAnyPath(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_canary")
	token := mintToken(t, dataDir, "admin")
	secret, err := os.ReadFile(dataDir + "/jwt-secret")
	if err != nil {
		t.Fatal(err)
	}
	db := connect(t, url)
	reg := entities.DefaultRegistry()
	c := &canaries{}

	all := dialWS(t, srv.addr, token)
	sendJSON(t, all, `{"send-everything": true}`)
	filterApplied(t, all)
	filtered := dialWS(t, srv.addr, token)
	sendJSON(t, filtered, `{"send-everything": false, "filters": [{"entity-type": "repository"}, {"entity-type": "user", "operations": ["create", "update"]}, {"entity-type": "instance"}, {"entity-type": "github_credentials"}]}`)
	filterApplied(t, filtered)

	var ops int
	type expect struct{ entity, op, visible string }
	var want []expect
	for i, et := range reg.Types() {
		ce := newCanaryEntity(et, i)
		// Columns nobody marked, added while changecast runs: the watcher
		// learns of them from the next Relation message.
		exec1(t, db, fmt.Sprintf("ALTER TABLE %s ADD COLUMN api_token text, ADD COLUMN extra jsonb", et.Table))

		vals := ce.secretValues(c)
		cols := []string{et.Key, ce.visible}
		lits := []string{ce.key, fmt.Sprintf("'visible-%s-1'", et.Name)}
		for col, v := range vals {
			cols = append(cols, col)
			lits = append(lits, v)
		}
		exec1(t, db, fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", et.Table, strings.Join(cols, ", "), strings.Join(lits, ", ")))
		want = append(want, expect{et.Name, "create", "visible-" + et.Name + "-1"})

		// Update changing every secret.
		sets := []string{fmt.Sprintf("%s = 'visible-%s-2'", ce.visible, et.Name)}
		for col, v := range ce.secretValues(c) {
			sets = append(sets, col+" = "+v)
		}
		exec1(t, db, fmt.Sprintf("UPDATE %s SET %s WHERE %s", et.Table, strings.Join(sets, ", "), ce.where()))
		want = append(want, expect{et.Name, "update", "visible-" + et.Name + "-2"})

		// Update leaving the secrets as they are: previous and payload
		// both carry them in PostgreSQL's stream.
		exec1(t, db, fmt.Sprintf("UPDATE %s SET %s = 'visible-%s-3' WHERE %s", et.Table, ce.visible, et.Name, ce.where()))
		want = append(want, expect{et.Name, "update", "visible-" + et.Name + "-3"})

		exec1(t, db, fmt.Sprintf("DELETE FROM %s WHERE %s", et.Table, ce.where()))
		want = append(want, expect{et.Name, "delete", "visible-" + et.Name + "-3"})
		ops += 4
	}

	var out bytes.Buffer // every byte that left changecast
	checkFrames := func(name string, frames []frame, want []expect) {
		t.Helper()
		if len(frames) != len(want) {
			t.Fatalf("%s: %d frames, want %d", name, len(frames), len(want))
		}
		for i, f := range frames {
			out.Write(f.raw)
			w := want[i]
			et, _ := reg.Lookup(w.entity)
			ce := newCanaryEntity(et, 0)
			if f.EntityType != w.entity || f.Operation != w.op || f.Payload[ce.visible] != w.visible {
				t.Fatalf("%s frame %d: got %s %s %v=%v, want %s %s %s (non-secret data must stay intact): %s",
					name, i, f.EntityType, f.Operation, ce.visible, f.Payload[ce.visible], w.entity, w.op, w.visible, f.raw)
			}
			extra, _ := f.Payload["extra"].(map[string]any)
			outer, _ := extra["outer"].(map[string]any)
			inner, _ := outer["inner"].(map[string]any)
			if outer["keep"] != "outer-ok" || inner["keep"] != "inner-ok" || !strings.Contains(string(f.raw), "9007199254740993") {
				t.Fatalf("%s frame %d: nested non-secret JSON was not kept intact: %s", name, i, f.raw)
			}
			if _, ok := f.Payload["api_token"]; ok {
				t.Fatalf("%s frame %d: runtime-added secret-named column present: %s", name, i, f.raw)
			}
		}
	}
	readN := func(ws *websocket.Conn, n int) []frame {
		var fs []frame
		for range n {
			f, _ := readChange(t, ws, 10*time.Second)
			fs = append(fs, f)
		}
		return fs
	}
	checkFrames("send-everything", readN(all, ops), want)
	var wantFiltered []expect
	for _, w := range want {
		switch {
		case w.entity == "repository", w.entity == "instance", w.entity == "github_credentials",
			w.entity == "user" && w.op != "delete":
			wantFiltered = append(wantFiltered, w)
		}
	}
	checkFrames("filtered", readN(filtered, len(wantFiltered)), wantFiltered)
	// A client resuming from the start replays everything from the journal.
	resumed := dialSince(t, srv.addr, token, 0)
	sendJSON(t, resumed, `{"send-everything": true}`)
	checkFrames("resumed", readN(resumed, ops), want)

	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, err := http.Get("http://" + srv.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = out.ReadFrom(resp.Body)
		resp.Body.Close()
	}
	// Every row is searched for canaries, system events included; only
	// the entity changes are counted.
	rows, err := db.Query(context.Background(), "SELECT j::text FROM changecast.journal j ORDER BY entity_type = 'event', seq")
	if err != nil {
		t.Fatal(err)
	}
	journal, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var changes int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM changecast.journal WHERE entity_type <> 'event'").Scan(&changes); err != nil {
		t.Fatal(err)
	}
	if changes != ops || len(journal) <= ops {
		t.Fatalf("journal holds %d entity changes (of %d rows), want %d and the started event", changes, len(journal), ops)
	}
	out.WriteString(strings.Join(journal, "\n"))
	srv.stop(t) // the shutdown path logs too
	out.WriteString(srv.logs.String())
	out.WriteString(srv.stdout.String())

	if leaks := c.leaks(out.Bytes()); len(leaks) > 0 {
		t.Fatalf("%d canaries leaked, e.g. %q", len(leaks), leaks[0])
	}
	for name, v := range map[string]string{"token": token, "JWT signing key": strings.TrimSpace(string(secret))} {
		if strings.Contains(srv.logs.String(), v) || strings.Contains(srv.stdout.String(), v) {
			t.Fatalf("the %s appears in changecast's output", name)
		}
	}
	if !strings.Contains(srv.logs.String(), "level=DEBUG") {
		t.Fatal("the logs were not captured at debug level; the test would prove nothing about them")
	}
	t.Logf("%d canaries absent from %d frames' worth of output, the journal, /metrics and debug logs (%d bytes checked)", len(c.seen), 3*ops, out.Len())
}
