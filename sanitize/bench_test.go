package sanitize

import (
	"encoding/json"
	"github.com/changecast/changecast/internal/testutil"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// Hot-path benchmarks for sanitizing (issue 8, item 5), on the instance
// rows the benchmark suite's workload writes: two secret columns
// (jit_configuration, callback_token) and a jsonb column with nothing
// secret inside, as the watcher decodes them. Run with
//
//	go test -run '^$' -bench . -benchmem ./sanitize

// benchInstanceRow is an instance row as the watcher decodes it: the
// sanitized row plus its two secret columns.
func benchInstanceRow(status string) *entities.Row {
	m := testutil.InstanceValues(status)
	m["jit_configuration"] = "eyJydW5uZXIiOiAiand0LWNvbmZpZ3VyYXRpb24tYmxvYiJ9"
	m["callback_token"] = "cb-token-7f3a9c0e1d2b4a5f"
	return entities.RowOf(m)
}

// BenchmarkSanitizer_Change measures (*Sanitizer).Change, the call the
// pipeline makes for every change, per operation: a create carries one row,
// an update the new and the previous row, a delete the previous row (as
// Payload). The credentials case drops a whole secret jsonb column
// (payload) and keeps the rest.
func BenchmarkSanitizer_Change(b *testing.B) {
	creds := entities.RowOf(map[string]any{
		"id":            uuid.MustParse("7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918"),
		"name":          "github-app",
		"description":   "the fleet's GitHub App",
		"auth_type":     "app",
		"endpoint_name": "github.com",
		"payload":       json.RawMessage(`{"app_id": 12345, "installation_id": 67890, "private_key_bytes": "LS0tLS1CRUdJTi..."}`),
		"created_at":    time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		"updated_at":    time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
	})
	cases := []struct {
		name string
		c    entities.Change
	}{
		{"instance_create", entities.Change{EntityType: "instance", Operation: entities.OpCreate, Payload: benchInstanceRow("pending")}},
		{"instance_update", entities.Change{EntityType: "instance", Operation: entities.OpUpdate, Payload: benchInstanceRow("running"), Previous: benchInstanceRow("pending")}},
		{"instance_delete", entities.Change{EntityType: "instance", Operation: entities.OpDelete, Payload: benchInstanceRow("running")}},
		{"credentials_update", entities.Change{EntityType: "github_credentials", Operation: entities.OpUpdate, Payload: creds, Previous: creds}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := New(entities.DefaultRegistry())
			got, err := s.Change(tc.c)
			if err != nil {
				b.Fatal(err)
			}
			if got.Payload.Has("callback_token") {
				b.Fatal("callback_token survived sanitize")
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Change(tc.c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSanitizer_Changes measures a 1,000-change transaction chunk (the
// watcher's default chunk size) of instance updates, as the pipeline
// sanitizes it.
func BenchmarkSanitizer_Changes(b *testing.B) {
	s := New(entities.DefaultRegistry())
	batch := make([]entities.Change, 1000)
	for i := range batch {
		batch[i] = entities.Change{EntityType: "instance", Operation: entities.OpUpdate, Payload: benchInstanceRow("running"), Previous: benchInstanceRow("pending")}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Changes(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/change")
}
