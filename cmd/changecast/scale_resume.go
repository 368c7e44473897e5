package main

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/changecast/changecast/natsjournal"
	"github.com/changecast/changecast/wire"
	"github.com/changecast/changecast/wsapi"
)

// resumeWait bounds how long a gateway holds a resume whose cursor the
// stream has but its own tail has not delivered yet.
const resumeWait = 10 * time.Second

// awaitResume wraps a gateway's client handler: a WebSocket resume
// (?since=N) beyond what this gateway's tail has delivered, but within
// the stream, waits (at most resumeWait) until the hub has it. Gateways
// follow the stream each at its own pace, so a client whose gateway died
// may hold a cursor the next one has not reached yet; without the wait
// the hub would answer that the cursor is unknown. A cursor beyond the
// stream's head goes through at once, and is refused as before.
func awaitResume(next http.Handler, hub *wsapi.Server, nj *natsjournal.Journal) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.EventsPath {
			if since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64); err == nil && since > hub.Head() {
				ctx, cancel := context.WithTimeout(r.Context(), resumeWait)
				if head, err := nj.Head(ctx); err == nil && since <= head {
					for hub.Head() < since && ctx.Err() == nil {
						select {
						case <-ctx.Done():
						case <-time.After(10 * time.Millisecond): // polling the tail's progress
						}
					}
				}
				cancel()
			}
		}
		next.ServeHTTP(w, r)
	})
}
