package ice

import (
	"errors"
	"fmt"
	"time"
)

// ErrNoPath is wrapped by the error Connect returns when no candidate pair
// worked within Config.ConnectTimeout or the checks failed: the peers have
// no usable path under the configured servers and policy. Callers branch
// on it (errors.Is) to tell "unreachable" from a cancelled context or bad
// input.
var ErrNoPath = errors.New("ice: no working path to the peer")

// RestartTimeoutError is the error Config.OnFailed receives when an ICE
// restart (Transport.Restart) selects no pair within Timeout,
// DisconnectedTimeout plus FailedTimeout: the peer's answer never came,
// the application rolled the restart back, or the checks found no path.
// It wraps ErrNoPath.
type RestartTimeoutError struct {
	Timeout time.Duration
	// Answered reports whether SetRemote gave the peer's new credentials
	// for the restart (its answer came, its checks found no path).
	Answered bool
}

func (e *RestartTimeoutError) Error() string {
	if e.Answered {
		return fmt.Sprintf("%v: an ICE restart found no path within %v", ErrNoPath, e.Timeout)
	}
	return fmt.Sprintf("%v: an ICE restart got no answer within %v", ErrNoPath, e.Timeout)
}

// Unwrap returns ErrNoPath.
func (e *RestartTimeoutError) Unwrap() error { return ErrNoPath }
