package sanitize

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/changecast/changecast/entities"
)

func TestEvent_StripsSecretMetadata(t *testing.T) {
	ev := entities.NewEvent().WithCategory("connection").WithAction("failed").WithSeverity(entities.Error).
		WithMetadata(map[string]any{
			"err":      errors.New("dial tcp: refused"),
			"password": "CANARY-pw",
			"conn":     map[string]any{"host": "db", "api_token": "CANARY-token", "port": 5432},
			"list":     []any{map[string]any{"private_key": "CANARY-key", "name": "k1"}},
			"doc":      "https://example.com/docs",
		}).MustBuild()
	got, err := Event(ev)
	if err != nil {
		t.Fatalf("Event: %v", err)
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), "CANARY") {
		t.Fatalf("sanitized event still holds a secret: %s", b)
	}
	for _, want := range []string{`"err":"dial tcp: refused"`, `"host":"db"`, `"port":5432`, `"name":"k1"`, `"doc":"https://example.com/docs"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("sanitized event %s lost %s", b, want)
		}
	}
	if _, ok := ev.Metadata["password"]; !ok {
		t.Errorf("Event modified its argument")
	}
}

func TestEvent_NothingToStrip(t *testing.T) {
	ev := entities.NewEvent().WithCategory("watcher").WithAction("started").WithSeverity(entities.Informational).
		WithMetadata(map[string]any{"slot": "changecast"}).MustBuild()
	got, err := Event(ev)
	if err != nil || got.Metadata["slot"] != "changecast" {
		t.Fatalf("got %+v, %v", got.Metadata, err)
	}
	got.Metadata["x"] = 1
	if _, ok := ev.Metadata["x"]; ok {
		t.Errorf("the result shares its metadata map with the argument")
	}
}
