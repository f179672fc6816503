package sdp

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// The examples of RFC 3264 section 10.1, RFC 3605 section 2.1 and RFC 4568
// section 8.1, and the plain SIP shape of a trunk or phone, as peers that
// speak no ICE send them.

func TestUnmarshalWithoutICE(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		check func(t *testing.T, d *Description)
	}{
		{"RFC 3264 10.1 offer", "rfc3264_offer.txt", func(t *testing.T, d *Description) {
			if d.SessionName != "-" {
				t.Errorf("empty s= parsed as %q, want \"-\"", d.SessionName)
			}
			if len(d.Media) != 2 {
				t.Fatalf("%d media sections, want 2", len(d.Media))
			}
			a := d.Media[0]
			if a.Port != 49170 || a.Proto != "RTP/AVP" || a.Address != "host.atlanta.example.com" || a.HasICE() {
				t.Errorf("audio = port %d proto %s address %s ICE %t", a.Port, a.Proto, a.Address, a.HasICE())
			}
			if len(a.Formats) != 3 || a.Formats[2].Name != "iLBC" {
				t.Errorf("formats = %v", a.Formats)
			}
			if _, err := d.Keying(); !errors.Is(err, ErrNegotiation) || !strings.Contains(err.Error(), "plain RTP") {
				t.Errorf("Keying of plain RTP = %v, want a negotiation error that says plain RTP", err)
			}
		}},
		{"RFC 4568 8.1 offer", "rfc4568_offer.txt", func(t *testing.T, d *Description) {
			m := d.Media[0]
			if m.Proto != "RTP/SAVP" || m.Address != "168.2.17.12" || len(m.Crypto) != 2 {
				t.Fatalf("section = %s %s, %d crypto lines", m.Proto, m.Address, len(m.Crypto))
			}
			c1, c2 := m.Crypto[0], m.Crypto[1]
			if c1.Lifetime != 1<<20 || c1.MKI != 1 || c1.MKILength != 4 || !reflect.DeepEqual(c1.Params, []string{"FEC_ORDER=FEC_SRTP"}) {
				t.Errorf("crypto 1 = %v", c1)
			}
			if c2.Suite != "F8_128_HMAC_SHA1_80" || len(c2.MoreKeys) != 1 || c2.MoreKeys[0].MKI != 2 || c2.MoreKeys[0].Lifetime != 1<<20 {
				t.Errorf("crypto 2 with two keys = %v", c2)
			}
			if k, err := d.Keying(); err != nil || k != KeyingSDES {
				t.Errorf("Keying = %v, %v; want sdes", k, err)
			}
		}},
		{"SIP SDES without ICE", "sip_noice_offer.txt", func(t *testing.T, d *Description) {
			m := d.Media[0]
			if m.HasICE() || m.RTCP != (RTCPAddr{Port: 10001}) || m.PTime != 20 || m.RTCPMux || len(m.Crypto) != 3 {
				t.Errorf("section = ICE %t rtcp %+v ptime %d mux %t crypto %d", m.HasICE(), m.RTCP, m.PTime, m.RTCPMux, len(m.Crypto))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := readTestdata(t, tt.file)
			d, err := Unmarshal(data)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, d)
			checkRoundTrip(t, data)
		})
	}
}

