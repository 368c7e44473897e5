package pipeline

import (
	"errors"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

// TestQueue checks the queue between the watcher and a QueueWriter: it
// prepares what it takes, holds up to its budget of changes (and always
// one transaction), signals room when emptied and readiness when fed or
// closed, hands everything over in order, and reports the end only once
// closed and empty.
func TestQueue(t *testing.T) {
	prepared := 0
	q := newQueue(10, func(tx entities.Transaction) (entities.Transaction, error) {
		if tx.Xid == 99 {
			return tx, errors.New("unsanitizable")
		}
		prepared++
		tx.Changes = tx.Changes[:len(tx.Changes)-1] // prep's result is what is queued
		return tx, nil
	})
	tx := func(xid uint32, n int, final bool) entities.Transaction {
		return entities.Transaction{Xid: xid, Final: final, Changes: make([]entities.Change, n)}
	}
	waitFor := func(c <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s signal", what)
		}
	}
	if b, closed := q.Take(); b != nil || closed {
		t.Fatalf("empty queue: Take = %v, %t", b, closed)
	}
	// 4 changes each after prep: the third fills the budget of 10.
	for xid := uint32(1); xid <= 3; xid++ {
		if ok, err := q.Offer(tx(xid, 5, true)); !ok || err != nil {
			t.Fatalf("offer %d: %t, %v", xid, ok, err)
		}
	}
	if ok, err := q.Offer(tx(4, 5, true)); ok || err != nil {
		t.Fatalf("offer beyond the budget: %t, %v; want refused", ok, err)
	}
	if prepared != 3 {
		t.Fatalf("prep ran %d times, want 3 (never for a refused offer)", prepared)
	}
	waitFor(q.Ready(), "ready")
	b, closed := q.Take()
	if closed || len(b) != 3 || b[0].Xid != 1 || b[2].Xid != 3 || len(b[0].Changes) != 4 {
		t.Fatalf("Take = %d transactions (closed %t), want xids 1-3 as prepared", len(b), closed)
	}
	waitFor(q.Room(), "room")
	// One transaction always fits, however large.
	if ok, err := q.Offer(tx(4, 50, false)); !ok || err != nil {
		t.Fatalf("large offer into an empty queue: %t, %v", ok, err)
	}
	if !q.insideChunked() {
		t.Fatal("a non-final chunk was offered last, insideChunked is false")
	}
	if ok, err := q.Offer(tx(99, 1, true)); ok || err != nil {
		t.Fatalf("offer into a full queue: %t, %v; want refused before prep", ok, err)
	}
	q.Take()
	if ok, err := q.Offer(tx(99, 1, true)); ok || err == nil {
		t.Fatalf("prep's error: Offer = %t, %v; want not taken and the error", ok, err)
	}
	if ok, err := q.Offer(tx(5, 2, true)); !ok || err != nil {
		t.Fatalf("offer %t, %v", ok, err)
	}
	q.close()
	if b, closed := q.Take(); closed || len(b) != 1 || b[0].Xid != 5 {
		t.Fatalf("Take after close = %d transactions, closed %t; want the last one first", len(b), closed)
	}
	waitFor(q.Ready(), "ready after close")
	if b, closed := q.Take(); !closed || b != nil {
		t.Fatalf("Take of a closed, empty queue = %v, %t", b, closed)
	}
	waitFor(q.Ready(), "ready again for whoever waits next")
}
