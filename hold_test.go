package securecall_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/sdp"
)

// holdModes are the keyings a softphone or an agent holds calls in: sdes
// without ICE (SIP gear) and every keying over ICE.
func holdModes(t *testing.T) []struct {
	name   string
	ca, cb securecall.Config
} {
	t.Helper()
	sip := sdesConfig()
	sip.NoICE = true
	modes := []struct {
		name   string
		ca, cb securecall.Config
	}{
		{"sdes without ICE", sip, sdesConfig()},
		{"sdes with ICE", sdesConfig(), sdesConfig()},
		{"dtls with ICE", securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}},
	}
	if testing.Short() {
		return modes
	}
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	for _, k := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
		if err != nil {
			t.Fatal(err)
		}
		ca := securecall.Config{ICE: loopbackICE(), Keying: k, KeySource: alice, KeyURI: uri}
		cb := securecall.Config{ICE: loopbackICE(), Keying: k, KeySource: kmsClient(t, env, "bob")}
		modes = append(modes, struct {
			name   string
			ca, cb securecall.Config
		}{string(k) + " with ICE", ca, cb})
	}
	return modes
}

// exchange passes from's offer to to and to's answer back to from.
func exchange(ctx context.Context, t *testing.T, from, to *securecall.Call, offer string) (answer string) {
	t.Helper()
	answer, err := to.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	if err := from.SetAnswer(ctx, answer); err != nil {
		t.Fatalf("SetAnswer: %v", err)
	}
	return answer
}

