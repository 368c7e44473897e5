package wsapi

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/entities"
)

// writerState reports c's writer state (writer.go).
func writerStateOf(c *client) int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wstate
}

// onlyClient returns the server's one client.
func onlyClient(t *testing.T, e *testEnv) *client {
	t.Helper()
	var cs []*client
	waitFor(t, "one client", func() bool { cs = e.srv.hub.snapshot(); return len(cs) == 1 })
	return cs[0]
}

// TestClient_IdleWriter checks that an idle connection's writer goroutine
// leaves after writerLinger, and that everything a writer does still
// happens on that connection: a change published later is delivered (in
// order, after one published while it was running), a ping is sent when
// due, a close from the client is answered, and a second idle period
// ends the writer again.
func TestClient_IdleWriter(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.PingInterval = 3 * writerLinger; c.PongWait = 10 * time.Second })
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	c := onlyClient(t, e)
	if s := writerStateOf(c); s != writerRunning {
		t.Fatalf("writer state %d right after the filter's response, want running (%d)", s, writerRunning)
	}
	waitFor(t, "the idle writer to leave", func() bool { return writerStateOf(c) == writerIdle })

	// Delivered promptly: well before the next ping would start a writer.
	e.publish([]entities.Change{chg("pool", entities.OpCreate, "a"), chg("pool", entities.OpUpdate, "a")})
	for _, want := range []string{"pool/create/a", "pool/update/a"} {
		_ = conn.SetReadDeadline(time.Now().Add(writerLinger / 2))
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("reading %s published to an idle connection: %v", want, err)
		}
		if f, err := decodeFrame(data); err != nil || f.key() != want {
			t.Fatalf("got %s (%v), want %s", data, err, want)
		}
	}
	waitFor(t, "the writer to leave again", func() bool { return writerStateOf(c) == writerIdle })

	// A ping is due within PingInterval: the client sees it while it reads.
	pinged := make(chan struct{}, 1)
	conn.SetPingHandler(func(string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	_ = conn.SetReadDeadline(time.Time{})
	readErr := make(chan error, 1)
	go func() { _, _, err := conn.ReadMessage(); readErr <- err }()
	select {
	case <-pinged:
	case err := <-readErr:
		t.Fatalf("read while idle: %v, want nothing but a ping", err)
	case <-time.After(2 * e.srv.cfg.PingInterval):
		t.Fatal("no ping within twice the ping interval on a connection whose writer had left")
	}
	conn.Close()
	<-readErr
	waitFor(t, "the client to be gone", func() bool { return e.srv.Clients() == 0 })
	if s := writerStateOf(c); s != writerDone {
		t.Fatalf("writer state %d after the connection ended, want done (%d)", s, writerDone)
	}
}

// writerRuns reports how many writer runs c has started.
func writerRuns(c *client) int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wruns
}

// TestClient_AnsweringWriterLeavesAtOnce checks that a writer run that has
// only answered the client (envelope replies, a pong) leaves as soon as
// nothing is owed, and that a run that has delivered a change lingers and
// answers later requests itself. The linger is an hour here, so a run
// that leaves did not wait for it, and a run that lingers is still the
// one writing when the test ends.
func TestClient_AnsweringWriterLeavesAtOnce(t *testing.T) {
	e := newTestEnv(t, nil)
	e.srv.linger = time.Hour
	conn := e.dial(t, e.token(t, "u1", RoleAdmin))
	c := onlyClient(t, e)
	ping := func(id string) {
		t.Helper()
		if f := request(t, conn, `{"namespace": "events", "name": "ping", "id": "`+id+`"}`); !strings.Contains(f, `"id":"`+id+`"`) {
			t.Fatalf("got %s, want the response to ping %s", f, id)
		}
	}

	ping("p1")
	waitFor(t, "the writer to leave after its reply", func() bool { return writerStateOf(c) == writerIdle })
	runs := writerRuns(c)
	ping("p2")
	waitFor(t, "the writer started for the second reply to leave", func() bool {
		return writerStateOf(c) == writerIdle && writerRuns(c) == runs+1
	})

	// A pong is an answer too: the run started for it leaves.
	pongs := make(chan struct{}, 1)
	conn.SetPongHandler(func(string) error { pongs <- struct{}{}; return nil })
	if err := conn.WriteControl(websocket.PingMessage, []byte("x"), time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	// The pong and p3's response are owed together and written in either
	// order; p4's response comes after both.
	ping("p3")
	ping("p4")
	select {
	case <-pongs:
	default:
		t.Fatal("no pong before the response to p4")
	}
	waitFor(t, "the writer to leave after the pong and the reply", func() bool { return writerStateOf(c) == writerIdle })

	// A run that has delivered a change lingers: the replies after it are
	// written by the same run, and it is still running.
	e.sendFilter(t, conn, `{"send-everything": true}`)
	runs = writerRuns(c)
	e.publish([]entities.Change{chg("pool", entities.OpCreate, "a")})
	if f := readFrame(t, conn); f.key() != "pool/create/a" {
		t.Fatalf("got %s, want pool/create/a", f.key())
	}
	ping("p5")
	ping("p6")
	if s, n := writerStateOf(c), writerRuns(c); s != writerRunning || n > runs+1 {
		t.Fatalf("after a delivery and two replies: writer state %d and %d runs since the publish, want still running (%d) in the run that delivered", s, n-runs, writerRunning)
	}
}
