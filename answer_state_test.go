package securecall_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// rewrite parses desc, lets edit change it and marshals it again.
func rewrite(t *testing.T, desc string, edit func(d *sdp.Description)) string {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	edit(d)
	out, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// onlyG729 makes a description offer a codec no Call supports by default.
func onlyG729(d *sdp.Description) {
	d.Media[0].Formats = []sdp.Format{{PayloadType: 18, Name: "G729", ClockRate: 8000}}
}

func sessionID(t *testing.T, desc string) uint64 {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	return d.Origin.SessionID
}

// TestAnswerRefusedCrossingOfferKeepsOwnOffer: an offer that crosses this
// end's pending offer and wins the glare, but cannot be answered (no
// common codec), is refused; the refusal leaves the call as it was, still
// awaiting the answer to its own offer, which then connects the call.
func TestAnswerRefusedCrossingOfferKeepsOwnOffer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	oa, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ob, err := other.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The crossing offer wins the glare (larger session id) and has no
	// codec in common with a.
	crossing := rewrite(t, ob, func(d *sdp.Description) {
		d.Origin.SessionID = sessionID(t, oa) + 1
		onlyG729(d)
	})
	if _, err := a.Answer(ctx, crossing); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("Answer to a crossing offer without a common codec: %v, want ErrNegotiation", err)
	}
	if s := a.SignalingState(); s != securecall.SignalingHaveLocalOffer {
		t.Fatalf("after the refused offer: signaling %s, want %s (own offer kept)", s, securecall.SignalingHaveLocalOffer)
	}
	answer, err := b.Answer(ctx, oa)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatalf("SetAnswer to the call's own offer after the refused crossing offer: %v", err)
	}
	for _, c := range []*securecall.Call{a, b} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

// withICE replaces the ICE credentials of every section.
func withICE(ufrag, pwd string) func(d *sdp.Description) {
	return func(d *sdp.Description) {
		for i := range d.Media {
			d.Media[i].ICE.Ufrag, d.Media[i].ICE.Pwd = ufrag, pwd
		}
	}
}

// TestAnswerRefusedRestartKeepsICE: a later offer of a started call with
// new ICE credentials (an ICE restart) that Answer refuses, because it has
// no common codec or carries no ICE at all, leaves the call as it was: its
// ICE session is not restarted, the media path stays, a re-offer without
// restart is answered with the call's ICE credentials, and the refused
// offer sent again is refused again.
func TestAnswerRefusedRestartKeepsICE(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(d *sdp.Description)
	}{
		{"no common codec", func(d *sdp.Description) {
			withICE("zzzz", "zzzzzzzzzzzzzzzzzzzzzzzzzz")(d)
			onlyG729(d)
		}},
		{"no ICE", func(d *sdp.Description) {
			for i := range d.Media {
				d.Media[i].ICE = sdp.ICE{}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var offer string
			carry := func(desc string, toCallee bool) string {
				if toCallee {
					offer = desc
				}
				return desc
			}
			a, b := connectPairVia(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, carry, nil)
			defer a.Close()
			defer b.Close()
			sendRecv(t, a, b, 3)
			first, err := b.Answer(ctx, offer) // a retransmission: the answer b gave
			if err != nil {
				t.Fatal(err)
			}

			bad := rewrite(t, offer, func(d *sdp.Description) {
				d.Origin.SessionVersion += 5
				tc.edit(d)
			})
			if _, err := b.Answer(ctx, bad); err == nil {
				t.Fatal("Answer accepted the broken restart offer")
			}
			if _, err := b.Answer(ctx, bad); err == nil {
				t.Fatal("Answer accepted the broken restart offer sent again")
			}
			if s := b.SignalingState(); s != securecall.SignalingStable {
				t.Fatalf("signaling %s", s)
			}
			re, err := b.Answer(ctx, bumpVersion(t, offer))
			if err != nil {
				t.Fatalf("re-offer without restart: %v", err)
			}
			if iceUfrag(t, re) != iceUfrag(t, first) {
				t.Fatal("the refused restart offer restarted b's ICE: a re-offer without restart got new ICE credentials")
			}
			sendRecv(t, a, b, 3)
			sendRecv(t, b, a, 3)
		})
	}
}

// TestNoICEGlareNoLeak: a call without ICE whose offer loses a glare to a
// peer without ICE answers the peer's offer, and the transport it opened
// for its own, abandoned offer is closed, not leaked. The same after
// Rollback.
func TestNoICEGlareNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, rollback := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cfg := sdesConfig()
		cfg.NoICE = true
		a, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		oa, err := a.Offer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rollback {
			if err := a.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
		ob, err := b.Offer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ob = rewrite(t, ob, func(d *sdp.Description) { d.Origin.SessionID = sessionID(t, oa) + 1 })
		answer, err := a.Answer(ctx, ob)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*securecall.Call{a, b} {
			if err := c.Connect(ctx); err != nil {
				t.Fatal(err)
			}
		}
		sendRecv(t, a, b, 3)
		sendRecv(t, b, a, 3)
		a.Close()
		b.Close()
		cancel()
	}
}

