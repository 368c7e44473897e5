package gcfloor

import (
	"math"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func readUint(t testing.TB, name string) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("metric %s not supported by this Go", name)
	}
	return s[0].Value.Uint64()
}

// eventually polls cond, running a collection between tries, until it holds
// or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s (GOGC %d, heap goal %d MiB, live %d MiB)", what,
				readUint(t, "/gc/gogc:percent"), readUint(t, "/gc/heap/goal:bytes")>>20, readUint(t, "/gc/heap/live:bytes")>>20)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}

var sink []byte

// churn allocates total bytes of garbage in 8 KiB pieces, as a drain does
// rows, and returns how many collections ran meanwhile.
func churn(total int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for n := 0; n < total; n += 8 << 10 {
		sink = make([]byte, 8<<10)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

func TestSet_FewerCollectionsWhenLittleIsLive(t *testing.T) {
	runtime.GC()
	without := churn(512 << 20)
	release := Set(64 << 20)
	if goal := readUint(t, "/gc/heap/goal:bytes"); goal < 60<<20 {
		t.Errorf("heap goal with a 64 MiB floor: got %d MiB, want about 64", goal>>20)
	}
	with := churn(512 << 20)
	release()
	// How many collections 512 MiB of garbage takes without the floor
	// depends on the CPU the collector gets (about 160 on an idle
	// machine, far fewer when it is starved and the heap overshoots), so
	// it is only logged. With a 64 MiB target a collection starts only
	// once the heap has grown most of the way to it: at most about a
	// dozen, however busy the machine.
	t.Logf("512 MiB of garbage: %d collections without the floor, %d with it", without, with)
	if with > 16 {
		t.Errorf("collections for 512 MiB of garbage with a 64 MiB floor: got %d, want at most 16", with)
	}
	if got := readUint(t, "/gc/gogc:percent"); got != defaultPercent {
		t.Errorf("GOGC after release: got %d, want %d", got, defaultPercent)
	}
}

// The floor follows the live heap: when what is live alone puts the target
// above it, GOGC goes back to what it was, so memory per connection is
// what it is without a floor; when the live heap shrinks, the floor applies
// again.
func TestSet_FollowsTheLiveHeap(t *testing.T) {
	runtime.GC()
	release := Set(32 << 20)
	defer release()
	if got := readUint(t, "/gc/gogc:percent"); got <= defaultPercent {
		t.Fatalf("GOGC with a 32 MiB floor and little live: got %d, want above %d", got, defaultPercent)
	}
	live := make([][]byte, 0, 64)
	for range 64 {
		live = append(live, make([]byte, 1<<20))
	}
	eventually(t, "GOGC is back to 100 with 64 MiB live", func() bool {
		return readUint(t, "/gc/gogc:percent") == defaultPercent
	})
	runtime.KeepAlive(live)
	live = nil
	eventually(t, "the floor applies again once the 64 MiB are garbage", func() bool {
		return readUint(t, "/gc/heap/goal:bytes") >= 30<<20 && readUint(t, "/gc/gogc:percent") > defaultPercent
	})
}

func TestSet_HighestFloorAppliesAndLastReleaseRestores(t *testing.T) {
	runtime.GC()
	low := Set(16 << 20)
	high := Set(64 << 20)
	if goal := readUint(t, "/gc/heap/goal:bytes"); goal < 60<<20 {
		t.Errorf("heap goal with floors of 16 and 64 MiB: got %d MiB, want about 64", goal>>20)
	}
	high()
	high() // releasing twice is harmless
	if goal := readUint(t, "/gc/heap/goal:bytes"); goal < 14<<20 || goal > 24<<20 {
		t.Errorf("heap goal with the 16 MiB floor left: got %d MiB, want about 16", goal>>20)
	}
	low()
	if got := readUint(t, "/gc/gogc:percent"); got != defaultPercent {
		t.Fatalf("GOGC after the last release: got %d, want %d", got, defaultPercent)
	}
}

// A watcher armed for floors since released is stale: when its collection
// comes, it leaves GOGC alone, even while a newer floor is held. (With no
// floor held an adjustment changes nothing anyway, so only a floor held
// tells a stale watcher from a live one.)
func TestAfterGC_StaleWatcherDoesNothing(t *testing.T) {
	defer func(f func() (uint64, uint64)) { readLive = f }(readLive)
	const floor = 64 << 20
	live := uint64(1 << 20)
	readLive = func() (uint64, uint64) { return live, 0 }
	Set(floor)()
	state.Lock()
	stale := state.gen
	state.Unlock()
	release := Set(floor)
	defer release()
	before := readUint(t, "/gc/gogc:percent")
	live = 16 << 20 // an adjustment now would lower GOGC well past 5%
	afterGC(stale)
	if got := readUint(t, "/gc/gogc:percent"); got != before {
		t.Errorf("GOGC after a stale watcher's collection: got %d, want %d (unchanged)", got, before)
	}
	state.Lock()
	current := state.gen
	state.Unlock()
	afterGC(current) // the live watcher does adjust: the check above can fail
	if got := readUint(t, "/gc/gogc:percent"); got >= before {
		t.Errorf("GOGC after the live watcher's collection: got %d, want below %d", got, before)
	}
}

func TestSet_GOGCInTheEnvironmentWins(t *testing.T) {
	t.Setenv("GOGC", "100")
	runtime.GC()
	release := Set(64 << 20)
	defer release()
	runtime.GC()
	if got := readUint(t, "/gc/gogc:percent"); got != defaultPercent {
		t.Errorf("GOGC with GOGC=100 in the environment and a floor: got %d, want %d", got, defaultPercent)
	}
	if goal := readUint(t, "/gc/heap/goal:bytes"); goal >= 32<<20 {
		t.Errorf("heap goal with GOGC=100 in the environment: got %d MiB, want the runtime's own (small)", goal>>20)
	}
}

func TestSet_ZeroIsNoFloor(t *testing.T) {
	runtime.GC()
	Set(0)()
	if got := readUint(t, "/gc/gogc:percent"); got != defaultPercent {
		t.Errorf("GOGC after Set(0): got %d, want %d", got, defaultPercent)
	}
}

// GOGC goes back to the original when the live heap alone reaches the
// floor, even from a setting within the 5% that is otherwise not worth a
// change.
func TestAdjust_BackToTheOriginalExactly(t *testing.T) {
	defer func(f func() (uint64, uint64)) { readLive = f }(readLive)
	const floor = 64 << 20
	live, roots := uint64(floor*100/205), uint64(0) // GOGC 105 reaches the floor
	readLive = func() (uint64, uint64) { return live, roots }
	release := Set(floor)
	defer release()
	state.Lock()
	defer state.Unlock()
	if state.percent < 103 || state.percent > 105 {
		t.Fatalf("GOGC with %d MiB live and a %d MiB floor: got %d, want about 105", live>>20, floor>>20, state.percent)
	}
	live = floor // the floor does nothing now
	adjustLocked()
	if got := readUint(t, "/gc/gogc:percent"); got != defaultPercent || state.percent != defaultPercent {
		t.Errorf("GOGC with the live heap at the floor: got %d (state %d), want %d", got, state.percent, defaultPercent)
	}
}

// A floor too large for SetGCPercent's int32 does not wrap around.
func TestAdjust_HugeFloor(t *testing.T) {
	defer func(f func() (uint64, uint64)) { readLive = f }(readLive)
	readLive = func() (uint64, uint64) { return 1 << 20, 1 << 20 }
	release := Set(1 << 60)
	defer release()
	if got := readUint(t, "/gc/gogc:percent"); got != math.MaxInt32 {
		t.Errorf("GOGC with a floor of 2^60 bytes: got %d, want %d", got, math.MaxInt32)
	}
}

func TestHeld(t *testing.T) {
	if got := Held(); got != 0 {
		t.Fatalf("Held with no floor: got %d, want 0", got)
	}
	a, b := Set(8<<20), Set(24<<20)
	if got := Held(); got != 24<<20 {
		t.Errorf("Held with floors of 8 and 24 MiB: got %d MiB, want 24", got>>20)
	}
	b()
	if got := Held(); got != 8<<20 {
		t.Errorf("Held after releasing the 24 MiB floor: got %d MiB, want 8", got>>20)
	}
	a()
	if got := Held(); got != 0 {
		t.Errorf("Held after releasing both: got %d, want 0", got)
	}
}
