package watcher

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// gateOutput is an Output that takes transactions only while open, and
// fails an offer with failOn's error.
type gateOutput struct {
	mu     sync.Mutex
	open   bool
	got    []Transaction
	room   chan struct{}
	failOn func(Transaction) error
	offers int
}

func (o *gateOutput) Offer(tx Transaction) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.offers++
	if !o.open {
		return false, nil
	}
	if o.failOn != nil {
		if err := o.failOn(tx); err != nil {
			return false, err
		}
	}
	o.got = append(o.got, tx)
	return true, nil
}

func (o *gateOutput) Room() <-chan struct{} { return o.room }

func (o *gateOutput) setOpen(open bool) {
	o.mu.Lock()
	o.open = open
	o.mu.Unlock()
	if open {
		o.room <- struct{}{}
	}
}

func (o *gateOutput) taken() []Transaction {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Transaction(nil), o.got...)
}

// TestRunTo_WaitsForRoomAndStopsOnOfferError: with an Output, a
// transaction the consumer has no room for is offered again once it makes
// room, while the watcher keeps answering the server; chunks arrive in
// order; and an Offer error stops RunTo with that error.
func TestRunTo_WaitsForRoomAndStopsOnOfferError(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	cfg.ChunkSize = 100
	cfg.StatusInterval = 200 * time.Millisecond
	w := newWatcher(t, cfg)
	out := &gateOutput{room: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.RunTo(ctx, out) }()
	waitFor(t, "watcher streaming", func() (bool, error) { return w.Streaming(), nil })

	e.exec(t, `INSERT INTO notes SELECT g, 't' FROM generate_series(1, 250) g`)
	waitFor(t, "a refused offer", func() (bool, error) {
		out.mu.Lock()
		defer out.mu.Unlock()
		return out.offers > 0, nil
	})
	// No room: the watcher waits, and still sends status updates.
	waitStatus(t, w, w.statusSent.Load(), 2)
	if got := out.taken(); len(got) != 0 {
		t.Fatalf("%d transactions taken while the output had no room", len(got))
	}
	out.setOpen(true)
	waitFor(t, "the whole transaction taken", func() (bool, error) {
		got := out.taken()
		return len(got) > 0 && got[len(got)-1].Final, nil
	})
	index := 0
	for i, tx := range out.taken() {
		for _, c := range tx.Changes {
			if c.Index != index {
				t.Fatalf("chunk %d: change index %d, want %d", i, c.Index, index)
			}
			index++
		}
	}
	if index != 250 {
		t.Fatalf("%d changes taken, want 250", index)
	}

	refused := errors.New("refused by the consumer")
	out.mu.Lock()
	out.failOn = func(Transaction) error { return refused }
	out.mu.Unlock()
	e.exec(t, `INSERT INTO notes VALUES (1000, 'x')`)
	select {
	case err := <-done:
		if !errors.Is(err, refused) {
			t.Fatalf("RunTo returned %v, want the Offer error", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("RunTo did not return after Offer failed")
	}
}
