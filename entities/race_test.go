//go:build race

package entities

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
