package securecall

import "testing"

// Every step of the offer/answer machine, allowed and refused: a refused
// step leaves the state as it was.
func TestSignalingTransitions(t *testing.T) {
	ops := []signalingOp{opLocalOffer, opRemoteOffer, opLocalAnswer, opRemoteAnswer, opRollback, opClose}
	allowed := map[SignalingState]map[signalingOp]SignalingState{
		SignalingStable:          {opLocalOffer: SignalingHaveLocalOffer, opRemoteOffer: SignalingHaveRemoteOffer, opClose: SignalingClosed},
		SignalingHaveLocalOffer:  {opRemoteAnswer: SignalingStable, opRollback: SignalingStable, opClose: SignalingClosed},
		SignalingHaveRemoteOffer: {opLocalAnswer: SignalingStable, opRollback: SignalingStable, opClose: SignalingClosed},
		SignalingClosed:          {},
	}
	for from, want := range allowed {
		for _, op := range ops {
			got, err := from.next(op)
			if to, ok := want[op]; ok {
				if err != nil || got != to {
					t.Errorf("%s --%s--> %s, %v; want %s", from, opNames[op], got, err, to)
				}
				continue
			}
			if err == nil || got != from {
				t.Errorf("%s --%s--> %s, %v; want refused, state kept", from, opNames[op], got, err)
			}
		}
	}
	if s := SignalingState(9).String(); s != "SignalingState(9)" {
		t.Errorf("unknown state prints %q", s)
	}
}
