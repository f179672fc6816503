package securecall

import (
	"errors"
	"fmt"

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

// attest tells the peer this side's end of the current path. It is called
// when the media session starts and on every path change.
func (c *Call) attest() {
	c.mu.Lock()
	s, keying := c.session, c.agreement.Keying
	c.mu.Unlock()
	p := c.ice.Path()
	if s == nil || !usesKMS(keying) || p.Local.Type == "" {
		return
	}
	a := media.Attestation{SSRC: c.ssrc, Type: p.Local.Type, Protocol: p.Local.Protocol, Address: p.Local.Address}
	if err := s.Attest(a); err != nil {
		c.log.Debug("securecall: attest the path", "err", err)
	}
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
	c.cancel(fmt.Errorf("securecall: %w", err))
	c.setState(StateFailed)
}