func parse(t *testing.T, desc string) *sdp.Description {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkReoffer checks that re is a later offer of the session of last
// (the same end's previous description) that keeps everything but the
// direction: o= version one up, the same ICE credentials and candidates,
// keys, crypto lines and fingerprint, the call's codec first.
func checkReoffer(t *testing.T, last, re string, dir sdp.Direction, codec sdp.Format) {
	t.Helper()
	l, r := parse(t, last), parse(t, re)
	lm, rm := l.Media[0], r.Media[0]
	switch {
	case r.Origin.SessionID != l.Origin.SessionID || r.Origin.SessionVersion != l.Origin.SessionVersion+1:
		t.Errorf("re-offer o= %d %d, want %d %d", r.Origin.SessionID, r.Origin.SessionVersion, l.Origin.SessionID, l.Origin.SessionVersion+1)
	case rm.Direction != dir:
		t.Errorf("re-offer direction %s, want %s", rm.Direction, dir)
	case rm.ICE.Ufrag != lm.ICE.Ufrag || rm.ICE.Pwd != lm.ICE.Pwd || len(rm.ICE.Candidates) != len(lm.ICE.Candidates):
		t.Errorf("re-offer ICE %q/%d candidates, last description %q/%d: the ICE session must be kept",
			rm.ICE.Ufrag, len(rm.ICE.Candidates), lm.ICE.Ufrag, len(lm.ICE.Candidates))
	case rm.Address != lm.Address || rm.Port != lm.Port:
		t.Errorf("re-offer media at %s:%d, last description %s:%d", rm.Address, rm.Port, lm.Address, lm.Port)
	case len(rm.Crypto) != len(lm.Crypto) && len(lm.Crypto) == 1:
		t.Errorf("re-offer has %d crypto lines, the last description %d", len(rm.Crypto), len(lm.Crypto))
	case len(lm.Crypto) == 1 && string(rm.Crypto[0].Key) != string(lm.Crypto[0].Key):
		t.Errorf("re-offer's SDES key differs from the call's")
	case len(rm.Fingerprints) != len(lm.Fingerprints) || (len(lm.Fingerprints) > 0 && string(rm.Fingerprints[0].Value) != string(lm.Fingerprints[0].Value)):
		t.Errorf("re-offer fingerprints %v, last description %v", rm.Fingerprints, lm.Fingerprints)
	case (lm.KeyRef == nil) != (rm.KeyRef == nil) || (lm.KeyRef != nil && lm.KeyRef.URI != rm.KeyRef.URI):
		t.Errorf("re-offer key reference %v, last description %v", rm.KeyRef, lm.KeyRef)
	case len(rm.Formats) == 0 || rm.Formats[0].Name != codec.Name || rm.Formats[0].PayloadType != codec.PayloadType:
		t.Errorf("re-offer codecs %v, want the call's %s first", rm.Formats, codec)
	}
}

// TestHoldResume: either end of a call holds the other with Hold (a
// re-offer of sendonly that keeps the ICE session, keys and codec) and
// resumes it with Resume: while held, the holder's Direction is sendonly
// and its RTP (music on hold) still reaches the held end, whose Direction
// is recvonly and which withholds its RTP; Resume restores sendrecv at
// both ends, with media both ways at once (nothing restarted).
func TestHoldResume(t *testing.T) {
	for _, mode := range holdModes(t) {
		for _, holderIsCaller := range []bool{true, false} {
			name := mode.name + "/callee holds"
			if holderIsCaller {
				name = mode.name + "/caller holds"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				a, b, offer, answer := capturePair(t, mode.ca, mode.cb, nil)
				holder, held, last := a, b, *offer
				if !holderIsCaller {
					holder, held, last = b, a, *answer
				}
				sendRecv(t, holder, held, 3)
				path := holder.Path()

				hold, err := holder.Hold(ctx)
				if err != nil {
					t.Fatalf("Hold: %v", err)
				}
				checkReoffer(t, last, hold, sdp.SendOnly, holder.Codec())
				if s := holder.SignalingState(); s != securecall.SignalingHaveLocalOffer {
					t.Fatalf("signaling after Hold: %s", s)
				}
				ans := exchange(ctx, t, holder, held, hold)
				if d := audioOf(t, ans).Direction; d != sdp.RecvOnly {
					t.Fatalf("the held end answered %s, want recvonly", d)
				}
				if d, e := holder.Direction(), held.Direction(); d != sdp.SendOnly || e != sdp.RecvOnly {
					t.Fatalf("on hold: holder %s, held %s; want sendonly, recvonly", d, e)
				}
				if s := holder.SignalingState(); s != securecall.SignalingStable {
					t.Fatalf("signaling after the hold's answer: %s", s)
				}
				sendRecv(t, holder, held, 3) // music on hold
				writeHeld(t, held, 5)
				rtcpBothWays(t, holder, held)
				if p := holder.Path(); p.Remote.Address != path.Remote.Address || p.Local.Address != path.Local.Address {
					t.Fatalf("path moved on hold: %+v, was %+v", p, path)
				}

				resume, err := holder.Resume(ctx)
				if err != nil {
					t.Fatalf("Resume: %v", err)
				}
				checkReoffer(t, hold, resume, sdp.SendRecv, holder.Codec())
				exchange(ctx, t, holder, held, resume)
				if d, e := holder.Direction(), held.Direction(); d != sdp.SendRecv || e != sdp.SendRecv {
					t.Fatalf("after Resume: holder %s, held %s; want sendrecv at both", d, e)
				}
				// Had the withheld packets gone out, holder would read them first.
				sendRecv(t, held, holder, 3)
				sendRecv(t, holder, held, 3)
			})
		}
	}
}

// TestHoldAnswerNewICERefused: an answer to a hold re-offer that gives the
// peer's ICE credentials anew (a restart the offer did not ask for) is
// refused with an error wrapping sdp.ErrNegotiation and changes nothing:
// the call still awaits the answer, sends as before, and takes the right
// answer after.
func TestHoldAnswerNewICERefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := b.Answer(ctx, hold)
	if err != nil {
		t.Fatal(err)
	}
	bad := rewrite(t, ans, withICE("NeWu", "aNewIcePasswordOf24Chars"))
	if err := a.SetAnswer(ctx, bad); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("SetAnswer of an answer with new ICE credentials to a hold: %v, want ErrNegotiation", err)
	}
	if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
		t.Fatalf("after the refused answer: signaling %s, direction %s; want have-local-offer, sendrecv", s, d)
	}
	sendRecv(t, a, b, 3)
	if err := a.SetAnswer(ctx, ans); err != nil {
		t.Fatalf("the right answer after the refused one: %v", err)
	}
	if d := a.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction %s, want sendonly", d)
	}
	sendRecv(t, a, b, 3)
}

