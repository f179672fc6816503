package securecall

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/securecall/securecall/sdp"
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

// ErrDowngrade is returned by Answer and SetAnswer when the peer's
// description asks for a keying mode weaker than the call requires: a Call
// with a KeySource and a zero Config.Keying requires kms or hybrid keying,
// and a started call keeps the keying it began with. The call is
// unchanged: it can still take a description that meets the requirement.
// The error is a [*DowngradeError]; it also matches [sdp.ErrNegotiation].
var ErrDowngrade = errors.New("securecall: keying downgrade refused")

// DowngradeError reports a description refused because its keying does
// not meet the call's requirement. errors.Is(err, ErrDowngrade) holds.
type DowngradeError struct {
	Op       string       // the method, such as "Answer"
	Offered  sdp.Keying   // the keying the peer's description asks for
	Required []sdp.Keying // the keying modes this call accepts
}

func (e *DowngradeError) Error() string {
	req := make([]string, len(e.Required))
	for i, k := range e.Required {
		req[i] = string(k)
	}
	return fmt.Sprintf("securecall: %s: keying downgrade refused: the peer's description asks for %s keying, this call requires %s",
		e.Op, e.Offered, strings.Join(req, " or "))
}

// Unwrap returns ErrDowngrade and sdp.ErrNegotiation.
func (e *DowngradeError) Unwrap() []error { return []error{ErrDowngrade, sdp.ErrNegotiation} }

// ErrGlare is returned by Answer when the peer's offer crossed this end's
// own pending offer (both ends called Restart at once, for example on
// StateDisconnected) and this end's offer wins: the peer rolls its offer
// back and answers this end's, so the application drops the peer's offer
// and keeps waiting for the answer to its own. The rule, the same at both
// ends: in a started call the end that made the call's first offer wins;
// before the call has started, the end with the larger o= session id. The
// losing end's Answer rolls its own offer back and answers. The call is
// unchanged by the refused offer.
var ErrGlare = errors.New("securecall: offers crossed (glare); this end's pending offer wins, the peer answers it")

// ErrSessionChanged is wrapped by the error Answer and SetAnswer return for
// a later description of a started call in kms or hybrid keying whose o=
// session id is not the one the peer's descriptions had so far (a B2BUA
// that passes through the SDP of a new party after a transfer, say). The
// error is a [*SessionChangedError]; see it for what to do.
var ErrSessionChanged = errors.New("securecall: the peer's description is from another SDP session")

// SessionChangedError reports a later description refused because its o=
// session id differs from the peer's session id that the call runs with,
// in kms or hybrid keying: there the session ids name the call's two
// senders in the key schedule (docs/keyschedule.md), so the media keys
// of the session that the description belongs to are not the call's. The
// call is unchanged by the refused description and goes on with the party
// it has; to talk to the other session's party, end this call (Close) and
// make a new Call that answers that party's offer or offers anew. In dtls
// and sdes keying the session id names no key, and a Call takes such a
// description (see [Call.Answer]). errors.Is(err, ErrSessionChanged) holds.
type SessionChangedError struct {
	Op      string     // the method, "Answer" or "SetAnswer"
	Keying  sdp.Keying // the call's keying, kms or hybrid
	Session uint64     // the peer's session id that the call runs with
	Got     uint64     // the session id of the refused description
}

func (e *SessionChangedError) Error() string {
	return fmt.Sprintf("securecall: %s: the peer's description is from another SDP session (o= session id %d, the call's %d): "+
		"in %s keying the session ids name the call's senders in the key schedule, so the call keeps its session; "+
		"to talk to the new session's party, close this call and start a new Call", e.Op, e.Got, e.Session, e.Keying)
}

// Unwrap returns ErrSessionChanged.
func (e *SessionChangedError) Unwrap() error { return ErrSessionChanged }
