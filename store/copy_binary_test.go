package store

import (
	"testing"

	"github.com/changecast/changecast/entities"
)

// TestJournalCopy_ReadSizes: the COPY data is the same whatever the
// reader's buffer size, rows straddling reads included.
func TestJournalCopy_ReadSizes(t *testing.T) {
	var g []entities.Change
	for i := range 50 {
		g = append(g, entities.Change{EntityType: "pool", Operation: entities.OpUpdate, EntityID: "p",
			Payload: entities.RowOf(map[string]any{"n": i, "pad": string(make([]byte, i*7))}), Cursor: int64(i + 1)})
	}
	read := func(size int) []byte {
		j := newJournalCopy([][]entities.Change{g[:20], nil, g[20:]})
		var out []byte
		buf := make([]byte, size)
		for {
			n, err := j.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				return out
			}
			if n == 0 {
				t.Fatalf("buffer of %d: Read returned 0 bytes without an error", size)
			}
		}
	}
	want := append([]byte(nil), copySignature...)
	for i := range g {
		want = appendJournalRow(want, &g[i])
	}
	want = append(want, copyTrailer...)
	for _, size := range []int{1, 2, 7, 19, 100, 333, 4096, 1 << 16} {
		if got := read(size); string(got) != string(want) {
			t.Errorf("buffer of %d bytes: %d bytes of COPY data, want %d", size, len(got), len(want))
		}
	}
}