// TestHoldPeerOffersKeepHold: while this end holds the call, the peer's
// later offers (its own hold and resume, or an ICE restart) are answered
// keeping the hold (RFC 3264 section 6: what this end wants, intersected
// with the reverse of the offer's): sendonly to sendrecv, inactive to
// sendonly; a Restart of the holder keeps offering sendonly; only Resume's
// exchange ends the hold.
func TestHoldPeerOffersKeepHold(t *testing.T) {
	for _, mode := range holdModes(t)[:3] {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, b, _, _ := capturePair(t, mode.ca, mode.cb, nil)
			hold, err := a.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exchange(ctx, t, a, b, hold)

			// The held end holds too: neither sends.
			bHold, err := b.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ans := exchange(ctx, t, b, a, bHold)
			if d := audioOf(t, ans).Direction; d != sdp.Inactive {
				t.Fatalf("the holder answered the peer's hold with %s, want inactive", d)
			}
			if d, e := a.Direction(), b.Direction(); d != sdp.Inactive || e != sdp.Inactive {
				t.Fatalf("both holding: %s, %s; want inactive at both", d, e)
			}
			writeHeld(t, a, 3)
			writeHeld(t, b, 3)

			// The peer resumes; this end still holds.
			bResume, err := b.Resume(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ans = exchange(ctx, t, b, a, bResume)
			if d := audioOf(t, ans).Direction; d != sdp.SendOnly {
				t.Fatalf("the holder answered the peer's resume with %s, want sendonly", d)
			}
			if d, e := a.Direction(), b.Direction(); d != sdp.SendOnly || e != sdp.RecvOnly {
				t.Fatalf("after the peer's resume: %s, %s; want sendonly, recvonly", d, e)
			}
			sendRecv(t, a, b, 3)
			writeHeld(t, b, 3)

			if mode.ca.NoICE {
				// The peer's re-offer sent again gets the same answer.
				again, err := a.Answer(ctx, bResume)
				if err != nil || again != ans {
					t.Fatalf("the peer's resume sent again: %v, same answer %t", err, again == ans)
				}
			} else {
				// A restart from either end keeps the hold.
				restart, err := b.Restart(ctx)
				if err != nil {
					t.Fatal(err)
				}
				ans = exchange(ctx, t, b, a, restart)
				if d := audioOf(t, ans).Direction; d != sdp.SendOnly {
					t.Fatalf("the holder answered the peer's restart with %s, want sendonly", d)
				}
				restart, err = a.Restart(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if d := audioOf(t, restart).Direction; d != sdp.SendOnly {
					t.Fatalf("the holder's restart offers %s, want sendonly", d)
				}
				exchange(ctx, t, a, b, restart)
				if d, e := a.Direction(), b.Direction(); d != sdp.SendOnly || e != sdp.RecvOnly {
					t.Fatalf("after restarts: %s, %s; want sendonly, recvonly", d, e)
				}
				waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
				sendRecv(t, a, b, 3)
			}

			resume, err := a.Resume(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exchange(ctx, t, a, b, resume)
			if d, e := a.Direction(), b.Direction(); d != sdp.SendRecv || e != sdp.SendRecv {
				t.Fatalf("after Resume: %s, %s; want sendrecv at both", d, e)
			}
			sendRecv(t, b, a, 3)
			sendRecv(t, a, b, 3)
		})
	}
}

// TestHoldRollback: a hold offer is abandoned by Rollback (the call is
// not on hold, an answer to it is refused, Hold may be called again), is
// rolled back by itself when no answer meets it within RestartTimeout,
// and when it crosses the peer's offer the glare rule of Answer decides.
func TestHoldRollback(t *testing.T) {
	for _, mode := range holdModes(t)[:3:3] {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ca := mode.ca
			ca.RestartTimeout = 200 * time.Millisecond
			a, b, _, _ := capturePair(t, ca, mode.cb, nil)

			hold, err := a.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Rollback(); err != nil {
				t.Fatalf("Rollback of a hold: %v", err)
			}
			if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingStable || d != sdp.SendRecv {
				t.Fatalf("after Rollback: %s, %s; want stable, sendrecv", s, d)
			}
			late, err := b.Answer(ctx, hold)
			if err != nil {
				t.Fatal(err)
			}
			var se *securecall.StateError
			if err := a.SetAnswer(ctx, late); !errors.As(err, &se) {
				t.Fatalf("SetAnswer to a rolled-back hold: %v, want a StateError", err)
			}
			if d := a.Direction(); d != sdp.SendRecv {
				t.Fatalf("Direction after the refused answer: %s", d)
			}
			// b took the hold that a abandoned: a Resume, although a does
			// not hold the call, brings b back to sendrecv.
			if d := b.Direction(); d != sdp.RecvOnly {
				t.Fatalf("b after answering the abandoned hold: %s", d)
			}
			resume, err := a.Resume(ctx)
			if err != nil {
				t.Fatalf("Resume of a call this end does not hold: %v", err)
			}
			exchange(ctx, t, a, b, resume)
			if d, e := a.Direction(), b.Direction(); d != sdp.SendRecv || e != sdp.SendRecv {
				t.Fatalf("after the Resume: %s, %s; want sendrecv at both", d, e)
			}
			sendRecv(t, b, a, 3)

			// Unanswered: rolled back by itself.
			if _, err := a.Hold(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, func() bool { return a.SignalingState() == securecall.SignalingStable })
			if d := a.Direction(); d != sdp.SendRecv {
				t.Fatalf("Direction after the unanswered hold rolled back: %s", d)
			}

			// Glare: a made the call's first offer and wins.
			aHold, err := a.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			bHold, err := b.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Answer(ctx, bHold); !errors.Is(err, securecall.ErrGlare) {
				t.Fatalf("the winner's Answer to a crossing hold: %v, want ErrGlare", err)
			}
			exchange(ctx, t, a, b, aHold)
			if d, e := a.Direction(), b.Direction(); d != sdp.SendOnly || e != sdp.RecvOnly {
				t.Fatalf("after the glare: %s, %s; want sendonly, recvonly", d, e)
			}
			if s := b.SignalingState(); s != securecall.SignalingStable {
				t.Fatalf("the loser's signaling: %s", s)
			}
			sendRecv(t, a, b, 3)
			writeHeld(t, b, 2)
		})
	}
}