func TestUnmarshalRTCPAttribute(t *testing.T) {
	base := strings.Replace(noICE, "a=rtcp:10001\r\n", "", 1)
	tests := []struct {
		line string
		want RTCPAddr
		err  string
	}{
		// RFC 3605 section 2.1.
		{"a=rtcp:53020", RTCPAddr{Port: 53020}, ""},
		{"a=rtcp:53020 IN IP4 126.16.64.4", RTCPAddr{Port: 53020, Address: "126.16.64.4"}, ""},
		{"a=rtcp:53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD", RTCPAddr{Port: 53020, Address: "2001:2345:6789:ABCD:EF01:2345:6789:ABCD"}, ""},
		{"a=rtcp:0", RTCPAddr{}, "rtcp port"},
		{"a=rtcp:70000", RTCPAddr{}, "rtcp port"},
		{"a=rtcp:5000 IN IP4", RTCPAddr{}, "rtcp must be"},
		{"a=rtcp:5000 IN IPX 1.2.3.4", RTCPAddr{}, "rtcp must be"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			d, err := Unmarshal([]byte(base + tt.line + "\r\n"))
			if tt.err != "" {
				var pe *ParseError
				if !errors.As(err, &pe) || !strings.Contains(pe.Reason, tt.err) {
					t.Fatalf("err = %v, want a ParseError about %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Media[0].RTCP != tt.want {
				t.Errorf("RTCP = %+v, want %+v", d.Media[0].RTCP, tt.want)
			}
		})
	}
	if _, err := Unmarshal([]byte(strings.Replace(base, "t=0 0\r\n", "t=0 0\r\na=rtcp:5000\r\n", 1))); err == nil {
		t.Error("session-level a=rtcp accepted")
	}
}

// noICE is a plain SIP offer: address on c= and m=, RTCP on a=rtcp, SDES.
const noICE = "v=0\r\n" +
	"o=- 7 1 IN IP4 192.0.2.20\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.20\r\n" +
	"t=0 0\r\n" +
	"m=audio 10000 RTP/SAVP 0 8\r\n" +
	"a=rtcp:10001\r\n" +
	"a=sendrecv\r\n" +
	"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "\r\n"

func TestUnmarshalICEPartial(t *testing.T) {
	for name, edit := range map[string]func(string) string{
		"ufrag only":     func(s string) string { return s + "a=ice-ufrag:abcd\r\n" },
		"pwd only":       func(s string) string { return s + "a=ice-pwd:abcdefghijklmnopqrstuv\r\n" },
		"candidate only": func(s string) string { return s + "a=candidate:1 1 udp 1 192.0.2.1 5 typ host\r\n" },
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Unmarshal([]byte(edit(noICE))); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestMarshalWithoutICE(t *testing.T) {
	d := &Description{
		Origin: Origin{Username: "-", SessionID: 9, SessionVersion: 1, Address: "192.0.2.1"}, SessionName: "-",
		Media: []Media{{
			Kind: "audio", Port: 4000, Proto: "RTP/SAVP", Address: "192.0.2.1",
			Formats:   []Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
			Direction: RecvOnly, RTCP: RTCPAddr{Port: 4001, Address: "192.0.2.1"}, PTime: 30,
			Crypto: []Crypto{{Tag: 1, Suite: "AES_CM_128_HMAC_SHA1_32", Key: testKey30, Lifetime: 1 << 20, MKI: 7, MKILength: 1,
				MoreKeys: []CryptoKey{{Key: testKey30, Lifetime: 1000, MKI: 8, MKILength: 1}}}},
		}},
	}
	text, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a=rtcp:4001 IN IP4 192.0.2.1\r\n", "a=ptime:30\r\n", "a=recvonly\r\n", "|2^20|7:1;inline:", "|1000|8:1\r\n"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("marshalled text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(string(text), "ice-") {
		t.Errorf("ICE attributes written for a section without ICE:\n%s", text)
	}
	got := wire(t, d)
	if !reflect.DeepEqual(got, d) {
		t.Errorf("round trip:\n got %#v\nwant %#v", got, d)
	}
	bad := *d
	bad.Media = []Media{d.Media[0]}
	bad.Media[0].ICE = ICE{Ufrag: "abcd"}
	if _, err := bad.Marshal(); err == nil {
		t.Error("ufrag without pwd marshalled")
	}
	bad.Media[0].ICE = ICE{Candidates: []Candidate{{Foundation: "1", Component: 1, Transport: "udp", Priority: 1, Address: "192.0.2.1", Port: 1, Type: CandidateHost}}}
	if _, err := bad.Marshal(); err == nil {
		t.Error("candidates without credentials marshalled")
	}
}

// sipCaps are the capabilities of an endpoint that answers SIP gear in sdes
// keying without ICE, from a socket at 198.51.100.1:40000 (RTCP on 40001).
func sipCaps() Capabilities {
	c := caps(KeyingSDES)
	c.Crypto = []Crypto{{Suite: "AES_CM_128_HMAC_SHA1_80", Key: testKey30}, {Suite: "AEAD_AES_128_GCM", Key: testKey28}}
	c.ICE.Candidates = append(c.ICE.Candidates, Candidate{Foundation: "1", Component: 2, Transport: "udp", Priority: 2130706430, Address: "198.51.100.1", Port: 40001, Type: CandidateHost})
	return c
}

func TestAnswerWithoutICE(t *testing.T) {
	offer, err := Unmarshal(readTestdata(t, "sip_noice_offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	answer, a, err := NewAnswer(offer, sipCaps())
	if err != nil {
		t.Fatal(err)
	}
	if !a.NoICE || a.RTCPMux {
		t.Errorf("agreement NoICE %t RTCPMux %t, want true, false", a.NoICE, a.RTCPMux)
	}
	if a.RemoteRTP != netip.MustParseAddrPort("192.0.2.20:10000") || a.RemoteRTCP != netip.MustParseAddrPort("192.0.2.20:10001") {
		t.Errorf("remote RTP %v RTCP %v", a.RemoteRTP, a.RemoteRTCP)
	}
	if a.RemotePTime != 20 {
		t.Errorf("remote ptime %d", a.RemotePTime)
	}
	// The offer lists the 80-bit suite first; the answer takes it (RFC 4568
	// section 7.1.1: the answerer picks from the offer's order).
	if a.LocalCrypto.Suite != "AES_CM_128_HMAC_SHA1_80" || a.RemoteCrypto.MKILength != 1 || a.RemoteCrypto.Lifetime != 1<<31 {
		t.Errorf("crypto local %v remote %v", a.LocalCrypto, a.RemoteCrypto)
	}
	m := wire(t, answer).Media[0]
	if m.HasICE() || len(m.ICE.Candidates) != 0 || m.Port != 40000 || m.Address != "198.51.100.1" || m.RTCP.Port != 40001 || m.RTCPMux {
		t.Errorf("answer section: ICE %t cands %d port %d addr %s rtcp %+v mux %t", m.HasICE(), len(m.ICE.Candidates), m.Port, m.Address, m.RTCP, m.RTCPMux)
	}
	if m.Proto != "RTP/SAVP" {
		t.Errorf("answer proto %s, want the offer's RTP/SAVP", m.Proto)
	}
	// The offerer sees the same from its side.
	back, err := AcceptAnswer(offer, wire(t, answer))
	if err != nil {
		t.Fatal(err)
	}
	if !back.NoICE || back.RemoteRTP != netip.MustParseAddrPort("198.51.100.1:40000") || back.RemoteRTCP != netip.MustParseAddrPort("198.51.100.1:40001") {
		t.Errorf("offerer's agreement: NoICE %t RTP %v RTCP %v", back.NoICE, back.RemoteRTP, back.RemoteRTCP)
	}
}

func TestOfferWithoutICE(t *testing.T) {
	c := sipCaps()
	c.NoICE = true
	c.PTime = 20
	offer, err := NewOffer(c)
	if err != nil {
		t.Fatal(err)
	}
	m := wire(t, offer).Media[0]
	if m.HasICE() || m.Port != 40000 || m.Address != "198.51.100.1" || m.RTCP.Port != 40001 || !m.RTCPMux || m.PTime != 20 {
		t.Errorf("offer section: ICE %t port %d addr %s rtcp %+v mux %t ptime %d", m.HasICE(), m.Port, m.Address, m.RTCP, m.RTCPMux, m.PTime)
	}
	// A full ICE peer answering it must answer without ICE as well.
	peer := caps(KeyingSDES)
	answer, a, err := NewAnswer(wire(t, offer), peer)
	if err != nil {
		t.Fatal(err)
	}
	if !a.NoICE || answer.Media[0].HasICE() || !a.RTCPMux {
		t.Errorf("answer to an offer without ICE: NoICE %t ICE %t mux %t", a.NoICE, answer.Media[0].HasICE(), a.RTCPMux)
	}
	if a.RemoteRTCP.IsValid() {
		t.Errorf("RTCP address %v although both mux", a.RemoteRTCP)
	}
}

func TestNegotiateKeyingAndTransport(t *testing.T) {
	both := strings.Replace(noICE, "a=sendrecv\r\n", "a=sendrecv\r\na=fingerprint:sha-256 "+fp32+"\r\na=setup:actpass\r\n", 1)
	dtlsProto := strings.Replace(strings.Replace(both, "RTP/SAVP", "UDP/TLS/RTP/SAVP", 1), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30+"\r\n", "", 1)
	plain := strings.Replace(noICE, "RTP/SAVP", "RTP/AVP", 1)
	plain = plain[:strings.Index(plain, "a=crypto")]
	avpCrypto := strings.Replace(noICE, "RTP/SAVP", "RTP/AVP", 1)
	multiKeyOnly := strings.Replace(noICE, "inline:"+key30, "inline:"+key30+"|1:1;inline:"+key30+"|2:1", 1)
	tests := []struct {
		name   string
		offer  string
		keying Keying
		want   Keying // empty: negotiation fails
		why    string
	}{
		{"sdes and dtls offered, sdes wanted", both, KeyingSDES, KeyingSDES, ""},
		{"sdes and dtls offered, dtls wanted", both, KeyingDTLS, KeyingDTLS, ""},
		{"sdes and dtls offered, kms wanted", both, KeyingKMS, "", "the offer supports dtls, sdes; this endpoint requires kms"},
		{"sdes offered, dtls wanted", noICE, KeyingDTLS, "", "the offer supports sdes; this endpoint requires dtls"},
		{"UDP/TLS offered, sdes wanted", dtlsProto, KeyingSDES, "", "the offer supports dtls; this endpoint requires sdes"},
		{"plain RTP", plain, KeyingSDES, "", "plain RTP"},
		{"RTP/AVP with crypto (ffmpeg)", avpCrypto, KeyingSDES, KeyingSDES, ""},
		{"only a line with two keys", multiKeyOnly, KeyingSDES, "", "more than one master key"},
		{"only an unencrypted SRTCP line", strings.Replace(noICE, key30, key30+" UNENCRYPTED_SRTCP", 1), KeyingSDES, "", "no common SDES suite"},
		{"only an unauthenticated line", strings.Replace(noICE, key30, key30+" UNAUTHENTICATED_SRTP", 1), KeyingSDES, "", "no common SDES suite"},
		{"KDR=0 is fine", strings.Replace(noICE, key30, key30+" KDR=0", 1), KeyingSDES, KeyingSDES, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			offer, err := Unmarshal([]byte(tt.offer))
			if err != nil {
				t.Fatal(err)
			}
			c := sipCaps()
			c.Keying = tt.keying
			c.Fingerprints = []Fingerprint{testFingerprint}
			c.KeyRef = &KeyRef{URI: "https://kms.example.com/calls/1"}
			_, a, err := NewAnswer(offer, c)
			if tt.want == "" {
				if !errors.Is(err, ErrNegotiation) || !strings.Contains(err.Error(), tt.why) {
					t.Fatalf("err = %v, want ErrNegotiation saying %q", err, tt.why)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Keying != tt.want {
				t.Errorf("keying %s, want %s", a.Keying, tt.want)
			}
		})
	}
}

// TestAcceptAnswerWithoutMID: an answerer that does not know a=mid (RFC
// 5888 is optional, and SIP phones leave it out) answers without it; an
// answer with another mid is still refused.
func TestAcceptAnswerWithoutMID(t *testing.T) {
	offer, err := NewOffer(caps(KeyingDTLS))
	if err != nil {
		t.Fatal(err)
	}
	answer, _, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
	if err != nil {
		t.Fatal(err)
	}
	answer.Media[0].MID, answer.Bundle = "", nil
	if _, err := AcceptAnswer(offer, wire(t, answer)); err != nil {
		t.Errorf("answer without mid: %v", err)
	}
	answer.Media[0].MID = "7"
	if _, err := AcceptAnswer(offer, wire(t, answer)); !errors.Is(err, ErrNegotiation) {
		t.Errorf("answer with another mid: %v", err)
	}
}
