package wsapi

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// knownTypes is the built-in registry's list as error messages print it.
const knownTypes = "controller, enterprise, event, file_object, forge_instance, gitea_credentials, github_credentials, github_endpoint, instance, job, organization, pool, proxy, repository, scaleset, template, user"

// expectError reads the next frame and checks it is exactly the 400 error
// frame carrying msg.
func expectError(t testing.TB, conn *websocket.Conn, msg string) {
	t.Helper()
	expectErrorCode(t, conn, codeBadRequest, msg)
}

// expectErrorCode reads the next frame and checks it is exactly the error
// frame carrying code and msg.
func expectErrorCode(t testing.TB, conn *websocket.Conn, code int, msg string) {
	t.Helper()
	got := readRaw(t, conn)
	want := encodeError("", code, msg)
	if string(got) != string(want) {
		t.Fatalf("got frame\n  %s\nwant\n  %s", got, want)
	}
}

func TestParseFilter(t *testing.T) {
	reg := entities.DefaultRegistry()
	admin := scope{admin: true}
	cases := map[string]struct {
		in   string
		want *filter
	}{
		"send everything":          {`{"send-everything": true}`, &filter{all: true}},
		"send everything, filters": {`{"send-everything": true, "filters": [{"entity-type": "pool"}]}`, &filter{all: true}},
		"nothing":                  {`{"send-everything": false, "filters": []}`, &filter{}},
		"empty object":             {`{}`, &filter{}},
		"null filters":             {`{"send-everything": false, "filters": null}`, &filter{}},
		"ops":                      {`{"filters": [{"entity-type": "pool", "operations": ["create", "delete"]}]}`, &filter{clauses: []clause{{entityType: "pool", ops: opCreate | opDelete}}}},
		"truncate named":           {`{"filters": [{"entity-type": "pool", "operations": ["truncate"]}]}`, &filter{clauses: []clause{{entityType: "pool", ops: opTruncate}}}},
		"no ops means all":         {`{"filters": [{"entity-type": "job", "operations": []}]}`, &filter{clauses: []clause{{entityType: "job", ops: opAll}}}},
		"two clauses":              {` {"filters": [{"entity-type": "job"}, {"operations": ["update"], "entity-type": "user"}]} `, &filter{clauses: []clause{{entityType: "job", ops: opAll}, {entityType: "user", ops: opUpdate}}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseFilter([]byte(tc.in), reg, admin)
			if err != nil {
				t.Fatalf("parseFilter: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// badFilters are rejected messages and the exact error each gets.
var badFilters = []struct {
	name, in, want string
}{
	{"invalid JSON", `{"send-everything": tru}`, `message: invalid JSON at byte 22: invalid character '}' in literal true (expecting 'e')`},
	{"truncated", `{"send-everything": true`, `message: invalid JSON: unexpected end of input`},
	{"empty", ``, `message: invalid JSON: unexpected end of input`},
	{"not an object", `[{"send-everything": true}]`, `message must be a JSON object`},
	{"trailing data", `{"send-everything": true} {}`, `message: unexpected data after the JSON object`},
	{"unknown key", `{"send-everything": true, "id": "1"}`, `message: unknown key "id"; known: send-everything, filters`},
	{"key case", `{"Send-Everything": true}`, `message: unknown key "Send-Everything"; known: send-everything, filters`},
	{"duplicate key", `{"send-everything": false, "send-everything": true}`, `message: duplicate key "send-everything"`},
	{"send-everything string", `{"send-everything": "true"}`, `"send-everything" must be true or false`},
	{"send-everything null", `{"send-everything": null}`, `"send-everything" must be true or false`},
	{"filters object", `{"filters": {"entity-type": "pool"}}`, `"filters" must be an array of objects`},
	{"filter not object", `{"filters": ["pool"]}`, `filters[0] must be a JSON object`},
	{"unknown filter key", `{"filters": [{"entity-type": "pool", "where": {}}]}`, `filters[0]: unknown key "where"; known: entity-type, operations, match`},
	{"match not object", `{"filters": [{"entity-type": "pool", "match": ["os_type"]}]}`, `filters[0]: "match" must be a JSON object`},
	{"match unknown field", `{"filters": [{"entity-type": "job", "match": {"statue": "queued"}}]}`, `filters[0]: "match": unknown field "statue" for entity type "job"; known: id, run_id, action, status, conclusion, name, runner_name, repository_owner, repository_name, labels, duration_seconds, locked_by, started_at, completed_at, created_at, updated_at`},
	{"match secret field", `{"filters": [{"entity-type": "github_credentials", "match": {"payload": "x"}}]}`, `filters[0]: "match": field "payload" is secret and cannot be matched`},
	{"match object value", `{"filters": [{"entity-type": "pool", "match": {"os_type": {"a": 1}}}]}`, `filters[0]: "match": field "os_type": value must be a string, number, boolean, null or a non-empty array of them`},
	{"match empty array", `{"filters": [{"entity-type": "pool", "match": {"os_type": []}}]}`, `filters[0]: "match": field "os_type": value must be a string, number, boolean, null or a non-empty array of them`},
	{"match nested array", `{"filters": [{"entity-type": "pool", "match": {"os_type": [["linux"]]}}]}`, `filters[0]: "match": field "os_type": value must be a string, number, boolean, null or a non-empty array of them`},
	{"match huge exponent", `{"filters": [{"entity-type": "pool", "match": {"max_runners": 1e99999999999}}]}`, `filters[0]: "match": field "max_runners": value must be a string, number, boolean, null or a non-empty array of them`},
	{"match duplicate field", `{"filters": [{"entity-type": "pool", "match": {"os_type": "linux", "os_type": "windows"}}]}`, `filters[0]: "match": duplicate key "os_type"`},
	{"missing entity type", `{"filters": [{"entity-type": "pool"}, {"operations": ["create"]}]}`, `filters[1]: "entity-type" is required`},
	{"entity type number", `{"filters": [{"entity-type": 7}]}`, `filters[0]: "entity-type" must be a string`},
	{"unknown entity type", `{"filters": [{"entity-type": "pools"}]}`, `unknown entity type "pools"; known: ` + knownTypes},
	{"event match unknown field", `{"filters": [{"entity-type": "event", "match": {"sevrity": "error"}}]}`, `filters[0]: "match": unknown field "sevrity" for entity type "event"; known: id, user_id, system_id, acted_upon, category, action, severity, description, metadata, status, operation_id, created_at, updated_at`},
	{"long entity type", `{"filters": [{"entity-type": "` + strings.Repeat("a", 100) + `"}]}`, `unknown entity type "` + strings.Repeat("a", 64) + `..."; known: ` + knownTypes},
	{"operations string", `{"filters": [{"entity-type": "pool", "operations": "create"}]}`, `filters[0]: "operations" must be an array of strings`},
	{"operation number", `{"filters": [{"entity-type": "pool", "operations": [1]}]}`, `filters[0]: "operations" must be an array of strings`},
	{"unknown operation", `{"filters": [{"entity-type": "pool", "operations": ["create", "upsert"]}]}`, `unknown operation "upsert"; known: create, update, delete, truncate`},
}

func TestParseFilter_Errors(t *testing.T) {
	reg := entities.DefaultRegistry()
	for _, tc := range badFilters {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFilter([]byte(tc.in), reg, scope{admin: true})
			if err == nil {
				t.Fatalf("accepted: %+v", f)
			}
			var fe *filterError
			if !errors.As(err, &fe) {
				t.Fatalf("got %T, want *filterError", err)
			}
			if err.Error() != tc.want {
				t.Fatalf("got %q, want %q", err, tc.want)
			}
			if fe.code != codeBadRequest {
				t.Fatalf("got code %d, want %d: a malformed message is a bad request", fe.code, codeBadRequest)
			}
		})
	}
}

// TestParseFilter_ForbiddenCode checks a well-formed filter naming a type the
// token may not see is told apart by its code (403), not by its text.
func TestParseFilter_ForbiddenCode(t *testing.T) {
	reg := entities.DefaultRegistry()
	viewer := newScope(&Claims{Role: RoleViewer})
	scoped := newScope(&Claims{Role: RoleViewer, Scope: []string{"pool"}})
	cases := []struct {
		name string
		sc   scope
		in   string
		code int
	}{
		{"viewer asks for user", viewer, `{"filters": [{"entity-type": "user"}]}`, codeForbidden},
		{"type outside scope", scoped, `{"filters": [{"entity-type": "job"}]}`, codeForbidden},
		{"unknown type", viewer, `{"filters": [{"entity-type": "users"}]}`, codeBadRequest},
		{"malformed", viewer, `{"filters": [{"entity-type": 7}]}`, codeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFilter([]byte(tc.in), reg, tc.sc)
			var fe *filterError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *filterError", err)
			}
			if fe.code != tc.code {
				t.Fatalf("got code %d (%s), want %d", fe.code, fe.msg, tc.code)
			}
		})
	}
}

// TestServer_FilterErrors checks each bad message gets its error frame over
// the wire, the connection stays open and the previous filter still applies.
func TestServer_FilterErrors(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"filters": [{"entity-type": "pool", "operations": ["create"]}]}`)
	for _, tc := range badFilters {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(tc.in)); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		expectError(t, conn, tc.want)
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte(`{"send-everything": true}`)); err != nil {
		t.Fatalf("write binary: %v", err)
	}
	expectError(t, conn, "binary messages are not supported; send filters as JSON text messages")

	e.publish([]entities.Change{chg("job", create, "j1"), chg("pool", update, "p1"), chg("pool", create, "p1")})
	expectKeys(t, conn, "pool/create/p1")
}

// TestServer_MessageTooLarge checks the size limit: an error frame saying
// so, then a close with 1009 (message too big). A message of exactly the
// limit is accepted.
func TestServer_MessageTooLarge(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.MaxMessageBytes = 64 })
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))
	exact := `{"send-everything": true}` + strings.Repeat(" ", 64-len(`{"send-everything": true}`))
	e.sendFilter(t, conn, exact)
	msg := `{"send-everything": true, "filters": [` + strings.Repeat(`{"entity-type": "pool"},`, 10) + `{"entity-type": "pool"}]}`
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	f := readFrame(t, conn)
	if f.key() != "error.error" || !strings.Contains(fmt.Sprint(f.Args["message"]), "message too large: more than 64 bytes") {
		t.Fatalf("got %+v, want an error frame naming the limit", f)
	}
	if code := expectClose(t, conn); code != websocket.CloseMessageTooBig {
		t.Fatalf("got close code %d, want %d", code, websocket.CloseMessageTooBig)
	}
	waitFor(t, "client to be unregistered", func() bool { return e.srv.Clients() == 0 })
}

// FuzzParseFilter checks the parser never panics and that whatever it
// accepts names only registered types, known operations and, for a viewer,
// allowed types.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		`{"send-everything": true}`,
		`{"send-everything": false, "filters": [{"entity-type": "pool", "operations": ["create","update"]}]}`,
		`{"filters": [{"entity-type": "user"}]}`,
	} {
		f.Add([]byte(s))
	}
	reg := entities.DefaultRegistry()
	known := map[string]bool{}
	for _, n := range knownNames(reg) {
		known[n] = true
	}
	scopes := []scope{{admin: true}, {}, {types: map[string]bool{"pool": true, "user": true}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, sc := range scopes {
			flt, err := parseFilter(data, reg, sc)
			if err != nil {
				var fe *filterError
				if !errors.As(err, &fe) {
					t.Fatalf("got %T, want *filterError", err)
				}
				continue
			}
			if flt.all && len(flt.clauses) != 0 {
				t.Fatalf("send-everything filter kept clauses: %+v", flt)
			}
			for _, cl := range flt.clauses {
				if !known[cl.entityType] || !sc.allows(cl.entityType) {
					t.Fatalf("accepted type %q for scope %+v", cl.entityType, sc)
				}
				if cl.ops == 0 || cl.ops&^opAll != 0 {
					t.Fatalf("accepted ops %b", cl.ops)
				}
			}
		}
	})
}