// TestHoldRefused: Hold and Resume before the call started and while
// another description is pending are refused with a *StateError, after
// Close with ErrClosed, and change nothing: the next offer's version is
// the next one. Hold on a held call and Resume on one not held are not
// refused: each offers what this end wants again.
func TestHoldRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var se *securecall.StateError
	fresh, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(context.Context) (string, error){fresh.Hold, fresh.Resume} {
		if _, err := f(ctx); !errors.As(err, &se) {
			t.Fatalf("before the call started: %v, want a StateError", err)
		}
	}
	if s := fresh.SignalingState(); s != securecall.SignalingStable {
		t.Fatalf("signaling %s", s)
	}
	fresh.Close()
	if _, err := fresh.Hold(ctx); !errors.Is(err, securecall.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}

	a, b, offer, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := parse(t, hold).Origin.SessionVersion; v != parse(t, *offer).Origin.SessionVersion+1 {
		t.Fatalf("hold's version %d, the first offer's %d", v, parse(t, *offer).Origin.SessionVersion)
	}
	for name, f := range map[string]func(context.Context) (string, error){"Hold": a.Hold, "Resume": a.Resume, "Restart": a.Restart} {
		if _, err := f(ctx); !errors.As(err, &se) {
			t.Fatalf("%s while the hold awaits its answer: %v, want a StateError", name, err)
		}
	}
	exchange(ctx, t, a, b, hold)
	if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingStable || d != sdp.SendOnly {
		t.Fatalf("after the refusals: %s, %s", s, d)
	}
	again, err := a.Hold(ctx)
	if err != nil {
		t.Fatalf("Hold on a held call: %v", err)
	}
	if m := audioOf(t, again); m.Direction != sdp.SendOnly {
		t.Fatalf("Hold on a held call offers %s", m.Direction)
	}
	exchange(ctx, t, a, b, again)
	if d := a.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction after the second hold: %s", d)
	}
	resume, err := a.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := parse(t, resume).Origin.SessionVersion; v != parse(t, again).Origin.SessionVersion+1 {
		t.Fatalf("resume's version %d, the hold's %d", v, parse(t, again).Origin.SessionVersion)
	}
	exchange(ctx, t, a, b, resume)
	a.Close()
	for _, f := range []func(context.Context) (string, error){a.Hold, a.Resume} {
		if _, err := f(ctx); !errors.Is(err, securecall.ErrClosed) {
			t.Fatalf("after Close: %v, want ErrClosed", err)
		}
	}
}

