package securecall_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

func sdesConfig() securecall.Config {
	return securecall.Config{Keying: sdp.KeyingSDES, ICE: loopbackICE()}
}

func TestSDESCall(t *testing.T) {
	for _, tc := range []struct {
		name     string
		profiles []media.Profile
		noICE    bool
	}{
		{"ICE default suites", nil, false},
		{"ICE AES_CM_128_HMAC_SHA1_32", []media.Profile{media.ProfileAES128CMHMACSHA1_32}, false},
		{"no ICE AES_CM_128_HMAC_SHA1_80", []media.Profile{media.ProfileAES128CMHMACSHA1_80}, true},
		{"no ICE AEAD_AES_256_GCM", []media.Profile{media.ProfileAEADAES256GCM}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cb := sdesConfig(), sdesConfig()
			ca.Profiles, ca.NoICE = tc.profiles, tc.noICE
			a, b := pair(t, ca, cb)
			sendRecv(t, a, b, 20)
			sendRecv(t, b, a, 20)
			for _, c := range []*securecall.Call{a, b} {
				st := c.Stats()
				if st.Path.NoICE != tc.noICE {
					t.Errorf("Path.NoICE = %t, want %t", st.Path.NoICE, tc.noICE)
				}
				want := media.ProfileAEADAES128GCM
				if tc.profiles != nil {
					want = tc.profiles[0]
				}
				if st.Profile != want || c.Keying() != sdp.KeyingSDES || st.AuthFailures != 0 {
					t.Errorf("profile %s keying %s auth failures %d", st.Profile, c.Keying(), st.AuthFailures)
				}
			}
		})
	}
}

// TestSDESNeverChosenByAnswerer: an answerer left at the zero Keying
// refuses an sdes offer, and one configured for dtls answers an offer that
// allows both in dtls.
func TestSDESNeverChosenByAnswerer(t *testing.T) {
	ctx := context.Background()
	a, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Answer(ctx, offer); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("zero-Keying answer to an sdes offer: %v, want a negotiation error", err)
	}
	if b.State() != securecall.StateNew {
		t.Errorf("state after the refusal: %s", b.State())
	}
}

// siplessPeer is a SIP endpoint without ICE built by hand: one socket that
// the offer names, and SRTP contexts keyed from the crypto lines.
type siplessPeer struct {
	signalled *net.UDPConn // the address in the offer
	key       []byte       // the peer's sending key and salt (AES_CM_128_HMAC_SHA1_80)
}

func (p *siplessPeer) offer() string {
	port := p.signalled.LocalAddr().(*net.UDPAddr).Port
	return "v=0\r\no=- 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/SAVP 0\r\n" +
		"a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(p.key) + "\r\n"
}

// rtpPacket builds a plain RTP packet.
func rtpPacket(seq uint16, payload []byte) []byte {
	h := []byte{0x80, 0, byte(seq >> 8), byte(seq), 0, 0, 0, byte(seq), 0x12, 0x34, 0x56, 0x78}
	return append(h, payload...)
}

