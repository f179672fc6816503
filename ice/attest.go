package ice

import (
	"fmt"

	"github.com/securecall/securecall/sdp"
)

// NotePeerAttestation records what the peer says about its own end of the
// selected path: the type and address of its local candidate. Path
// reports it (PeerAttested, PeerLocal, AttestationMatches) until the next
// attestation or Restart.
//
// The Transport cannot authenticate an attestation; its caller must
// (securecall.Call takes them from SRTCP in kms and hybrid keying, where
// only a holder of the call key can produce one). Under DirectOnly a peer
// that attests a relay candidate, or an address outside
// Config.SiteNetworks, is refused like an off-site pair: the net.Conn from
// Connect fails from then on with the *PolicyError that is returned, and
// Path reports no path.
func (t *Transport) NotePeerAttestation(peer CandidateInfo) error {
	switch peer.Type {
	case sdp.CandidateHost, sdp.CandidateServerReflexive, sdp.CandidatePeerReflexive, sdp.CandidateRelay:
	default:
		return fmt.Errorf("ice: peer attestation: unknown candidate type %q", peer.Type)
	}
	if !peer.Address.IsValid() {
		return fmt.Errorf("ice: peer attestation: invalid address")
	}
	t.mu.Lock()
	t.peerLocal = &peer
	t.mu.Unlock()
	t.cfg.Logger.Debug("ice: peer attests its end of the path", "type", peer.Type, "address", peer.Address.String())
	if t.cfg.Policy != DirectOnly {
		return nil
	}
	var refusal *PolicyError
	switch {
	case peer.Type == sdp.CandidateRelay:
		refusal = &PolicyError{Address: peer.Address, Type: peer.Type, Reason: reasonAttestedRelay}
	case !t.site.contains(peer.Address.Addr()):
		refusal = &PolicyError{Address: peer.Address, Type: peer.Type, Reason: reasonAttestOffSite}
	default:
		return nil
	}
	t.refusePath(refusal)
	return refusal
}

// withAttestationLocked adds the peer's attestation to p, a selected path.
func (t *Transport) withAttestationLocked(p Path) Path {
	if t.peerLocal == nil || p.Local.Type == "" {
		return p
	}
	p.PeerAttested = true
	p.PeerLocal = *t.peerLocal
	p.AttestationMatches = p.PeerLocal.Address == p.Remote.Address && p.PeerLocal.Protocol == p.Remote.Protocol
	return p
}
