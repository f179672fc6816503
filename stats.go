package securecall

import (
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
)

// Stats is a snapshot of a call: the media session's counters (packets and
// bytes each way, authentication failures, replays and unknown-key drops,
// the key version and profile in use), the receive quality from the
// Call's own RTCP reports (Quality: loss, jitter, round trip, the peer's
// view of this side's stream, and an R-factor and MOS estimate), the state,
// the media path, and what the ICE transport refused (malformed STUN,
// candidates beyond its limits). Path.RTT is the round trip measured by the
// latest RTCP report exchange while media flows, and the ICE check's before
// that: on a Transport's own sockets ICE sends no consent checks on a path
// that carries media (on an ice.Endpoint consent is checked every
// KeepaliveInterval regardless, but its round trip is not reported).
type Stats struct {
	media.Stats
	State State
	Path  ice.Path
	ICE   ice.Stats
	// OutsideAgreement counts the RTP packets read whose payload type is
	// not one of the agreed codecs' (Codec and the others both sides
	// listed). They are authentic and delivered by ReadRTP, not dropped;
	// see the package documentation.
	OutsideAgreement uint64
	// RTPWithheld counts the RTP packets that WriteRTP and WriteSample
	// did not send because the agreed direction did not let this end
	// send (the peer held the call): see [Call.Direction].
	RTPWithheld uint64
}

// Stats returns a snapshot of the call. Media counters are zero until the
// call is connected.
func (c *Call) Stats() Stats {
	st := Stats{State: c.State(), Path: c.path(), ICE: c.ice.Stats()}
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s != nil {
		st.Stats = s.Stats()
		refreshRTT(&st.Path, st.Quality.RTT)
	}
	st.OutsideAgreement = c.sip.outsidePT.Load()
	st.RTPWithheld = c.dir.withheld.Load()
	return st
}