// readFrom waits up to d for a datagram on c.
func readFrom(t *testing.T, c *net.UDPConn, d time.Duration) ([]byte, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLatchingRequiresAuthentication: a Call facing a peer without ICE
// sends to the signalled address and moves to another source only on a
// packet that authenticates under SRTP. An attacker who sends first, with
// a forged packet or with a replay of a real one, moves nothing.
func TestLatchingRequiresAuthentication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer := &siplessPeer{signalled: listenLoopback(t), key: bytes.Repeat([]byte{0x5a}, 30)}
	natted := listenLoopback(t)   // where the peer really sends from
	attacker := listenLoopback(t) // anyone else on the network

	paths := make(chan ice.Path, 8)
	cfg := sdesConfig()
	cfg.OnPathChange = func(p ice.Path) { paths <- p }
	call, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	answerText, err := call.Answer(ctx, peer.offer())
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	answer, err := sdp.Unmarshal([]byte(answerText))
	if err != nil {
		t.Fatal(err)
	}
	am := answer.Media[0]
	if am.HasICE() || len(am.Crypto) != 1 || am.Crypto[0].Suite != "AES_CM_128_HMAC_SHA1_80" {
		t.Fatalf("answer section: ICE %t crypto %v", am.HasICE(), am.Crypto)
	}
	callAddr := &net.UDPAddr{IP: net.ParseIP(am.Address), Port: int(am.Port)}
	signalled := peer.signalled.LocalAddr().(*net.UDPAddr).AddrPort()
	p := call.Path()
	if !p.NoICE || p.Latched || p.Remote.Address != signalled {
		t.Fatalf("path before any packet: %+v", p)
	}

	peerSend, err := srtp.CreateContext(peer.key[:16], peer.key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	peerRecv, err := srtp.CreateContext(am.Crypto[0].Key[:16], am.Crypto[0].Key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}

	// The application reads media throughout, as a real one would; the
	// session authenticates what arrives only when it is read.
	got := make(chan string, 8)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 1500)
		for {
			_, n, err := call.ReadRTP(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	defer func() { call.Close(); <-readerDone }()

	// 1. The attacker sends first: a forged packet (right shape, wrong tag).
	forged := append(rtpPacket(1, make([]byte, 160)), make([]byte, 10)...)
	if _, err := attacker.WriteToUDP(forged, callAddr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return call.Stats().AuthFailures >= 1 })
	if p := call.Path(); p.Latched || p.Remote.Address != signalled {
		t.Fatalf("a forged packet moved the stream: %+v", p)
	}
	if err := call.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: 1, SSRC: call.SSRC()}, make([]byte, 160)); err != nil {
		t.Fatal(err)
	}
	if _, ok := readFrom(t, peer.signalled, 2*time.Second); !ok {
		t.Fatal("media did not go to the signalled address")
	}

	// 2. The real peer sends from another address (a NAT's mapping): the
	// packet authenticates and the stream follows it.
	genuine, err := peerSend.EncryptRTP(nil, rtpPacket(1, []byte("hello from behind the NAT")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natted.WriteToUDP(genuine, callAddr); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello from behind the NAT" {
			t.Fatalf("ReadRTP = %q", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the authentic packet was not delivered")
	}
	natAddr := natted.LocalAddr().(*net.UDPAddr).AddrPort()
	if p := call.Path(); !p.Latched || p.Remote.Address != natAddr || p.Remote.Type != sdp.CandidatePeerReflexive {
		t.Fatalf("path after an authentic packet from %v: %+v", natAddr, p)
	}
	select {
	case p := <-paths:
		for p.Remote.Address != natAddr {
			p = <-paths
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnPathChange not called for the latched address")
	}

	// 3. The attacker replays the genuine packet and forges another: the
	// stream stays with the peer.
	attacker.WriteToUDP(genuine, callAddr)
	attacker.WriteToUDP(append(rtpPacket(50, make([]byte, 160)), make([]byte, 10)...), callAddr)
	waitFor(t, 5*time.Second, func() bool { st := call.Stats(); return st.ReplaysDropped >= 1 && st.AuthFailures >= 2 })
	if p := call.Path(); p.Remote.Address != natAddr {
		t.Fatalf("a replay or forgery moved the stream to %v", p.Remote.Address)
	}
	if err := call.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: 2, SSRC: call.SSRC()}, []byte("back to you")); err != nil {
		t.Fatal(err)
	}
	pkt, ok := readFrom(t, natted, 2*time.Second)
	if !ok {
		t.Fatal("media did not follow the authenticated source")
	}
	plain, err := peerRecv.DecryptRTP(nil, pkt, nil)
	if err != nil || !bytes.HasSuffix(plain, []byte("back to you")) {
		t.Fatalf("the peer cannot decrypt what it got: %v", err)
	}
	if _, got := readFrom(t, attacker, 200*time.Millisecond); got {
		t.Fatal("the attacker received media")
	}
}

// TestNoICEPolicies: RelayOnly refuses peers without ICE; DirectOnly
// refuses one outside the site's networks.
func TestNoICEPolicies(t *testing.T) {
	ctx := context.Background()
	cfg := sdesConfig()
	cfg.NoICE = true
	cfg.ICE.Policy = ice.RelayOnly
	if _, err := securecall.New(cfg); !errors.Is(err, ice.ErrNoICEPolicy) {
		t.Errorf("New with NoICE and RelayOnly: %v", err)
	}
	peer := &siplessPeer{signalled: listenLoopback(t), key: bytes.Repeat([]byte{1}, 30)}
	offPublic := strings.ReplaceAll(peer.offer(), "127.0.0.1", "192.0.2.7")
	for _, tc := range []struct {
		policy ice.Policy
		offer  string
	}{
		{ice.RelayOnly, peer.offer()},
		{ice.DirectOnly, offPublic},
	} {
		cfg := sdesConfig()
		cfg.ICE.Policy = tc.policy
		if tc.policy == ice.RelayOnly {
			cfg.ICE.Servers = []ice.Server{{URL: "turn:127.0.0.1:3478", Username: "u", Credential: "p"}}
		}
		c, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Answer(ctx, tc.offer); !errors.Is(err, ice.ErrNoICEPolicy) {
			t.Errorf("%s answering a peer without ICE: %v", tc.policy, err)
		}
		if c.State() != securecall.StateNew {
			t.Errorf("%s: state %s after the refusal", tc.policy, c.State())
		}
		c.Close()
	}
}

