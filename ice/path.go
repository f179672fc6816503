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
	// path's nomination or consent check; zero before any.
	RTT time.Duration
}

// Direct reports whether neither side of the path is a relay candidate.
func (p Path) Direct() bool {
	return p.Local.Type != sdp.CandidateRelay && p.Remote.Type != sdp.CandidateRelay
}
