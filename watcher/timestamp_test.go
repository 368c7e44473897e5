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
			// keep 1 to 6 digits: zero the last 0 to 5 of them
			usec = rng.IntN(1000000)
			unit := 1
			for range rng.IntN(6) {
				unit *= 10
			}
			usec = usec / unit * unit
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
		}{{base + "+00", true}, {base + "Z", true}, {base + "+00:00", true}, {base + "-00", true}, {base + "+00:00:00", true}, {base, false}} {
			got, ok := appendTimestamp([]byte("x"), []byte(c.text), c.tz)
			if !ok || string(got) != "x"+want {
				t.Fatalf("appendTimestamp(%q, tz=%v): got %q, %v; want %q", c.text, c.tz, got, ok, "x"+want)
			}
		}
	}
}

// Every fraction length, and the cases next to the fast path's edges (a
// carry from rounding takes the time package's path; past year 9999 the
// value is refused and goes out as the server's text).
func TestAppendTimestamp_UTCEdges(t *testing.T) {
	for _, c := range []struct {
		text, want string // want "": refused
	}{
		{"2026-12-07 10:00:00.5+00", `"2026-12-07T10:00:00.5Z"`},
		{"2026-12-07 10:00:00.05+00", `"2026-12-07T10:00:00.05Z"`},
		{"2026-12-07 10:00:00.000001+00", `"2026-12-07T10:00:00.000001Z"`},
		{"2026-12-07 10:00:00.100000+00", `"2026-12-07T10:00:00.1Z"`},
		{"2026-12-07 10:00:00.000000+00", `"2026-12-07T10:00:00Z"`},
		{"0001-01-01 00:00:00-00", `"0001-01-01T00:00:00Z"`},
		{"2026-12-31 23:59:59.99999951+00", `"2027-01-01T00:00:00Z"`},
		{"9999-12-31 23:59:59.99999951+00", ``},
	} {
		got, ok := appendTimestamp(nil, []byte(c.text), true)
		if c.want == "" {
			if ok {
				t.Errorf("appendTimestamp(%q): got %s, want it refused", c.text, got)
			}
			continue
		}
		if !ok || string(got) != c.want {
			t.Errorf("appendTimestamp(%q): got %s, %v; want %s", c.text, got, ok, c.want)
		}
	}
}
