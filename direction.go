package securecall

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/securecall/securecall/sdp"
)

// This file holds what a Call does with the media direction and the codec
// that each offer/answer exchange agrees (RFC 3264): a SIP peer holds a
// call with a re-offer of sendonly or inactive, resumes it with sendrecv,
// and may move the call to another codec. call.go calls in here at a few
// hooks: startedLocked and the ends of answerAgain and SetAnswer apply an
// agreement, the checks before them keep the codec, and WriteRTP and
// WriteSample ask withhold.

// directionState is what the packet path knows of the agreed direction:
// one atomic load per packet written.
type directionState struct {
	sendOff  atomic.Bool   // the agreement does not let this end send RTP
	withheld atomic.Uint64 // RTP packets WriteRTP and WriteSample did not send
}

// withhold reports, and counts, an RTP packet that this end must not send:
// the agreed direction is recvonly or inactive.
func (c *Call) withhold() bool {
	if !c.dir.sendOff.Load() {
		return false
	}
	c.dir.withheld.Add(1)
	return true
}

// Direction returns this end's media direction as the last completed
// offer/answer exchange agreed it: sdp.SendRecv; sdp.RecvOnly when the peer
// holds the call (its offer said sendonly, or its answer to this end's offer
// did, or, without ICE, its address is 0.0.0.0); sdp.SendOnly when the peer
// only listens (it said recvonly) or this end holds the call ([Call.Hold]);
// sdp.Inactive when neither end sends (both hold the call, say). It is empty
// before Answer or SetAnswer. A new direction holds from the moment Answer or
// SetAnswer returns.
//
// While the direction is recvonly or inactive, WriteRTP and WriteSample
// put no RTP on the wire (RFC 3264 section 5.1): they return nil, so that
// an application's media loop runs on through a hold, and count each
// packet in [Stats].RTPWithheld; WriteSample keeps the stream's clock
// running, so that the first packet after the resume carries the time
// that passed and starts a talkspurt. RTCP flows in every direction.
// Received RTP is delivered whatever the direction: it authenticated, so
// only the peer can have sent it, even if its description said it would
// not.
func (c *Call) Direction() sdp.Direction {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agreement.Direction
}

// applyAgreementLocked puts the direction and codecs of agreement a into
// effect (c.mu held): for the exchange that starts the call and for every
// later one, whose other fields the call keeps from its start.
func (c *Call) applyAgreementLocked(a sdp.Agreement) {
	if a.NoICE && onHold(a) {
		// The old way to hold (RFC 3264 section 8.4), still sent by SIP
		// gear: a connection address of 0.0.0.0 takes no media, whatever
		// the direction says. With ICE, 0.0.0.0 is a browser's usual
		// placeholder and means nothing.
		a.Direction = sdp.DirectionOf(false, a.Direction.Receives())
	}
	c.agreement.Direction, c.agreement.Codecs = a.Direction, a.Codecs
	c.dir.sendOff.Store(!a.Direction.Sends())
	c.sip.agree(a.Codecs)
	if c.samples != nil && len(a.Codecs) > 0 {
		// The payload type is in range: the descriptions checked it.
		_ = c.samples.SetPayloadType(a.Codecs[0].PayloadType)
	}
	if c.session != nil && len(a.Codecs) > 0 && c.cfg.RTCP.Codec == "" {
		// The quality estimate rates the codec in use (rtcpConfig set the
		// first one's at the start).
		c.session.SetCodec(a.Codecs[0].Name)
	}
}

// keepCodecLocked orders the codecs of a later exchange of the started
// call (c.mu held) so that the first, the one to send, is the call's
// codec when the exchange lists it: a re-offer in another order does not
// move the call. When the exchange lists another codec at the call's RTP
// clock rate only (PCMU and PCMA, say), the first such comes first and
// the call switches to it. Codecs at other clock rates alone are refused
// with an error wrapping sdp.ErrNegotiation: the media session's RTCP
// (jitter, sender report timestamps) and WriteSample's timestamps run at
// the clock rate the call started with.
func (c *Call) keepCodecLocked(op string, a *sdp.Agreement) error {
	if !c.started || len(c.agreement.Codecs) == 0 {
		return nil
	}
	cur := c.agreement.Codecs[0]
	i := slices.IndexFunc(a.Codecs, cur.SameCodec)
	if i < 0 {
		i = slices.IndexFunc(a.Codecs, func(f sdp.Format) bool { return f.ClockRate == cur.ClockRate })
	}
	if i < 0 {
		return fmt.Errorf("securecall: %s: the description changes the call's codec %s to another RTP clock rate (%v), which a started call keeps: %w",
			op, cur, a.Codecs, sdp.ErrNegotiation)
	}
	codecs := make([]sdp.Format, 0, len(a.Codecs))
	codecs = append(codecs, a.Codecs[i])
	codecs = append(codecs, a.Codecs[:i]...)
	a.Codecs = append(codecs, a.Codecs[i+1:]...)
	return nil
}

// answerKeeping is answerTo for a later offer of the started call: the
// answer lists the codec keepCodecLocked chose first, and to an offer of
// a=setup:actpass (a Restart's, or a SIP peer's re-offer) it says the DTLS
// role this end has in the association both ends keep (RFC 8842 section
// 5.3), where a first answer would choose active.
func (c *Call) answerKeeping(remote *sdp.Description, agreement *sdp.Agreement) func(sdp.Capabilities) (*sdp.Description, error) {
	build := answerTo(remote, agreement)
	return func(caps sdp.Capabilities) (*sdp.Description, error) {
		d, err := build(caps)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		err = c.keepCodecLocked("Answer", agreement)
		role := c.agreement.LocalSetup
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if m := firstAudio(d); m != nil {
			m.Formats = append([]sdp.Format(nil), agreement.Codecs...)
			if om := firstAudio(remote); role != "" && m.Setup != "" && om != nil && om.Setup == sdp.SetupActpass {
				m.Setup, agreement.LocalSetup = role, role
			}
		}
		return d, nil
	}
}
