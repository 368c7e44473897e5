package wsapi

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/xidsnap"
)

// TestSeam_ReadsUnderTheCatchUpBudget checks that the seam after a
// snapshot reads the journal only with a catch-up token (hub.slots), like
// catch-up: while every token is taken, a connection resuming with a
// snapshot cursor is sent nothing of its seam; once a token is back, it
// gets the whole seam (three pages of the journal), then
// snapshot-complete, and the token is back in the budget afterwards.
func TestSeam_ReadsUnderTheCatchUpBudget(t *testing.T) {
	e := newJournalEnv(t, func(c *Config) { c.CatchUpWorkers = 1 })
	const n = 250 // CatchUpPage is 100: three seam pages
	batch := make([]entities.Change, n)
	for i := range batch {
		batch[i] = chg("pool", entities.OpCreate, fmt.Sprint(i))
		batch[i].Xid = 2000 // after the snapshot's xmax: not in its rows
	}
	published := e.publish(batch)
	end := published[n-1].Cursor
	sc := seamCursor{from: 0, end: end, vis: xidsnap.Snapshot{Xmin: 1000, Xmax: 1000}, types: []string{"pool"}}
	cursor := sealToken(e.srv.cfg.Auth.tokenKey(), seamTokenPrefix, sc.encode())

	tok := <-e.srv.hub.slots // the only catch-up token: the test holds it
	conn, _, body, err := e.dialRaw(t, e.wsURL()+"?since="+url.QueryEscape(cursor), bearer(e.token(t, "u1", RoleAdmin)))
	if err != nil {
		t.Fatalf("dial with a snapshot cursor: %v (%s)", err, body)
	}
	e.sendFilter(t, conn, `{"send-everything": true}`)
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, data, err := conn.ReadMessage(); err == nil {
		t.Fatalf("got %s while every catch-up token was taken: the seam read the journal outside the budget", data)
	}
	conn.Close()

	// A fresh connection, now with the token back.
	e.srv.hub.slots <- tok
	conn, _, body, err = e.dialRaw(t, e.wsURL()+"?since="+url.QueryEscape(cursor), bearer(e.token(t, "u1", RoleAdmin)))
	if err != nil {
		t.Fatalf("dial with a snapshot cursor: %v (%s)", err, body)
	}
	e.sendFilter(t, conn, `{"send-everything": true}`)
	for i := range n {
		f := readFrame(t, conn)
		if want := fmt.Sprintf("pool/create/%d", i); f.key() != want {
			t.Fatalf("seam frame %d: %s, want %s", i, f.key(), want)
		}
	}
	if f := readFrame(t, conn); f.Args["type"] != "snapshot-complete" {
		t.Fatalf("after the seam: %+v, want snapshot-complete", f)
	}
	waitFor(t, "the catch-up token to be back", func() bool { return len(e.srv.hub.slots) == 1 })
}
