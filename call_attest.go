package securecall

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// Path attestation (kms and hybrid keying): each end tells the other,
// inside SRTCP, which local candidate it uses on the selected path, so
// that a DirectOnly call can refuse a peer that relays even when its
// relay looks like a direct address. See ice.Path and media.Session.Attest.

// attestConfig makes the media session report the peer's attestations,
// in the keying modes whose SRTCP keys authenticate them.
func (c *Call) attestConfig(mcfg *media.Config, keying sdp.Keying) {
	if usesKMS(keying) {
		mcfg.OnPeerAttestation = c.peerAttested
	}
}

// attestationWait bounds how long a DirectOnly call in kms or hybrid
// keying waits for the peer's attestation before Connect returns, so that
// no media is sent to a peer that attests a relay. A peer that attests
// nothing within it (one built before attestations) is unattested, and
// the call goes on; it is the only cost of the wait.
const attestationWait = 2 * time.Second

// attest tells the peer this side's end of the current path, on every
// path change once the media session is up.
func (c *Call) attest() {
	c.mu.Lock()
	s, keying := c.session, c.agreement.Keying
	c.mu.Unlock()
	if s != nil && usesKMS(keying) {
		c.attestOn(s)
	}
}

func (c *Call) attestOn(s *media.Session) {
	p := c.ice.Path()
	if p.Local.Type == "" {
		return
	}
	a := media.Attestation{SSRC: c.ssrc, Type: p.Local.Type, Protocol: p.Local.Protocol, Address: p.Local.Address}
	if err := s.Attest(a); err != nil {
		c.log.Debug("securecall: attest the path", "err", err)
	}
}

// startAttesting runs when the media session is up, before the call is
// connected: it attests this side's end of the path and, for a DirectOnly
// call, waits (up to attestationWait) for the peer's attestation, so that
// a peer that attests a relay fails Connect with the policy error.
func (c *Call) startAttesting(s *media.Session, keying sdp.Keying) error {
	if !usesKMS(keying) {
		return nil
	}
	c.attestOn(s)
	if c.cfg.ICE.Policy != ice.DirectOnly {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, attestationWait)
	defer cancel()
	attested, err := s.AwaitPeerAttestation(ctx)
	if cause := context.Cause(c.ctx); cause != nil && errors.Is(cause, ice.ErrPolicy) {
		return cause
	}
	if err != nil {
		return fmt.Errorf("securecall: connect: %w", err)
	}
	if !attested {
		c.log.Debug("securecall: the peer attested nothing; its end of the path is unattested")
	}
	return nil
}

// peerAttested hands the peer's attestation to ICE; under DirectOnly one
// that names a relay or an address outside the site networks fails the
// call with the policy error.
func (c *Call) peerAttested(a media.Attestation) {
	err := c.ice.NotePeerAttestation(ice.CandidateInfo{Type: a.Type, Address: a.Address, Protocol: a.Protocol})
	switch {
	case err == nil:
		return
	case !errors.Is(err, ice.ErrPolicy):
		c.log.Debug("securecall: ignored the peer's path attestation", "err", err)
		return
	}
	c.log.Warn("securecall: the peer's path attestation breaks the DirectOnly policy; the call fails", "err", err)
	c.failFromSession(fmt.Errorf("securecall: %w", err)) // runs on the session's reader
}
