package watcher

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/changecast/changecast/entities"
)

// Hot-path benchmarks for decoding (issue 8, item 5): one column value, and
// a whole pgoutput row message of the built-in instance table (uuid, text,
// int8, jsonb, bool, timestamptz) as the assembler handles it. Run with
//
//	go test -run '^$' -bench . -benchmem ./watcher
//
// They need no PostgreSQL (TestMain starts the shared cluster lazily).

// BenchmarkValueDecoder_Decode measures writing the JSON of one
// text-format value of each type an entity row typically holds.
func BenchmarkValueDecoder_Decode(b *testing.B) {
	cases := []struct {
		name string
		oid  uint32
		text string
	}{
		{"bool", pgtype.BoolOID, "t"},
		{"int8", pgtype.Int8OID, "1234567"},
		{"text", pgtype.TextOID, "garm-runner-5f0c1a2e"},
		{"numeric", pgtype.NumericOID, "0.0420"},
		{"uuid", pgtype.UUIDOID, "5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70"},
		{"timestamptz", pgtype.TimestamptzOID, "2026-11-23 10:00:00.123456+00"},
		{"jsonb", pgtype.JSONBOID, `[{"type": "private", "address": "10.0.12.34"}, {"type": "public", "address": "203.0.113.7"}]`},
		{"text[]", pgtype.TextArrayOID, `{self-hosted,x64,ubuntu}`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d := newValueDecoder()
			text := []byte(c.text)
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				buf = d.appendValue(buf[:0], c.oid, text)
			}
		})
	}
}

// instanceColumns are the columns of the built-in instances table, in the
// order store's migration creates them.
var instanceColumns = []col{
	{"id", pgtype.UUIDOID, true},
	{"name", pgtype.TextOID, false},
	{"agent_id", pgtype.Int8OID, false},
	{"provider_id", pgtype.TextOID, false},
	{"os_type", pgtype.TextOID, false},
	{"os_arch", pgtype.TextOID, false},
	{"addresses", pgtype.JSONBOID, false},
	{"status", pgtype.TextOID, false},
	{"runner_status", pgtype.TextOID, false},
	{"pool_id", pgtype.UUIDOID, false},
	{"callback_url", pgtype.TextOID, false},
	{"create_attempt", pgtype.Int8OID, false},
	{"token_fetched", pgtype.BoolOID, false},
	{"jit_configuration", pgtype.TextOID, false},
	{"callback_token", pgtype.TextOID, false},
	{"github_runner_group", pgtype.TextOID, false},
	{"heartbeat", pgtype.TimestamptzOID, false},
	{"created_at", pgtype.TimestamptzOID, false},
	{"updated_at", pgtype.TimestamptzOID, false},
}

// instanceValues is one instance row in text format, as pgoutput sends it.
func instanceValues(status string) []any {
	return []any{
		"5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70",
		"garm-runner-5f0c1a2e",
		"1234567",
		"lxd://garm-runner-5f0c1a2e",
		"linux",
		"amd64",
		`[{"type": "private", "address": "10.0.12.34"}, {"type": "public", "address": "203.0.113.7"}]`,
		status,
		"idle",
		"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
		"https://garm.example.com/api/v1/callbacks",
		"1",
		"t",
		"eyJydW5uZXIiOiAiand0LWNvbmZpZ3VyYXRpb24tYmxvYiJ9",
		"cb-token-7f3a9c0e1d2b4a5f",
		"default",
		"2026-11-23 10:00:00.123456+00",
		"2026-11-23 09:58:12.5+00",
		"2026-11-23 10:00:00.123456+00",
	}
}

// discardOutput is an assembler output that drops what it is given.
type discardOutput struct{ changes int }

func (d *discardOutput) send(tx *Transaction) error { d.changes += len(tx.Changes); return nil }
func (d *discardOutput) ended(entities.LSN)         {}

