package wsapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/internal/jsonenc"
)

// This file holds the entities REST API (docs/protocol.md, "Entities REST
// API"; issue 14):
//
//	GET /api/v1/entities/{type}?limit=&match=      the first page of a snapshot
//	GET /api/v1/entities/{type}?after=<next>&limit= the next page
//
// The first request opens a snapshot of the type (one read-only,
// repeatable-read transaction, as for the WebSocket) and answers with its
// first rows, sanitized, in key order. When more rows remain, the snapshot
// stays open, its transaction idle, for Config.SnapshotPageTTL after each
// page, and the answer's "next" (a page token: the snapshot's id and the
// last key sent) fetches the rows after that key in the same transaction,
// so every page belongs to one consistent state whatever commits between
// requests. Asking for the same page twice (a retry) gets the same rows.
// The last page (no "next") carries "cursor", a snapshot cursor: the
// WebSocket's since= accepts it and sends, for that type, exactly the
// journaled changes the rows do not contain, then the stream
// (snapcursor.go, seamJob).
//
// An open REST snapshot holds one of the server's Config.MaxSnapshots
// snapshot slots (a database connection and a transaction) until its last
// page or its expiry; a first page waits at most restSlotWait for a slot,
// then gets 503. Authorization is the stream's: the token's scope must
// allow the type (403), a viewer never reads user, match may not name a
// secret column, and only the token subject that opened a snapshot may
// read its further pages (another gets 410, as for an expired one).

// Limits and defaults of the entities API.
const (
	// DefaultSnapshotPageTTL is Config.SnapshotPageTTL's default.
	DefaultSnapshotPageTTL = 30 * time.Second
	// DefaultEntitiesLimit is the rows of a page without limit=.
	DefaultEntitiesLimit = 100
	// MaxEntitiesLimit bounds limit=.
	MaxEntitiesLimit = 1000
	// restScanFactor bounds the rows one request reads when match
	// selects few: limit × restScanFactor (at least restScanMin); a page
	// may then hold fewer than limit rows, even none, and still a next.
	restScanFactor = 10
	restScanMin    = 5000
	// restSlotWait is how long a first page waits for a snapshot slot.
	restSlotWait = 30 * time.Second
)

const entitiesAPIPath = "/api/v1/entities/"

// restSnapshot is one REST snapshot open between pages.
type restSnapshot struct {
	id      [restSnapIDBytes]byte
	subject string // the token subject that opened it
	typ     string
	match   string       // the match= of the first page, as given
	ms      []fieldMatch // match, parsed; applies to every page

	opened time.Time // when it took its slot: it ends Config.SnapshotMaxDuration later

	mu       sync.Mutex // held while a page is read
	snap     Snapshot   // nil once closed
	deadline time.Time  // expires when no page was asked for by then
}

// restSnapshots are the open REST snapshots, and the janitor that closes
// the expired ones. The Server owns it: Close stops the janitor and closes
// every snapshot.
type restSnapshots struct {
	s      *Server
	ttl    time.Duration
	mu     sync.Mutex
	m      map[[restSnapIDBytes]byte]*restSnapshot
	closed bool // closeAll has run: add refuses

	stop context.CancelFunc
	done chan struct{}
}

func newRestSnapshots(s *Server, ttl time.Duration) *restSnapshots {
	ctx, cancel := context.WithCancel(context.Background())
	rs := &restSnapshots{s: s, ttl: ttl, m: map[[restSnapIDBytes]byte]*restSnapshot{}, stop: cancel, done: make(chan struct{})}
	go rs.run(ctx)
	return rs
}

// run closes expired snapshots until ctx ends, then closes them all.
func (rs *restSnapshots) run(ctx context.Context) {
	defer close(rs.done)
	tick := time.NewTicker(max(10*time.Millisecond, min(time.Second, rs.ttl/4)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			rs.closeAll()
			return
		case now := <-tick.C:
			rs.expire(now)
		}
	}
}

// close stops the janitor and closes every open REST snapshot.
func (rs *restSnapshots) close() {
	rs.stop()
	<-rs.done
}

