package ice

import (
	"net/netip"
	"time"

	"github.com/securecall/securecall/sdp"
)

// CandidateInfo describes one end of a candidate pair.
type CandidateInfo struct {
	// Type is host, srflx, prflx or relay.
	Type sdp.CandidateType
	// Address is the candidate's transport address.
	Address netip.AddrPort
	// Protocol is "udp" or "tcp".
	Protocol string
}

// Path is a snapshot of the selected candidate pair.
type Path struct {
	// Local and Remote are the selected pair's candidates.
	Local, Remote CandidateInfo
	// Relay is the URL of the TURN server that relays the local side, or
	// empty when the local candidate is not a relay.
	Relay string
	// RTT is the round-trip time of the most recent connectivity check
	// answered on this Transport, which after connecting is the selected
	// path's nomination or consent check; zero before any (and always zero
	// without ICE).
	RTT time.Duration
	// RemoteLite reports that the peer is an ICE-Lite agent (a border
	// element or gateway with a known address, "a=ice-lite"): it sends no
	// connectivity checks and this side controls.
	RemoteLite bool
	// NoICE reports a path to a peer that speaks no ICE (see [Direct]): no
	// connectivity check ran, Local is this side's socket and Remote is
	// where media goes, the peer's signalled "c="/"m=" address until a
	// packet from elsewhere authenticated.
	NoICE bool
	// Latched reports, without ICE, that Remote was learnt from a packet
	// that authenticated under SRTP or SRTCP (symmetric RTP) and differs
	// from the signalled address; Remote.Type is then prflx.
	Latched bool

	// PeerAttested reports whether the peer has attested its own end of
	// the path (Transport.NotePeerAttestation: in kms and hybrid keying a
	// securecall peer does so inside SRTCP, authenticated by the call's
	// keys). When false the peer is unattested: a browser, a SIP phone or
	// any peer in dtls keying says nothing, and only Remote, as this side
	// sees it, is known.
	PeerAttested bool
	// PeerLocal is the peer's local candidate as it attested it: its type
	// (relay when it sends through TURN) and its address as the peer sees
	// it. Zero unless PeerAttested.
	PeerLocal CandidateInfo
	// AttestationMatches reports whether PeerLocal's address and protocol
	// are Remote's: nothing between the peers rewrote the peer's address.
	// It is false through a NAT (the peer attests its host address, this
	// side sees the mapped one) and through a relay the peer did not
	// disclose; false unless PeerAttested.
	AttestationMatches bool
}

// Direct reports whether neither side of the path is a relay candidate.
func (p Path) Direct() bool {
	return p.Local.Type != sdp.CandidateRelay && p.Remote.Type != sdp.CandidateRelay
}
