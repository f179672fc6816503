package securecall

import (
	"errors"
	"fmt"
	"net"
)

// ErrClosed is returned by the methods of a Call that has been closed. It
// wraps [net.ErrClosed], so errors.Is(err, net.ErrClosed) holds as well.
var ErrClosed = fmt.Errorf("securecall: call closed: %w", net.ErrClosed)

// ErrNotConnected is returned by the media methods of a Call that is not
// connected yet; wait for [Call.Connect] first.
var ErrNotConnected = errors.New("securecall: call not connected")

// StateError reports a method called in a state that does not allow it,
// such as SetAnswer on a call that never made an offer. The call is
// unchanged by the failed method.
type StateError struct {
	Op    string // the method, such as "SetAnswer"
	State State  // the state the call was in
	Why   string // what was expected instead
}

func (e *StateError) Error() string {
	return fmt.Sprintf("securecall: %s in state %s: %s", e.Op, e.State, e.Why)
}
