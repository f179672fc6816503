package securecall

import (
	"fmt"
	"strconv"
)

// SignalingState is where a call's offer/answer exchange (RFC 3264) is, as
// in the W3C RTCSignalingState: separate from [State], which says whether
// media flows. A call starts and ends every exchange in SignalingStable.
type SignalingState int

const (
	// SignalingStable: no exchange under way. Offer, Restart, Hold,
	// Resume and Answer may start one.
	SignalingStable SignalingState = iota
	// SignalingHaveLocalOffer: Offer, Restart, Hold or Resume made (or
	// is making) an offer that awaits its answer: SetAnswer completes the
	// exchange and Rollback abandons it. An unanswered later offer
	// (Restart, Hold, Resume) is rolled back by itself after
	// Config.RestartTimeout.
	SignalingHaveLocalOffer
	// SignalingHaveRemoteOffer: Answer is making the answer to the peer's
	// offer; it returns to SignalingStable whether it succeeds or fails.
	SignalingHaveRemoteOffer
	// SignalingClosed: the call is closed.
	SignalingClosed
)

var signalingNames = [...]string{"stable", "have-local-offer", "have-remote-offer", "closed"}

func (s SignalingState) String() string {
	if s >= 0 && int(s) < len(signalingNames) {
		return signalingNames[s]
	}
	return "SignalingState(" + strconv.Itoa(int(s)) + ")"
}

// signalingOp is a step of the offer/answer exchange.
type signalingOp int

const (
	opLocalOffer   signalingOp = iota + 1 // Offer, Restart, Hold or Resume begins an offer
	opRemoteOffer                         // Answer takes the peer's offer
	opLocalAnswer                         // Answer hands back its answer
	opRemoteAnswer                        // SetAnswer takes the peer's answer
	opRollback                            // a pending exchange is abandoned
	opClose                               // Close
)

var opNames = map[signalingOp]string{
	opLocalOffer: "make an offer", opRemoteOffer: "take an offer", opLocalAnswer: "make an answer",
	opRemoteAnswer: "take an answer", opRollback: "roll back", opClose: "close",
}

// signalingTransitions lists every allowed step; anything else is refused
// and changes nothing.
var signalingTransitions = map[SignalingState]map[signalingOp]SignalingState{
	SignalingStable: {
		opLocalOffer:  SignalingHaveLocalOffer,
		opRemoteOffer: SignalingHaveRemoteOffer,
		opClose:       SignalingClosed,
	},
	SignalingHaveLocalOffer: {
		opRemoteAnswer: SignalingStable,
		opRollback:     SignalingStable,
		opClose:        SignalingClosed,
	},
	SignalingHaveRemoteOffer: {
		opLocalAnswer: SignalingStable,
		opRollback:    SignalingStable,
		opClose:       SignalingClosed,
	},
	SignalingClosed: {},
}

// next returns the state after op, or an error naming the refused step.
func (s SignalingState) next(op signalingOp) (SignalingState, error) {
	if n, ok := signalingTransitions[s][op]; ok {
		return n, nil
	}
	return s, fmt.Errorf("cannot %s in signaling state %s", opNames[op], s)
}