// expire closes the snapshots whose deadline has passed. One whose page is
// being read is left to that request (its lock is held).
func (rs *restSnapshots) expire(now time.Time) {
	rs.mu.Lock()
	var due []*restSnapshot
	for _, r := range rs.m {
		if r.mu.TryLock() {
			if now.After(r.deadline) {
				due = append(due, r)
			}
			r.mu.Unlock()
		}
	}
	rs.mu.Unlock()
	for _, r := range due {
		r.mu.Lock()
		rs.closeIfDue(r, now)
		r.mu.Unlock()
	}
}

// closeIfDue closes r if it is open and its deadline has passed (the
// caller holds r.mu): the janitor's sweep, and a page request that comes
// before the janitor's next one.
func (rs *restSnapshots) closeIfDue(r *restSnapshot, now time.Time) {
	if r.snap != nil && now.After(r.deadline) {
		rs.s.log.Info("entities snapshot expired", "type", r.typ, "user_id", r.subject, "ttl", rs.ttl)
		rs.closeLocked(r)
	}
}

func (rs *restSnapshots) closeAll() {
	rs.mu.Lock()
	rs.closed = true
	all := make([]*restSnapshot, 0, len(rs.m))
	for _, r := range rs.m {
		all = append(all, r)
	}
	rs.mu.Unlock()
	for _, r := range all {
		r.mu.Lock()
		rs.closeLocked(r)
		r.mu.Unlock()
	}
}

// closeLocked closes r (the caller holds r.mu), gives its slot back and
// forgets it.
func (rs *restSnapshots) closeLocked(r *restSnapshot) {
	if r.snap == nil {
		return
	}
	r.snap.Close()
	r.snap = nil
	rs.s.hub.snaps <- struct{}{} // never blocks: the slot came from there
	rs.mu.Lock()
	delete(rs.m, r.id)
	rs.mu.Unlock()
}

// add registers r, which holds a slot; false once the server is closing.
func (rs *restSnapshots) add(r *restSnapshot) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return false
	}
	rs.m[r.id] = r
	return true
}

func (rs *restSnapshots) get(id [restSnapIDBytes]byte) *restSnapshot {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.m[id]
}

// count returns how many REST snapshots are open.
func (rs *restSnapshots) count() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.m)
}

// entitiesQuery is a parsed query string.
type entitiesQuery struct {
	limit int
	match string // JSON object, as given; "" for none
	after string // page token; "" on the first page
}

var entitiesQueryParams = []string{"after", "limit", "match"}

// parseEntitiesQuery reads the query strictly: unknown parameters and
// repeated ones are errors.
func parseEntitiesQuery(v url.Values) (entitiesQuery, error) {
	q := entitiesQuery{limit: DefaultEntitiesLimit}
	for k, vals := range v {
		if !slices.Contains(entitiesQueryParams, k) {
			return q, fmt.Errorf("unknown query parameter %s; known: %s", quote(k), strings.Join(entitiesQueryParams, ", "))
		}
		if len(vals) > 1 {
			return q, fmt.Errorf("query parameter %s must be given at most once", k)
		}
	}
	if v.Has("limit") {
		s := v.Get("limit")
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxEntitiesLimit || strings.HasPrefix(s, "+") {
			return q, fmt.Errorf("limit must be an integer from 1 to %d, got %s", MaxEntitiesLimit, quote(s))
		}
		q.limit = n
	}
	if v.Has("match") {
		q.match = v.Get("match")
		if q.match == "" {
			return q, errors.New(`match must be a JSON object, as a filter's "match": {"field": value, ...}`)
		}
	}
	if v.Has("after") {
		q.after = v.Get("after")
		if q.after == "" {
			return q, errors.New(`after must be the "next" of the previous page`)
		}
	}
	return q, nil
}

