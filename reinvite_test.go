package securecall_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
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

// movingPeer is a SIP endpoint without ICE that moves its media on a
// re-INVITE, as a border element after a transfer or a phone that changed
// network does: the same session, a new o= version, a new c=/m= address.
type movingPeer struct {
	key []byte // the peer's sending key and salt (AES_CM_128_HMAC_SHA1_80)
}

// peerAddr is where a movingPeer's offer puts its media: an RTP socket and,
// unless RTCP is multiplexed, an RTCP socket, named with a=rtcp unless it
// sits on the next port.
type peerAddr struct {
	host string // the c= address; the RTP socket's when empty
	rtp  *net.UDPConn
	rtcp *net.UDPConn // nil: rtcp-mux
}

func (p *movingPeer) offer(version int, at peerAddr) string {
	host := at.host
	if host == "" {
		host = at.rtp.LocalAddr().(*net.UDPAddr).IP.String()
	}
	family := "IP4"
	if strings.Contains(host, ":") {
		family = "IP6"
	}
	port := at.rtp.LocalAddr().(*net.UDPAddr).Port
	var rtcp string
	switch {
	case at.rtcp == nil:
		rtcp = "a=rtcp-mux\r\n"
	case at.rtcp.LocalAddr().(*net.UDPAddr).Port != port+1:
		rtcp = "a=rtcp:" + strconv.Itoa(at.rtcp.LocalAddr().(*net.UDPAddr).Port) + "\r\n"
	}
	return "v=0\r\no=- 4343 " + strconv.Itoa(version) + " IN " + family + " " + host + "\r\ns=-\r\nc=IN " + family + " " + host + "\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/SAVP 0\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" + rtcp + "a=sendrecv\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(p.key) + "\r\n"
}

// listenAdjacent returns two loopback sockets on consecutive ports, for a
// peer that names no a=rtcp (RFC 3550 section 11: RTCP on port+1).
func listenAdjacent(t *testing.T) (rtp, rtcp *net.UDPConn) {
	t.Helper()
	for range 16 {
		rtp := listenLoopback(t)
		port := rtp.LocalAddr().(*net.UDPAddr).Port
		if port == 65535 {
			continue
		}
		rtcp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		if err == nil {
			t.Cleanup(func() { rtcp.Close() })
			return rtp, rtcp
		}
	}
	t.Fatal("no two adjacent loopback ports in 16 tries")
	return nil, nil
}