// TestHoldAnswerMovesMediaNoICE: without ICE, the answer to this end's
// hold may move the peer's media as a re-offer may: from SetAnswer on,
// RTP goes to the answer's address. An answer whose address the call
// would not take is refused and changes nothing: the hold still awaits
// its answer and media goes on to the old address.
func TestHoldAnswerMovesMediaNoICE(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer := &movingPeer{key: bytes.Repeat([]byte{0x5a}, 30)}
	old, moved := peerAddr{rtp: listenLoopback(t)}, peerAddr{rtp: listenLoopback(t)}
	call, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	_, key := answerNoICE(ctx, t, call, peer.offer(1, old))
	if err := call.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	recv, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	expectRTP(t, call, 1, recv, old.rtp, nil)

	hold, err := call.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m := audioOf(t, hold); m.HasICE() || m.Direction != sdp.SendOnly || len(m.Crypto) != 1 || string(m.Crypto[0].Key) != string(key) {
		t.Fatalf("hold offer without ICE: ICE %t, direction %s, crypto %v", m.HasICE(), m.Direction, m.Crypto)
	}
	bad := peer.offer(2, peerAddr{host: "::1", rtp: listenLoopback(t)})
	if err := call.SetAnswer(ctx, bad); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("SetAnswer moving to an address of another family: %v, want ErrNegotiation", err)
	}
	if s, d := call.SignalingState(), call.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
		t.Fatalf("after the refused answer: %s, %s", s, d)
	}
	expectRTP(t, call, 2, recv, old.rtp, nil)

	if err := call.SetAnswer(ctx, peer.offer(2, moved)); err != nil {
		t.Fatalf("SetAnswer that moves the peer's media: %v", err)
	}
	if d := call.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction after the hold's answer: %s, want sendonly", d)
	}
	expectRTP(t, call, 3, recv, moved.rtp, old.rtp)
	if p := call.Path(); p.Remote.Address != udpAddr(moved.rtp) {
		t.Fatalf("path after the move: %+v", p)
	}
}

// TestHoldAnswerActpass: an answer to a hold that says a=setup:actpass (as
// baresip 1.0 answers re-offers) is taken: the DTLS association both ends
// keep fixes the roles.
func TestHoldAnswerActpass(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := b.Answer(ctx, hold)
	if err != nil {
		t.Fatal(err)
	}
	ans = rewrite(t, ans, func(d *sdp.Description) { d.Media[0].Setup = sdp.SetupActpass })
	if err := a.SetAnswer(ctx, ans); err != nil {
		t.Fatalf("SetAnswer of an actpass answer to a hold: %v", err)
	}
	if d := a.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction %s, want sendonly", d)
	}
	sendRecv(t, a, b, 3)
}

