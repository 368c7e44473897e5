package wsapi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
)

// request sends an envelope request and returns the next frame, raw.
func request(t testing.TB, conn *websocket.Conn, msg string) string {
	t.Helper()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("send request: %v", err)
	}
	return string(readRaw(t, conn))
}

func expectFrame(t testing.TB, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("got frame\n  %s\nwant\n  %s", got, want)
	}
}

func response(id, args string) string {
	return `{"namespace":"events","name":"response","id":"` + id + `","args":` + args + `}`
}

func errFrame(id, msg string) string { return string(encodeError(id, codeBadRequest, msg)) }

func forbiddenFrame(id, msg string) string { return string(encodeError(id, codeForbidden, msg)) }

// TestEnvelope_Requests runs every request kind over the wire and checks
// each reply echoes the id and carries the current filters and cursor.
func TestEnvelope_Requests(t *testing.T) {
	e := newJournalEnv(t, nil)
	e.publish([]entities.Change{chg("pool", create, "p0"), chg("job", create, "j0")})
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))

	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "ping", "id": "p1"}`),
		response("p1", `{"send-everything":false,"filters":[],"cursor":"2"}`))
	// A ping sets no filter: nothing is delivered yet.
	e.publish([]entities.Change{chg("pool", create, "p1")})
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "s1", "args": ["pool", {"entity-type": "job", "operations": ["create"]}]}`),
		response("s1", `{"send-everything":false,"filters":[{"entity-type":"pool"},{"entity-type":"job","operations":["create"]}],"cursor":"3"}`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "s2", "args": [{"entity-type": "job", "operations": ["delete"]}, {"entity-type": "job", "match": {"status": ["queued", "running"]}}]}`),
		response("s2", `{"send-everything":false,"filters":[{"entity-type":"pool"},{"entity-type":"job","operations":["create","delete"]},{"entity-type":"job","match":{"status":["queued","running"]}}],"cursor":"3"}`))

	e.publish([]entities.Change{chg("job", create, "j1"), chg("instance", create, "i1"), chg("pool", update, "p1"), chg("job", update, "j2")})
	expectKeys(t, conn, "job/create/j1", "pool/update/p1")

	// Unsubscribing a type with no clause (instance) is a no-op.
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "unsubscribe", "id": "u1", "args": ["pool", "instance"]}`),
		response("u1", `{"send-everything":false,"filters":[{"entity-type":"job","operations":["create","delete"]},{"entity-type":"job","match":{"status":["queued","running"]}}],"cursor":"7"}`))
	e.publish([]entities.Change{chg("pool", create, "p2"), chg("job", del, "j1")})
	expectKeys(t, conn, "job/delete/j1")

	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "filter", "id": "f1", "args": {"send-everything": false, "filters": [{"entity-type": "instance", "operations": ["truncate", "create"]}]}}`),
		response("f1", `{"send-everything":false,"filters":[{"entity-type":"instance","operations":["create","truncate"]}],"cursor":"9"}`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "filter", "id": "f2", "args": {"send-everything": true}}`),
		response("f2", `{"send-everything":true,"filters":[],"cursor":"9"}`))
	// Subscribing on top of send-everything changes nothing.
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "s3", "args": ["pool"]}`),
		response("s3", `{"send-everything":true,"filters":[],"cursor":"9"}`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "unsubscribe", "id": "u2", "args": ["pool"]}`),
		errFrame("u2", `unsubscribe: the current filter is send-everything; send a "filter" request listing the entity types wanted`))
	e.publish([]entities.Change{chg("user", create, "x1")})
	expectKeys(t, conn, "user/create/x1")
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "ping", "id": "p2", "args": null}`),
		response("p2", `{"send-everything":true,"filters":[],"cursor":"10"}`))

	// A bare GARM filter still gets no reply: the next frame is the
	// response to the ping after it.
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"send-everything": false, "filters": [{"entity-type": "job"}]}`)); err != nil {
		t.Fatal(err)
	}
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "ping", "id": "p3"}`),
		response("p3", `{"send-everything":false,"filters":[{"entity-type":"job"}],"cursor":"10"}`))
}

// TestEnvelope_ResponseOrder checks that every change frame after a
// response has a cursor above the response's, even when frames were queued
// when the request arrived.
func TestEnvelope_ResponseOrder(t *testing.T) {
	e := newJournalEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	var batch []entities.Change
	for i := range 50 {
		batch = append(batch, chg("pool", create, "p"+string(rune('a'+i%26))))
	}
	e.publish(batch)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"namespace": "events", "name": "ping", "id": "o1"}`)); err != nil {
		t.Fatal(err)
	}
	var respCursor string
	for respCursor == "" {
		f := readFrame(t, conn)
		if f.Name == "response" {
			respCursor, _ = f.Args["cursor"].(string)
		}
	}
	if respCursor != "50" {
		t.Fatalf("response cursor %s, want 50 (every queued frame written first)", respCursor)
	}
	e.publish([]entities.Change{chg("pool", create, "after")})
	if f := readFrame(t, conn); f.Cursor != "51" {
		t.Fatalf("next frame %+v, want cursor 51", f)
	}
}

