package entities

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func TestSeverity(t *testing.T) {
	for i, s := range Severities {
		got, err := ParseSeverity(string(s))
		if err != nil || got != s {
			t.Errorf("ParseSeverity(%q) = %q, %v", s, got, err)
		}
		for j, o := range Severities {
			if want := i <= j; s.AtLeast(o) != want {
				t.Errorf("%s.AtLeast(%s) = %v, want %v", s, o, !want, want)
			}
		}
	}
	_, err := ParseSeverity("Error")
	if err == nil || !strings.Contains(err.Error(), `"Error"`) || !strings.Contains(err.Error(), "emergency, alert, critical, error, warning, informational, success, debug") {
		t.Errorf("ParseSeverity(Error) error = %v, want it to name the value and the known ones", err)
	}
	if Severity("bogus").AtLeast(Debug) || Error.AtLeast("bogus") {
		t.Error("AtLeast with an unknown severity holds, want false")
	}
	if st, err := ParseEventStatus("read"); err != nil || st != StatusRead {
		t.Errorf("ParseEventStatus(read) = %q, %v", st, err)
	}
	if _, err := ParseEventStatus("seen"); err == nil || !strings.Contains(err.Error(), `"seen"`) || !strings.Contains(err.Error(), "read, unread") {
		t.Errorf("ParseEventStatus(seen) error = %v", err)
	}
}

// valid returns a builder of a valid event, for the cases to break.
func valid() *EventBuilder {
	return NewEvent().WithCategory("connection").WithAction("ping").WithSeverity(Informational).WithDescription("pong")
}

// jsonErr is an error that also has fields, to show the message wins.
type jsonErr struct{ Code int }

func (e *jsonErr) Error() string { return fmt.Sprintf("code %d", e.Code) }

