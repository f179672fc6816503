package ice_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

func udpLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func recvWithin(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("nothing arrived at %v: %v", c.LocalAddr(), err)
	}
	return buf[:n]
}

// TestDirectRTCPApart: without rtcp-mux, RTCP leaves from and goes to its
// own ports, RTP from and to the others, and each stream latches on its
// own.
func TestDirectRTCPApart(t *testing.T) {
	d, err := ice.ListenDirect(ice.Config{IPFilter: func(a netip.Addr) bool { return a.IsLoopback() }}, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cands := d.Candidates()
	if len(cands) != 2 || cands[0].Component != 1 || cands[1].Component != 2 || cands[0].Address != "127.0.0.1" || cands[0].Type != sdp.CandidateHost {
		t.Fatalf("candidates = %+v", cands)
	}
	peerRTP, peerRTCP, moved := udpLoopback(t), udpLoopback(t), udpLoopback(t)
	conn, err := d.Connect(context.Background(), addrOf(peerRTP), addrOf(peerRTCP), false)
	if err != nil {
		t.Fatal(err)
	}
	rtp := []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}
	rtcp := []byte{0x80, 200, 0, 1, 1, 2, 3, 4}
	conn.Write(rtp)
	conn.Write(rtcp)
	if got := recvWithin(t, peerRTP); got[1] != 0 {
		t.Errorf("RTP socket got %x", got)
	}
	if got := recvWithin(t, peerRTCP); got[1] != 200 {
		t.Errorf("RTCP socket got %x", got)
	}
	// RTCP from another address, reported authentic: RTCP follows it, RTP
	// stays.
	ourRTCP := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(cands[1].Port)}
	moved.WriteToUDP(rtcp, ourRTCP)
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	conn.(interface{ Authentic() }).Authentic()
	conn.Write(rtcp)
	recvWithin(t, moved)
	conn.Write(rtp)
	recvWithin(t, peerRTP)
	if p := d.Path(); !p.NoICE || p.Latched || p.Remote.Address != addrOf(peerRTP) {
		t.Errorf("RTCP latching changed the RTP path: %+v", p)
	}
	// A datagram read but never reported authentic moves nothing.
	moved.WriteToUDP(rtp, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(cands[0].Port)})
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	conn.Write(rtp)
	recvWithin(t, peerRTP)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := conn.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestDirectPolicy(t *testing.T) {
	if _, err := ice.ListenDirect(ice.Config{Policy: ice.RelayOnly}, netip.Addr{}); !errors.Is(err, ice.ErrNoICEPolicy) {
		t.Errorf("RelayOnly: %v", err)
	}
	if _, err := ice.ListenDirect(ice.Config{Policy: ice.DirectOnly}, netip.MustParseAddr("192.0.2.1")); !errors.Is(err, ice.ErrNoICEPolicy) {
		t.Errorf("DirectOnly with an off-site peer: %v", err)
	}
	d, err := ice.ListenDirect(ice.Config{Policy: ice.DirectOnly}, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.Connect(context.Background(), netip.MustParseAddrPort("198.51.100.9:5004"), netip.AddrPort{}, true)
	var pe *ice.PolicyError
	if !errors.Is(err, ice.ErrNoICEPolicy) || !errors.Is(err, ice.ErrPolicy) || !errors.As(err, &pe) || pe.Address != netip.MustParseAddrPort("198.51.100.9:5004") {
		t.Errorf("DirectOnly Connect to an off-site address: %v", err)
	}
	// The site is what Config.SiteNetworks says.
	site, err := ice.ListenDirect(ice.Config{Policy: ice.DirectOnly, SiteNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("198.51.100.0/24")}}, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	if _, err := site.Connect(context.Background(), netip.MustParseAddrPort("198.51.100.9:5004"), netip.AddrPort{}, true); err != nil {
		t.Errorf("DirectOnly Connect to an address in SiteNetworks: %v", err)
	}
	if _, err := d.Connect(context.Background(), netip.MustParseAddrPort("0.0.0.0:5004"), netip.AddrPort{}, true); err == nil {
		t.Error("Connect to an unspecified address (a call on hold) succeeded")
	}
}
