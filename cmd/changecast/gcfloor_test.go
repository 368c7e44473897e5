package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/changecast/changecast/internal/gcfloor"
)

// TestServe_GCHeapFloorFlag checks --gc-heap-floor's default, its
// environment variable and its refusal of a negative size.
func TestServe_GCHeapFloorFlag(t *testing.T) {
	cfg, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.gcHeapFloorMiB != gcfloor.DefaultFloor>>20 {
		t.Errorf("default: got %d MiB, want %d", cfg.gcHeapFloorMiB, gcfloor.DefaultFloor>>20)
	}
	t.Setenv("CHANGECAST_GC_HEAP_FLOOR", "0")
	if cfg, err = parseServe(nil, io.Discard); err != nil || cfg.gcHeapFloorMiB != 0 {
		t.Errorf("CHANGECAST_GC_HEAP_FLOOR=0: got %d, %v; want 0 and no error", cfg.gcHeapFloorMiB, err)
	}
	if cfg, err = parseServe([]string{"--gc-heap-floor", fmt.Sprint(maxGCHeapFloorMiB)}, io.Discard); err != nil || cfg.gcHeapFloorMiB != maxGCHeapFloorMiB {
		t.Errorf("--gc-heap-floor %d (the largest): got %d, %v; want it taken", maxGCHeapFloorMiB, cfg.gcHeapFloorMiB, err)
	}
	for _, bad := range []string{"-1", fmt.Sprint(maxGCHeapFloorMiB + 1), "17592186044416"} { // 2^44 MiB: 2^64 bytes
		_, err = parseServe([]string{"--gc-heap-floor", bad}, io.Discard)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--gc-heap-floor "+bad) {
			t.Errorf("--gc-heap-floor %s: got %v, want a usage error naming the flag", bad, err)
		}
	}
}

// TestServe_HoldsTheGCHeapFloor checks that serve holds its
// --gc-heap-floor while it runs and releases it when it returns. 100 MiB
// tells it apart from other servers of this process (default 64 MiB, or
// none when a test builds its configuration directly).
func TestServe_HoldsTheGCHeapFloor(t *testing.T) {
	t.Parallel()
	const floor = 100 << 20
	want := uint64(floor)
	if os.Getenv("GOGC") != "" {
		want = 0 // GOGC in the environment wins: no floor is held
	}
	srv, _, _ := readyServer(t, "cc_gcfloor", func(c *serveConfig) { c.gcHeapFloorMiB = floor >> 20 })
	if got := gcfloor.Held(); got != want {
		t.Errorf("floor held while serve runs with --gc-heap-floor 100: got %d MiB, want %d", got>>20, want>>20)
	}
	srv.stop(t)
	if got := gcfloor.Held(); got >= floor {
		t.Errorf("floor held after serve returned: got %d MiB, want below 100 (released)", got>>20)
	}
}
