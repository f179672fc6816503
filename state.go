package securecall

import "strconv"

// State is where a call is in its life.
type State int

// The states of a call, in the order a call moves through them. A call
// moves between StateConnected and StateDisconnected as its path stops and
// starts answering, and as ICE restarts and selects a new path; it reaches
// StateFailed or StateClosed once and stays there.
const (
	// StateNew: made by New, no session description exchanged yet.
	StateNew State = iota
	// StateConnecting: descriptions exchanged; ICE, DTLS and keys are
	// being set up.
	StateConnecting
	// StateConnected: media flows: the media session is up and ICE has a
	// selected path that answers.
	StateConnected
	// StateDisconnected: the call has no media path that answers. Either
	// the path stopped answering (see ice.Config.DisconnectedTimeout), or
	// ICE restarted (this end's Restart, or its Answer to the peer's
	// restart offer), which dropped the old path, and has not yet selected
	// the new one: Path is zero then. Media is lost until the path answers
	// again or a restart's new path is selected; after a restart that
	// failed or was rolled back, until another restart, from either end,
	// succeeds. The call, its keys and its media session are kept.
	StateDisconnected
	// StateFailed: the call could not connect, or lost its path for good:
	// nothing answered for ice.Config.DisconnectedTimeout plus
	// FailedTimeout (30 s by default), also while a restart ran. Context
	// is cancelled with the cause (wrapping ice.ErrNoPath for a lost path),
	// reads and writes return it, and only Close is left to do.
	StateFailed
	// StateClosed: Close was called.
	StateClosed
)

var stateNames = [...]string{"new", "connecting", "connected", "disconnected", "failed", "closed"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}
