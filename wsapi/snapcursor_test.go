package wsapi

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/changecast/changecast/internal/xidsnap"
)

var testTokenKey = bytes.Repeat([]byte{7}, 32)

func sampleSeamCursor() seamCursor {
	const epoch = uint64(2) << 32
	return seamCursor{from: 41, end: 97, vis: xidsnap.Snapshot{Xmin: epoch + 100, Xmax: epoch + 130, Xip: []uint64{epoch + 100, epoch + 101, epoch + 129}}, types: []string{"order", "order_item"}}
}

// A snapshot cursor and a page token round-trip through their sealed form.
func TestSnapshotTokens_RoundTrip(t *testing.T) {
	sc := sampleSeamCursor()
	s := sealToken(testTokenKey, seamTokenPrefix, sc.encode())
	got, err := parseSeamCursor(testTokenKey, s)
	if err != nil {
		t.Fatal(err)
	}
	if got.from != sc.from || got.end != sc.end || got.vis.Xmin != sc.vis.Xmin || got.vis.Xmax != sc.vis.Xmax ||
		!slices.Equal(got.vis.Xip, sc.vis.Xip) || !slices.Equal(got.types, sc.types) {
		t.Fatalf("got %+v, want %+v", got, sc)
	}
	pt := pageToken{id: [16]byte{1, 2, 3}, key: [][]byte{[]byte("42"), []byte("2026-11-23 10:00:00+00"), {}}}
	ps := sealToken(testTokenKey, pageTokenPrefix, pt.encode())
	gotp, err := parsePageToken(testTokenKey, ps)
	if err != nil {
		t.Fatal(err)
	}
	if gotp.id != pt.id || len(gotp.key) != 3 || string(gotp.key[1]) != "2026-11-23 10:00:00+00" {
		t.Fatalf("got %+v, want %+v", gotp, pt)
	}
	if strings.ContainsAny(s+ps, "+/=%&?# ") {
		t.Errorf("tokens %q, %q need escaping in a URL", s, ps)
	}
}

// A token another key sealed, one of the other kind, a changed byte, a
// non-canonical form: each is refused with an error that says what to do.
func TestSnapshotTokens_Refusals(t *testing.T) {
	sc := sampleSeamCursor()
	good := sealToken(testTokenKey, seamTokenPrefix, sc.encode())
	otherKey := sealToken(bytes.Repeat([]byte{8}, 32), seamTokenPrefix, sc.encode())
	page := sealToken(testTokenKey, pageTokenPrefix, pageToken{key: [][]byte{[]byte("1")}}.encode())
	flipped := []byte(good)
	flipped[len(seamTokenPrefix)+2] ^= 1
	for _, tc := range []struct{ in, want string }{
		{otherKey, "not issued by this server"},
		{page, `must start with "s1."`},
		{string(flipped), ""},
		{good + "=", "malformed"},
		{good[:len(good)-1], "malformed"},
		{"s1." + strings.Repeat("A", maxTokenLen), "too long"},
		{"s1.", "malformed"},
	} {
		_, err := parseSeamCursor(testTokenKey, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "GET /api/v1/entities/{type}") {
			t.Errorf("%.40q: %v, want an error containing %q and what to pass", tc.in, err, tc.want)
		}
	}
	// Payloads that decode to the same values another way, or to values
	// a server never produces, are refused before any MAC could help.
	base := sc.encode()
	for name, b := range map[string][]byte{
		"trailing byte":        append(slices.Clone(base), 0),
		"overlong varint":      append([]byte{0x80 | 41, 0x00}, base[1:]...),
		"truncated":            base[:len(base)-1],
		"xip not ascending":    seamCursor{from: 1, end: 2, vis: xidsnap.Snapshot{Xmin: 10, Xmax: 20, Xip: []uint64{11, 11}}, types: []string{"a"}}.encode(),
		"xip at xmax":          seamCursor{from: 1, end: 2, vis: xidsnap.Snapshot{Xmin: 10, Xmax: 20, Xip: []uint64{20}}, types: []string{"a"}}.encode(),
		"types not ascending":  seamCursor{from: 1, end: 2, types: []string{"b", "a"}}.encode(),
		"no type":              seamCursor{from: 1, end: 2}.encode(),
		"empty type":           seamCursor{from: 1, end: 2, types: []string{""}}.encode(),
		"end before from":      {5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 1, 1, 'a'},
		"too many in progress": append([]byte{1, 1, 10, 10}, 0xff, 0xff, 0x01),
	} {
		if got, err := decodeSeamCursor(b); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, got)
		}
	}
}

// The visibility a cursor carries is PostgreSQL's: below xmin, or below
// xmax and not in progress.
func TestSeamOnly_Visible(t *testing.T) {
	sc := sampleSeamCursor()
	so := seamOnly{vis: sc.vis}
	for xid, want := range map[uint32]bool{99: true, 100: false, 101: false, 102: true, 128: true, 129: false, 130: false} {
		if got := so.Visible(xid); got != want {
			t.Errorf("xid %d: visible %v, want %v", xid, got, want)
		}
	}
}

// FuzzSnapshotTokens feeds arbitrary bytes to the token parsers: they never
// panic, and whatever decodes is canonical (it encodes back to the same
// bytes) and within the invariants the server relies on.
func FuzzSnapshotTokens(f *testing.F) {
	f.Add(sampleSeamCursor().encode())
	f.Add([]byte(sealToken(testTokenKey, seamTokenPrefix, sampleSeamCursor().encode())))
	f.Add(pageToken{id: [16]byte{9}, key: [][]byte{[]byte("42"), []byte("x")}}.encode())
	f.Add([]byte(sealToken(testTokenKey, pageTokenPrefix, pageToken{key: [][]byte{[]byte("42")}}.encode())))
	f.Fuzz(func(t *testing.T, b []byte) {
		if sc, err := decodeSeamCursor(b); err == nil {
			if !bytes.Equal(sc.encode(), b) {
				t.Fatalf("not canonical: %x decodes to %+v, which encodes to %x", b, sc, sc.encode())
			}
			if sc.from < 0 || sc.end < sc.from || sc.vis.Xmax < sc.vis.Xmin || len(sc.types) == 0 || !slices.IsSorted(sc.types) {
				t.Fatalf("invariants broken: %+v", sc)
			}
			for i, x := range sc.vis.Xip {
				if x < sc.vis.Xmin || x >= sc.vis.Xmax || (i > 0 && x <= sc.vis.Xip[i-1]) {
					t.Fatalf("xip out of order or range: %+v", sc)
				}
			}
			_ = seamOnly{vis: sc.vis}.Visible(uint32(len(b)))
		}
		if pt, err := decodePageToken(b); err == nil {
			if !bytes.Equal(pt.encode(), b) {
				t.Fatalf("page token not canonical: %x", b)
			}
		}
		if sc, err := parseSeamCursor(testTokenKey, string(b)); err == nil {
			if sealToken(testTokenKey, seamTokenPrefix, sc.encode()) != string(b) {
				t.Fatalf("sealed cursor %q is not the one its content seals to", b)
			}
		}
		if pt, err := parsePageToken(testTokenKey, string(b)); err == nil {
			if sealToken(testTokenKey, pageTokenPrefix, pt.encode()) != string(b) {
				t.Fatalf("sealed page token %q is not the one its content seals to", b)
			}
		}
	})
}
