package securecall

import "github.com/securecall/securecall/sdp"

// This file holds what a started call knows about its own ICE restarts:
// once ICE has restarted for a new description (Restart, or an answer to
// the peer's restart), the old credentials, candidates and path are gone,
// whether or not that description is ever made, sent or answered. Until
// an exchange carries the new credentials to the peer, the call has no
// ICE session that a description could keep.

// iceRestarted records that ICE has just restarted for a description of
// this end.
func (c *Call) iceRestarted() {
	c.mu.Lock()
	if c.started {
		c.iceReset = true
	}
	c.mu.Unlock()
	if h := testHookICERestarted; h != nil {
		h(c)
	}
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