// TestEnvelope_ResumeWaitsForFilter checks a resuming client reads nothing
// after a ping or unsubscribe (no filter yet) and catches up after subscribe.
func TestEnvelope_ResumeWaitsForFilter(t *testing.T) {
	e := newJournalEnv(t, nil)
	e.publish([]entities.Change{chg("pool", create, "p1"), chg("job", create, "j1")})
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "0")
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "ping", "id": "1"}`),
		response("1", `{"send-everything":false,"filters":[],"cursor":"0"}`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "unsubscribe", "id": "2", "args": ["pool"]}`),
		response("2", `{"send-everything":false,"filters":[],"cursor":"0"}`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "3", "args": ["job"]}`),
		response("3", `{"send-everything":false,"filters":[{"entity-type":"job"}],"cursor":"0"}`))
	expectKeys(t, conn, "job/create/j1")
}

// badRequests are rejected envelope requests and the exact error frame each
// gets (for an admin; SecretField marks pool's "image" secret).
var badRequests = []struct{ name, in, want string }{
	{"unknown name", `{"namespace": "events", "name": "subscribes", "id": "e1", "args": ["pool"]}`,
		errFrame("e1", `unknown request name "subscribes"; known: subscribe, unsubscribe, filter, ping`)},
	{"name not string", `{"namespace": "events", "name": 1, "id": "e2"}`,
		errFrame("e2", `request: "name" must be a string; known: subscribe, unsubscribe, filter, ping`)},
	{"unknown namespace", `{"namespace": "garm", "name": "ping", "id": "e3"}`,
		errFrame("e3", `unknown namespace "garm"; known: events`)},
	{"missing id", `{"namespace": "events", "name": "ping"}`,
		errFrame("", `request: "id" is required`)},
	{"id number", `{"namespace": "events", "name": "ping", "id": 7}`,
		errFrame("", `request: "id" must be a non-empty string of at most 128 bytes`)},
	{"id too long", `{"namespace": "events", "name": "ping", "id": "` + strings.Repeat("x", 129) + `"}`,
		errFrame("", `request: "id" must be a non-empty string of at most 128 bytes`)},
	{"mixed with GARM keys", `{"namespace": "events", "name": "ping", "id": "e4", "send-everything": true}`,
		errFrame("", `request: unknown key "send-everything"; known: namespace, name, id, args`)},
	{"key case", `{"namespace": "events", "Name": "ping", "id": "e5"}`,
		errFrame("", `request: unknown key "Name"; known: namespace, name, id, args`)},
	{"invalid JSON", `{"namespace": "events", "name": "ping", "id": "e6"`,
		errFrame("", `request: invalid JSON: unexpected end of input`)},
	{"ping args", `{"namespace": "events", "name": "ping", "id": "e7", "args": []}`,
		errFrame("e7", `ping: "args" must be absent or null`)},
	{"subscribe no args", `{"namespace": "events", "name": "subscribe", "id": "e8"}`,
		errFrame("e8", `subscribe: "args" must be an array of entity type names, filter objects or "system-state"`)},
	{"subscribe object args", `{"namespace": "events", "name": "subscribe", "id": "e9", "args": {"entity-type": "pool"}}`,
		errFrame("e9", `subscribe: "args" must be an array of entity type names, filter objects or "system-state", or an object {"filters": [...], "snapshot": true}`)},
	{"subscribe unknown type", `{"namespace": "events", "name": "subscribe", "id": "e10", "args": ["job", "pools"]}`,
		errFrame("e10", `unknown entity type "pools"; known: `+knownTypes)},
	{"subscribe number", `{"namespace": "events", "name": "subscribe", "id": "e11", "args": [1]}`,
		errFrame("e11", `args[0] must be an entity type name, a filter object or "system-state"`)},
	{"subscribe bad filter", `{"namespace": "events", "name": "subscribe", "id": "e12", "args": ["job", {"entity-type": "pool", "ops": []}]}`,
		errFrame("e12", `args[1]: unknown key "ops"; known: entity-type, operations, match`)},
	{"subscribe unknown operation", `{"namespace": "events", "name": "subscribe", "id": "e13", "args": [{"entity-type": "pool", "operations": ["upsert"]}]}`,
		errFrame("e13", `unknown operation "upsert"; known: create, update, delete, truncate`)},
	{"subscribe unknown field", `{"namespace": "events", "name": "subscribe", "id": "e14", "args": [{"entity-type": "pool", "match": {"os": "linux"}}]}`,
		errFrame("e14", `args[0]: "match": unknown field "os" for entity type "pool"; known: id, provider_name, runner_prefix, max_runners, min_idle_runners, flavor, os_type, os_arch, tags, enabled, runner_bootstrap_timeout, priority, cost_per_hour, extra_specs, repo_id, org_id, enterprise_id, created_at, updated_at`)},
	{"subscribe injected secret field", `{"namespace": "events", "name": "subscribe", "id": "e15", "args": [{"entity-type": "pool", "match": {"image": "ubuntu"}}]}`,
		errFrame("e15", `args[0]: "match": field "image" is secret and cannot be matched`)},
	{"subscribe declared secret field", `{"namespace": "events", "name": "subscribe", "id": "e16", "args": [{"entity-type": "github_credentials", "match": {"payload": {}}}]}`,
		errFrame("e16", `args[0]: "match": field "payload" is secret and cannot be matched`)},
	{"unsubscribe unknown type", `{"namespace": "events", "name": "unsubscribe", "id": "e17", "args": ["pools"]}`,
		errFrame("e17", `unknown entity type "pools"; known: `+knownTypes)},
	{"unsubscribe object", `{"namespace": "events", "name": "unsubscribe", "id": "e18", "args": [{"entity-type": "pool"}]}`,
		errFrame("e18", `args[0] must be an entity type name or "system-state"`)},
	{"filter no args", `{"namespace": "events", "name": "filter", "id": "e19"}`,
		errFrame("e19", `filter: "args" is required: a GARM filter object such as {"send-everything": true}`)},
	{"filter bad args", `{"namespace": "events", "name": "filter", "id": "e20", "args": {"send-everything": true, "everything": 1}}`,
		errFrame("e20", `args: unknown key "everything"; known: send-everything, filters, snapshot`)},
	{"filter match secret", `{"namespace": "events", "name": "filter", "id": "e21", "args": {"filters": [{"entity-type": "pool", "match": {"image": "x"}}]}}`,
		errFrame("e21", `filters[0]: "match": field "image" is secret and cannot be matched`)},
}

func secretImage(et entities.EntityType, col string) bool { return et.Name == "pool" && col == "image" }

// TestEnvelope_Errors checks each bad request gets its error frame with the
// request's id, and the filter in force is unchanged.
func TestEnvelope_Errors(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.SecretField = secretImage })
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "ok", "args": ["job"]}`),
		response("ok", `{"send-everything":false,"filters":[{"entity-type":"job"}],"cursor":"0"}`))
	for _, tc := range badRequests {
		t.Run(tc.name, func(t *testing.T) {
			expectFrame(t, request(t, conn, tc.in), tc.want)
		})
	}
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "ping", "id": "after"}`),
		response("after", `{"send-everything":false,"filters":[{"entity-type":"job"}],"cursor":"0"}`))
}

// TestEnvelope_Scope checks a viewer cannot subscribe to user or to a type
// outside its token's scope, and is told so with code 403 (a malformed
// request stays 400).
func TestEnvelope_Scope(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dial(t, e.token(t, "v1", RoleViewer, "pool", "job"))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "1", "args": ["user"]}`),
		forbiddenFrame("1", `entity type "user" is not allowed for this token; allowed: job, pool`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "2", "args": [{"entity-type": "instance"}]}`),
		forbiddenFrame("2", `entity type "instance" is not allowed for this token; allowed: job, pool`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "filter", "id": "4", "args": {"filters": [{"entity-type": "user"}]}}`),
		forbiddenFrame("4", `entity type "user" is not allowed for this token; allowed: job, pool`))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "5", "args": ["pools"]}`),
		errFrame("5", `unknown entity type "pools"; known: `+knownTypes))
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "subscribe", "id": "3", "args": ["pool"]}`),
		response("3", `{"send-everything":false,"filters":[{"entity-type":"pool"}],"cursor":"0"}`))
}

