package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// This file holds the system events REST API (docs/events.md, "REST API"):
//
//	GET    /api/v1/events               a page of events (query below)
//	GET    /api/v1/events/types         distinct categories and actions
//	PUT    /api/v1/events/{id}/status   {"status": "read"|"unread"}
//	PUT    /api/v1/events/status        {"status": "read"|"unread", "ids": [...]}
//	DELETE /api/v1/events/{id}
//	DELETE /api/v1/events               {"ids": [...]}
//
// Authorization follows the stream's (docs/protocol.md, "Authentication";
// docs/events.md, "REST API"): the token must allow entity type "event" (no
// scope, or a scope naming it; otherwise 403). Admins see and change every
// event. A viewer sees the events whose user_id is their token's sub and
// the events without a user_id, and may change or delete only their own: an
// event without a user_id concerns everyone, and its status is shared, so
// to a viewer it is not found (404) for writes. A viewer whose sub is not a
// UUID (a token minted offline for automation) has no events of its own: it
// sees only events without a user_id and can change none. Another user's
// event is 404, never 403, so its existence does not leak.
//
// Bad input is 400 with {"error": "..."} naming the problem; success is
// 200 with JSON for reads and 204 for writes.

// Limits of the events API.
const (
	// MaxEventBodyBytes bounds a PUT or DELETE body: 1 MiB.
	MaxEventBodyBytes = 1 << 20
	// MaxEventIDs bounds the ids of one bulk request.
	MaxEventIDs = 1000
)

const eventsAPIPath = "/api/v1/events"

// EventStore is what the events API needs from the events table.
// cmd/changecast implements it over store (the writes run in the journal
// appender's transaction, so each is journaled and delivered as an event
// update or delete). Implementations must be safe for concurrent use.
type EventStore interface {
	// ListEvents returns the page q selects; q has been validated and
	// q.Owner set (nil for admins).
	ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error)
	// EventTypes returns the distinct categories and actions of the
	// events owner may see (nil: all).
	EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error)
	// SetEventStatus sets the status of ids, all or none. owner nil may
	// change any event; otherwise only events whose user_id is *owner.
	// An unknown or not-owned id gives an error wrapping
	// ErrEventNotFound (see MarkEventNotFound) naming it.
	SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error
	// DeleteEvents deletes ids, all or none, under the same rules.
	DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error
}

// ErrEventNotFound is what an EventStore returns (wrapped) for an event id
// that does not exist or that the owner may not change; the API answers
// 404 with the error's message.
var ErrEventNotFound = errors.New("event not found")

// MarkEventNotFound returns err (its message unchanged, still unwrapping
// to err) so that errors.Is(..., ErrEventNotFound) holds: an EventStore
// adapter maps the store's own not-found error with it.
func MarkEventNotFound(err error) error {
	if err == nil {
		return nil
	}
	return notFoundError{err}
}

type notFoundError struct{ err error }

func (e notFoundError) Error() string        { return e.err.Error() }
func (e notFoundError) Unwrap() error        { return e.err }
func (e notFoundError) Is(target error) bool { return target == ErrEventNotFound }

// registerEventRoutes adds the events API to mux. It requires
// Config.Events.
func (s *Server) registerEventRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+eventsAPIPath, s.serveListEvents)
	mux.HandleFunc("GET "+eventsAPIPath+"/types", s.serveEventTypes)
	mux.HandleFunc("PUT "+eventsAPIPath+"/{id}/status", s.serveSetEventStatus)
	mux.HandleFunc("PUT "+eventsAPIPath+"/status", s.serveSetEventsStatus)
	mux.HandleFunc("DELETE "+eventsAPIPath+"/{id}", s.serveDeleteEvent)
	mux.HandleFunc("DELETE "+eventsAPIPath, s.serveDeleteEvents)
}

