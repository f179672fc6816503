package sdp

import (
	"errors"
	"testing"
)

// TestAcceptAnswerRefusesWeakCrypto: the offerer refuses an answer whose
// crypto line turns part of SRTP off, changes its key derivation or holds
// more than one master key, as the answerer refuses such offer lines
// (TestNegotiateKeyingAndTransport): the promise is about every line this
// side accepts, the answer's included.
func TestAcceptAnswerRefusesWeakCrypto(t *testing.T) {
	offer, err := NewOffer(sipCaps())
	if err != nil {
		t.Fatal(err)
	}
	answerer := sipCaps()
	own := append([]byte(nil), testKey30...)
	own[0] ^= 1 // the answerer's own key, not the offer's
	answerer.Crypto = []Crypto{{Suite: "AES_CM_128_HMAC_SHA1_80", Key: own}}
	answer, _, err := NewAnswer(wire(t, offer), answerer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcceptAnswer(offer, wire(t, answer)); err != nil {
		t.Fatalf("the plain answer: %v", err)
	}
	for name, edit := range map[string]func(c *Crypto){
		"UNENCRYPTED_SRTP":     func(c *Crypto) { c.Params = []string{"UNENCRYPTED_SRTP"} },
		"UNENCRYPTED_SRTCP":    func(c *Crypto) { c.Params = []string{"UNENCRYPTED_SRTCP"} },
		"UNAUTHENTICATED_SRTP": func(c *Crypto) { c.Params = []string{"UNAUTHENTICATED_SRTP"} },
		"KDR=24":               func(c *Crypto) { c.Params = []string{"KDR=24"} },
		"two master keys": func(c *Crypto) {
			c.MKI, c.MKILength = 1, 1
			c.MoreKeys = []CryptoKey{{Key: append([]byte(nil), c.Key...), MKI: 2, MKILength: 1}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			weak := wire(t, answer)
			edit(&weak.Media[0].Crypto[0])
			if _, err := AcceptAnswer(offer, wire(t, weak)); !errors.Is(err, ErrNegotiation) {
				t.Fatalf("AcceptAnswer of an answer with %s: %v, want ErrNegotiation", name, err)
			}
		})
	}
}
