package wsapi

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/entities/entitiestest"
	"github.com/changecast/changecast/wire"
)

const (
	create = entities.OpCreate
	update = entities.OpUpdate
	del    = entities.OpDelete
)

// mixed is one change of each operation for pool, job and instance.
func mixed() []entities.Change {
	var out []entities.Change
	for _, typ := range []string{"pool", "job", "instance"} {
		for _, op := range entities.Operations {
			out = append(out, chg(typ, op, typ[:1]+"1"))
		}
	}
	return out
}

func TestServer_FilterMatches(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin),
		`{"send-everything": false, "filters": [{"entity-type": "pool", "operations": ["create","update"]}, {"entity-type": "job"}]}`)
	e.publish(mixed())
	e.publish([]entities.Change{marker()})
	expectKeys(t, conn,
		"pool/create/p1", "pool/update/p1",
		"job/create/j1", "job/update/j1", "job/delete/j1",
		"pool/create/marker")
}

// TestServer_FilterGARMClient checks the shape GARM's Go client sends
// (omitempty: send-everything absent when false; null arrays accepted).
func TestServer_FilterGARMClient(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"filters": [{"operations": null, "entity-type": "instance"}]}`)
	e.publish(mixed())
	e.publish([]entities.Change{marker()})
	expectKeys(t, conn, "instance/create/i1", "instance/update/i1", "instance/delete/i1")
}

func TestServer_SendEverything(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	batch := append(mixed(), chg("user", create, "u9"))
	e.publish(batch)
	for _, c := range batch {
		want := c.EntityType + "/" + string(c.Operation) + "/" + c.EntityID
		expectKeys(t, conn, want)
	}
}

func TestServer_NoFilterReceivesNothing(t *testing.T) {
	e := newTestEnv(t, nil)
	tok := e.token(t, "u1", RoleAdmin)
	idle := e.dial(t, tok)
	e.dialFilter(t, tok, `{"send-everything": true}`) // somebody is listening
	e.publish(mixed())
	e.sendFilter(t, idle, `{"filters": [{"entity-type": "pool"}]}`)
	e.publish([]entities.Change{marker()})
	expectKeys(t, idle, "pool/create/marker")
}

func TestServer_FilterEmptyMeansNothing(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	e.sendFilter(t, conn, `{"send-everything": false, "filters": []}`)
	e.publish(mixed())
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "pool", "operations": ["create"]}]}`)
	e.publish([]entities.Change{marker()})
	expectKeys(t, conn, "pool/create/marker")
}