// serveEntities serves GET /api/v1/entities/{type}. Order: closing (503),
// token (401), type (404), scope (403), query (400), then the page.
func (s *Server) serveEntities(w http.ResponseWriter, r *http.Request) {
	if s.closing() {
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	claims, ok := s.authenticateHTTP(w, r)
	if !ok {
		return
	}
	typ := r.PathValue("type")
	sc := newScope(claims)
	et, err := s.cfg.Registry.Lookup(typ)
	if err != nil || typ == entities.EventEntityType {
		var known []string
		for _, n := range s.cfg.Registry.Names() {
			if n != entities.EventEntityType && sc.allows(n) {
				known = append(known, n)
			}
		}
		msg := fmt.Sprintf("unknown entity type %s; known: %s", quote(typ), strings.Join(known, ", "))
		if typ == entities.EventEntityType {
			msg = "system events have no table; read them with GET " + eventsAPIPath
		}
		writeError(w, http.StatusNotFound, msg)
		return
	}
	if !sc.allows(typ) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("entity type %s is not allowed for this token (allowed: %s)", quote(typ), strings.Join(sc.allowedNames(s.cfg.Registry), ", ")))
		return
	}
	q, err := parseEntitiesQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var ms []fieldMatch
	if q.match != "" {
		pc := parseCtx{reg: s.cfg.Registry, sc: sc, secret: s.cfg.SecretField}
		if ms, err = pc.parseMatch(json.RawMessage(q.match), "match", et); err != nil {
			var fe *filterError
			msg := "match: invalid"
			if errors.As(err, &fe) {
				msg = fe.msg
			}
			writeError(w, http.StatusBadRequest, msg)
			return
		}
	}
	if q.after == "" {
		s.firstEntitiesPage(w, r, claims, typ, q, ms)
		return
	}
	pt, err := parsePageToken(s.cfg.Auth.tokenKey(), q.after)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rsn := s.rest.get(pt.id)
	if rsn == nil || rsn.subject != claims.Subject {
		writeError(w, http.StatusGone, s.goneMessage())
		return
	}
	if rsn.typ != typ || (q.match != "" && rsn.match != q.match) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("after belongs to the snapshot of %s with match %s; ask for its pages with the same type and match (or none)", quote(rsn.typ), quote(rsn.match)))
		return
	}
	rsn.mu.Lock()
	defer rsn.mu.Unlock()
	s.rest.closeIfDue(rsn, time.Now())
	if rsn.snap == nil {
		writeError(w, http.StatusGone, s.goneMessage())
		return
	}
	s.entitiesPage(w, r, claims, rsn, pt.key, q.limit)
}

func (s *Server) goneMessage() string {
	return fmt.Sprintf("this snapshot has ended: its pages must be read within %s of each other and all of them within %s, and the last page ends it; start again without after", s.rest.ttl, s.cfg.SnapshotMaxDuration)
}

// firstEntitiesPage opens a snapshot of typ and answers its first page.
func (s *Server) firstEntitiesPage(w http.ResponseWriter, r *http.Request, claims *Claims, typ string, q entitiesQuery, ms []fieldMatch) {
	wait := time.NewTimer(restSlotWait)
	defer wait.Stop()
	select {
	case <-s.hub.snaps:
	case <-r.Context().Done():
		return
	case <-wait.C:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("every snapshot slot is in use (%d, --max-snapshots) and none was free within %s; try again later", s.cfg.MaxSnapshots, restSlotWait))
		return
	}
	snap, err := s.cfg.Snapshots.Begin(r.Context(), []string{typ})
	if err != nil {
		s.hub.snaps <- struct{}{}
		s.snapshotFailed(w, r, typ, err)
		return
	}
	rsn := &restSnapshot{subject: claims.Subject, typ: typ, match: q.match, ms: ms, snap: snap, opened: time.Now()}
	if _, err := rand.Read(rsn.id[:]); err != nil {
		snap.Close()
		s.hub.snaps <- struct{}{}
		writeError(w, http.StatusInternalServerError, "no randomness for a snapshot id")
		return
	}
	rsn.mu.Lock()
	defer rsn.mu.Unlock()
	if !s.rest.add(rsn) {
		snap.Close()
		s.hub.snaps <- struct{}{}
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	s.entitiesPage(w, r, claims, rsn, nil, q.limit)
}