// senderReport is a minimal RTCP sender report.
var senderReport = []byte{0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// answerNoICE answers offer on call, checks that the answer has no ICE and
// returns the call's SDES key for the peer's receiving context.
func answerNoICE(ctx context.Context, t *testing.T, call *securecall.Call, offer string) (answer string, key []byte) {
	t.Helper()
	answer, err := call.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	d, err := sdp.Unmarshal([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	m := d.Media[0]
	if m.HasICE() || len(m.Crypto) != 1 {
		t.Fatalf("answer section: ICE %t crypto %v", m.HasICE(), m.Crypto)
	}
	return answer, m.Crypto[0].Key
}

// expectRTP has call send one RTP packet and checks it reaches to, as SRTP
// the peer decrypts with recv, and does not reach notTo.
func expectRTP(t *testing.T, call *securecall.Call, seq uint16, recv *srtp.Context, to, notTo *net.UDPConn) {
	t.Helper()
	if err := call.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: seq, SSRC: call.SSRC()}, []byte("to the peer")); err != nil {
		t.Fatal(err)
	}
	pkt, ok := readFrom(t, to, 2*time.Second)
	if !ok {
		t.Fatalf("RTP did not reach %v (the call sends to %v)", to.LocalAddr(), call.Path().Remote.Address)
	}
	if plain, err := recv.DecryptRTP(nil, pkt, nil); err != nil || !bytes.HasSuffix(plain, []byte("to the peer")) {
		t.Fatalf("the peer cannot decrypt what it got at %v: %v", to.LocalAddr(), err)
	}
	if notTo != nil {
		if _, got := readFrom(t, notTo, 100*time.Millisecond); got {
			t.Fatalf("RTP still reached %v", notTo.LocalAddr())
		}
	}
}

// expectRTCP has call send a sender report and checks it reaches to.
func expectRTCP(t *testing.T, call *securecall.Call, to *net.UDPConn) {
	t.Helper()
	if err := call.WriteRTCP(senderReport); err != nil {
		t.Fatal(err)
	}
	// The call's own reports may come first: any SRTCP packet will do.
	for range 8 {
		pkt, ok := readFrom(t, to, 2*time.Second)
		if !ok {
			break
		}
		if len(pkt) >= 2 && pkt[1] >= 192 && pkt[1] <= 223 {
			return
		}
	}
	t.Fatalf("RTCP did not reach %v", to.LocalAddr())
}

func udpAddr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestReinviteMovesMediaNoICE: a re-offer of a call without ICE that moves
// the peer's media address (same session, new o= version, new c=/m=) is
// answered, and from the answer on RTP and RTCP go to the new address,
// RTCP to a=rtcp or the next port when the peer does not multiplex, the
// path reports the new address as signalled (not latched), and media from
// the new address is read. The same re-offer sent again gets the same
// answer and moves nothing. A stream latched to a NAT's address follows
// the signalled move as well.
func TestReinviteMovesMediaNoICE(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(t *testing.T) peerAddr
	}{
		{"rtcp-mux", func(t *testing.T) peerAddr { return peerAddr{rtp: listenLoopback(t)} }},
		{"a=rtcp", func(t *testing.T) peerAddr { return peerAddr{rtp: listenLoopback(t), rtcp: listenLoopback(t)} }},
		{"rtcp on port+1", func(t *testing.T) peerAddr { rtp, rtcp := listenAdjacent(t); return peerAddr{rtp: rtp, rtcp: rtcp} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			peer := &movingPeer{key: bytes.Repeat([]byte{0x6b}, 30)}
			old, moved := tc.at(t), tc.at(t)
			call, err := securecall.New(sdesConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			first, key := answerNoICE(ctx, t, call, peer.offer(1, old))
			if err := call.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			recv, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
			if err != nil {
				t.Fatal(err)
			}
			expectRTP(t, call, 1, recv, old.rtp, nil)

			reoffer := peer.offer(2, moved)
			second, _ := answerNoICE(ctx, t, call, reoffer)
			if second == first {
				t.Fatal("the re-offer got the first answer again")
			}
			if s := call.SignalingState(); s != securecall.SignalingStable {
				t.Fatalf("signaling %s after the re-offer", s)
			}
			expectRTP(t, call, 2, recv, moved.rtp, old.rtp)
			rtcpAt := moved.rtcp
			if rtcpAt == nil {
				rtcpAt = moved.rtp
			}
			expectRTCP(t, call, rtcpAt)
			if p := call.Path(); p.Latched || p.Remote.Address != udpAddr(moved.rtp) {
				t.Fatalf("path after the move: %+v, want the signalled %v", p, udpAddr(moved.rtp))
			}

			// The re-offer retransmitted: the same answer, nothing moves.
			if again, err := call.Answer(ctx, reoffer); err != nil || again != second {
				t.Fatalf("retransmitted re-offer: %v (same answer %t)", err, again == second)
			}
			expectRTP(t, call, 3, recv, moved.rtp, old.rtp)

			// Media from the new address is read, and the path stays.
			send, err := srtp.CreateContext(peer.key[:16], peer.key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
			if err != nil {
				t.Fatal(err)
			}
			pkt, err := send.EncryptRTP(nil, rtpPacket(1, []byte("from the new address")), nil)
			if err != nil {
				t.Fatal(err)
			}
			callAddr := net.UDPAddrFromAddrPort(call.Path().Local.Address)
			if _, err := moved.rtp.WriteToUDP(pkt, callAddr); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			call.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, n, err := call.ReadRTP(buf); err != nil || string(buf[:n]) != "from the new address" {
				t.Fatalf("ReadRTP = %q, %v", buf[:n], err)
			}
			if p := call.Path(); p.Latched || p.Remote.Address != udpAddr(moved.rtp) {
				t.Fatalf("path after the peer's packet: %+v", p)
			}

			// Latched to a NAT's mapping, then moved by the signaling: the
			// signalled address wins.
			natted := listenLoopback(t)
			pkt, err = send.EncryptRTP(nil, rtpPacket(2, []byte("from behind a NAT")), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := natted.WriteToUDP(pkt, callAddr); err != nil {
				t.Fatal(err)
			}
			if _, _, err := call.ReadRTP(buf); err != nil {
				t.Fatal(err)
			}
			if p := call.Path(); !p.Latched || p.Remote.Address != udpAddr(natted) {
				t.Fatalf("path after an authentic packet from a NAT: %+v", p)
			}
			third := tc.at(t)
			answerNoICE(ctx, t, call, peer.offer(3, third))
			expectRTP(t, call, 4, recv, third.rtp, natted)
			if p := call.Path(); p.Latched || p.Remote.Address != udpAddr(third.rtp) {
				t.Fatalf("path after a move from a latched address: %+v", p)
			}
		})
	}
}

// TestReinviteRefusedMoveChangesNothing: a re-offer of a call without ICE
// whose new address cannot be used is refused, and the call is as it was:
// media goes on to the old address, the signaling is stable, and a later
// usable re-offer moves it. Refused: under DirectOnly an address off the
// site (ice.ErrNoICEPolicy, as a first offer there is refused), a host
// name, or an address of another family than the call's socket
// (sdp.ErrNegotiation). A re-offer with the unspecified address (hold, RFC
// 3264 section 8.4) is answered and moves nothing.
func TestReinviteRefusedMoveChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy ice.Policy
		host   string
		want   error // nil: answered, nothing moved
	}{
		{"DirectOnly off the site", ice.DirectOnly, "192.0.2.7", ice.ErrNoICEPolicy},
		{"host name", ice.PreferDirect, "media.example.invalid", sdp.ErrNegotiation},
		{"IPv6 on an IPv4 socket", ice.PreferDirect, "::1", sdp.ErrNegotiation},
		{"hold", ice.PreferDirect, "0.0.0.0", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			peer := &movingPeer{key: bytes.Repeat([]byte{0x3c}, 30)}
			old := peerAddr{rtp: listenLoopback(t)}
			cfg := sdesConfig()
			cfg.ICE.Policy = tc.policy
			call, err := securecall.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			_, key := answerNoICE(ctx, t, call, peer.offer(1, old))
			if err := call.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			recv, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
			if err != nil {
				t.Fatal(err)
			}
			before := call.Path()

			bad := peerAddr{host: tc.host, rtp: listenLoopback(t)}
			_, err = call.Answer(ctx, peer.offer(2, bad))
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Answer to a hold re-offer: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Answer to a re-offer moving to %s: %v, want an error wrapping %v", tc.host, err, tc.want)
			}
			if s := call.SignalingState(); s != securecall.SignalingStable {
				t.Fatalf("signaling %s after the re-offer", s)
			}
			if p := call.Path(); p != before {
				t.Fatalf("the re-offer changed the path: %+v -> %+v", before, p)
			}
			if tc.want != nil {
				// Refused: media goes on to the old address.
				expectRTP(t, call, 1, recv, old.rtp, nil)
			} else {
				// The old way to hold (RFC 3264 section 8.4): the peer
				// takes no media, so none is sent, to the old address or
				// any other.
				if d := call.Direction(); d != sdp.RecvOnly {
					t.Fatalf("Direction after a c=0.0.0.0 re-offer: %s, want recvonly", d)
				}
				if err := call.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: 1, SSRC: call.SSRC()}, []byte("held")); err != nil {
					t.Fatal(err)
				}
				if _, got := readFrom(t, old.rtp, 100*time.Millisecond); got {
					t.Fatal("RTP reached the old address while the peer held the call with c=0.0.0.0")
				}
				if n := call.Stats().RTPWithheld; n != 1 {
					t.Fatalf("Stats.RTPWithheld %d after one packet on hold, want 1", n)
				}
			}
			moved := peerAddr{rtp: listenLoopback(t)}
			answerNoICE(ctx, t, call, peer.offer(3, moved))
			expectRTP(t, call, 2, recv, moved.rtp, old.rtp)
		})
	}
}