// eventAccess authenticates the request and returns the owner to act as:
// nil for an admin, the token's sub as a UUID for a viewer (uuid.Nil, which
// no event has, when the sub is not a UUID). On failure it has answered
// (401, or 403 for a scope without "event") and returns false.
func (s *Server) eventAccess(w http.ResponseWriter, r *http.Request) (*uuid.UUID, bool) {
	claims, ok := s.authenticateHTTP(w, r)
	if !ok {
		return nil, false
	}
	if !newScope(claims).allows(entities.EventEntityType) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("this token's scope allows only %s, not %q; use a token without a scope or with %q in it",
			strings.Join(claims.Scope, ", "), entities.EventEntityType, entities.EventEntityType))
		return nil, false
	}
	if claims.Role == RoleAdmin {
		return nil, true
	}
	owner, err := uuid.Parse(claims.Subject)
	if err != nil {
		owner = uuid.Nil
	}
	return &owner, true
}

// Query parameters of GET /api/v1/events.
const (
	paramPage      = "page"
	paramPageSize  = "pagesize"
	paramSearch    = "search"
	paramOrder     = "order"
	paramSort      = "sort"
	paramCategory  = "category"
	paramAction    = "action"
	paramSeverity  = "severity"
	paramStatus    = "status"
	paramActedUpon = "acted_upon"
)

var eventQueryParams = []string{paramPage, paramPageSize, paramSearch, paramOrder, paramSort, paramCategory, paramAction, paramSeverity, paramStatus, paramActedUpon}

// multiParams may be repeated and hold comma-separated lists.
var multiParams = map[string]bool{paramCategory: true, paramAction: true, paramSeverity: true, paramStatus: true}

// parseEventQuery reads the list query strictly: unknown parameters, a
// single-valued one given twice, and malformed numbers or UUIDs are
// errors. It does not validate values against the known sets; Validate
// does.
func parseEventQuery(v url.Values) (entities.EventQuery, error) {
	var q entities.EventQuery
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := v[k]
		if !slices.Contains(eventQueryParams, k) {
			return q, fmt.Errorf("unknown query parameter %s; known: %s", quote(k), strings.Join(eventQueryParams, ", "))
		}
		if multiParams[k] {
			var list []string
			for _, val := range vals {
				for _, item := range strings.Split(val, ",") {
					if item = strings.TrimSpace(item); item != "" {
						list = append(list, item)
					}
				}
			}
			switch k {
			case paramCategory:
				q.Category = list
			case paramAction:
				q.Action = list
			case paramSeverity:
				q.Severity = list
			case paramStatus:
				q.Status = list
			}
			continue
		}
		if len(vals) > 1 {
			return q, fmt.Errorf("query parameter %s must be given at most once", k)
		}
		val := vals[0]
		switch k {
		case paramPage:
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return q, fmt.Errorf("page must be an integer of at least 1, got %s", quote(val))
			}
			q.Page = n
		case paramPageSize:
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > entities.MaxEventPageSize {
				return q, fmt.Errorf("pagesize must be an integer from 1 to %d, got %s", entities.MaxEventPageSize, quote(val))
			}
			q.PageSize = n
		case paramSearch:
			q.Search = val
		case paramOrder:
			q.Order = val
		case paramSort:
			q.Sort = val
		case paramActedUpon:
			id, err := uuid.Parse(val)
			if err != nil {
				return q, fmt.Errorf("acted_upon must be a UUID, got %s", quote(val))
			}
			q.ActedUpon = &id
		}
	}
	return q, nil
}

