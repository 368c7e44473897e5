// Package testutil holds small helpers shared by changecast's tests.
package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer is an io.Writer whose contents can be read while other
// goroutines write to it (a logger, a server's stdout). Its zero value is
// ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