// TestReofferOlderVersionRefused: a late copy of an earlier re-offer of a
// call without ICE (an o= version below the last one answered, RFC 3264
// section 8: each new description's version is one more than the last)
// is refused with a *securecall.StateError and changes nothing: media
// stays at the address the newest offer gave. Before, it was answered as
// a new offer and moved the media back to the old address.
func TestReofferOlderVersionRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer := &movingPeer{key: bytes.Repeat([]byte{0x5a}, 30)}
	old, moved := peerAddr{rtp: listenLoopback(t)}, peerAddr{rtp: listenLoopback(t)}
	call, err := securecall.New(sdesConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	_, key := answerNoICE(ctx, t, call, peer.offer(1, old))
	if err := call.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	recv, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	answerNoICE(ctx, t, call, peer.offer(2, old))
	answerNoICE(ctx, t, call, peer.offer(3, moved))
	expectRTP(t, call, 1, recv, moved.rtp, old.rtp)

	_, err = call.Answer(ctx, peer.offer(2, old))
	var se *securecall.StateError
	if !errors.As(err, &se) {
		t.Errorf("Answer to a late copy of version 2 after version 3: %v, want a *securecall.StateError", err)
	}
	if s := call.SignalingState(); s != securecall.SignalingStable {
		t.Fatalf("signaling %s after the late offer", s)
	}
	expectRTP(t, call, 2, recv, moved.rtp, old.rtp)
}