// rowChange builds a change with the given payload.
func rowChange(entityType string, op entities.Operation, id string, row *entities.Row) entities.Change {
	c := chg(entityType, op, id)
	if row == nil {
		c.Payload = nil
		return c
	}
	c.Payload = entitiestest.WithColumn(row, "id", id)
	if row.Has("id") {
		c.Payload = row
	}
	return c
}

// raw turns every payload value into json.RawMessage, as a journal replay
// hands them over.
func raw(t testing.TB, changes []entities.Change) []entities.Change {
	t.Helper()
	out := make([]entities.Change, len(changes))
	for i, c := range changes {
		out[i] = c
		if c.Payload == nil {
			continue
		}
		p, err := entities.ParseRow(c.Payload.JSON())
		if err != nil {
			t.Fatal(err)
		}
		out[i].Payload = p
	}
	return out
}

const matchFilter = `{"filters": [
	{"entity-type": "pool", "operations": ["create", "update", "delete", "truncate"], "match": {"os_type": ["linux", "windows"], "max_runners": 5}},
	{"entity-type": "job", "match": {"status": "queued", "locked_by": null}},
	{"entity-type": "instance", "match": {"id": "marker"}}]}`

// matchChanges are published in order; matchWant are the keys matchFilter
// selects.
func matchChanges() []entities.Change {
	return []entities.Change{
		rowChange("pool", create, "a", entities.RowOf(map[string]any{"os_type": "linux", "max_runners": int64(5)})),
		rowChange("pool", create, "b", entities.RowOf(map[string]any{"os_type": "macos", "max_runners": 5})),
		rowChange("pool", update, "c", entities.RowOf(map[string]any{"os_type": "windows", "max_runners": float64(5)})),
		rowChange("pool", del, "d", entities.RowOf(map[string]any{"os_type": "linux", "max_runners": json.Number("5.0")})),
		rowChange("pool", create, "e", entities.RowOf(map[string]any{"os_type": "linux", "max_runners": 6})),
		rowChange("pool", create, "f", entities.RowOf(map[string]any{"os_type": "linux"})),
		rowChange("pool", create, "g", entities.RowOf(map[string]any{"os_type": "Linux", "max_runners": 5})),
		rowChange("pool", update, "h", entities.RowOf(map[string]any{"os_type": "linux", "max_runners": "5"})),
		rowChange("pool", entities.OpTruncate, "", nil),
		rowChange("job", create, "j1", entities.RowOf(map[string]any{"status": "queued", "locked_by": nil})),
		rowChange("job", update, "j2", entities.RowOf(map[string]any{"status": "queued", "locked_by": "x"})),
		rowChange("job", update, "j3", entities.RowOf(map[string]any{"status": "queued"})),
		rowChange("job", del, "j4", entities.RowOf(map[string]any{"status": "queued", "locked_by": nil})),
		rowChange("instance", create, "marker", nil),
	}
}

