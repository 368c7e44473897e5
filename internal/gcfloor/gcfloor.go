// Package gcfloor keeps the Go garbage collector's heap target from falling
// below a floor.
//
// With its default setting (GOGC=100) the collector starts a cycle when the
// heap has grown by as much as was live after the last one. changecast's
// live heap is small (a few MiB: the rows in flight, the registry, the
// connections) while it allocates fast: every replicated row becomes a new
// buffer, then a journal batch and a wire frame, so draining a backlog
// allocates hundreds of MiB a second and the collector ran about a hundred
// cycles a second, a fifth of the process's CPU (docs/benchmarks.md,
// issue 18 step 15). A floor on the target lets the heap grow to the floor
// before a cycle, whatever little is live: the same garbage, collected in
// a tenth of the cycles, for at most the floor in extra memory.
//
// Once the live heap is large enough that GOGC=100 puts the target above
// the floor (many connections, a long snapshot), the floor does nothing:
// the collector paces as it would without it, so memory per connection is
// unchanged.
//
// The floor works by resetting GOGC (debug.SetGCPercent) after each
// collection from the live heap that collection found. It does nothing when
// the GOGC environment variable is set: the operator chose the pacing. A
// GOMEMLIMIT still applies: the runtime collects sooner when the heap nears
// it, floor or not.
package gcfloor

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultFloor is the heap target changecast keeps by default: 64 MiB.
const DefaultFloor = 64 << 20

// The runtime's own setting when the environment has none.
const defaultPercent = 100

// minHeap is the runtime's smallest heap target at GOGC=100 (4 MiB); it
// scales with GOGC.
const minHeap = 4 << 20

var state struct {
	sync.Mutex
	floors   map[*int]uint64 // the floors asked for and not yet released
	gen      uint64          // bumped when the last floor is released: stale watchers stop
	percent  int             // the GOGC last set
	original int             // GOGC before the first floor
}

// Set keeps the heap target at or above floor bytes until release is
// called. Several floors may be held at once (tests run servers side by
// side); the highest applies, and releasing the last puts back the GOGC
// that was in effect before. A floor of 0, or a GOGC in the environment,
// makes Set do nothing. Set and release are safe for concurrent use.
func Set(floor uint64) (release func()) {
	if floor == 0 || os.Getenv("GOGC") != "" {
		return func() {}
	}
	key := new(int)
	state.Lock()
	defer state.Unlock()
	if len(state.floors) == 0 {
		state.floors = make(map[*int]uint64)
		state.original = currentPercent()
		state.percent = state.original
		state.gen++
		watch(state.gen)
	}
	state.floors[key] = floor
	adjustLocked()
	var once sync.Once
	return func() {
		once.Do(func() {
			state.Lock()
			defer state.Unlock()
			delete(state.floors, key)
			if len(state.floors) > 0 {
				adjustLocked()
				return
			}
			state.gen++ // the pending watcher finds itself stale and stops
			debug.SetGCPercent(state.original)
			state.percent = state.original
		})
	}
}

// Held returns the highest floor held now, in bytes: 0 when none is (or
// when GOGC in the environment made Set do nothing).
func Held() uint64 {
	state.Lock()
	defer state.Unlock()
	return heldLocked()
}

func heldLocked() uint64 {
	var floor uint64
	for _, f := range state.floors {
		floor = max(floor, f)
	}
	return floor
}

// watch arranges for afterGC(gen) to run after the next collection: the
// cleanup of an object nothing references runs once a cycle has found it
// unreachable. Each afterGC arms the next, until gen goes stale.
func watch(gen uint64) {
	// 16 bytes holding no pointers: the smallest object the tiny allocator
	// does not pack with others (a packed one is freed only with its
	// neighbours, so its cleanup could wait many cycles).
	runtime.AddCleanup(new([16]byte), afterGC, gen)
}

func afterGC(gen uint64) {
	state.Lock()
	defer state.Unlock()
	if gen != state.gen {
		return
	}
	adjustLocked()
	watch(gen)
}

// adjustLocked sets GOGC so that the next heap target is the highest floor,
// or what the original GOGC gives when that is higher. The runtime's target
// is live + (live + stacks + globals) × GOGC/100, with live the heap the
// last collection marked.
func adjustLocked() {
	floor := heldLocked()
	live, roots := readLive()
	want := state.original
	if base := live + roots; base > 0 && floor > live {
		p := (floor - live) * 100 / base
		// The runtime never targets less than 4 MiB × GOGC/100, however
		// little is live: past floor×100/4 MiB that minimum, not the
		// floor, would set the target.
		p = min(p, floor*100/minHeap)
		// debug.SetGCPercent keeps an int32.
		p = min(p, math.MaxInt32)
		if int(p) > want {
			want = int(p)
		}
	}
	// Small moves are not worth a change: the target moves with live
	// anyway, and each SetGCPercent takes the heap lock. Going back to
	// the original is never small: above the floor Go paces as it would
	// without one.
	if want == state.percent || (want != state.original &&
		((want > state.percent && want < state.percent*21/20) ||
			(want < state.percent && want > state.percent*19/20))) {
		return
	}
	debug.SetGCPercent(want)
	state.percent = want
}

// readLive is liveHeap; tests replace it.
var readLive = liveHeap

// liveHeap returns the heap the last collection marked live, and the stacks
// and globals the collector scans, in bytes. Before the first collection
// live is 0 and the runtime's own minimum target applies.
func liveHeap() (live, roots uint64) {
	v := readMetrics("/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes")
	return v[0], v[1] + v[2]
}

// currentPercent reads GOGC without changing it.
func currentPercent() int {
	if p := readMetrics("/gc/gogc:percent")[0]; p > 0 {
		return int(p)
	}
	return defaultPercent
}

// readMetrics reads runtime metrics of kind uint64; one this Go does not
// have reads as 0.
func readMetrics(names ...string) []uint64 {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	out := make([]uint64, len(s))
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			out[i] = s[i].Value.Uint64()
		}
	}
	return out
}
