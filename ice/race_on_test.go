//go:build race

package ice_test

// raceEnabled: the race detector slows every goroutine several times.
const raceEnabled = true
