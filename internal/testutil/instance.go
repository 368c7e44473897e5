package testutil

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
)

// InstanceRow is a sanitized GARM instance row (secret columns removed),
// as the hub receives it from the journal appender: the payload the
// encoding and fan-out benchmarks measure.
func InstanceRow(status string) *entities.Row { return entities.RowOf(InstanceValues(status)) }

// InstanceValues is InstanceRow's columns as typed Go values.
func InstanceValues(status string) map[string]any {
	now := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	return map[string]any{
		"id":                  uuid.MustParse("5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70"),
		"name":                "garm-runner-5f0c1a2e",
		"agent_id":            int64(1234567),
		"provider_id":         "lxd://garm-runner-5f0c1a2e",
		"os_type":             "linux",
		"os_arch":             "amd64",
		"addresses":           json.RawMessage(`[{"type": "private", "address": "10.0.12.34"}, {"type": "public", "address": "203.0.113.7"}]`),
		"status":              status,
		"runner_status":       "idle",
		"pool_id":             uuid.MustParse("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
		"callback_url":        "https://garm.example.com/api/v1/callbacks",
		"create_attempt":      int64(1),
		"token_fetched":       true,
		"github_runner_group": "default",
		"heartbeat":           now,
		"created_at":          now.Add(-2 * time.Minute),
		"updated_at":          now,
	}
}
