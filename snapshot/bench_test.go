package snapshot

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/changecast/changecast/wire"
)

// BenchmarkSnapshot_200k reads a 200,000-row table through a snapshot and
// encodes every row as the frame the server sends, reporting the rate
// (rows/s) and the peak Go heap in use while reading (peak-heap-MiB),
// which stays at a few pages' worth whatever the table's size.
//
//	go test -run '^$' -bench Snapshot_200k -benchtime 3x ./snapshot
func BenchmarkSnapshot_200k(b *testing.B) {
	const n = 200_000
	e := newBenchEnv(b)
	ctx := context.Background()
	if _, err := e.sql.Exec(ctx, `INSERT INTO items (a, b, code, api_token, n, at)
		SELECT g, 'row-' || g, 'secret', 'secret', g * 1.5, now() FROM generate_series(1, $1) g`, n); err != nil {
		b.Fatal(err)
	}
	if _, err := e.sql.Exec(ctx, `VACUUM ANALYZE items`); err != nil {
		b.Fatal(err)
	}
	var peak uint64
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	b.ResetTimer()
	start := time.Now()
	rows := 0
	for range b.N {
		sn, err := e.src.Begin(ctx, []string{"item"})
		if err != nil {
			b.Fatal(err)
		}
		for {
			page, err := sn.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if page == nil {
				break
			}
			for i := range page {
				if _, err := wire.EncodeChange(page[i]); err != nil {
					b.Fatal(err)
				}
			}
			rows += len(page)
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		sn.Close()
	}
	b.StopTimer()
	if rows != n*b.N {
		b.Fatalf("read %d rows, want %d", rows, n*b.N)
	}
	b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
	b.ReportMetric(float64(peak-min(peak, base))/(1<<20), "peak-heap-MiB")
}

func newBenchEnv(b *testing.B) *env { return newEnvTB(b) }