// BenchmarkAssembler_Row measures turning one pgoutput row message of the
// instances table into a Change: parsing the message, writing every
// column's JSON into the row, and assembling. Updates and deletes carry the
// full old row (REPLICA IDENTITY FULL), so they decode two tuples.
func BenchmarkAssembler_Row(b *testing.B) {
	insert := tuple(append(u32([]byte{'I'}, 1), 'N'), instanceValues("running")...)
	update := tuple(append(u32([]byte{'U'}, 1), 'O'), instanceValues("pending")...)
	update = tuple(append(update, 'N'), instanceValues("running")...)
	del := tuple(append(u32([]byte{'D'}, 1), 'O'), instanceValues("running")...)
	for _, c := range []struct {
		name string
		msg  []byte
	}{{"insert", insert}, {"update", update}, {"delete", del}} {
		b.Run(c.name, func(b *testing.B) {
			out := &discardOutput{}
			a := newAssembler(entities.DefaultRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), out, 1000)
			for _, m := range [][]byte{relationMsg(1, "instances", instanceColumns), beginAt(7, 200)} {
				if err := a.handle(m); err != nil {
					b.Fatalf("setup: %v", err)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(c.msg)))
			for b.Loop() {
				if err := a.handle(c.msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := a.handle(commitMsg(200, 300)); err != nil {
				b.Fatal(err)
			}
			if out.changes == 0 {
				b.Fatal("no change was assembled")
			}
		})
	}
}

// TestAssembler_RowAllocs: turning a row message into a Change allocates
// a fixed handful of times (the Row, its buffer, its member index and the
// entity id), however many columns the row has: values are written
// straight into the row's buffer and the message is read in place.
func TestAssembler_RowAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	wide := append([]col(nil), instanceColumns...)
	wideValues := instanceValues("running")
	for i := range 40 {
		wide = append(wide, col{fmt.Sprintf("extra_%02d", i), pgtype.TimestamptzOID, false})
		wideValues = append(wideValues, "2026-11-23 10:00:00.123456+00")
	}
	for _, c := range []struct {
		name   string
		cols   []col
		values []any
		want   float64
	}{
		{"instance insert (19 columns)", instanceColumns, instanceValues("running"), 4},
		{"wide insert (59 columns)", wide, wideValues, 4},
	} {
		out := &discardOutput{}
		a := newAssembler(entities.DefaultRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), out, 1<<30)
		for _, m := range [][]byte{relationMsg(1, "instances", c.cols), beginAt(7, 200)} {
			if err := a.handle(m); err != nil {
				t.Fatal(err)
			}
		}
		msg := tuple(append(u32([]byte{'I'}, 1), 'N'), c.values...)
		a.tx.changes = make([]entities.Change, 0, 1000) // the chunk's slice is not the row's cost
		allocs := testing.AllocsPerRun(200, func() {
			if len(a.tx.changes) == cap(a.tx.changes) {
				a.tx.changes = a.tx.changes[:0]
			}
			if err := a.handle(msg); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > c.want {
			t.Errorf("%s: %v allocations per row, want at most %v", c.name, allocs, c.want)
		}
	}
}

// TestValueDecoder_Allocs: writing a value's JSON allocates nothing once
// the buffer has room, for every type a typical row holds.
func TestValueDecoder_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	d := newValueDecoder()
	buf := make([]byte, 0, 4096)
	for i, oid := range []uint32{pgtype.UUIDOID, pgtype.TextOID, pgtype.Int8OID, pgtype.JSONBOID, pgtype.BoolOID, pgtype.TimestamptzOID,
		pgtype.NumericOID, pgtype.Float8OID, pgtype.ByteaOID, pgtype.TextArrayOID, pgtype.Int4ArrayOID} {
		text := []byte([]string{"5f0c1a2e-8b7d-4c3e-9a1f-2b3c4d5e6f70", "garm \"runner\"\n", "1234567", `{"a": [1, 2.50]}`, "t",
			"2026-11-23 10:00:00.123456+00", "0.0420", "0.1", `\x0102ff`, `{self-hosted,"x 64",NULL}`, `{{1,2},{3,NULL}}`}[i])
		if allocs := testing.AllocsPerRun(100, func() { buf = d.appendValue(buf[:0], oid, text) }); allocs != 0 {
			t.Errorf("oid %d %q: %v allocations, want 0", oid, text, allocs)
		}
	}
}
