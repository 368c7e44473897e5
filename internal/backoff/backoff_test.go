package backoff

import (
	"context"
	"testing"
	"time"
)

func TestBackoff_DoublesToMaxWithJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 800 * time.Millisecond}
	for i, bound := range []time.Duration{100, 200, 400, 800, 800, 800} {
		bound *= time.Millisecond
		d := b.Next()
		if d < bound/2 || d > bound {
			t.Fatalf("delay %d = %s, want within [%s, %s]", i, d, bound/2, bound)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %s, want at most Min", d)
	}
}

func TestBackoff_JitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := Backoff{Min: time.Second, Max: time.Second}
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 first delays took %d values; want jitter", len(seen))
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with a cancelled context reported a full wait")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep(1ms) did not complete")
	}
}

// TestBackoff_Attempts is the Go client's reconnect schedule (moved here
// with the code): attempt n waits MinBackoff doubled n times, capped,
// drawn from [d/2, d], and a huge minimum never overflows.
func TestBackoff_Attempts(t *testing.T) {
	huge := Backoff{Min: time.Hour, Max: 1000 * time.Hour}
	var d time.Duration
	for range 101 {
		d = huge.Next()
	}
	if d < 500*time.Hour || d > 1000*time.Hour {
		t.Fatalf("attempt 100 with an hour's minimum = %v, want within [500h, 1000h]", d)
	}
	for n, want := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 200 * time.Millisecond, 3: 800 * time.Millisecond, 4: time.Second, 40: time.Second} {
		for range 20 {
			b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
			for range n {
				b.Next()
			}
			if d := b.Next(); d < want/2 || d > want {
				t.Fatalf("attempt %d = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
