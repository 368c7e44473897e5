package wsapi

import (
	"github.com/changecast/changecast/internal/testutil"
	"testing"
	"time"

	"github.com/changecast/changecast/entities"
)

// Hot-path benchmarks for the hub (issue 8, item 5): deciding whether a
// connection wants a change (scope and filter, per connection per change)
// and encoding a change frame (once per change, shared by every connection
// that receives it). Run with
//
//	go test -run '^$' -bench . -benchmem ./wsapi

// benchInstanceChange is a journaled instance change of operation op.
func benchInstanceChange(op entities.Operation) entities.Change {
	c := entities.Change{
		EntityType: "instance",
		Operation:  op,
		EntityID:   "5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70",
		Payload:    testutil.InstanceRow("running"),
		CommitTime: time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC),
		Cursor:     1207,
	}
	if op == entities.OpUpdate {
		c.Previous = testutil.InstanceRow("pending")
	}
	return c
}

// BenchmarkClient_Wants measures the per-connection, per-change decision
// Publish makes: scope, then filter. The "miss" cases are what most
// connections with narrow filters cost for most changes.
func BenchmarkClient_Wants(b *testing.B) {
	reg := entities.DefaultRegistry()
	twenty := `{"filters": [`
	for i, t := range []string{"pool", "job", "repository", "organization", "enterprise"} {
		for j, op := range []string{"create", "update", "delete", "truncate"} {
			if i+j > 0 {
				twenty += ","
			}
			twenty += `{"entity-type": "` + t + `", "operations": ["` + op + `"]}`
		}
	}
	twenty += `]}`
	cases := []struct {
		name, filter string
		op           entities.Operation
		want         bool
	}{
		{"send_everything", `{"send-everything": true}`, entities.OpUpdate, true},
		{"type_hit", `{"filters": [{"entity-type": "instance"}]}`, entities.OpUpdate, true},
		{"type_miss", `{"filters": [{"entity-type": "pool"}]}`, entities.OpUpdate, false},
		{"type_ops_miss", `{"filters": [{"entity-type": "instance", "operations": ["create", "delete"]}]}`, entities.OpUpdate, false},
		{"match_hit", `{"filters": [{"entity-type": "instance", "match": {"status": ["running", "error"]}}]}`, entities.OpUpdate, true},
		{"match_uuid_hit", `{"filters": [{"entity-type": "instance", "match": {"pool_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "os_type": "linux"}}]}`, entities.OpUpdate, true},
		{"twenty_clauses_miss", twenty, entities.OpUpdate, false},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			f, err := parseFilter([]byte(tc.filter), reg, scope{admin: true})
			if err != nil {
				b.Fatalf("parse %s: %v", tc.filter, err)
			}
			c := &client{scope: scope{admin: true}}
			c.filter.Store(f)
			ch := benchInstanceChange(tc.op)
			if got := c.wants(&ch); got != tc.want {
				b.Fatalf("wants = %v, want %v", got, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				c.wants(&ch)
			}
		})
	}
}

// BenchmarkPrepareChange measures what Publish pays once per delivered
// change: encoding plus building the complete wire frame (wireFrame).
func BenchmarkPrepareChange(b *testing.B) {
	ch := benchInstanceChange(entities.OpUpdate)
	b.ReportAllocs()
	for b.Loop() {
		_ = prepareChange(&ch)
	}
}
