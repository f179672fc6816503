package sdp

import (
	"errors"
	"fmt"
)

// NewLaterOffer returns a later offer of an established session (RFC 3264
// section 8), such as a hold, a resume or an ICE restart, built from the
// local capabilities. last is this endpoint's description of the last
// completed exchange (its offer or its answer) and peer the peer's
// description of that exchange. The capabilities say what is current:
// ICE credentials and candidates, codecs, keying material, SSRC. What the
// exchange fixed, the offer keeps, and it carries nothing that the
// exchange did not agree:
//
//   - the origin of last, with the version one up;
//   - the media sections of last, in order, with their kinds and protos;
//     the audio section that last accepted carries the capabilities,
//     every other section stays declined (port 0);
//   - a mid on a section only where the peer's section had one (a peer
//     that answers without mid does not do grouping, RFC 5888 section
//     9.2), and the BUNDLE group only when both descriptions had it with
//     that mid (RFC 8843 section 7.3.3: a group the answerer did not
//     accept is not offered again);
//   - rtcp-mux only when both descriptions had it, and then no a=rtcp;
//   - ICE, and the session-level ice-lite, only when both descriptions
//     had ICE: toward a peer without ICE the offer has none, whatever
//     Capabilities.NoICE says.
//
// The direction is sendrecv and, for dtls and hybrid keying, the setup
// actpass, as in [NewOffer]; a caller that keeps the DTLS association
// changes the setup to its role. Errors for a last exchange without an
// accepted audio section wrap [ErrNegotiation].
func NewLaterOffer(last, peer *Description, c Capabilities) (*Description, error) {
	if last == nil || peer == nil {
		return nil, errors.New("sdp: NewLaterOffer: nil description")
	}
	idx := audioSection(last)
	if idx < 0 || len(peer.Media) != len(last.Media) || peer.Media[idx].Port == 0 {
		return nil, fmt.Errorf("%w: the last exchange accepted no audio section", ErrNegotiation)
	}
	lm, pm := &last.Media[idx], &peer.Media[idx]
	withICE := lm.HasICE() && pm.HasICE()
	if !withICE {
		c.NoICE = true
	}
	c.SessionID = last.Origin.SessionID
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := c.check(true); err != nil {
		return nil, err
	}
	mid := ""
	if pm.MID != "" {
		mid = lm.MID
	}
	m := c.localMedia(mid, lm.Proto, withICE && !c.NoICE)
	c.offerKeying(&m)
	m.RTCPMux = lm.RTCPMux && pm.RTCPMux
	if m.RTCPMux {
		m.RTCP = RTCPAddr{} // the agreed mux leaves no RTCP port of its own
	}
	origin := last.Origin
	origin.SessionVersion++
	d := &Description{
		Origin:      origin,
		SessionName: last.SessionName,
		ICELite:     c.ICELite && withICE && !c.NoICE,
	}
	for i := range last.Media {
		if i == idx {
			d.Media = append(d.Media, m)
			continue
		}
		r := rejected(&last.Media[i])
		if peer.Media[i].MID == "" {
			r.MID = ""
		}
		d.Media = append(d.Media, r)
	}
	if mid != "" && contains(last.Bundle, mid) && contains(peer.Bundle, mid) {
		d.Bundle = []string{mid}
	}
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("sdp: capabilities: %w", err)
	}
	return d, nil
}
