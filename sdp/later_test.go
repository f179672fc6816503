package sdp

import (
	"errors"
	"strings"
	"testing"
)

// plainPhoneOffer is a SIP phone's offer: no ICE, mid or BUNDLE, RTP/SAVPF,
// and a video section that an answer declines.
const plainPhoneOffer = "v=0\r\no=- 77 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n" +
	"m=audio 30000 RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n" +
	"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:ERERERERERERERERERERERERERERERERERERERER\r\n" +
	"m=video 30002 RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n"

// TestNewLaterOfferKeepsExchange: a later offer keeps the sections,
// protos, origin and mids of the endpoint's last description, and
// carries no mid, BUNDLE group, a=rtcp beside rtcp-mux, or ICE (ice-lite
// included) that the peer's description did not have.
func TestNewLaterOfferKeepsExchange(t *testing.T) {
	t.Run("answerer to a phone without ICE", func(t *testing.T) {
		offer, err := Unmarshal([]byte(plainPhoneOffer))
		if err != nil {
			t.Fatal(err)
		}
		c := caps(KeyingSDES)
		c.ICELite = true
		c.ICE.Candidates = append(c.ICE.Candidates, Candidate{Foundation: "2", Component: 2, Transport: "udp", Priority: 1, Address: "198.51.100.1", Port: 40001, Type: CandidateHost})
		answer, _, err := NewAnswer(offer, c)
		if err != nil {
			t.Fatal(err)
		}
		if answer.ICELite {
			t.Error("the answer to an offer without ICE says ice-lite")
		}
		later, err := NewLaterOffer(answer, offer, c)
		if err != nil {
			t.Fatal(err)
		}
		later = wire(t, later)
		text, _ := later.Marshal()
		for _, attr := range []string{"a=mid", "a=group", "a=ice-", "a=candidate", "a=rtcp:"} {
			if strings.Contains(string(text), attr) {
				t.Errorf("later offer to a phone carries %s:\n%s", attr, text)
			}
		}
		if len(later.Media) != 2 || later.Media[0].Proto != "RTP/SAVPF" || later.Media[1].Kind != "video" || later.Media[1].Port != 0 {
			t.Errorf("later offer sections %+v, want audio RTP/SAVPF and video declined", later.Media)
		}
		if o := later.Origin; o.SessionID != answer.Origin.SessionID || o.SessionVersion != answer.Origin.SessionVersion+1 {
			t.Errorf("later offer o= %d %d, the answer's %d %d", o.SessionID, o.SessionVersion, answer.Origin.SessionID, answer.Origin.SessionVersion)
		}
		if m := later.Media[0]; m.Port != 40000 || !m.RTCPMux || len(m.Crypto) != 2 {
			t.Errorf("later audio section port %d mux %t crypto %d", m.Port, m.RTCPMux, len(m.Crypto))
		}
	})
	t.Run("offerer whose peer answered with BUNDLE", func(t *testing.T) {
		offer, err := NewOffer(caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		peer := caps(KeyingDTLS)
		peer.ICE.Ufrag, peer.SessionID = "PeEr", 43
		answer, _, err := NewAnswer(wire(t, offer), peer)
		if err != nil {
			t.Fatal(err)
		}
		c := caps(KeyingDTLS)
		c.ICE.Ufrag = "NeWu" // a restart's new credentials
		later, err := NewLaterOffer(offer, wire(t, answer), c)
		if err != nil {
			t.Fatal(err)
		}
		m := later.Media[0]
		if len(later.Bundle) != 1 || later.Bundle[0] != DefaultMID || m.MID != DefaultMID || m.ICE.Ufrag != "NeWu" || m.Setup != SetupActpass {
			t.Errorf("later offer bundle %v mid %q ufrag %q setup %s", later.Bundle, m.MID, m.ICE.Ufrag, m.Setup)
		}
	})
	t.Run("peer answered without mid or rtcp-mux", func(t *testing.T) {
		offer, err := NewOffer(caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		peer := caps(KeyingDTLS)
		peer.ICE.Ufrag, peer.SessionID = "PeEr", 43
		answer, _, err := NewAnswer(wire(t, offer), peer)
		if err != nil {
			t.Fatal(err)
		}
		answer.Bundle, answer.Media[0].MID, answer.Media[0].RTCPMux = nil, "", false
		later, err := NewLaterOffer(offer, wire(t, answer), caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		if m := later.Media[0]; len(later.Bundle) != 0 || m.MID != "" || m.RTCPMux {
			t.Errorf("later offer bundle %v mid %q rtcp-mux %t; the peer had none", later.Bundle, m.MID, m.RTCPMux)
		}
	})
	t.Run("no accepted audio section", func(t *testing.T) {
		offer, _ := NewOffer(caps(KeyingDTLS))
		declined := &Description{Origin: offer.Origin, SessionName: "-", Media: []Media{rejected(&offer.Media[0])}}
		if _, err := NewLaterOffer(offer, declined, caps(KeyingDTLS)); !errors.Is(err, ErrNegotiation) {
			t.Errorf("later offer after a declined audio section: %v, want ErrNegotiation", err)
		}
		if _, err := NewLaterOffer(nil, offer, caps(KeyingDTLS)); err == nil {
			t.Error("later offer without a last description: no error")
		}
	})
}