var matchWant = []string{"pool/create/a", "pool/update/c", "pool/delete/d", "job/create/j1", "job/delete/j4", "instance/create/marker"}

// TestMatch_Live checks field filters on create, update and delete, with
// typed payload values, equality and IN, and that truncate never matches.
func TestMatch_Live(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), matchFilter)
	changes := matchChanges()
	changes[len(changes)-1].Payload = entities.RowOf(map[string]any{"id": "marker"})
	e.publish(changes)
	expectKeys(t, conn, matchWant...)
}

// TestMatch_CatchUp checks the same filter selects the same changes when
// they are replayed from the journal as json.RawMessage values.
func TestMatch_CatchUp(t *testing.T) {
	e := newJournalEnv(t, nil)
	changes := matchChanges()
	changes[len(changes)-1].Payload = entities.RowOf(map[string]any{"id": "marker"})
	e.publish(raw(t, changes))
	conn := e.dialSince(t, e.token(t, "u1", RoleAdmin), "0")
	expectFrame(t, request(t, conn, `{"namespace": "events", "name": "filter", "id": "m", "args": `+matchFilter+`}`),
		response("m", `{"send-everything":false,"filters":[{"entity-type":"pool","operations":["create","update","delete","truncate"],"match":{"max_runners":5,"os_type":["linux","windows"]}},{"entity-type":"job","match":{"locked_by":null,"status":"queued"}},{"entity-type":"instance","match":{"id":"marker"}}],"cursor":"0"}`))
	expectKeys(t, conn, matchWant...)
}

