package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Run("full defaults", func(t *testing.T) {
		c, err := parseConfig([]string{"--changecast", "/x/changecast"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.repeat != 3 || c.changes != 270_000 || c.conns != 10_000 || c.duration != 10*time.Second || c.catchupChanges != 300_000 {
			t.Fatalf("got repeat %d changes %d conns %d duration %s, want the full suite's 3, 270000, 10000, 10s", c.repeat, c.changes, c.conns, c.duration)
		}
		if !slices.Equal(c.scenarios, allScenarios) || !slices.Equal(c.rates, []int{1000, 5000}) {
			t.Fatalf("got scenarios %v rates %v, want all and 1000,5000", c.scenarios, c.rates)
		}
	})
	t.Run("quick preset, explicit flags win", func(t *testing.T) {
		c, err := parseConfig([]string{"--changecast", "x", "--quick", "--conns", "50", "--scenarios", "conns, drain"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.repeat != 1 || c.changes != 30_000 || c.duration != 3*time.Second || c.conns != 50 || c.catchupChanges != 30_000 {
			t.Fatalf("got repeat %d changes %d duration %s conns %d catchup-changes %d, want 1, 30000, 3s, the explicit 50 and 30000",
				c.repeat, c.changes, c.duration, c.conns, c.catchupChanges)
		}
		if !slices.Equal(c.scenarios, []string{"drain", "conns"}) {
			t.Fatalf("got scenarios %v, want [drain conns] (run order)", c.scenarios)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing binary", nil, "--changecast is required"},
		{"unknown scenario", []string{"--changecast", "x", "--scenarios", "drain,speed"}, `unknown scenario "speed"`},
		{"bad rate", []string{"--changecast", "x", "--rates", "1000,fast"}, `"fast" is not a positive number`},
		{"zero repeat", []string{"--changecast", "x", "--repeat", "0"}, "--repeat must be positive"},
		{"stray argument", []string{"--changecast", "x", "extra"}, `unexpected argument "extra"`},
		{"negative idle wait", []string{"--changecast", "x", "--conns-idle", "-1s"}, "--conns-idle must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, io.Discard)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error containing %q", err, tc.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var out strings.Builder
		if _, err := parseConfig([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-changecast") {
			t.Fatalf("got %v and %q, want flag.ErrHelp and the flag list", err, out.String())
		}
	})
}

func TestFigure_MedianSpreadVerdict(t *testing.T) {
	f := &figure{name: "ratio", unit: unitRatio, samples: []float64{0.6, 0.4, 0.55}, target: atLeast(0.5)}
	if m := f.median(); m != 0.55 {
		t.Fatalf("median = %v, want 0.55", m)
	}
	if lo, hi := f.spread(); lo != 0.4 || hi != 0.6 {
		t.Fatalf("spread = %v–%v, want 0.4–0.6", lo, hi)
	}
	if v := f.verdict(); v != "PASS" {
		t.Fatalf("verdict = %s, want PASS (judged on the median)", v)
	}
	even := &figure{samples: []float64{10, 30, 20, 40}, target: atMost(20)}
	if m, v := even.median(), even.verdict(); m != 25 || v != "MISS" {
		t.Fatalf("median %v verdict %s, want 25 and MISS", m, v)
	}
	if v := (&figure{samples: []float64{1}}).verdict(); v != "" {
		t.Fatalf("verdict without target = %q, want empty", v)
	}
	if m := (&figure{}).median(); !math.IsNaN(m) {
		t.Fatalf("median without samples = %v, want NaN", m)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		u    unit
		want string
	}{
		{270000, unitRate, "270,000/s"},
		{1234567.4, unitRate, "1,234,567/s"},
		{0.456, unitRatio, "0.46"},
		{19.96, unitMillis, "20.0 ms"},
		{29.94, unitKB, "29.9 KB"},
		{1.5, unitCores, "1.50 cores"},
		{12, unitCount, "12"},
		{-1500, unitCount, "-1,500"},
		{math.NaN(), unitMillis, "n/a"},
	} {
		if got := formatValue(tc.v, tc.u); got != tc.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", tc.v, tc.u, got, tc.want)
		}
	}
	if got := formatTarget(atLeast(300_000), unitRate); got != "≥ 300,000/s" {
		t.Errorf("formatTarget = %q", got)
	}
	if got := formatTarget(nil, unitRate); got != "—" {
		t.Errorf("formatTarget(nil) = %q", got)
	}
}

func TestSection_Tables(t *testing.T) {
	s := &section{title: "3. Fan-out", setup: "500 clients"}
	s.add("deliveries", unitRate, atLeast(300_000), 250_000)
	s.add("deliveries", unitRate, atLeast(300_000), 350_000)
	s.add("deliveries", unitRate, atLeast(300_000), 310_000)
	s.add("p99 | latency", unitMillis, atMost(100), 80)
	s.notes = []string{"a note"}
	s.failed = []string{"run 4: boom"}

	var text strings.Builder
	s.writeText(&text)
	for _, want := range []string{"== 3. Fan-out ==", "500 clients", "310,000/s", "250,000/s – 350,000/s", "≥ 300,000/s", "PASS", "(1 run)", "note: a note", "FAILED: run 4: boom"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text table lacks %q:\n%s", want, text.String())
		}
	}
	var md strings.Builder
	s.writeMarkdown(&md)
	for _, want := range []string{"### 3. Fan-out", "| figure | median | spread (min – max) | target | result |", "| deliveries | 310,000/s | 250,000/s – 350,000/s | ≥ 300,000/s | **PASS** |", `p99 \| latency`, "- **failed:** run 4: boom"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	r := &report{sections: []*section{s}}
	if r.misses() != 0 || r.failures() != 1 {
		t.Fatalf("misses %d failures %d, want 0 and 1", r.misses(), r.failures())
	}
}

func TestPercentile(t *testing.T) {
	v := make([]int32, 100)
	for i := range v {
		v[i] = int32(i + 1)
	}
	for _, tc := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing should be NaN")
	}
}

func TestParseFrame(t *testing.T) {
	change := []byte(`{"entity-type":"instance","operation":"update","payload":{"id":"x","status":"running"},"cursor":"1207","committed-at":"2026-11-23T10:00:00.123456Z","previous":{"id":"x"}}`)
	f, ok, err := parseFrame(change)
	if err != nil || !ok {
		t.Fatalf("parseFrame: ok %v err %v", ok, err)
	}
	want := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	if f.entityType != "instance" || f.operation != "update" || f.cursor != 1207 || !f.committed.Equal(want) {
		t.Fatalf("got %+v", f)
	}
	if err := checkFrame(change, f); err != nil {
		t.Fatalf("checkFrame: %v", err)
	}
	if _, ok, err := parseFrame([]byte(`{"namespace":"events","name":"control","args":{"type":"lagging"}}`)); ok || err != nil {
		t.Fatalf("control frame: ok %v err %v, want neither", ok, err)
	}
	if _, _, err := parseFrame([]byte(`{"entity-type":"pool","operation":"create","payload":{}}`)); err == nil {
		t.Fatal("a change without cursor must be an error")
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP changecast_ws_clients Connected WebSocket clients.
# TYPE changecast_ws_clients gauge
changecast_ws_clients 1000
go_memstats_heap_inuse_bytes 3.2e+07
process_cpu_seconds_total{mode="a"} 1.5
process_cpu_seconds_total{mode="b"} 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if m["changecast_ws_clients"] != 1000 || m["go_memstats_heap_inuse_bytes"] != 3.2e7 || m["process_cpu_seconds_total"] != 3.5 {
		t.Fatalf("got %v", m)
	}
}

// TestDialClient_ErrorHidesToken: a refused upgrade is reported with the
// server's answer, never with the bearer token the harness sent.
func TestDialClient_ErrorHidesToken(t *testing.T) {
	const token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
	var sawToken bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken = r.Header.Get("Authorization") == "Bearer "+token
		http.Error(w, `{"error": "invalid token"}`, http.StatusUnauthorized)
	}))
	defer ts.Close()
	_, err := dialClient(context.Background(), strings.TrimPrefix(ts.URL, "http://"), token, "since=0")
	if err == nil {
		t.Fatal("dial succeeded against a server that refuses")
	}
	if !sawToken {
		t.Fatal("the server did not receive the token in the Authorization header")
	}
	if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("error leaks the token: %v", err)
	}
	if !strings.Contains(err.Error(), "401") {
		t.Fatalf("error %q does not say the server refused (401)", err)
	}
}