func TestEventBuilder_Validation(t *testing.T) {
	boom := errors.New("connection refused")
	var nilErr *jsonErr
	tests := []struct {
		name string
		b    *EventBuilder
		// want lists substrings of the error; nil means Build succeeds.
		want []string
	}{
		{"valid", valid(), nil},
		{"valid with digits and underscores", valid().WithCategory("replication2").WithAction("lag_over_threshold_1"), nil},
		{"no category", valid().WithCategory(""), []string{"category is required"}},
		{"category upper case", valid().WithCategory("Connection"), []string{`category "Connection" is not snake_case`, `e.g. "connection"`}},
		{"category leading digit", valid().WithCategory("1conn"), []string{`category "1conn" is not snake_case`}},
		{"category double underscore", valid().WithCategory("a__b"), []string{`category "a__b"`}},
		{"category trailing underscore", valid().WithCategory("a_"), []string{`category "a_"`}},
		{"category dash", valid().WithCategory("a-b"), []string{`category "a-b"`}},
		{"category space", valid().WithCategory("a b"), []string{`category "a b"`}},
		{"no action", valid().WithAction(""), []string{"action is required"}},
		{"action camel case", valid().WithAction("lagExceeded"), []string{`action "lagExceeded" is not snake_case`}},
		{"no severity", valid().WithSeverity(""), []string{"severity is required", "known: emergency, alert, critical, error, warning, informational, success, debug"}},
		{"unknown severity", valid().WithSeverity("fatal"), []string{`unknown severity "fatal"`, "known: emergency"}},
		{"severity upper case", valid().WithSeverity("Error"), []string{`unknown severity "Error"`}},
		{"error without err", valid().WithSeverity(Error), []string{`severity "error" requires metadata key "err"`}},
		{"critical without err", valid().WithSeverity(Critical).WithMetadata(map[string]any{"other": 1}), []string{`severity "critical" requires metadata key "err"`}},
		{"alert without err", valid().WithSeverity(Alert), []string{`"alert" requires`}},
		{"emergency without err", valid().WithSeverity(Emergency), []string{`"emergency" requires`}},
		{"error with nil err", valid().WithSeverity(Error).WithMetadata(map[string]any{"err": nil}), []string{`requires metadata key "err"`}},
		{"error with typed nil err", valid().WithSeverity(Error).WithMetadata(map[string]any{"err": nilErr}), []string{`requires metadata key "err"`}},
		{"error with empty err", valid().WithSeverity(Error).WithMetadata(map[string]any{"err": ""}), []string{`requires metadata key "err"`}},
		{"error with err", valid().WithSeverity(Error).WithMetadata(map[string]any{"err": boom}), nil},
		{"error with err string", valid().WithSeverity(Error).WithMetadata(map[string]any{"err": "timeout"}), nil},
		{"warning without err", valid().WithSeverity(Warning), nil},
		{"success without err", valid().WithSeverity(Success), nil},
		{"debug without err", valid().WithSeverity(Debug), nil},
		{"doc https", valid().WithMetadata(map[string]any{"doc": "https://example.com/docs/events.md#lag"}), nil},
		{"doc http", valid().WithMetadata(map[string]any{"doc": "http://localhost:8080/docs"}), nil},
		{"doc relative", valid().WithMetadata(map[string]any{"doc": "docs/events.md"}), []string{`metadata "doc" "docs/events.md" is not an absolute http(s) URL`}},
		{"doc ftp", valid().WithMetadata(map[string]any{"doc": "ftp://example.com/x"}), []string{`"ftp://example.com/x" is not an absolute http(s) URL`}},
		{"doc javascript", valid().WithMetadata(map[string]any{"doc": "javascript:alert(1)"}), []string{`"javascript:alert(1)"`}},
		{"doc without host", valid().WithMetadata(map[string]any{"doc": "https:///x"}), []string{`"https:///x"`}},
		{"doc not a string", valid().WithMetadata(map[string]any{"doc": 42}), []string{`metadata "doc" must be a string URL, got json.Number`}},
		{"doc unparseable", valid().WithMetadata(map[string]any{"doc": "http://[::1"}), []string{`"http://[::1"`}},
		{"metadata not JSON", valid().WithMetadata(map[string]any{"ch": make(chan int)}), []string{`metadata "ch" does not encode as JSON`}},
		{"nil user", valid().FromUser(uuid.New()).FromUser(uuid.Nil), nil},
		{"several problems", NewEvent().WithCategory("Bad").WithSeverity(Error), []string{`category "Bad"`, "action is required", `requires metadata key "err"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := tt.b.Build()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				if err := ev.Validate(); err != nil {
					t.Fatalf("Validate of a built event: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Build succeeded, want an error containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("error %v does not wrap ErrInvalidEvent", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !reflect.DeepEqual(ev, Event{}) {
				t.Errorf("failed Build returned %+v, want the zero Event", ev)
			}
			func() {
				defer func() {
					if r := recover(); r == nil {
						t.Error("MustBuild did not panic")
					}
				}()
				tt.b.MustBuild()
			}()
		})
	}
}

func TestEvent_ValidateDirect(t *testing.T) {
	// Events built by hand (not through NewEvent) are checked too, since
	// the store validates before inserting.
	ev := valid().MustBuild()
	nilID := uuid.Nil
	for _, tc := range []struct {
		name string
		mod  func(*Event)
		want string
	}{
		{"nil id", func(e *Event) { e.ID = uuid.Nil }, "id is the nil UUID"},
		{"nil operation id", func(e *Event) { e.OperationID = uuid.Nil }, "operation_id is the nil UUID"},
		{"nil user uuid", func(e *Event) { e.UserID = &nilID }, "user_id is the nil UUID"},
		{"nil acted upon uuid", func(e *Event) { e.ActedUpon = &nilID }, "acted_upon is the nil UUID"},
		{"zero time", func(e *Event) { e.CreatedAt = time.Time{} }, "created_at and updated_at must be set"},
		{"unknown status", func(e *Event) { e.Status = "seen" }, `unknown event status "seen"`},
		{"empty status", func(e *Event) { e.Status = "" }, `unknown event status ""`},
	} {
		e := ev
		tc.mod(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestNewEvent_Defaults(t *testing.T) {
	before := time.Now().UTC().Add(-time.Second)
	ev := valid().MustBuild()
	if ev.ID == uuid.Nil || ev.OperationID == uuid.Nil || ev.ID == ev.OperationID {
		t.Errorf("id %s, operation id %s: want two distinct non-nil ids", ev.ID, ev.OperationID)
	}
	if ev.Status != StatusUnread {
		t.Errorf("status %q, want unread", ev.Status)
	}
	if ev.CreatedAt.Location() != time.UTC || !ev.CreatedAt.Equal(ev.UpdatedAt) || ev.CreatedAt.Before(before) || ev.CreatedAt.Nanosecond()%1000 != 0 {
		t.Errorf("created_at %v, updated_at %v: want equal, recent, UTC, whole microseconds", ev.CreatedAt, ev.UpdatedAt)
	}
	if ev.Metadata == nil || len(ev.Metadata) != 0 {
		t.Errorf("metadata %#v, want an empty map", ev.Metadata)
	}
	if ev.UserID != nil || ev.SystemID != nil || ev.ActedUpon != nil {
		t.Errorf("ids set without being asked: %v %v %v", ev.UserID, ev.SystemID, ev.ActedUpon)
	}
	if other := valid().MustBuild(); other.ID == ev.ID || other.OperationID == ev.OperationID {
		t.Error("two NewEvent calls share an id")
	}
	op := uuid.New()
	if got := valid().WithOperationID(op).MustBuild().OperationID; got != op {
		t.Errorf("WithOperationID: got %s, want %s", got, op)
	}
}

func TestEventBuilder_Immutable(t *testing.T) {
	user, system, target := uuid.New(), uuid.New(), uuid.New()
	nested := map[string]any{"attempt": 1, "errs": []error{errors.New("first")}}
	list := []any{"a", errors.New("second")}
	meta := map[string]any{"err": errors.New("dial tcp: refused"), "nested": nested, "list": list, "n": 3}
	b := NewEvent().FromUser(user).FromSystem(system).ActedUpon(target).
		WithCategory("connection").WithAction("unreachable").WithSeverity(Error).
		WithDescription("down").WithMetadata(meta)
	first := b.MustBuild()
	want, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}

	// Errors are rendered as text, nested ones too, and numbers kept exact.
	wantMeta := map[string]any{
		"err":    "dial tcp: refused",
		"nested": map[string]any{"attempt": json.Number("1"), "errs": []any{"first"}},
		"list":   []any{"a", "second"},
		"n":      json.Number("3"),
	}
	if !reflect.DeepEqual(first.Metadata, wantMeta) {
		t.Errorf("metadata = %#v, want %#v", first.Metadata, wantMeta)
	}

	// Mutate everything the builder and the caller still hold.
	meta["err"] = "changed"
	meta["added"] = true
	nested["attempt"] = 2
	list[0] = "changed"
	b.FromUser(uuid.New()).FromSystem(uuid.New()).ActedUpon(uuid.New()).
		WithCategory("other").WithAction("other").WithSeverity(Debug).
		WithDescription("changed").WithMetadata(map[string]any{"x": 1})
	second := b.MustBuild()

	got, _ := json.Marshal(first)
	if !bytes.Equal(got, want) {
		t.Errorf("built event changed after builder calls and map mutation:\n got %s\nwant %s", got, want)
	}
	if second.ID != first.ID {
		t.Errorf("second Build of one builder: id %s, want the same id %s", second.ID, first.ID)
	}
	if second.Category != "other" || first.Category != "connection" {
		t.Errorf("categories %q and %q, want connection and other", first.Category, second.Category)
	}

	// Two builds of one builder share no pointers or maps.
	third := b.MustBuild()
	*third.UserID = uuid.New()
	third.Metadata["x"] = "mutated"
	if *second.UserID == *third.UserID || second.Metadata["x"] == "mutated" {
		t.Error("two Builds of one builder share the user id pointer or the metadata map")
	}
}

func TestEvent_JSONGolden(t *testing.T) {
	ev := goldenEvent(t)
	// Encoded as the journal and the hub encode: no HTML escaping.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ev); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	path := filepath.Join("testdata", "golden", "event.json")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestEvent_JSONGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("event JSON differs from %s:\n got %s\nwant %s", path, got, want)
	}

	// The Row encodes to the same object (entitiestest.EventFromRow
	// converts it back; its test checks that).
	rowJSON, err := json.Marshal(ev.Row())
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(rowJSON, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("Row JSON %s differs from event JSON %s", rowJSON, want)
	}
}

func goldenEvent(t testing.TB) Event {
	t.Helper()
	ev := NewEvent().
		FromUser(uuid.MustParse("7b1c2f4e-0000-4000-8000-000000000001")).
		FromSystem(uuid.MustParse("7b1c2f4e-0000-4000-8000-000000000002")).
		WithCategory("replication").WithAction("lag_exceeded").WithSeverity(Error).
		WithDescription("replication lag is 64 MiB, over the 16 MiB threshold").
		WithMetadata(map[string]any{
			"err":       errors.New("lag 67108864 bytes > 16777216 <threshold>"),
			"doc":       "https://example.com/docs/events.md#replication-lag",
			"lag_bytes": int64(67108864),
		}).MustBuild()
	ev.ID = uuid.MustParse("0193b5a0-0000-7000-8000-00000000000a")
	ev.OperationID = uuid.MustParse("0193b5a0-0000-7000-8000-00000000000b")
	ev.CreatedAt = time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	ev.UpdatedAt = ev.CreatedAt
	return ev
}

func TestEvent_MarshalNilMetadata(t *testing.T) {
	b, err := json.Marshal(Event{Status: StatusUnread})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"metadata":{}`)) || !bytes.Contains(b, []byte(`"user_id":null`)) || !bytes.Contains(b, []byte(`"acted_upon":null`)) {
		t.Errorf("zero event JSON %s: want metadata {} and null ids", b)
	}
}