func TestCanonNumber(t *testing.T) {
	same := [][]string{
		{"5", "5.0", "5e0", "50e-1", "0.5E1", "5.000", "5E+0"},
		{"0", "-0", "0.0", "0e10", "-0.000e-3"},
		{"-12.5", "-1.25e1", "-125e-1"},
		{"9007199254740993", "9007199254740993.0", "9.007199254740993e15"},
	}
	for _, group := range same {
		want, ok := canonNumber(group[0])
		if !ok {
			t.Fatalf("canonNumber(%s) failed", group[0])
		}
		for _, s := range group[1:] {
			if got, ok := canonNumber(s); !ok || got != want {
				t.Errorf("canonNumber(%s) = %q, %v; want %q", s, got, ok, want)
			}
		}
	}
	if a, _ := canonNumber("9007199254740993"); a == mustCanon(t, "9007199254740992") {
		t.Error("large integers must compare exactly")
	}
	for _, bad := range []string{"", "-", "1.", ".5", "01", "1e", "1e+", "0x10", "1e99999999999", "NaN", "1.2.3", "--1"} {
		if got, ok := canonNumber(bad); ok {
			t.Errorf("canonNumber(%q) = %q, want failure", bad, got)
		}
	}
}

func mustCanon(t *testing.T, s string) string {
	t.Helper()
	c, ok := canonNumber(s)
	if !ok {
		t.Fatalf("canonNumber(%s) failed", s)
	}
	return c
}

func TestValueKey(t *testing.T) {
	type named string
	cases := []struct {
		typed any
		raw   string
	}{
		{"A", `"\u0041"`},
		{true, `true`},
		{nil, ` null `},
		{int32(7), `7.0`},
		{uint64(1 << 63), `9223372036854775808`},
		{float32(0.1), `0.1`},
		{named("x"), `"x"`},
		{json.Number("1e2"), `100`},
	}
	for _, tc := range cases {
		a, ok1 := valueKey(tc.typed)
		b, ok2 := valueKey(json.RawMessage(tc.raw))
		if !ok1 || !ok2 || a != b {
			t.Errorf("%#v → %q,%v; %s → %q,%v", tc.typed, a, ok1, tc.raw, b, ok2)
		}
	}
	for _, v := range []any{map[string]any{}, []any{1}, json.RawMessage(`[1]`), json.RawMessage(`{}`)} {
		if k, ok := valueKey(v); ok {
			t.Errorf("valueKey(%#v) = %q, want no match", v, k)
		}
	}
}

