package ice

import "errors"

// ErrNoPath is wrapped by the error Connect returns when no candidate pair
// worked within Config.ConnectTimeout or the checks failed: the peers have
// no usable path under the configured servers and policy. Callers branch
// on it (errors.Is) to tell "unreachable" from a cancelled context or bad
// input.
var ErrNoPath = errors.New("ice: no working path to the peer")
