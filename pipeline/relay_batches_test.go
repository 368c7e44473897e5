package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

// TestRelayBatches checks the batching queue between sanitize and a
// BatchWriter: while the writer is busy it holds up to its budget (plus
// one transaction), then hands all of it over in one batch, in order;
// after src closes everything is passed on and dst closes.
func TestRelayBatches(t *testing.T) {
	src := make(chan entities.Transaction)
	dst := make(chan []entities.Transaction)
	done := make(chan error, 1)
	go func() { done <- relayBatches(context.Background(), src, dst, 10) }()
	tx := func(xid uint32, n int) entities.Transaction {
		return entities.Transaction{Xid: xid, Final: true, Changes: make([]entities.Change, n)}
	}
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
	b := <-dst
	if len(b) != 4 {
		t.Fatalf("first batch holds %d transactions, want all 4 held", len(b))
	}
	go func() {
		for xid := uint32(accepted + 1); xid <= 20; xid++ {
			src <- tx(xid, 3)
		}
		close(src)
	}()
	want := uint32(1)
	for {
		for _, got := range b {
			if got.Xid != want {
				t.Fatalf("got xid %d, want %d", got.Xid, want)
			}
			want++
		}
		var ok bool
		if b, ok = <-dst; !ok {
			break
		}
		if len(b) == 0 {
			t.Fatal("an empty batch")
		}
	}
	if want != 21 {
		t.Fatalf("received up to xid %d, want 20", want-1)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
