package securecall

import (
	"context"
	"fmt"
	"time"

	"github.com/securecall/securecall/sdp"
)

// This file holds this end's own hold (RFC 3264 section 8.4): Hold and
// Resume make a later offer of the started call that keeps its ICE session
// (or, without ICE, its addresses), its keys and its codec, and changes
// only the direction. call.go calls in here at a few hooks: SetAnswer
// hands the answer to such an offer to setReofferAnswerLocked, the
// answers of answerAgain and the offers of Restart keep the hold.

// holdState is what a Call knows about its own hold.
type holdState struct {
	// holding: this end's Hold exchange has completed and no Resume
	// exchange since.
	holding bool
	// offer is the pending offer of Hold or Resume, while it is c.offer;
	// hold says which.
	offer *sdp.Description
	hold  bool
}

// Hold puts the peer on hold: it returns a later offer of the call's
// session (o= version one up) that says sendonly and keeps everything
// else of this end's last description: the ICE credentials and
// candidates (or, without ICE, the addresses), the fingerprint and DTLS
// role, the key reference, the SDES crypto line, and the agreed codecs
// with the call's codec first; and it carries nothing the last exchange
// did not agree: the same media sections and protos, a mid and BUNDLE
// group only if the peer's description had them, no ICE toward a peer
// without ICE (see sdp.NewLaterOffer). Send it to the peer (a SIP re-INVITE) and
// pass its answer to SetAnswer, or abandon it with Rollback; an offer
// that no answer meets within Config.RestartTimeout is rolled back by
// itself, as a restart offer is. Nothing is restarted.
//
// From the answer on, this end holds the call: the agreed direction is
// sendonly, so that WriteRTP and WriteSample still send (music on hold,
// an announcement) and nothing arrives, or inactive if the peer holds the
// call too (see [Call.Direction]). While this end holds, its answers to
// the peer's later offers keep the hold (RFC 3264 section 6: what this
// end wants, sending at most, intersected with the reverse of the
// offer's), and so do its Restart offers, until Resume's exchange
// completes. When the hold offer crosses an offer of the peer,
// Answer resolves the glare as for any other offer (see [ErrGlare]): a
// hold that loses is rolled back and the call is not on hold.
//
// Hold on a call this end holds already makes another hold offer, and
// Resume on one it does not hold another sendrecv offer: each states what
// this end wants, so that after an exchange the peer may have taken but
// this end rolled back (a re-INVITE that timed out), the next Hold or
// Resume brings both ends back in line.
//
// Hold fails with a *StateError and changes nothing when the call has not
// started or has failed, or when a description is being made or awaits
// its answer; after a Restart that failed or was rolled back, the call
// has no ICE session to keep, and Hold fails the same way until a restart
// succeeds. After Close it returns ErrClosed.
func (c *Call) Hold(ctx context.Context) (string, error) {
	return c.reoffer(ctx, "Hold", true)
}

// Resume takes the peer off this end's hold: it returns a later offer
// like Hold's that says sendrecv; the hold ends when SetAnswer takes its
// answer, and the direction is then what the answer allows (recvonly if
// the peer holds the call itself). Rollback, and an answer that does not
// come within Config.RestartTimeout, leave the call as it was. Resume
// fails as Hold does.
func (c *Call) Resume(ctx context.Context) (string, error) {
	return c.reoffer(ctx, "Resume", false)
}

// reoffer makes the offer of Hold (hold set) or Resume.
func (c *Call) reoffer(ctx context.Context, op string, hold bool) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("securecall: %s: %w", op, err)
	}
	var (
		keying  sdp.Keying
		keyURI  string
		version uint64
		agreed  sdp.Agreement
		last    [2]*sdp.Description
	)
	err := c.begin(op, opLocalOffer, func() error {
		why := ""
		switch {
		case !c.started:
			why = "the call has not started; exchange an offer and an answer first"
		case c.failErr != nil:
			why = "the call has failed"
		case c.iceReset && c.sip.direct == nil:
			why = "a restart of this end replaced the ICE session, which a hold keeps; restart ICE first"
		}
		if why != "" {
			return &StateError{Op: op, State: c.state, Why: why}
		}
		keying, keyURI, version = c.keying, c.keyURI, c.version
		agreed = c.agreement
		agreed.Codecs = append([]sdp.Format(nil), c.agreement.Codecs...)
		last = [2]*sdp.Description{c.local, c.peer}
		return nil
	})
	if err != nil {
		return "", err
	}
	dir := sdp.SendRecv
	if hold {
		dir = sdp.SendOnly
	}
	d, text, err := c.describe(ctx, op, false, true, keying, keyURI, version+1, reofferOf(last[0], last[1], agreed, dir))
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.describedLocked(); err != nil {
		return "", err
	}
	c.offer, c.version = d, d.Origin.SessionVersion
	c.hold.offer, c.hold.hold = d, hold
	c.offerTimer = time.AfterFunc(c.cfg.RestartTimeout, func() { c.offerUnanswered(op, d) })
	return text, nil
}

