//go:build race

package sanitize

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
