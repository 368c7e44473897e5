// Package backoff is the one retry delay changecast uses wherever a loop
// waits before trying again (the replication pipeline, the Go client's
// reconnects, tail, demo, session checks): doubling from Min to Max, with
// jitter so that many retriers do not retry in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields retry delays. The zero value is not useful: set Min and
// Max. Not safe for concurrent use; each retry loop owns one.
type Backoff struct {
	Min time.Duration // first delay's upper bound; must be > 0
	Max time.Duration // cap of the upper bound; must be >= Min
	cur time.Duration // current upper bound; 0 before the first Next
}

// Next returns the next delay: a random duration in [d/2, d], where d
// starts at Min and doubles after every call up to Max.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	}
	d := b.cur
	if b.cur > b.Max/2 {
		b.cur = b.Max // doubling would pass Max, or overflow
	} else {
		b.cur *= 2
	}
	return d/2 + rand.N(d/2+1)
}

// Reset makes the next delay start again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx ends, and reports whether the whole wait
// elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
