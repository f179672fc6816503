package securecall

import "github.com/securecall/securecall/sdp"

// This file holds what a started call knows about its own ICE restarts:
// once ICE has restarted for a new description (Restart, or an answer to
// the peer's restart), the old credentials, candidates and path are gone,
// whether or not that description is ever made, sent or answered. Until
// an exchange carries the new credentials to the peer, the call has no
// ICE session that a description could keep.

// iceRestarted records that ICE has just restarted for a description of
// this end: from now until ICE selects a new pair (pathSelected), the
// call has no path, and a connected call is disconnected.
func (c *Call) iceRestarted() {
	c.mu.Lock()
	if c.started {
		c.iceReset = true
		c.pathLost = true
		if c.state == StateConnected {
			c.setStateLocked(StateDisconnected)
		}
	}
	c.mu.Unlock()
	c.reportStates()
	if h := testHookICERestarted; h != nil {
		h(c)
	}
}

// pathSelected runs when ICE has selected a pair: after a restart, the
// new path (the ice Transport reports no pair that a restart dropped),
// which the call is connected on again once its media session is up.
func (c *Call) pathSelected() {
	c.mu.Lock()
	if c.pathLost {
		c.pathLost = false
		if c.state == StateDisconnected {
			c.setStateLocked(StateConnected)
		}
	}
	c.mu.Unlock()
	c.reportStates()
}

// refuseKeptICELocked refuses (c.mu held) the peer's offer remote that
// keeps the ICE session, when this end's ICE restarted for a Restart that
// failed, was rolled back or still awaits its answer: answering it would
// announce the new credentials with the old, closed candidates and never
// give ICE the peer's credentials. A crossing offer that this end's
// pending offer wins is left to the glare rule (ErrGlare).
func (c *Call) refuseKeptICELocked(remote *sdp.Description) error {
	if !c.iceReset || c.sip.direct != nil {
		return nil
	}
	if c.signaling == SignalingHaveLocalOffer && c.offer != nil && c.winsGlareLocked(remote) {
		return nil
	}
	return &StateError{Op: "Answer", State: c.state,
		Why: "the offer keeps the ICE session, which this end's restart has replaced; restart ICE (Restart, or an offer with new ICE credentials) to carry media again"}
}

// testHookICERestarted, if set, runs in describe right after ICE has been
// restarted for a new description (tests only).
var testHookICERestarted func(*Call)
