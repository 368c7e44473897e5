package watcher

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestAppendTimestamp_UTC checks the direct writing of UTC timestamps (what
// the watcher's TimeZone=UTC connection sends) against formatting the same
// instant with the time package, over years 1 to 9999 and fractions of
// every length, with and without trailing zeros.
func TestAppendTimestamp_UTC(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 15))
	for n := range 20000 {
		year := 1 + rng.IntN(9999)
		month := 1 + rng.IntN(12)
		day := 1 + rng.IntN(daysIn(year, month))
		hour, minute, sec := rng.IntN(24), rng.IntN(60), rng.IntN(60)
		usec := 0
		frac := ""
		switch n % 4 {
		case 0: // no fraction
		case 1: // six digits
			usec = rng.IntN(1000000)
			frac = fmt.Sprintf(".%06d", usec)
		default: // as the server writes it: trailing zeros dropped, 1 to 6 digits
			usec = rng.IntN(1000000)
			for range rng.IntN(6) {
				usec -= usec % 10
				usec /= 10
				usec *= 10
			}
			frac = strings.TrimRight(fmt.Sprintf(".%06d", usec), "0")
			if frac == "." {
				frac = ""
			}
		}
		base := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d%s", year, month, day, hour, minute, sec, frac)
		want := `"` + time.Date(year, time.Month(month), day, hour, minute, sec, usec*1000, time.UTC).Format(time.RFC3339Nano) + `"`
		for _, c := range []struct {
			text string
			tz   bool
		}{{base + "+00", true}, {base + "Z", true}, {base + "+00:00", true}, {base, false}} {
			got, ok := appendTimestamp([]byte("x"), []byte(c.text), c.tz)
			if !ok || string(got) != "x"+want {
				t.Fatalf("appendTimestamp(%q, tz=%v): got %q, %v; want %q", c.text, c.tz, got, ok, "x"+want)
			}
		}
	}
}
