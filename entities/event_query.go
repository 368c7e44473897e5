package entities

import (
	"fmt"
	"math"
	"strings"

	"github.com/google/uuid"
)

// Paging limits of EventQuery.
const (
	// DefaultEventPageSize is the page size of a query that sets none.
	DefaultEventPageSize = 25
	// MaxEventPageSize is the largest page size accepted.
	MaxEventPageSize = 100
	// MaxEventSearchLen is the longest search string accepted, in bytes.
	MaxEventSearchLen = 256
	// MaxEventFilterValues is the most values accepted for each of the
	// Category, Action, Severity and Status filters.
	MaxEventFilterValues = 100
	// maxEventPage keeps (page-1)*pagesize far from overflowing.
	maxEventPage = math.MaxInt32
)

// The sort keys and orders of EventQuery.
const (
	EventSortCreatedAt = "created_at"
	EventSortUpdatedAt = "updated_at"
	// EventSortSeverity sorts by rank, not by name: descending puts the
	// worst (emergency) first.
	EventSortSeverity = "severity"
	EventSortCategory = "category"
	EventSortAction   = "action"

	OrderAsc  = "asc"
	OrderDesc = "desc"
)

// EventSorts lists the accepted EventQuery.Sort values.
var EventSorts = []string{EventSortCreatedAt, EventSortUpdatedAt, EventSortSeverity, EventSortCategory, EventSortAction}

// EventQuery selects a page of system events (the REST list of docs/events.md,
// issue 5). Filters are AND-ed; the values of one filter are
// OR-ed. Call Validate before use: it fills the defaults.
type EventQuery struct {
	// Owner restricts the result to what one user may see: events with
	// user_id = *Owner, and events without a user_id (about the whole
	// system). nil means every event (admins).
	Owner *uuid.UUID
	// Page is the 1-based page number. Default (zero): 1.
	Page int
	// PageSize is the number of events per page, at most
	// MaxEventPageSize. Default (zero): DefaultEventPageSize (25).
	PageSize int
	// Search, when non-empty, keeps events whose description, category
	// or action contains it, case-insensitively (a plain substring: %
	// and _ are not wildcards). At most MaxEventSearchLen bytes.
	Search string
	// Order is "asc" or "desc". Default (empty): "desc".
	Order string
	// Sort is one of EventSorts. Default (empty): "created_at". Ties
	// are broken by created_at, then id, in the same order.
	Sort string
	// Category and Action keep events with one of the given values
	// (snake_case). Empty: no filter.
	Category []string
	Action   []string
	// Severity keeps events with one of the given severities (see
	// Severities). Empty: no filter.
	Severity []string
	// Status keeps events with one of the given statuses ("read",
	// "unread"). Empty: no filter.
	Status []string
	// ActedUpon, when set, keeps events about that id.
	ActedUpon *uuid.UUID
}

// Validate fills the defaults of zero fields (Page 1, PageSize 25, Order
// desc, Sort created_at) and reports the first problem, naming the value
// and what is accepted.
func (q *EventQuery) Validate() error {
	switch {
	case q.Page == 0:
		q.Page = 1
	case q.Page < 0 || q.Page > maxEventPage:
		return fmt.Errorf("page must be from 1 to %d, got %d", maxEventPage, q.Page)
	}
	switch {
	case q.PageSize == 0:
		q.PageSize = DefaultEventPageSize
	case q.PageSize < 0 || q.PageSize > MaxEventPageSize:
		return fmt.Errorf("pagesize must be from 1 to %d, got %d", MaxEventPageSize, q.PageSize)
	}
	if len(q.Search) > MaxEventSearchLen {
		return fmt.Errorf("search is %d bytes long; at most %d are accepted", len(q.Search), MaxEventSearchLen)
	}
	switch q.Order {
	case "":
		q.Order = OrderDesc
	case OrderAsc, OrderDesc:
	default:
		return fmt.Errorf("unknown order %s; known: asc, desc", echo(q.Order))
	}
	switch {
	case q.Sort == "":
		q.Sort = EventSortCreatedAt
	case !contains(EventSorts, q.Sort):
		return fmt.Errorf("unknown sort %s; known: %s", echo(q.Sort), strings.Join(EventSorts, ", "))
	}
	for _, f := range []struct {
		name   string
		values []string
		check  func(string) error
	}{
		{"category", q.Category, checkSnakeFilter("category")},
		{"action", q.Action, checkSnakeFilter("action")},
		{"severity", q.Severity, func(s string) error { _, err := ParseSeverity(s); return err }},
		{"status", q.Status, func(s string) error { _, err := ParseEventStatus(s); return err }},
	} {
		if len(f.values) > MaxEventFilterValues {
			return fmt.Errorf("%s has %d values; at most %d are accepted", f.name, len(f.values), MaxEventFilterValues)
		}
		for _, v := range f.values {
			if err := f.check(v); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkSnakeFilter(field string) func(string) error {
	return func(v string) error {
		if !snakeName.MatchString(v) {
			return fmt.Errorf("%s %s is not snake_case (categories and actions are lowercase words joined by underscores, e.g. \"connection\")", field, echo(v))
		}
		return nil
	}
}

// EventPage is one page of a listing: the events of page Page (PageSize
// per page) and how many events match in total.
type EventPage struct {
	Page       int64   `json:"page"`
	PageSize   int64   `json:"page_size"`
	TotalCount int64   `json:"total_count"`
	Events     []Event `json:"events"` // never nil: [] when empty
}

// EventTypes lists the distinct categories and actions of the events a
// user may see, each sorted.
type EventTypes struct {
	Categories []string `json:"categories"` // never nil
	Actions    []string `json:"actions"`    // never nil
}
