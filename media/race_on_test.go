//go:build race

package media

// raceEnabled: under the race detector a sync.Pool drops a quarter of what
// is put back, at random, so pooled buffers are sometimes allocated anew.
const raceEnabled = true
