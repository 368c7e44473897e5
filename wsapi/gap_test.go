package wsapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/changecast/changecast/entities"
)

// TestServer_GapAndUnavailable: while unavailable, new upgrades and
// /readyz get 503 with the reason and a connected client gets a lagging
// frame on the same socket, even with no writer running; Gap then stops the clients that started
// before its cursor with resync-required, and a client that connects
// after it is left alone.
func TestServer_GapAndUnavailable(t *testing.T) {
	e := newJournalEnv(t, nil)
	e.publish([]entities.Change{chg("pool", create, "p1")})
	token := e.token(t, "u1", RoleAdmin)
	before := e.dialFilter(t, token, `{"send-everything": true}`)
	// An idle connection has no writer: the lagging frame must start one.
	c := onlyClient(t, e)
	waitFor(t, "the idle client's writer to leave", func() bool { return writerStateOf(c) == writerIdle })

	e.srv.SetUnavailable("replication slot x was lost (missing); try again shortly")
	if f := readFrame(t, before); f.Name != "control" || f.Args["type"] != "lagging" || !strings.Contains(f.Args["message"].(string), "was lost") {
		t.Fatalf("connected client got %+v, want a lagging frame with the reason", f)
	}
	_, resp, _, err := e.dialRaw(t, e.wsURL(), bearer(token))
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade while unavailable: %v, %v; want 503", err, resp)
	}
	if r, err := http.Get(e.ts.URL + "/readyz"); err != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while unavailable: %v, %v; want 503", r, err)
	}
	e.srv.SetUnavailable("")

	e.publish([]entities.Change{chg("pool", create, "marker")})
	marker := e.srv.Head()
	after := e.dialFilter(t, token, `{"send-everything": true}`) // starts at the marker
	e.srv.Gap(marker, "changes were lost; re-read the state")
	for {
		f := readFrame(t, before)
		if f.Name == "control" {
			if f.Args["type"] != "resync-required" || !strings.Contains(f.Args["message"].(string), "were lost") {
				t.Fatalf("client from before the gap got %+v, want resync-required with the reason", f)
			}
			break
		}
	}
	e.publish([]entities.Change{chg("pool", create, "p2")})
	if f := readFrame(t, after); f.EntityType != "pool" {
		t.Fatalf("client from after the gap got %+v, want the next change", f)
	}
}