// FuzzParseEnvelope checks applyMessage never panics, errors are
// filterErrors, and whatever it accepts names only registered, allowed
// types, known operations and non-secret fields.
func FuzzParseEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"namespace": "events", "name": "ping", "id": "1"}`,
		`{"namespace": "events", "name": "subscribe", "id": "2", "args": ["pool", {"entity-type": "job", "match": {"status": ["queued", 1, 2.5e3, null, true]}}]}`,
		`{"namespace": "events", "name": "unsubscribe", "id": "3", "args": ["pool"]}`,
		`{"namespace": "events", "name": "filter", "id": "4", "args": {"send-everything": false, "filters": [{"entity-type": "pool", "match": {"image": "x"}}]}}`,
		`{"namespace": "events", "name": "subscribe", "id": "5", "args": {"filters": ["pool", "event", {"entity-type": "job"}], "snapshot": true}}`,
		`{"namespace": "events", "name": "filter", "id": "6", "args": {"send-everything": true, "snapshot": true}}`,
	} {
		f.Add([]byte(s))
	}
	reg := entities.DefaultRegistry()
	scopes := []scope{{admin: true}, {}, {types: map[string]bool{"pool": true, "user": true}}}
	curs := []*filter{nil, {all: true}, {clauses: []clause{{entityType: "pool", ops: opAll}, {entityType: "job", ops: opCreate}}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, sc := range scopes {
			pc := parseCtx{reg: reg, sc: sc, secret: secretImage, snapshots: len(data)%2 == 0}
			for _, cur := range curs {
				msg, err := pc.applyMessage(cur, data)
				if err != nil {
					var fe *filterError
					if !errors.As(err, &fe) {
						t.Fatalf("got %T, want *filterError", err)
					}
					if len(msg.id) > maxIDLen {
						t.Fatalf("error id of %d bytes", len(msg.id))
					}
					continue
				}
				if msg.envelope && msg.id == "" {
					t.Fatal("accepted an envelope without an id")
				}
				if msg.snapshot != nil {
					if !pc.snapshots || len(msg.snapshot) == 0 {
						t.Fatalf("snapshot %v accepted (offered: %v)", msg.snapshot, pc.snapshots)
					}
					for _, typ := range msg.snapshot {
						if _, err := reg.Lookup(typ); err != nil || !sc.allows(typ) {
							t.Fatalf("snapshot of %q accepted for scope %+v", typ, sc)
						}
					}
				}
				nf := msg.next
				if nf == nil {
					continue
				}
				if nf.all && len(nf.clauses) != 0 {
					t.Fatalf("send-everything filter kept clauses: %+v", nf)
				}
				for _, cl := range nf.clauses {
					// System events ("event") are not a registered
					// table type, and every token may receive them.
					var et entities.EntityType
					if cl.entityType != entities.EventEntityType {
						var err error
						et, err = reg.Lookup(cl.entityType)
						if err != nil || !sc.allows(cl.entityType) && !(cur != nil && hadType(cur.clauses, cl)) {
							t.Fatalf("accepted type %q for scope %+v", cl.entityType, sc)
						}
					}
					if cl.ops == 0 || cl.ops&^(opAll|opTruncate) != 0 {
						t.Fatalf("accepted ops %b", cl.ops)
					}
					for _, fm := range cl.match {
						if pc.isSecret(et, fm.field) || len(fm.keys) == 0 {
							t.Fatalf("accepted match %+v", fm)
						}
					}
				}
				_ = encodeResponse(msg.id, nf, false, 1)
			}
		}
	})
}

// hadType reports whether cl was already in the filter before the
// message (test fixtures may hold types a scope does not allow).
func hadType(cls []clause, cl clause) bool {
	for _, c := range cls {
		if c.entityType == cl.entityType {
			return true
		}
	}
	return false
}

// valueKey is the normal form of a value as a row holds it: a raw JSON
// value's own, a typed value's JSON's (entities.RowOf encodes it).
func valueKey(v any) (string, bool) {
	if raw, ok := v.(json.RawMessage); ok {
		return scalarKey(raw)
	}
	b, _ := entities.RowOf(map[string]any{"v": v}).Get("v")
	return scalarKey(b)
}
