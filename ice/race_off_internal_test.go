//go:build !race

package ice

// consentAllocBound is how many allocations a consent round may make:
// none.
const consentAllocBound = 0
