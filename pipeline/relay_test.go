package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

// TestRelay checks the queue between sanitize and the appender: order is
// kept, it holds at most its budget of changes (plus one transaction) while
// the appender is busy, everything is passed on after src closes, and then
// dst closes.
func TestRelay(t *testing.T) {
	src := make(chan entities.Transaction)
	dst := make(chan entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), src, dst, 10) }()
	tx := func(xid uint32, n int) entities.Transaction {
		return entities.Transaction{Xid: xid, Final: true, Changes: make([]entities.Change, n)}
	}
	// Nobody reads dst: the relay takes transactions until its budget is
	// used (3+3+3 < 10, the fourth makes 12), then src blocks.
	accepted := 0
	for xid := uint32(1); xid <= 20; xid++ {
		select {
		case src <- tx(xid, 3):
			accepted++
			continue
		case <-time.After(time.Second): // no taker: the relay is full
		}
		break
	}
	if accepted != 4 {
		t.Fatalf("relay accepted %d transactions of 3 changes with a budget of 10, want 4", accepted)
	}
	go func() {
		for xid := uint32(accepted + 1); xid <= 20; xid++ {
			src <- tx(xid, 3)
		}
		close(src)
	}()
	for want := uint32(1); want <= 20; want++ {
		got, ok := <-dst
		if !ok || got.Xid != want {
			t.Fatalf("got xid %d (open %t), want %d", got.Xid, ok, want)
		}
	}
	if _, ok := <-dst; ok {
		t.Fatal("dst still open after src closed and everything was passed on")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