// TestNoICEAnswerToICEOffer: an answer without ICE to an ICE offer fails
// SetAnswer with ErrNoICEAnswer and leaves the offer pending.
func TestNoICEAnswerToICEOffer(t *testing.T) {
	ctx := context.Background()
	a, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	offerText, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	offer, _ := sdp.Unmarshal([]byte(offerText))
	m := &offer.Media[0]
	m.ICE = sdp.ICE{}
	m.Crypto = m.Crypto[:1]
	m.Crypto[0].Key = bytes.Repeat([]byte{9}, len(m.Crypto[0].Key))
	m.Port, m.Address = 40000, "127.0.0.1"
	offer.Origin.SessionID++
	text, err := offer.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, string(text)); !errors.Is(err, securecall.ErrNoICEAnswer) {
		t.Fatalf("SetAnswer: %v", err)
	}
	if a.State() != securecall.StateNew {
		t.Errorf("state %s", a.State())
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestPayloadTypesOutsideAgreement: a packet whose payload type the
// descriptions did not agree on is delivered and counted, read with
// ReadRTP or pushed to OnRTP.
func TestPayloadTypesOutsideAgreement(t *testing.T) {
	for _, push := range []bool{false, true} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			// 64 and 127 sit at the edges of the set's second word.
			agreed := []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000},
				{PayloadType: 64, Name: "X-A", ClockRate: 8000}, {PayloadType: 127, Name: "X-B", ClockRate: 8000}}
			sent := []uint8{0, 111, 13, 64, 127, 63, 0}
			ca := securecall.Config{ICE: loopbackICE(), Codecs: agreed}
			cb := securecall.Config{ICE: loopbackICE(), Codecs: agreed}
			pushed := make(chan uint8, len(sent))
			if push {
				cb.Media.OnRTP = func(h media.RTPHeader, _ []byte) { pushed <- h.PayloadType }
			}
			a, b := pair(t, ca, cb)
			for i, pt := range sent {
				if err := a.WriteRTP(media.RTPHeader{PayloadType: pt, SequenceNumber: uint16(i), SSRC: a.SSRC()}, make([]byte, 20)); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 1500)
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			for i, want := range sent {
				var pt uint8
				if push {
					select {
					case pt = <-pushed:
					case <-time.After(5 * time.Second):
						t.Fatalf("packet %d not pushed", i)
					}
				} else {
					h, _, err := b.ReadRTP(buf)
					if err != nil {
						t.Fatal(err)
					}
					pt = h.PayloadType
				}
				if pt != want {
					t.Fatalf("packet %d: payload type %d, want %d", i, pt, want)
				}
			}
			if st := b.Stats(); st.OutsideAgreement != 3 || st.RTPPacketsReceived != uint64(len(sent)) {
				t.Errorf("OutsideAgreement %d of %d received, want 3 of %d", st.OutsideAgreement, st.RTPPacketsReceived, len(sent))
			}
			if st := a.Stats(); st.OutsideAgreement != 0 {
				t.Errorf("sender counted %d", st.OutsideAgreement)
			}
		})
	}
}

// TestPathReportsLitePeer: Path says whether the peer is ICE-Lite.
func TestPathReportsLitePeer(t *testing.T) {
	lite := loopbackICE()
	lite.Lite = true
	a, b := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: lite})
	if !a.Path().RemoteLite {
		t.Error("the full offerer does not report its Lite answerer")
	}
	if b.Path().RemoteLite {
		t.Error("the Lite answerer reports its full peer as Lite")
	}
}

