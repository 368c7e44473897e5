package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
)

// fill journals n changes through a short-lived appender, cycling through
// types, in transactions of up to 1,000 changes from LSN 0x1000*from.
func fill(t testing.TB, db *store.DB, from, n int, types ...string) {
	t.Helper()
	if len(types) == 0 {
		types = []string{"pool"}
	}
	a, _ := newAppender(t, db, store.AppenderConfig{})
	var txs []entities.Transaction
	for k, done := from, 0; done < n; k++ {
		tx := small(k, min(1000, n-done))
		for i := range tx.Changes {
			tx.Changes[i].EntityType = types[(done+i)%len(types)]
		}
		done += len(tx.Changes)
		txs = append(txs, tx)
	}
	runAll(t, a, queued(txs...))
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestReadJournal_Paging(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ctx := testCtx(t)
	if got, err := db.ReadJournal(ctx, 0, 10, nil); err != nil || len(got) != 0 {
		t.Fatalf("ReadJournal on an empty journal = %d changes, %v; want none", len(got), err)
	}
	fill(t, db, 1, 25, "pool", "job", "user")

	var cursors []int64
	for after := int64(0); ; {
		page, err := db.ReadJournal(ctx, after, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 10 {
			t.Fatalf("page of %d, want at most 10", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, c := range page {
			cursors = append(cursors, c.Cursor)
		}
		after = page[len(page)-1].Cursor
	}
	for i, c := range cursors {
		if c != int64(i+1) || len(cursors) != 25 {
			t.Fatalf("paged cursors %v, want 1..25", cursors)
		}
	}

	jobs, err := db.ReadJournal(ctx, 2, 100, []string{"job"})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, c := range jobs {
		if c.EntityType != "job" {
			t.Errorf("filtered read returned a %s", c.EntityType)
		}
		got = append(got, c.Cursor)
	}
	if want := []int64{5, 8, 11, 14, 17, 20, 23}; !reflect.DeepEqual(got, want) {
		t.Errorf("job cursors after 2 = %v, want %v", got, want)
	}
	two, err := db.ReadJournal(ctx, 0, 4, []string{"user", "pool"})
	if err != nil || len(two) != 4 || two[0].Cursor != 1 || two[3].Cursor != 6 {
		t.Errorf("pool and user, limit 4: %d changes (%v), want cursors 1, 3, 4, 6", len(two), err)
	}
	if none, err := db.ReadJournal(ctx, 0, 10, []string{}); err != nil || len(none) != 0 {
		t.Errorf("empty type list: %d changes, %v; want none", len(none), err)
	}
	if none, err := db.ReadJournal(ctx, 25, 10, nil); err != nil || len(none) != 0 {
		t.Errorf("after the head: %d changes, %v; want none", len(none), err)
	}
}

// TestReadJournal_RoundTrip checks every Change field survives the journal
// and that a row re-encodes byte for byte as the live row did, with either
// encoder setting.
func TestReadJournal_RoundTrip(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	ct := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.FixedZone("CET", 3600))
	payload := entities.RowOf(map[string]any{
		"s":     "héllo <b>&amp;</b> \"q\" \u2028 \x00 \xff",
		"i":     int64(9007199254740993),
		"neg":   int64(-5),
		"b":     true,
		"num":   json.Number("12.3400"),
		"t":     time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.FixedZone("x", -7200)),
		"u":     uuid.MustParse("0b0e3f3e-8f5e-4e0c-9a77-3d5b1b8e1f00"),
		"raw":   json.RawMessage(`{"b": [1, 2.50, "x<"], "a": null, "n": 9007199254740993}`),
		"arr":   []string{"a", "b<", ""},
		"empty": []string{},
		"nil":   nil,
		"f":     1.5,
		"bytes": []byte{0, 1, 2},
	})
	previous := entities.RowOf(map[string]any{"s": "old", "i": int64(1), "nil": nil})
	changes := []entities.Change{
		{EntityType: "pool", Operation: entities.OpUpdate, EntityID: "0b0e3f3e-8f5e-4e0c-9a77-3d5b1b8e1f00",
			Payload: payload, Previous: previous, Unchanged: []string{"extra_specs", "tags"}},
		{EntityType: "job", Operation: entities.OpDelete, EntityID: "42", Payload: entities.RowOf(map[string]any{})},
		{EntityType: "pool", Operation: entities.OpTruncate},
	}
	for i := range changes {
		changes[i].CommitLSN, changes[i].EndLSN, changes[i].Index = 0x16_B374D848, 0x16_B374D900, i
		changes[i].Xid, changes[i].CommitTime = math.MaxUint32, ct
	}
	tx := entities.Transaction{Xid: math.MaxUint32, CommitLSN: 0x16_B374D848, EndLSN: 0x16_B374D900, CommitTime: ct, Changes: changes, Final: true}

	// What the live path sends, before the appender touches the rows.
	live := func(enc func(any) []byte) [][]byte {
		var out [][]byte
		for _, c := range changes {
			out = append(out, enc(c.Payload), enc(c.Previous))
		}
		return out
	}
	encoders := map[string]func(any) []byte{
		"json.Marshal":     func(v any) []byte { b, err := json.Marshal(v); must(t, err); return b },
		"no HTML escaping": noEscape(t),
	}
	want := map[string][][]byte{}
	for name, enc := range encoders {
		want[name] = live(enc)
	}

	a, _ := newAppender(t, db, store.AppenderConfig{})
	runAll(t, a, queued(tx))
	got, err := db.ReadJournal(testCtx(t), 0, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(changes) {
		t.Fatalf("read %d changes, want %d", len(got), len(changes))
	}
	for i, g := range got {
		w := changes[i]
		if g.Cursor != int64(i+1) || g.EntityType != w.EntityType || g.Operation != w.Operation || g.EntityID != w.EntityID ||
			g.CommitLSN != w.CommitLSN || g.Index != w.Index || g.Xid != w.Xid || !g.CommitTime.Equal(ct) ||
			!reflect.DeepEqual(g.Unchanged, w.Unchanged) || g.EndLSN != 0 {
			t.Errorf("change %d read back as %+v\nwant %+v", i, g, w)
		}
		if g.CommitTime.Location() != time.UTC {
			t.Errorf("change %d: CommitTime in %s, want UTC", i, g.CommitTime.Location())
		}
		if (g.Payload == nil) != (w.Payload == nil) || (g.Previous == nil) != (w.Previous == nil) {
			t.Errorf("change %d: payload nil %v previous nil %v, want %v %v", i, g.Payload == nil, g.Previous == nil, w.Payload == nil, w.Previous == nil)
		}
	}
	if !got[0].Payload.IsNull("nil") {
		t.Errorf("a NULL column reads back as %v, want null", got[0].Payload)
	}
	for name, enc := range encoders {
		for i, g := range got {
			for j, row := range []*entities.Row{g.Payload, g.Previous} {
				if b, w := enc(row), want[name][2*i+j]; !bytes.Equal(b, w) {
					t.Errorf("%s of change %d row %d:\n got %s\nwant %s", name, i, j, b, w)
				}
			}
		}
	}
	// The raw rows are those very bytes (the wire's encoding), so an
	// encoder may send them verbatim.
	rowBytes := func(r *entities.Row) []byte {
		if r == nil {
			return nil
		}
		return r.JSON()
	}
	for i, g := range got {
		for j, raw := range [][]byte{rowBytes(g.Payload), rowBytes(g.Previous)} {
			w := want["no HTML escaping"][2*i+j]
			if string(w) == "null" {
				w = nil
			}
			if !bytes.Equal(raw, w) {
				t.Errorf("raw row %d of change %d:\n got %s\nwant %s", j, i, raw, w)
			}
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// noEscape encodes as wsapi does: no HTML escaping, no newline.
func noEscape(t testing.TB) func(any) []byte {
	return func(v any) []byte {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		must(t, enc.Encode(v))
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
}

// TestAppender_UnencodableRow: a value encoding/json rejects cannot
// become part of a row (rows hold JSON), so it never reaches the journal:
// building the row fails with an error naming the column.
func TestAppender_UnencodableRow(t *testing.T) {
	t.Parallel()
	if _, err := entities.NewRow(map[string]any{"id": 1, "f": math.NaN()}); err == nil || !strings.Contains(err.Error(), `"f"`) {
		t.Fatalf("NewRow with NaN = %v, want an encoding error naming the column", err)
	}
}

func TestJournalHeadAndHorizon_BeforeMigrate(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	for name, f := range map[string]func() error{
		"JournalHead":    func() error { _, err := db.JournalHead(testCtx(t)); return err },
		"JournalHorizon": func() error { _, err := db.JournalHorizon(testCtx(t)); return err },
		"ReadJournal":    func() error { _, err := db.ReadJournal(testCtx(t), 0, 1, nil); return err },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "migrate") || errors.Is(err, store.ErrCursorExpired) {
			t.Errorf("%s before Migrate: %v, want a hint to migrate", name, err)
		}
	}
}
