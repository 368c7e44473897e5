//go:build !race

package wsapi

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = false
