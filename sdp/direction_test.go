package sdp

import "testing"

// TestAgreementDirection: each side's Agreement.Direction is what it may
// do (RFC 3264 sections 6.1 and 8.4): the answerer reverses the offer's
// direction, and the offerer takes what its offer and the answer both
// allow, so that an answer of sendonly or inactive stops the offerer
// sending and one of recvonly stops it receiving.
func TestAgreementDirection(t *testing.T) {
	for _, tc := range []struct {
		offer, answer Direction // as written on the wire
		answerer      Direction // NewAnswer's agreement
		offerer       Direction // AcceptAnswer's agreement
	}{
		{SendRecv, SendRecv, SendRecv, SendRecv},
		{SendRecv, SendOnly, SendRecv, RecvOnly},
		{SendRecv, RecvOnly, SendRecv, SendOnly},
		{SendRecv, Inactive, SendRecv, Inactive},
		{SendOnly, RecvOnly, RecvOnly, SendOnly},
		{SendOnly, Inactive, RecvOnly, Inactive},
		{RecvOnly, SendOnly, SendOnly, RecvOnly},
		{Inactive, Inactive, Inactive, Inactive},
		// An answer that claims more than the offer allows gets only
		// what both allow.
		{SendOnly, SendRecv, RecvOnly, SendOnly},
		{RecvOnly, SendRecv, SendOnly, RecvOnly},
		{Inactive, SendRecv, Inactive, Inactive},
		{SendOnly, SendOnly, RecvOnly, Inactive},
	} {
		t.Run(string(tc.offer)+"/"+string(tc.answer), func(t *testing.T) {
			offer, err := NewOffer(caps(KeyingDTLS))
			if err != nil {
				t.Fatal(err)
			}
			offer.Media[0].Direction = tc.offer
			remote := wire(t, offer)
			answer, got, err := NewAnswer(remote, caps(KeyingDTLS))
			if err != nil {
				t.Fatal(err)
			}
			if got.Direction != tc.answerer || answer.Media[0].Direction != tc.answerer {
				t.Errorf("answerer: agreement %s, answer says %s; want %s", got.Direction, answer.Media[0].Direction, tc.answerer)
			}
			answer.Media[0].Direction = tc.answer
			a, err := AcceptAnswer(offer, wire(t, answer))
			if err != nil {
				t.Fatal(err)
			}
			if a.Direction != tc.offerer {
				t.Errorf("offerer: agreement %s, want %s", a.Direction, tc.offerer)
			}
		})
	}
}
