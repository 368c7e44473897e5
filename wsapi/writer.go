package wsapi

import (
	"time"

	"github.com/gorilla/websocket"

	"github.com/changecast/changecast/wire"
)

// The writer goroutine runs only while a client has something to write.
//
// An idle connection has one goroutine, its reader, blocked on the
// socket. Its writer exits once it has had nothing to do for writerLinger
// (at once if all it has written are replies, pongs and pings: the linger
// is for clients that receive a stream; see writeUntilIdle) and nothing is
// owed (no frame queued, reply, pong or ping owed, no
// catch-up, snapshot or system_state ticker under way); whoever gives the
// client something to write starts it again (ensureWriter): Publish when a
// frame lands in an empty queue, the reader with a reply or a pong, the
// ping and token-expiry timers, kick, and the reader's exit. A goroutine
// costs its stack (8 KB on an idle connection, more than all the rest of
// its memory), and the linger keeps a busy client's writer from being
// started afresh for every commit.
//
// The states, guarded by client.wmu: writerNew until register starts the
// first one, then writerRunning or writerIdle, and writerDone once a writer
// has ended the connection (never started again). Every producer puts its
// work where the writer looks (a channel, the queue, a flag) before
// calling ensureWriter, and a writer leaves only after seeing, under wmu,
// that nothing is owed; so work is never left without a writer.
const (
	writerNew = iota
	writerIdle
	writerRunning
	writerDone
)

// writerLinger is how long a writer with nothing to do waits for more
// before it exits.
const writerLinger = time.Second

// startWriter starts the first writer and the client's ping and
// token-expiry timers (register, under the hub lock, after counting the
// writer in hub.wg).
func (c *client) startWriter() {
	c.pingTimer = time.AfterFunc(c.srv.cfg.PingInterval, c.pingDue)
	c.expireTimer = time.AfterFunc(time.Until(c.expiry), c.expired)
	c.wmu.Lock()
	c.wstate = writerRunning
	c.wruns++
	c.wmu.Unlock()
	go c.writeLoop()
}

// ensureWriter starts a writer if none runs (and the connection is not
// over). Call it after putting work where the writer looks.
func (c *client) ensureWriter() {
	c.wmu.Lock()
	if c.wstate != writerIdle {
		c.wmu.Unlock()
		return
	}
	c.wstate = writerRunning
	c.wruns++
	c.wmu.Unlock()
	go c.writeLoop()
}

// pingDue is the ping timer's callback: a ping is owed. The writer writes
// it and arms the timer again.
func (c *client) pingDue() {
	c.pingOwed.Store(true)
	c.wakeWriter()
}

// expired is the token-expiry timer's callback.
func (c *client) expired() {
	c.kick(stopReason{
		control:   wire.ControlTokenExpired,
		message:   "token expired; reconnect with a new token",
		closeCode: websocket.ClosePolicyViolation,
		closeText: "token expired",
		why:       "token expired",
	})
}

// leaveIfIdle ends this writer if nothing is owed, reporting whether it
// should return. Called by the writer only.
func (c *client) leaveIfIdle() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	idle := c.queue.len() == 0 && len(c.replies) == 0 && len(c.pong) == 0 && len(c.wake) == 0 &&
		!c.pingOwed.Load() && !c.stopped.Load() && c.awaiting.Load() == 0 &&
		!c.catchingUp.Load() && !c.snapshotting.Load() && c.snapPending.Load() == nil &&
		c.w.snap == nil && c.w.rest == nil && c.w.retry == nil && c.w.state == nil && !c.w.lagSent
	if idle {
		select {
		case <-c.readerDone:
			idle = false // the connection is over: this writer closes it
		default:
		}
	}
	if idle {
		c.wstate = writerIdle
	}
	return idle
}

// writerEnded records that the connection's last writer has ended it.
func (c *client) writerEnded() {
	c.wmu.Lock()
	c.wstate = writerDone
	c.wmu.Unlock()
	c.pingTimer.Stop()
	c.expireTimer.Stop()
}