func (s *Server) serveListEvents(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.eventAccess(w, r)
	if !ok {
		return
	}
	q, err := parseEventQuery(r.URL.Query())
	if err == nil {
		err = q.Validate()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q.Owner = owner
	page, err := s.cfg.Events.ListEvents(r.Context(), q)
	if err != nil {
		s.eventStoreError(w, r, "list events", err)
		return
	}
	if page.Events == nil {
		page.Events = []entities.Event{}
	}
	writeJSONResponse(w, http.StatusOK, page)
}

func (s *Server) serveEventTypes(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.eventAccess(w, r)
	if !ok {
		return
	}
	for k := range r.URL.Query() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %s; %s/types takes none", quote(k), eventsAPIPath))
		return
	}
	types, err := s.cfg.Events.EventTypes(r.Context(), owner)
	if err != nil {
		s.eventStoreError(w, r, "list event types", err)
		return
	}
	if types.Categories == nil {
		types.Categories = []string{}
	}
	if types.Actions == nil {
		types.Actions = []string{}
	}
	writeJSONResponse(w, http.StatusOK, types)
}

// statusBody is the body of PUT /api/v1/events/{id}/status.
type statusBody struct {
	Status *string `json:"status"`
}

// bulkBody is the body of PUT /api/v1/events/status.
type bulkBody struct {
	Status *string   `json:"status"`
	IDs    *[]string `json:"ids"`
}

// idsBody is the body of DELETE /api/v1/events.
type idsBody struct {
	IDs *[]string `json:"ids"`
}

// eventWrite is a parsed status change or delete: the events and, for a
// status change, the status.
type eventWrite struct {
	ids    []uuid.UUID
	status entities.EventStatus
}

// serveEventWrite runs a status or delete route: authorize, parse (an
// error is a 400 naming the problem), apply through the store (its errors
// as eventStoreError), answer 204.
func (s *Server) serveEventWrite(w http.ResponseWriter, r *http.Request, op string,
	parse func() (eventWrite, error), apply func(ctx context.Context, owner *uuid.UUID, ew eventWrite) error) {
	owner, ok := s.eventAccess(w, r)
	if !ok {
		return
	}
	ew, err := parse()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := apply(r.Context(), owner, ew); err != nil {
		s.eventStoreError(w, r, op, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) setStatus(ctx context.Context, owner *uuid.UUID, ew eventWrite) error {
	return s.cfg.Events.SetEventStatus(ctx, owner, ew.ids, ew.status)
}

func (s *Server) deleteEvents(ctx context.Context, owner *uuid.UUID, ew eventWrite) error {
	return s.cfg.Events.DeleteEvents(ctx, owner, ew.ids)
}

func (s *Server) serveSetEventStatus(w http.ResponseWriter, r *http.Request) {
	s.serveEventWrite(w, r, "set event status", func() (eventWrite, error) {
		id, err := pathEventID(r)
		if err != nil {
			return eventWrite{}, err
		}
		var body statusBody
		if err := decodeEventBody(w, r, &body, `{"status": "read"|"unread"}`); err != nil {
			return eventWrite{}, err
		}
		status, err := parseStatusField(body.Status)
		return eventWrite{ids: []uuid.UUID{id}, status: status}, err
	}, s.setStatus)
}

func (s *Server) serveSetEventsStatus(w http.ResponseWriter, r *http.Request) {
	s.serveEventWrite(w, r, "set event status", func() (eventWrite, error) {
		var body bulkBody
		if err := decodeEventBody(w, r, &body, `{"status": "read"|"unread", "ids": ["<event id>", ...]}`); err != nil {
			return eventWrite{}, err
		}
		status, err := parseStatusField(body.Status)
		if err != nil {
			return eventWrite{}, err
		}
		ids, err := parseIDs(body.IDs)
		return eventWrite{ids: ids, status: status}, err
	}, s.setStatus)
}

func (s *Server) serveDeleteEvent(w http.ResponseWriter, r *http.Request) {
	s.serveEventWrite(w, r, "delete event", func() (eventWrite, error) {
		id, err := pathEventID(r)
		return eventWrite{ids: []uuid.UUID{id}}, err
	}, s.deleteEvents)
}

func (s *Server) serveDeleteEvents(w http.ResponseWriter, r *http.Request) {
	s.serveEventWrite(w, r, "delete events", func() (eventWrite, error) {
		var body idsBody
		if err := decodeEventBody(w, r, &body, `{"ids": ["<event id>", ...]}`); err != nil {
			return eventWrite{}, err
		}
		ids, err := parseIDs(body.IDs)
		return eventWrite{ids: ids}, err
	}, s.deleteEvents)
}

// ErrUnavailable is what an EventStore returns (wrapped) when it cannot
// make a change right now, e.g. while the journal reconnects to
// PostgreSQL; the API answers 503 and the client should retry.
var ErrUnavailable = errors.New("temporarily unavailable")

// eventStoreError answers a failed store call: 404 with the store's message
// for ErrEventNotFound, 503 for ErrUnavailable, otherwise 500 without
// details (they are logged).
func (s *Server) eventStoreError(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, ErrEventNotFound) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if errors.Is(err, ErrUnavailable) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, op+": the journal is reconnecting to PostgreSQL; try again")
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		s.log.Debug(op+": request canceled", "err", err)
		return
	}
	s.log.Error(op, "err", err)
	writeError(w, http.StatusInternalServerError, op+" failed; the server log has the details")
}

