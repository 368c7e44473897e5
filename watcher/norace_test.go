//go:build !race

package watcher

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = false