// reofferOf returns the describe build step of a later offer that keeps
// the last exchange (this end's description last, the peer's peer) and
// its agreement a, and says dir: sdp.NewLaterOffer with the agreed codecs,
// the call's first, and the DTLS role the call has (RFC 4145: a role, not
// actpass, so that the peer keeps the association).
func reofferOf(last, peer *sdp.Description, a sdp.Agreement, dir sdp.Direction) func(sdp.Capabilities) (*sdp.Description, error) {
	return func(caps sdp.Capabilities) (*sdp.Description, error) {
		if len(a.Codecs) > 0 {
			caps.Codecs = a.Codecs
		}
		d, err := sdp.NewLaterOffer(last, peer, caps)
		if err != nil {
			return nil, err
		}
		m := firstAudio(d)
		m.Direction = dir
		if a.LocalSetup != "" {
			m.Setup = a.LocalSetup
		}
		return d, nil
	}
}

// keepsICELocked reports (c.mu held) whether offer, the pending offer, is
// one of Hold or Resume, whose answer keeps the ICE session.
func (c *Call) keepsICELocked(offer *sdp.Description) bool {
	return c.started && offer != nil && c.hold.offer == offer
}

// setReofferAnswerLocked completes SetAnswer (c.mu held; released on
// return) for the answer remote, with agreement a, to this end's Hold or
// Resume offer: it takes the direction and codecs and, without ICE, a
// moved address; it restarts nothing. An answer that gives the peer's
// ICE credentials anew is refused: only an offer restarts ICE (RFC 8839
// section 4.4.1.1.2), and this one kept the session.
func (c *Call) setReofferAnswerLocked(remote *sdp.Description, a sdp.Agreement) error {
	if !a.NoICE && (a.Remote.Ufrag != c.remoteICE.Ufrag || a.Remote.Pwd != c.remoteICE.Pwd) {
		c.mu.Unlock()
		return fmt.Errorf("securecall: SetAnswer: the answer gives new ICE credentials to an offer that keeps the ICE session: %w",
			sdp.ErrNegotiation)
	}
	offer := c.offer
	if a.NoICE && c.sip.direct != nil {
		// Nothing else may take up the exchange while the stream moves:
		// Answer waits, Rollback, SetAnswer and new offers are refused,
		// and the timer finds the offer taken.
		c.making, c.idle = true, make(chan struct{})
		c.offer = nil
		c.mu.Unlock()
		err := c.moveNoICE("SetAnswer", a)
		c.mu.Lock()
		c.doneMakingLocked()
		switch {
		case c.closed:
			c.mu.Unlock()
			return ErrClosed
		case err != nil:
			// Only a transport closed meanwhile fails a move.
			c.offer = offer
			c.mu.Unlock()
			return err
		}
	}
	c.signaling, _ = c.signaling.next(opRemoteAnswer)
	c.stopOfferTimerLocked()
	c.offer = nil
	c.hold.holding, c.hold.offer = c.hold.hold, nil
	c.takeSessionLocked(remote.Origin.SessionID)
	c.lastAnswerVersion, c.answerTaken = remote.Origin.SessionVersion, true
	c.local, c.peer = offer, remote
	c.applyAgreementLocked(a)
	c.mu.Unlock()
	return nil
}

// settleReanswerSetupLocked reads a=setup:actpass in the answer remote to
// this end's Hold or Resume offer (c.mu held) as the DTLS role the peer
// has: baresip 1.0 answers a re-offer so, which RFC 4145 does not allow in
// an answer, but the association both ends keep fixes the roles, and a
// re-offer's answer changes none of them.
func (c *Call) settleReanswerSetupLocked(offer, remote *sdp.Description) {
	if !c.keepsICELocked(offer) || !usesDTLS(c.keying) {
		return
	}
	peer := sdp.SetupActive
	if c.agreement.LocalSetup == sdp.SetupActive {
		peer = sdp.SetupPassive
	}
	for i := range remote.Media {
		if remote.Media[i].Setup == sdp.SetupActpass {
			remote.Media[i].Setup = peer
		}
	}
}

// keepHold wraps the describe build step of an answer to the peer's later
// offer so that, while this end holds the call, the answer and
// *agreement receive nothing: the answer's direction is what this end
// wants (sendonly) intersected with the reverse of the offer's.
func (c *Call) keepHold(build func(sdp.Capabilities) (*sdp.Description, error), agreement *sdp.Agreement) func(sdp.Capabilities) (*sdp.Description, error) {
	return func(caps sdp.Capabilities) (*sdp.Description, error) {
		d, err := build(caps)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		holding := c.hold.holding
		c.mu.Unlock()
		if !holding {
			return d, nil
		}
		agreement.Direction = sdp.DirectionOf(agreement.Direction.Sends(), false)
		if m := firstAudio(d); m != nil {
			m.Direction = agreement.Direction
		}
		return d, nil
	}
}

// restartOffer is the describe build step of Restart: sdp.NewLaterOffer
// from the last exchange, so that the offer keeps what that exchange agreed
// (its sections, mids and BUNDLE group, and RTCP apart when the call runs
// it on ICE component 2: the peer keeps its components for the call's
// life, keepRTCPLocked), with the new ICE credentials and candidates, and
// saying sendonly while this end holds the call.
func (c *Call) restartOffer(caps sdp.Capabilities) (*sdp.Description, error) {
	c.mu.Lock()
	holding, last, peer := c.hold.holding, c.local, c.peer
	c.mu.Unlock()
	d, err := sdp.NewLaterOffer(last, peer, caps)
	if err != nil {
		return nil, err
	}
	if holding {
		firstAudio(d).Direction = sdp.SendOnly
	}
	return d, nil
}
