//go:build race

package ice

// consentAllocBound is how many allocations a consent round may make
// under the race detector, where a sync.Pool drops a quarter of what is
// put back, at random, and the next taker allocates anew: a round takes
// four pooled buffers (two messages built, two checked), so 1.0 on
// average, while an allocation of the path itself adds at least 1 more.
// CI runs the exact check, 0, without -race (its stage "allocations").
const consentAllocBound = 1.5
