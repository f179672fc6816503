package securecall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// This file holds what a call without ICE does with a later description
// that moves the peer's media (a re-INVITE from a border element after a
// transfer, or from a phone that changed network): the same session, a
// new o= version and a new c=/m= address. The Direct transport is pointed
// at the new address through its own rules (ice.Direct.CheckRemote), and
// an address it refuses fails the exchange before anything changes.

// directDest is where the Direct transport of a call without ICE sends,
// as the signaling last said. mu also serializes the transport's Connect
// (on the connect goroutine) with the moves of later descriptions, so
// that a move made before Connect ran is the address Connect takes.
type directDest struct {
	mu        sync.Mutex
	moved     bool // a later description gave the addresses below
	rtp, rtcp netip.AddrPort
	mux       bool
	connected bool // Connect has succeeded on the Direct
}

// onHold reports a description whose address is the unspecified one: a
// peer on hold the old way (RFC 3264 section 8.4), which says nothing
// about where its media is; the stream stays where it goes.
func onHold(a sdp.Agreement) bool { return a.RemoteRTP.IsValid() && a.RemoteRTP.Addr().IsUnspecified() }

// checkMoveLocked refuses (c.mu held) a later description of a call
// without ICE whose peer addresses the Direct transport would not take:
// one off the site under DirectOnly with the ice package's policy error,
// as a first offer there is refused, any other with an error wrapping
// sdp.ErrNegotiation.
func (c *Call) checkMoveLocked(op string, a sdp.Agreement) error {
	d := c.sip.direct
	if d == nil || !c.started || !a.NoICE || onHold(a) {
		return nil
	}
	err := d.CheckRemote(a.RemoteRTP, a.RemoteRTCP, a.RTCPMux)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ice.ErrPolicy):
		return fmt.Errorf("securecall: %s: %w", op, err)
	}
	return fmt.Errorf("securecall: %s: the description moves the peer's media where this call cannot send: %w: %w",
		op, err, sdp.ErrNegotiation)
}

// moveNoICE points the Direct transport of a started call without ICE at
// the peer's addresses in agreement a, which checkMoveLocked has let
// through. Its only failure is a transport closed meanwhile.
func (c *Call) moveNoICE(op string, a sdp.Agreement) error {
	c.mu.Lock()
	d, started := c.sip.direct, c.started
	c.mu.Unlock()
	if d == nil || !started || !a.NoICE || onHold(a) {
		return nil
	}
	m := &c.sip.dest
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.connected {
		if err := d.Move(a.RemoteRTP, a.RemoteRTCP, a.RTCPMux); err != nil {
			return fmt.Errorf("securecall: %s: %w", op, err)
		}
	}
	m.moved, m.rtp, m.rtcp, m.mux = true, a.RemoteRTP, a.RemoteRTCP, a.RTCPMux
	return nil
}

// connectDirect connects the Direct transport d to the peer of agreement
// a, or to where a later description has moved it meanwhile.
func (c *Call) connectDirect(d *ice.Direct, a sdp.Agreement) (net.Conn, error) {
	m := &c.sip.dest
	m.mu.Lock()
	defer m.mu.Unlock()
	rtp, rtcp, mux := a.RemoteRTP, a.RemoteRTCP, a.RTCPMux
	if m.moved {
		rtp, rtcp, mux = m.rtp, m.rtcp, m.mux
	}
	conn, err := d.Connect(c.ctx, rtp, rtcp, mux)
	m.connected = err == nil
	return conn, err
}

// keepRTCPLocked refuses (c.mu held) a later description of a started
// call with ICE that changes whether RTCP is multiplexed: the call's ICE
// transport runs RTCP on component 1, or on a component 2 of its own,
// for its whole life, so an answer could not do what it said. A call
// without ICE follows such a change (moveNoICE).
func (c *Call) keepRTCPLocked(op string, a sdp.Agreement) error {
	if !c.started || c.sip.direct != nil || a.NoICE || a.RTCPMux == c.agreement.RTCPMux {
		return nil
	}
	was := "multiplexes RTCP (rtcp-mux)"
	if !c.agreement.RTCPMux {
		was = "runs RTCP on ICE component 2"
	}
	return fmt.Errorf("securecall: %s: the description changes RTCP multiplexing, and this call %s for its whole life: %w",
		op, was, sdp.ErrNegotiation)
}

// checkLaterLocked runs (c.mu held) the checks of a later description of
// the started call, offer or answer, before anything changes: the keys it
// keeps (SDES lines, DTLS fingerprints), where its media may go without
// ICE, its RTCP layout, and its codec, which it may reorder in a. On the
// exchange that starts the call each is a no-op.
func (c *Call) checkLaterLocked(op string, a *sdp.Agreement) error {
	for _, check := range []func(string, sdp.Agreement) error{c.checkSDESKept, c.checkDTLSKept, c.checkMoveLocked, c.keepRTCPLocked} {
		if err := check(op, *a); err != nil {
			return err
		}
	}
	return c.keepCodecLocked(op, a)
}
