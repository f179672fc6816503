//go:build !race

package ice_test

const raceEnabled = false