// TestHoldNewFingerprintRefused: a started call keeps its DTLS association
// (RFC 8842 section 5.5: a new fingerprint asks for a new one, which a
// Call does not make), so the answer to a Hold that gives the peer's
// fingerprint anew is refused with an error wrapping sdp.ErrNegotiation
// and changes nothing, as one with new ICE credentials is; so is the
// peer's own hold offer with a new fingerprint.
func TestHoldNewFingerprintRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	newPrint := func(d *sdp.Description) {
		for i := range d.Media {
			for j := range d.Media[i].Fingerprints {
				v := append([]byte(nil), d.Media[i].Fingerprints[j].Value...)
				v[0] ^= 0xff
				d.Media[i].Fingerprints[j].Value = v
			}
		}
	}

	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := b.Answer(ctx, hold)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, rewrite(t, ans, newPrint)); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("SetAnswer of an answer to a hold with a new DTLS fingerprint: %v, want ErrNegotiation", err)
	}
	if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
		t.Fatalf("after the refused answer: signaling %s, direction %s; want have-local-offer, sendrecv", s, d)
	}
	if err := a.SetAnswer(ctx, ans); err != nil {
		t.Fatalf("the right answer after the refused one: %v", err)
	}

	resume, err := a.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Answer(ctx, rewrite(t, resume, newPrint)); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("Answer to a resume offer with a new DTLS fingerprint: %v, want ErrNegotiation", err)
	}
	if d := b.Direction(); d != sdp.RecvOnly {
		t.Fatalf("the held end's direction after the refused offer: %s, want recvonly", d)
	}
	exchange(ctx, t, a, b, resume)
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

// TestReofferActpassKeepsDTLSRole: a later offer that says
// a=setup:actpass (a Restart's, or a SIP peer's re-INVITE) is answered
// with the DTLS role this end has in the association both ends keep
// (RFC 8842 section 5.3), not with a fresh choice of active: the DTLS
// server of the call answers passive, so that the answer does not ask
// the peer for a new association with the roles swapped.
func TestReofferActpassKeepsDTLSRole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _, answer := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	if s := audioOf(t, *answer).Setup; s != sdp.SetupActive {
		t.Fatalf("the first answer says setup %s, want active (a is the DTLS server)", s)
	}
	re, err := b.Resume(ctx) // a later offer of sendrecv, as a SIP peer's re-INVITE
	if err != nil {
		t.Fatal(err)
	}
	actpass := rewrite(t, re, func(d *sdp.Description) { d.Media[0].Setup = sdp.SetupActpass })
	ans, err := a.Answer(ctx, actpass)
	if err != nil {
		t.Fatal(err)
	}
	if s := audioOf(t, ans).Setup; s != sdp.SetupPassive {
		t.Fatalf("the DTLS server answered a re-offer of actpass with setup %s, want passive", s)
	}
	if err := b.SetAnswer(ctx, ans); err != nil {
		t.Fatal(err)
	}
	restart, err := b.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans, err = a.Answer(ctx, restart)
	if err != nil {
		t.Fatal(err)
	}
	if s := audioOf(t, ans).Setup; s != sdp.SetupPassive {
		t.Fatalf("the DTLS server answered a restart offer (setup %s) with setup %s, want passive", audioOf(t, restart).Setup, s)
	}
	if err := b.SetAnswer(ctx, ans); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

// TestHoldLateAnswerCopyRefused: a late copy of an earlier answer (its o=
// version below the peer's last description: a SIP 200 OK retransmitted
// while its ACK was lost, arriving after the next re-INVITE went out) is
// refused with a *StateError and changes nothing, as a late copy of an
// earlier offer is: it was taken as the answer to the pending Resume, so
// the call kept sendonly as if the peer still held, and the genuine answer
// was then refused.
func TestHoldLateAnswerCopyRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holdAnswer := exchange(ctx, t, a, b, hold) // recvonly
	resume, err := a.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(ctx, t, a, b, resume)
	resume, err = a.Resume(ctx) // Resume again: each states what this end wants
	if err != nil {
		t.Fatal(err)
	}
	ans, err := b.Answer(ctx, resume)
	if err != nil {
		t.Fatal(err)
	}
	var se *securecall.StateError
	if err := a.SetAnswer(ctx, holdAnswer); !errors.As(err, &se) {
		t.Fatalf("SetAnswer of a late copy of the hold's answer while a Resume awaits its answer: %v (direction now %s), want a *StateError",
			err, a.Direction())
	}
	if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
		t.Fatalf("after the late copy: signaling %s, direction %s; want have-local-offer, sendrecv", s, d)
	}
	if err := a.SetAnswer(ctx, ans); err != nil {
		t.Fatalf("the genuine answer after the late copy: %v", err)
	}
	if d := a.Direction(); d != sdp.SendRecv {
		t.Fatalf("direction %s after the resume's answer, want sendrecv", d)
	}
}