// TestSDESReofferKeepsKeys: a SIP peer's re-INVITE (a new o= version of
// its offer, the same crypto line) is answered with the crypto line this
// side sends with, not a fresh key it never uses; a re-offer that changes
// the peer's key, which the media session cannot take, is refused and
// changes nothing.
func TestSDESReofferKeepsKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var offer, answer string
	carry := func(desc string, toCallee bool) string {
		if toCallee {
			offer = desc
		} else {
			answer = desc
		}
		return desc
	}
	a, b := connectPairVia(t, sdesConfig(), sdesConfig(), carry, nil)
	defer a.Close()
	defer b.Close()
	sendRecv(t, a, b, 3)
	re, err := b.Answer(ctx, bumpVersion(t, offer))
	if err != nil {
		t.Fatalf("re-offer: %v", err)
	}
	if got, want := cryptoLines(t, re), cryptoLines(t, answer); got != want {
		t.Fatalf("the answer to a re-offer carries another crypto line than the one b sends with:\n got %s\nwant %s", got, want)
	}
	rekey := rewrite(t, offer, func(d *sdp.Description) {
		d.Origin.SessionVersion += 5
		for i := range d.Media[0].Crypto {
			d.Media[0].Crypto[i].Key[0] ^= 0xff
		}
	})
	if _, err := b.Answer(ctx, rekey); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("re-offer with a new SDES key: %v, want ErrNegotiation", err)
	}
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

// cryptoLines returns the a=crypto lines of desc.
func cryptoLines(t *testing.T, desc string) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(desc, "\r\n") {
		if strings.HasPrefix(l, "a=crypto:") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatal("no crypto line")
	}
	return strings.Join(out, " | ")
}

// TestSDESReofferOfferingDTLSToo: SIP gear whose offers on RTP/SAVP carry
// both a fingerprint and crypto lines is answered in sdes by a call that
// asked for sdes, and so are its re-offers.
func TestSDESReofferOfferingDTLSToo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	both := rewrite(t, offer, func(d *sdp.Description) {
		d.Media[0].Fingerprints = []sdp.Fingerprint{{Algorithm: "sha-256", Value: make([]byte, 32)}}
		d.Media[0].Setup = sdp.SetupActpass
	})
	if _, err := b.Answer(ctx, both); err != nil {
		t.Fatalf("first offer with fingerprint and crypto lines: %v", err)
	}
	if _, err := b.Answer(ctx, bumpVersion(t, both)); err != nil {
		t.Fatalf("its re-offer: %v", err)
	}
}

// TestOwnOfferReflected: the call's own offer coming back to it (a
// signaling loop, or an attacker reflecting it) is not a crossing offer
// from the peer: Answer and SetAnswer refuse it, and the call still awaits
// the peer's answer, which then connects it.
func TestOwnOfferReflected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Answer(ctx, offer); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("Answer to the call's own offer: %v, want ErrNegotiation", err)
	}
	if s := a.SignalingState(); s != securecall.SignalingHaveLocalOffer {
		t.Fatalf("after its own offer came back: signaling %s", s)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*securecall.Call{a, b} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sendRecv(t, a, b, 3)
}

// TestSDESRestartKeepsKeys: an ICE restart of an sdes call between two
// Calls offers and answers the keys in use, and media flows after it; an
// answer that changes the peer's key is refused.
func TestSDESRestartKeepsKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, sdesConfig(), sdesConfig())
	sendRecv(t, a, b, 3)
	offer, err := a.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("restart offer: %v", err)
	}
	rekey := rewrite(t, answer, func(d *sdp.Description) { d.Media[0].Crypto[0].Key[0] ^= 0xff })
	if err := a.SetAnswer(ctx, rekey); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("restart answer with a new SDES key: %v, want ErrNegotiation", err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

// staticKeys is a KeySource with one key version, for tests that need kms
// keying without a KMS.
type staticKeys struct{}

func (staticKeys) Keys(_ context.Context, uri string) ([]media.CallKey, error) {
	return []media.CallKey{{URI: uri, CallID: "1", Version: 1, Key: make([]byte, media.CallKeySize)}}, nil
}

// TestOwnOfferReflectedAsAnswer: in kms keying the call's own offer reads
// as a fitting answer (no DTLS setup role to contradict it); SetAnswer
// refuses it, and the genuine answer still connects the call.
func TestOwnOfferReflectedAsAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingKMS, KeySource: staticKeys{}, KeyURI: "https://kms.example/calls/1"}
	a, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, offer); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("SetAnswer of the call's own offer: %v, want ErrNegotiation", err)
	}
	if s := a.SignalingState(); s != securecall.SignalingHaveLocalOffer {
		t.Fatalf("after its own offer came back as the answer: signaling %s", s)
	}
}