func pathEventID(r *http.Request) (uuid.UUID, error) {
	v := r.PathValue("id")
	id, err := uuid.Parse(v)
	if err != nil {
		return uuid.Nil, fmt.Errorf("event id must be a UUID, got %s", quote(v))
	}
	return id, nil
}

func parseStatusField(v *string) (entities.EventStatus, error) {
	if v == nil {
		return "", errors.New(`"status" is required ("read" or "unread")`)
	}
	return entities.ParseEventStatus(*v)
}

func parseIDs(v *[]string) ([]uuid.UUID, error) {
	switch {
	case v == nil:
		return nil, errors.New(`"ids" is required: a list of event ids`)
	case len(*v) == 0:
		return nil, errors.New(`"ids" is empty; list at least one event id`)
	case len(*v) > MaxEventIDs:
		return nil, fmt.Errorf(`"ids" has %d entries; at most %d are accepted per request`, len(*v), MaxEventIDs)
	}
	ids := make([]uuid.UUID, len(*v))
	for i, s := range *v {
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, fmt.Errorf(`"ids"[%d] must be a UUID, got %s`, i, quote(s))
		}
		ids[i] = id
	}
	return ids, nil
}

// decodeEventBody decodes exactly one JSON object of at most
// MaxEventBodyBytes into v, refusing unknown fields. shape describes the
// expected body for error messages.
func decodeEventBody(w http.ResponseWriter, r *http.Request, v any, shape string) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxEventBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Anything after the object, even another object, is an error.
		var extra json.RawMessage
		if err = dec.Decode(&extra); err == io.EOF {
			return nil
		}
		if err == nil {
			return fmt.Errorf("request body must be one JSON object %s; it has more after it", shape)
		}
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("request body is larger than %d bytes (1 MiB)", MaxEventBodyBytes)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("request body is empty; send %s", shape)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("request body is truncated JSON; send %s", shape)
	case errors.As(err, &se):
		return fmt.Errorf("request body is not JSON (%v at byte %d); send %s", se, se.Offset, shape)
	case errors.As(err, &ute):
		if ute.Field == "" {
			return fmt.Errorf("request body must be a JSON object %s, got a JSON %s", shape, ute.Value)
		}
		return fmt.Errorf("%q must be %s, got a JSON %s", ute.Field, fieldShapes[ute.Field], ute.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("%s; send %s", strings.TrimPrefix(err.Error(), "json: "), shape)
	default:
		return fmt.Errorf("request body: %v; send %s", err, shape)
	}
}

// fieldShapes says what each body field must be.
var fieldShapes = map[string]string{
	"status": `a string ("read" or "unread")`,
	"ids":    "an array of event id strings",
}
