package securecall_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/sdp"
)

// withSessionID returns desc with its o= session id set to sid.
func withSessionID(t *testing.T, desc string, sid uint64) string {
	return rewrite(t, desc, func(d *sdp.Description) { d.Origin.SessionID = sid })
}

// TestSessionIDChangeSDES: a border element that passes on the o= line
// of whoever is behind it changes the session id inside one dialog after
// a transfer, while the media it anchors, and its SDES keys, stay. In sdes keying the session id
// names nothing the keys depend on, so a Call takes such a re-offer (and
// an answer to its own Hold) as the peer's session from then on: its
// versions count afresh. A late copy of the left session's offer is
// refused and changes nothing; the party coming back (the left session
// with a newer version) is taken again. Media flows throughout.
func TestSessionIDChangeSDES(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer := &movingPeer{key: bytes.Repeat([]byte{0x5d}, 30)}
	at := peerAddr{rtp: listenLoopback(t)}
	call, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	first := peer.offer(5, at) // o=- 4343 5
	_, key := answerNoICE(ctx, t, call, first)
	if err := call.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	recv, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	expectRTP(t, call, 1, recv, at.rtp, nil)

	// After the transfer: the new party's o= line, version 1.
	transferred := withSessionID(t, reoffer(t, peer.offer(1, at), 0, sdp.SendOnly), 7777)
	if _, err := call.Answer(ctx, transferred); err != nil {
		t.Fatalf("Answer to the re-offer with a new session id: %v", err)
	}
	if d := call.Direction(); d != sdp.RecvOnly {
		t.Fatalf("Direction after the new session's hold: %s, want recvonly", d)
	}
	// A late copy of the left session's offer changes nothing.
	if _, err := call.Answer(ctx, first); err == nil {
		t.Fatal("a late copy of the left session's offer was answered")
	}
	if d, s := call.Direction(), call.SignalingState(); d != sdp.RecvOnly || s != securecall.SignalingStable {
		t.Fatalf("after the late copy: %s, %s", d, s)
	}
	// The new session's versions count on.
	resumed := withSessionID(t, peer.offer(2, at), 7777)
	if _, err := call.Answer(ctx, resumed); err != nil {
		t.Fatalf("Answer to the new session's next version: %v", err)
	}
	expectRTP(t, call, 2, recv, at.rtp, nil)

	// The call's own Hold, answered from yet another session; the hold
	// itself coming back is no session of the peer's.
	hold, err := call.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Answer(ctx, hold); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("Answer to the call's own hold: %v, want ErrNegotiation", err)
	}
	if err := call.SetAnswer(ctx, withSessionID(t, peer.offer(1, at), 8888)); err != nil {
		t.Fatalf("SetAnswer from a new session: %v", err)
	}
	if d := call.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction after the hold's answer: %s", d)
	}
	// The first party back: its session, a newer version.
	if _, err := call.Answer(ctx, peer.offer(6, at)); err != nil {
		t.Fatalf("Answer to the first session's newer version: %v", err)
	}
	expectRTP(t, call, 3, recv, at.rtp, nil)
}

// TestSessionIDChangeRefusedKMS: in kms and hybrid keying the session ids
// name the call's two senders in the key schedule (docs/keyschedule.md),
// so a Call cannot take a later description with another session id: Answer
// and SetAnswer refuse it with a *SessionChangedError (errors.Is
// ErrSessionChanged) that names both ids, and the call is exactly as
// before: the same signaling state, direction and codec, the pending
// offer still awaiting its answer, and media flowing both ways.
func TestSessionIDChangeRefusedKMS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	for _, k := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(k), func(t *testing.T) {
			uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
			if err != nil {
				t.Fatal(err)
			}
			ca := securecall.Config{ICE: loopbackICE(), Keying: k, KeySource: alice, KeyURI: uri}
			cb := securecall.Config{ICE: loopbackICE(), Keying: k, KeySource: kmsClient(t, env, "bob")}
			a, b, offer, _ := capturePair(t, ca, cb, nil)
			sendRecv(t, a, b, 3)
			was := sessionID(t, *offer)
			check := func(err error, op string, want securecall.SignalingState) {
				t.Helper()
				var sc *securecall.SessionChangedError
				if !errors.As(err, &sc) || !errors.Is(err, securecall.ErrSessionChanged) {
					t.Fatalf("%s from another session: %v, want a *SessionChangedError", op, err)
				}
				if sc.Op != op || sc.Session != was || sc.Got != was+1 || sc.Keying != k || !strings.Contains(err.Error(), "new Call") {
					t.Fatalf("%s: %+v (%v)", op, sc, err)
				}
				if s, d, c := b.SignalingState(), b.Direction(), b.Codec(); s != want || d != sdp.SendRecv || c.Name != a.Codec().Name {
					t.Fatalf("after the refused %s: %s, %s, %s", op, s, d, c)
				}
				sendRecv(t, a, b, 3)
				sendRecv(t, b, a, 3)
			}

			hold, err := a.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Answer(ctx, withSessionID(t, hold, was+1))
			check(err, "Answer", securecall.SignalingStable)
			exchange(ctx, t, a, b, hold)
			resume, err := a.Resume(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exchange(ctx, t, a, b, resume)

			// b's own offer, answered from another session.
			bhold, err := b.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := a.Answer(ctx, bhold)
			if err != nil {
				t.Fatal(err)
			}
			err = b.SetAnswer(ctx, withSessionID(t, answer, was+1))
			var sc *securecall.SessionChangedError
			if !errors.As(err, &sc) || sc.Op != "SetAnswer" || sc.Session != was || sc.Got != was+1 {
				t.Fatalf("SetAnswer from another session: %v, want a *SessionChangedError", err)
			}
			if s, d := b.SignalingState(), b.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
				t.Fatalf("after the refused answer: %s, %s; want the hold still awaiting its answer", s, d)
			}
			if err := b.SetAnswer(ctx, answer); err != nil {
				t.Fatalf("SetAnswer of the real answer after the refusal: %v", err)
			}
			bresume, err := b.Resume(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exchange(ctx, t, b, a, bresume)
			sendRecv(t, a, b, 3)
			sendRecv(t, b, a, 3)
		})
	}
}

// TestSessionIDChangeDTLS: in dtls keying too the session id names no key,
// so a Call takes a re-offer with another session id that keeps the DTLS
// fingerprint (a border element passing on the o= line of the party
// behind it), and media flows after it.
func TestSessionIDChangeDTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, offer, _ := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, nil)
	sendRecv(t, a, b, 3)
	hold, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, withSessionID(t, hold, sessionID(t, *offer)+1))
	if err != nil {
		t.Fatalf("Answer to a re-offer with another session id: %v", err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	if d := b.Direction(); d != sdp.RecvOnly {
		t.Fatalf("held end's Direction %s, want recvonly", d)
	}
	sendRecv(t, a, b, 3)
}
