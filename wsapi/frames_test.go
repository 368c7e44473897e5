package wsapi

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/wire"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files in testdata/golden")

// goldenChanges are one create, update and delete whose payloads carry each
// kind of value the watcher produces.
func goldenChanges() map[string]entities.Change {
	id := uuid.MustParse("6f1c1b9e-3a52-4c1e-9d5e-0c2f8a7b4d11")
	repo := uuid.MustParse("0b7e2c4a-1f3d-4e5a-8b6c-9d0e1f2a3b4c")
	created := time.Date(2026, 11, 23, 9, 59, 58, 654321000, time.UTC)
	// 123456789ns in CET: sent as UTC, microseconds, truncated.
	commit := time.Date(2026, 11, 23, 11, 0, 0, 123456789, time.FixedZone("CET", 3600))
	row := func(maxRunners int64, tags ...string) *entities.Row {
		return entities.RowOf(map[string]any{
			"id":            id,
			"provider_name": "lxd",
			"max_runners":   maxRunners,
			"enabled":       true,
			"tags":          tags,
			"cost_per_hour": json.Number("0.1250"),
			"extra_specs":   json.RawMessage(`{ "disk_gb": 20, "note": "<b>&" }`),
			"repo_id":       repo,
			"org_id":        nil,
			"created_at":    created,
		})
	}
	return map[string]entities.Change{
		"create": {EntityType: "pool", Operation: entities.OpCreate, EntityID: id.String(),
			Payload: row(5, "linux", "x64"), CommitTime: commit, Cursor: 1206},
		"update": {EntityType: "pool", Operation: entities.OpUpdate, EntityID: id.String(),
			Payload: row(10, "linux"), Previous: row(5, "linux", "x64"), CommitTime: commit, Cursor: 1207},
		"delete": {EntityType: "pool", Operation: entities.OpDelete, EntityID: id.String(),
			Payload: row(10, "linux"), Previous: row(10, "linux"), CommitTime: commit, Cursor: 1208},
	}
}

// TestServer_FrameGolden checks the exact bytes a client receives for each
// operation against testdata/golden (go test -update rewrites them).
func TestServer_FrameGolden(t *testing.T) {
	e := newTestEnv(t, nil)
	conn := e.dialFilter(t, e.token(t, "u1", RoleAdmin), `{"send-everything": true}`)
	changes := goldenChanges()
	for _, name := range []string{"create", "update", "delete"} {
		t.Run(name, func(t *testing.T) {
			ch := changes[name]
			e.srv.Publish(ch.Cursor, []entities.Change{ch})
			got := readRaw(t, conn)
			path := filepath.Join("testdata", "golden", "change_"+name+".json")
			if *updateGolden {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if want = bytes.TrimSuffix(want, []byte("\n")); !bytes.Equal(got, want) {
				t.Fatalf("got\n  %s\nwant\n  %s", got, want)
			}
		})
	}
}

func TestEncodeControlAndError(t *testing.T) {
	cases := []struct{ got, want string }{
		{string(encodeControl(wire.ControlShutdown, 0, "bye")),
			`{"namespace":"events","name":"control","args":{"type":"shutdown","message":"bye"}}`},
		{string(encodeControl(wire.ControlResyncRequired, 1207, "fell behind")),
			`{"namespace":"events","name":"control","args":{"type":"resync-required","cursor":"1207","message":"fell behind"}}`},
		{string(encodeError("", 400, `unknown entity type "pools"`)),
			`{"namespace":"error","name":"error","id":"","args":{"code":"400","message":"unknown entity type \"pools\""}}`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
}

// TestPrepareChange_OneFrame: the frame Publish builds in one buffer is
// byte for byte the change's JSON behind the header RFC 6455 gives its
// length, for each of the three header lengths (payloads under 126 bytes,
// under 64 KiB, and longer), at their limits.
func TestPrepareChange_OneFrame(t *testing.T) {
	change := func(note int) entities.Change {
		return entities.Change{EntityType: "pool", Operation: entities.OpUpdate, EntityID: "p1", Cursor: 7,
			Payload:  entities.RowOf(map[string]any{"id": "p1", "note": string(bytes.Repeat([]byte{'x'}, note))}),
			Previous: entities.RowOf(map[string]any{"id": "p1"})}
	}
	empty, err := wire.EncodeChange(change(0))
	if err != nil {
		t.Fatal(err)
	}
	// JSON lengths either side of each header length's limit.
	for _, c := range []struct{ size, header int }{
		{len(empty), 2}, {125, 2}, {126, 4}, {1000, 4}, {65535, 4}, {65536, 10}, {200_000, 10},
	} {
		ch := change(c.size - len(empty))
		data, err := wire.EncodeChange(ch)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != c.size {
			t.Fatalf("change JSON of %d bytes, want %d", len(data), c.size)
		}
		got := prepareChange(&ch)
		if len(got) != c.header+len(data) {
			t.Errorf("JSON of %d bytes: frame header of %d bytes, want %d", c.size, len(got)-len(data), c.header)
		}
		if want := wireFrame(data); !bytes.Equal(got, want) {
			t.Fatalf("JSON of %d bytes: frame %q…, want %q…", c.size, got[:min(len(got), 16)], want[:min(len(want), 16)])
		}
		if cap(got) != len(got) {
			t.Errorf("JSON of %d bytes: frame has spare capacity %d: an append by a writer could reach into it", c.size, cap(got)-len(got))
		}
	}
}