func TestServer_FilterReplace(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"filters": [{"entity-type": "pool"}]}`)
	e.publish([]entities.Change{chg("pool", create, "p1"), chg("job", create, "j1")})
	expectKeys(t, conn, "pool/create/p1")
	e.sendFilter(t, conn, `{"filters": [{"entity-type": "job", "operations": ["delete"]}]}`)
	e.publish([]entities.Change{chg("pool", update, "p1"), chg("job", create, "j2"), chg("job", del, "j1")})
	expectKeys(t, conn, "job/delete/j1")
	e.sendFilter(t, conn, `{"send-everything": true}`)
	e.publish([]entities.Change{chg("instance", create, "i1")})
	expectKeys(t, conn, "instance/create/i1")
}

func TestServer_ViewerScope(t *testing.T) {
	e := newTestEnv(t, nil)
	noScope := e.dialFilter(t, e.token(t, "v1", RoleViewer), `{"send-everything": true}`)
	scoped := e.dialFilter(t, e.token(t, "v2", RoleViewer, "job", "user"), `{"send-everything": true}`)
	admin := e.dialFilter(t, e.token(t, "a1", RoleAdmin), `{"send-everything": true}`)
	adminScoped := e.dialFilter(t, e.token(t, "a2", RoleAdmin, "user"), `{"send-everything": true}`)
	e.publish([]entities.Change{
		chg("user", create, "u1"), chg("pool", create, "p1"), chg("job", create, "j1"),
		chg("user", update, "u1"), chg("github_credentials", create, "c1"),
	})
	e.publish([]entities.Change{chg("job", create, "marker")})
	expectKeys(t, noScope, "pool/create/p1", "job/create/j1", "github_credentials/create/c1", "job/create/marker")
	expectKeys(t, scoped, "job/create/j1", "job/create/marker")
	expectKeys(t, admin, "user/create/u1", "pool/create/p1", "job/create/j1", "user/update/u1", "github_credentials/create/c1", "job/create/marker")
	expectKeys(t, adminScoped, "user/create/u1", "user/update/u1")
}

func TestServer_ViewerFilterOutOfScope(t *testing.T) {
	e := newTestEnv(t, nil)
	cases := []struct {
		scope []string
		msg   string
		want  string
	}{
		{nil, `{"filters": [{"entity-type": "user"}]}`,
			`entity type "user" is not allowed for this token; allowed: controller, enterprise, event, file_object, forge_instance, gitea_credentials, github_credentials, github_endpoint, instance, job, organization, pool, proxy, repository, scaleset, template`},
		{[]string{"pool", "job"}, `{"filters": [{"entity-type": "pool"}, {"entity-type": "instance"}]}`,
			`entity type "instance" is not allowed for this token; allowed: job, pool`},
		{[]string{"user"}, `{"filters": [{"entity-type": "user"}]}`,
			`entity type "user" is not allowed for this token; allowed: none`},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			conn := e.dial(t, e.token(t, "v1", RoleViewer, c.scope...))
			if err := conn.WriteMessage(websocket.TextMessage, []byte(c.msg)); err != nil {
				t.Fatalf("write: %v", err)
			}
			// Refused by authorization, not malformed: 403 (issue 17).
			expectErrorCode(t, conn, codeForbidden, c.want)
		})
	}
	// A malformed filter from the same kind of token stays 400.
	conn := e.dial(t, e.token(t, "v1", RoleViewer))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"filters": [{"entity-type": "pools"}]}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	expectError(t, conn, `unknown entity type "pools"; known: `+knownTypes)
}

// TestClient_WantsEnforcesScope checks delivery re-checks the token even for
// a filter that (by a bug elsewhere) names a forbidden type.
func TestClient_WantsEnforcesScope(t *testing.T) {
	c := &client{scope: newScope(&Claims{Role: RoleViewer, Scope: []string{"pool", "user"}})}
	c.filter.Store(&filter{clauses: []clause{{entityType: "user", ops: opAll}, {entityType: "job", ops: opAll}, {entityType: "pool", ops: opCreate}}})
	for _, tc := range []struct {
		ch   entities.Change
		want bool
	}{
		{chg("user", create, "u"), false},
		{chg("job", create, "j"), false},
		{chg("pool", create, "p"), true},
		{chg("pool", update, "p"), false},
	} {
		if got := c.wants(&tc.ch); got != tc.want {
			t.Errorf("wants(%s %s) = %v, want %v", tc.ch.EntityType, tc.ch.Operation, got, tc.want)
		}
	}
	c.filter.Store(&filter{all: true})
	if ch := chg("user", del, "u"); c.wants(&ch) {
		t.Error("send-everything viewer wants user")
	}
}

// TestServer_Order checks a large batch, and many batches, arrive complete
// and in order.
func TestServer_Order(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	var batch []entities.Change
	for i := range DefaultQueueLen {
		batch = append(batch, chg("job", update, fmt.Sprint(i)))
	}
	e.publish(batch)
	for i := range DefaultQueueLen {
		expectKeys(t, conn, fmt.Sprintf("job/update/%d", i))
	}
	n := 0
	for range 50 {
		var b []entities.Change
		for range 20 {
			b = append(b, chg("pool", update, fmt.Sprint(n)))
			n++
		}
		e.publish(b)
	}
	for i := range n {
		expectKeys(t, conn, fmt.Sprintf("pool/update/%d", i))
	}
	if got := e.srv.Overflows(); got != 0 {
		t.Fatalf("got %d overflows, want 0", got)
	}
}

// TestServer_SlowClient checks that, without a Journal, a client that stops
// reading is cut off with resync-required (today's overflow behaviour)
// while another client keeps receiving everything promptly and Publish
// never blocks.
func TestServer_SlowClient(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.QueueLen = 4 })
	slow := e.dialFilter(t, e.token(t, "slow", RoleAdmin), `{"send-everything": true}`)
	fast := e.dialFilter(t, e.token(t, "fast", RoleAdmin), `{"send-everything": true}`)
	big := strings.Repeat("x", 64<<10) // fills the slow client's socket buffers quickly
	deadline := time.Now().Add(waitTimeout)
	n := 0
	for ; e.srv.Overflows() == 0; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("no overflow after %d changes", n)
		}
		c := chg("pool", update, fmt.Sprint(n))
		c.Payload = entitiestest.WithColumn(c.Payload, "blob", big)
		start := time.Now()
		e.publish([]entities.Change{c})
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Publish took %s", d)
		}
		expectKeys(t, fast, fmt.Sprintf("pool/update/%d", n))
	}
	e.publish([]entities.Change{marker()})
	expectKeys(t, fast, "pool/create/marker")

	// The slow client gets a gap-free prefix, then resync-required, then
	// the close.
	for i := 0; ; i++ {
		f := readFrame(t, slow)
		if f.EntityType == "" {
			if f.key() != "events.control" || f.Args["type"] != string(wire.ControlResyncRequired) ||
				!strings.Contains(fmt.Sprint(f.Args["message"]), "more than 4 frames behind") {
				t.Fatalf("got frame %+v, want resync-required", f)
			}
			break
		}
		if want := fmt.Sprintf("pool/update/%d", i); f.key() != want {
			t.Fatalf("slow frame %d: got %s, want %s", i, f.key(), want)
		}
	}
	if code := expectClose(t, slow); code != websocket.CloseTryAgainLater {
		t.Fatalf("got close code %d, want %d", code, websocket.CloseTryAgainLater)
	}
	waitFor(t, "slow client to be unregistered", func() bool { return e.srv.Clients() == 1 })
	if got := e.srv.Overflows(); got != 1 {
		t.Fatalf("got %d overflows, want 1", got)
	}
}

// TestHub_IndexVisitsOnlyInterested checks the fan-out index: a change is
// handed only to the connections whose filter (narrowed by their scope) can
// select its entity type, and a connection leaves the index when its filter
// changes or it disconnects.
func TestHub_IndexVisitsOnlyInterested(t *testing.T) {
	e := newTestEnv(t, nil)
	visits := func() uint64 {
		e.srv.hub.mu.Lock()
		defer e.srv.hub.mu.Unlock()
		return e.srv.hub.mu.visits
	}
	var pools []*websocket.Conn
	for i := range 20 {
		pools = append(pools, e.dialFilter(t, e.token(t, fmt.Sprint("p", i), RoleAdmin), `{"filters": [{"entity-type": "pool"}]}`))
	}
	inst := e.dialFilter(t, e.token(t, "i", RoleAdmin), `{"filters": [{"entity-type": "instance", "operations": ["delete"]}]}`)
	// A viewer scoped to pool asking for everything is indexed under pool only.
	scoped := e.dialFilter(t, e.token(t, "v", RoleViewer, "pool"), `{"send-everything": true}`)

	before := visits()
	b := e.publish([]entities.Change{chg("instance", del, "a"), chg("instance", create, "b"), chg("instance", del, "c")})
	if got := visits() - before; got != 3 {
		t.Errorf("3 instance changes cost %d client visits, want 3 (only the instance subscriber)", got)
	}
	expectCursors(t, inst, []int64{b[0].Cursor, b[2].Cursor})

	before = visits()
	p := e.publish([]entities.Change{chg("pool", update, "p")})
	if got := visits() - before; got != 21 {
		t.Errorf("a pool change cost %d visits, want 21 (20 pool subscribers and the scoped viewer)", got)
	}
	for _, c := range append(pools, scoped) {
		expectCursors(t, c, []int64{p[0].Cursor})
	}

	// Re-filter one pool client to instance: it moves in the index.
	e.sendFilter(t, pools[0], `{"filters": [{"entity-type": "instance"}]}`)
	before = visits()
	b = e.publish([]entities.Change{chg("instance", create, "d")})
	if got := visits() - before; got != 2 {
		t.Errorf("after a re-filter an instance change cost %d visits, want 2", got)
	}
	expectCursors(t, pools[0], []int64{b[0].Cursor})

	for _, c := range pools {
		c.Close()
	}
	inst.Close()
	scoped.Close()
	waitFor(t, "every client to leave", func() bool { return e.srv.Clients() == 0 })
	e.srv.hub.mu.Lock()
	n, all := len(e.srv.hub.mu.byType), len(e.srv.hub.mu.everything)
	e.srv.hub.mu.Unlock()
	if n != 0 || all != 0 {
		t.Errorf("index still holds %d types and %d send-everything clients after every client left", n, all)
	}
}