// entitiesPage reads the rows of rsn after key (nil: from the first) and
// answers with them; after the last row it ends the snapshot and adds the
// snapshot cursor. The caller holds rsn.mu.
func (s *Server) entitiesPage(w http.ResponseWriter, r *http.Request, claims *Claims, rsn *restSnapshot, key [][]byte, limit int) {
	// A page outlives a client that goes away mid-read, so that its
	// retry finds the snapshot still open; statement_timeout bounds it.
	ctx := context.WithoutCancel(r.Context())
	sc := newScope(claims)
	var rows []*entities.Row
	var next [][]byte // the key after which the next page starts
	more := false
	budget := max(limit*restScanFactor, restScanMin)
	for {
		want := min(limit, budget)
		page, keys, err := rsn.snap.Rows(ctx, rsn.typ, key, want)
		if err != nil {
			// The page token is sealed, so its key is one Rows
			// returned: this is the database's failure.
			s.rest.closeLocked(rsn)
			s.snapshotFailed(w, r, rsn.typ, err)
			return
		}
		budget -= len(page)
		exhausted := len(page) < want // the table has no more rows
		full := false
		for i := range page {
			ch := &page[i]
			if !sc.allows(ch.EntityType) || !matchFields(rsn.ms, ch) {
				continue
			}
			if owner, ok := entities.OwnerOf(ch); ok && !sc.admin && owner != claims.Subject {
				continue
			}
			rows = append(rows, ch.Payload)
			if len(rows) == limit {
				full, next = true, keys[i]
				more = i < len(page)-1 || !exhausted
				break
			}
		}
		if full || exhausted {
			break
		}
		key, next = keys[len(keys)-1], keys[len(keys)-1]
		if budget <= 0 {
			more = true // read enough for one request; the rest on the next page
			break
		}
	}
	buf := []byte(`{"entity-type":`)
	buf = jsonenc.AppendString(buf, rsn.typ)
	buf = append(buf, `,"rows":[`...)
	for i, row := range rows {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = row.AppendJSON(buf)
	}
	buf = append(buf, ']')
	if more {
		rsn.deadline = time.Now().Add(s.rest.ttl)
		if end := rsn.opened.Add(s.cfg.SnapshotMaxDuration); end.Before(rsn.deadline) {
			rsn.deadline = end
		}
		buf = append(buf, `,"next":`...)
		buf = jsonenc.AppendString(buf, sealToken(s.cfg.Auth.tokenKey(), pageTokenPrefix, pageToken{id: rsn.id, key: next}.encode()))
	} else {
		cursor, err := s.endRestSnapshot(ctx, rsn)
		if err != nil {
			s.snapshotFailed(w, r, rsn.typ, err)
			return
		}
		buf = append(buf, `,"cursor":`...)
		buf = jsonenc.AppendString(buf, cursor)
	}
	buf = append(buf, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// endRestSnapshot ends rsn's transaction, waits for the journal to hold
// every change the rows contain, closes rsn and returns its snapshot
// cursor. The caller holds rsn.mu.
func (s *Server) endRestSnapshot(ctx context.Context, rsn *restSnapshot) (string, error) {
	defer s.rest.closeLocked(rsn)
	if err := rsn.snap.Release(ctx); err != nil {
		return "", err
	}
	end, err := rsn.snap.Complete(ctx)
	if err != nil {
		return "", err
	}
	sc := seamCursor{from: rsn.snap.From(), end: end, vis: rsn.snap.Bounds(), types: []string{rsn.typ}}
	if sc.from > sc.end {
		return "", fmt.Errorf("snapshot mark %d after its end %d", sc.from, sc.end)
	}
	// end was read from the journal, which can be ahead of the head
	// Publish has announced for a moment; a connection bringing the
	// cursor back is checked against the latter, so wait for it (a
	// journal commit is published right after it is made).
	wait := time.NewTimer(s.cfg.WriteWait)
	defer wait.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.hub.head() < end {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-wait.C:
			return "", fmt.Errorf("the journal head %d was not published within %s", end, s.cfg.WriteWait)
		case <-tick.C:
		}
	}
	s.log.Info("entities snapshot complete", "type", rsn.typ, "user_id", rsn.subject, "cursor", end)
	return sealToken(s.cfg.Auth.tokenKey(), seamTokenPrefix, sc.encode()), nil
}

// snapshotFailed logs err and answers 503 for a timeout, 500 otherwise,
// without the error's text (it may name database internals).
func (s *Server) snapshotFailed(w http.ResponseWriter, r *http.Request, typ string, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Warn("entities snapshot failed", "type", typ, "err", err)
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "snapshot failed: a database wait or statement timed out; try again (the server log says which)")
		return
	}
	writeError(w, http.StatusInternalServerError, "snapshot failed; the server log says why; start again without after")
}