// TestAnswerWithoutRTCPMux: an ICE offer without rtcp-mux (baresip's
// default) is answered with component-2 candidates, a=rtcp and no
// rtcp-mux; a mux offer keeps rtcp-mux and gathers no component 2.
func TestAnswerWithoutRTCPMux(t *testing.T) {
	ctx := context.Background()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		text string
		mux  bool
	}{
		{"mux", offer, true},
		{"no mux", strings.Replace(offer, "a=rtcp-mux\r\n", "", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			text, err := b.Answer(ctx, tc.text)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := sdp.Unmarshal([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			m := answer.Media[0]
			comp2 := 0
			for _, c := range m.ICE.Candidates {
				if c.Component == 2 {
					comp2++
					if m.RTCP.Port != c.Port {
						t.Errorf("a=rtcp port %d, component-2 candidate port %d", m.RTCP.Port, c.Port)
					}
				}
			}
			if m.RTCPMux != tc.mux || (comp2 > 0) == tc.mux || (m.RTCP.Port != 0) == tc.mux {
				t.Errorf("answer: rtcp-mux %t, %d component-2 candidates, a=rtcp %+v", m.RTCPMux, comp2, m.RTCP)
			}
		})
	}
	// The offerer refuses an answer that declines rtcp-mux.
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, strings.Replace(answer, "a=rtcp-mux\r\n", "", 1)); !errors.Is(err, sdp.ErrNegotiation) {
		t.Errorf("SetAnswer of an answer without rtcp-mux: %v", err)
	}
}

// TestRTCPOnComponent2: a Call that offers RTCP apart as well
// (OfferRTCPComponent) to a peer that declines rtcp-mux runs RTCP on ICE
// component 2, media and SRTCP flowing both ways; with a peer that accepts
// rtcp-mux the second component is dropped.
func TestRTCPOnComponent2(t *testing.T) {
	for _, mux := range []bool{false, true} {
		t.Run("mux="+strconv.FormatBool(mux), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			a, err := securecall.New(securecall.Config{ICE: loopbackICE(), OfferRTCPComponent: true})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			offer, err := a.Offer(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(offer, "a=rtcp-mux\r\n") || !strings.Contains(offer, "a=rtcp:") || !strings.Contains(offer, " 2 udp ") {
				t.Fatalf("offer lacks rtcp-mux, a=rtcp or component-2 candidates:\n%s", offer)
			}
			if !mux {
				offer = strings.Replace(offer, "a=rtcp-mux\r\n", "", 1)
			}
			answer, err := b.Answer(ctx, offer)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(answer, "a=rtcp-mux\r\n"); got != mux || strings.Contains(answer, " 2 udp ") == mux {
				t.Fatalf("answer (rtcp-mux %t wanted):\n%s", mux, answer)
			}
			if err := a.SetAnswer(ctx, answer); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*securecall.Call{a, b} {
				if err := c.Connect(ctx); err != nil {
					t.Fatal(err)
				}
			}
			sendRecv(t, a, b, 10)
			sendRecv(t, b, a, 10)
			// SRTCP both ways: a sender report each.
			sr := []byte{0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			buf := make([]byte, 1500)
			for _, p := range [][2]*securecall.Call{{a, b}, {b, a}} {
				if err := p[0].WriteRTCP(sr); err != nil {
					t.Fatal(err)
				}
				p[1].SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := p[1].ReadRTCP(buf); err != nil || n != len(sr) {
					t.Fatalf("ReadRTCP = %d, %v", n, err)
				}
			}
		})
	}
}

// TestRestartKeepsRTCPApart: a call with ICE that runs RTCP on component 2
// (its peer declined rtcp-mux) restarts from either end: the Restart offer
// keeps RTCP apart (no a=rtcp-mux, a=rtcp and component-2 candidates), so
// that the peer, which keeps its components for the call's life, answers
// it, and media and SRTCP flow again on the new path.
func TestRestartKeepsRTCPApart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	declineMux := func(desc string, toCallee bool) string {
		if toCallee {
			return strings.Replace(desc, "a=rtcp-mux\r\n", "", 1)
		}
		return desc
	}
	a, b, _, _ := capturePair(t, securecall.Config{ICE: loopbackICE(), OfferRTCPComponent: true},
		securecall.Config{ICE: loopbackICE()}, declineMux)
	rtcpBothWays(t, a, b)
	for _, p := range [][2]*securecall.Call{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		offer, err := from.Restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(offer, "a=rtcp-mux\r\n") || !strings.Contains(offer, "a=rtcp:") || !strings.Contains(offer, " 2 udp ") {
			t.Errorf("the restart offer of a call running RTCP apart does not keep it apart (want no rtcp-mux, a=rtcp, component-2 candidates):\n%s", offer)
		}
		answer, err := to.Answer(ctx, offer)
		if err != nil {
			t.Fatalf("the peer's Answer to the restart offer of a call running RTCP apart: %v", err)
		}
		if err := from.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() bool { return from.Path().Local.Type != "" && to.Path().Local.Type != "" })
		sendRecv(t, from, to, 3)
		sendRecv(t, to, from, 3)
		rtcpBothWays(t, a, b)
	}
}
