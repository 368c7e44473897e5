package wsapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/xidsnap"
)

// This file holds since=<snapshot cursor> (docs/protocol.md, "Entities REST
// API"): a connection that brings back the cursor of a REST snapshot's last
// page starts as a WebSocket snapshot's seam would (snapshot.go). Once its
// first filter is set, it is sent, for the types the cursor covers, every
// journaled change after the cursor's mark up to its end whose transaction
// the snapshot does not see, and for its other types nothing up to the end;
// then snapshot-complete with the end cursor, then the stream as after
// since=<end>. Until then the connection is frozen, as during a snapshot.

// parseResume reads since=: a numeric cursor (parseSince) or a snapshot
// cursor.
func (s *Server) parseResume(q url.Values) (resume, error) {
	if v := q["since"]; len(v) == 1 && strings.HasPrefix(v[0], seamTokenPrefix) {
		sc, err := parseSeamCursor(s.cfg.Auth.tokenKey(), v[0])
		if err != nil {
			return resume{}, err
		}
		return resume{set: true, since: sc.end, seam: &sc}, nil
	}
	return parseSince(q)
}

// seamAllowed checks that every type of a snapshot cursor is one the
// server watches and the token may read; otherwise it answers (400 or
// 403) and returns false. A cursor never widens a token's types.
func (s *Server) seamAllowed(w http.ResponseWriter, claims *Claims, sc *seamCursor) bool {
	scope := newScope(claims)
	for _, t := range sc.types {
		if _, err := s.cfg.Registry.Lookup(t); err != nil || t == entities.EventEntityType {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since: the snapshot cursor covers entity type %s, which this server does not watch (any more); take a new snapshot", quote(t)))
			return false
		}
		if !scope.allows(t) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("since: the snapshot cursor covers entity type %s, which this token's scope does not allow; use a snapshot taken with this token", quote(t)))
			return false
		}
	}
	return true
}

// resumeSeam sets a new client, before it is registered, to send the seam
// of sc first (see the file comment).
func (c *client) resumeSeam(sc *seamCursor) {
	c.feed.frozen = true // not registered yet: nobody else reads feed
	c.snapshotting.Store(true)
	c.snapPending.Store(&snapJob{
		id: "since", types: sc.types, set: setOf(sc.types), phase: snapSeam,
		snap: seamOnly{vis: sc.vis, from: sc.from, end: sc.end},
		p:    sc.end, pos: sc.from, end: sc.end,
	})
}

// seamOnly is the Snapshot of a snapshot cursor: its rows were read
// elsewhere (REST); only what decides the seam remains.
type seamOnly struct {
	vis       xidsnap.Snapshot
	from, end int64
}

func (s seamOnly) Next(context.Context) ([]entities.Change, error) { return nil, nil }
func (s seamOnly) Visible(xid uint32) bool                         { return s.vis.Visible(xid) }
func (s seamOnly) From() int64                                     { return s.from }
func (s seamOnly) Complete(context.Context) (int64, error)         { return s.end, nil }
func (s seamOnly) Release(context.Context) error                   { return nil }
func (s seamOnly) Bounds() xidsnap.Snapshot                        { return s.vis }
func (s seamOnly) Close()                                          {}
func (s seamOnly) Rows(context.Context, string, [][]byte, int) ([]entities.Change, [][][]byte, error) {
	return nil, nil, errors.New("a snapshot cursor holds no rows")
}
