package main

import (
	"errors"
	"io"
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
	for _, bad := range []string{"-1", "17592186044416"} { // 2^44 MiB: 2^64 bytes
		_, err = parseServe([]string{"--gc-heap-floor", bad}, io.Discard)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--gc-heap-floor "+bad) {
			t.Errorf("--gc-heap-floor %s: got %v, want a usage error naming the flag", bad, err)
		}
	}
}
