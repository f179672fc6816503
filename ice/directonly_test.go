package ice_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/stunturn"
	"github.com/securecall/securecall/sdp"
)

// The site of the DirectOnly tests is 127.0.0.1 alone, so that the test
// TURN server's relayed addresses (127.0.0.2) are outside it.
var testSite = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// directOnlySite is a loopback DirectOnly transport whose site is testSite.
func directOnlySite() ice.Config {
	cfg := loopback()
	cfg.Policy = ice.DirectOnly
	cfg.SiteNetworks = testSite
	cfg.ConnectTimeout = 2 * time.Second
	return cfg
}

// relayedPeer is a peer whose every check and packet goes through srv:
// a RelayOnly transport, as a peer behind a relay it does not disclose.
func relayedPeer(t *testing.T, srv *stunturn.Server) *side {
	cfg := loopback()
	cfg.Servers = srv.Servers()
	cfg.Policy = ice.RelayOnly
	cfg.ConnectTimeout = 2 * time.Second
	return newSide(t, cfg)
}

// connectBoth connects a (controlled, the DirectOnly side) with b
// (controlling) and returns a's result; b's error is not examined.
func connectBoth(a, b *side) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.conn, a.err = a.t.Connect(ctx, b.peer(false), false) }()
	go func() { defer wg.Done(); b.conn, b.err = b.t.Connect(ctx, a.peer(false), true) }()
	wg.Wait()
	return a.conn, a.err
}

// checkRefused asserts that err is the policy's refusal of the relay's
// address, and that nothing connected: not this side, and not the relayed
// peer, which would if this side had answered a single check of its.
func checkRefused(t *testing.T, a, b *side, err error, relay netip.Addr) {
	t.Helper()
	if err == nil {
		p := a.t.Path()
		t.Fatalf("DirectOnly connected through the relay: path %+v (Direct() = %v), media flowed through the relay: %v",
			p, p.Direct(), flows(a.conn, b.conn))
	}
	t.Logf("refused: %v", err)
	if b.err == nil {
		t.Error("the relayed peer connected: this side answered its checks through the relay")
	}
	if !errors.Is(err, ice.ErrPolicy) {
		t.Fatalf("Connect = %v, want an error wrapping ice.ErrPolicy", err)
	}
	var pe *ice.PolicyError
	if !errors.As(err, &pe) || pe.Address.Addr() != relay {
		t.Fatalf("Connect = %v, want a *ice.PolicyError naming %v", err, relay)
	}
	if p := a.t.Path(); p.Local.Type != "" {
		t.Errorf("path = %+v after the refusal, want none", p)
	}
}

// flows reports whether a packet written on from arrives on to (a few
// tries, bounded); used to describe a failure.
func flows(from, to net.Conn) bool {
	if from == nil || to == nil {
		return false
	}
	buf := make([]byte, 64)
	for range 10 {
		if _, err := from.Write([]byte("ping")); err != nil {
			return false
		}
		to.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := to.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return true
		}
	}
	return false
}

// A peer behind a TURN relay reaches a DirectOnly transport that has no
// candidate of it: its checks arrive from the relay's address, which
// pion learns as peer-reflexive. That relay address is outside the site,
// so the checks are never answered, no pair forms, and Connect fails with
// the policy error naming it.
func TestSecurityDirectOnlyRelayedPeerReflexive(t *testing.T) {
	srv := startTURN(t)
	a := newSide(t, directOnlySite())
	b := relayedPeer(t, srv)
	a.gather(t)
	b.gather(t)
	for _, c := range a.cands {
		if err := b.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	// a gets none of b's candidates: b's relay candidates would be
	// refused by type, so the attack relies on peer-reflexive learning.
	_, err := connectBoth(a, b)
	checkRefused(t, a, b, err, netip.MustParseAddr("127.0.0.2"))
}

// The relayed peer relabels its relay candidate "typ host". The candidate
// type is not what DirectOnly trusts: its address is outside the site, so
// it is refused when added and nothing connects.
func TestSecurityDirectOnlyRelayLabelledHost(t *testing.T) {
	srv := startTURN(t)
	a := newSide(t, directOnlySite())
	b := relayedPeer(t, srv)
	a.gather(t)
	b.gather(t)
	for _, c := range a.cands {
		if err := b.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	var added, refused int
	for _, c := range b.cands {
		c.Type, c.RelatedAddress, c.RelatedPort = sdp.CandidateHost, "", 0
		err := a.t.AddRemoteCandidate(c)
		switch {
		case err == nil:
			added++
		case errors.Is(err, ice.ErrPolicy):
			refused++
		default:
			t.Fatalf("AddRemoteCandidate(%v) = %v, want nil or a policy error", c, err)
		}
	}
	if refused == 0 {
		t.Errorf("the relay candidate relabelled host was accepted (%d added)", added)
	}
	_, err := connectBoth(a, b)
	checkRefused(t, a, b, err, netip.MustParseAddr("127.0.0.2"))
}

// The same attack on a transport whose host candidate is a shared UDPMux
// socket: the mux hands packets to the transport past its own socket
// guard, so the site filter must sit on that path too.
func TestSecurityDirectOnlyRelayedPeerReflexiveUDPMux(t *testing.T) {
	srv := startTURN(t)
	mux, err := ice.ListenUDPMux(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	cfg := directOnlySite()
	cfg.UDPMux = mux
	a := newSide(t, cfg)
	b := relayedPeer(t, srv)
	a.gather(t)
	b.gather(t)
	for _, c := range a.cands {
		if err := b.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	_, err = connectBoth(a, b)
	checkRefused(t, a, b, err, netip.MustParseAddr("127.0.0.2"))
	a.t.Close()
	b.t.Close()
}

// An attestation the caller has authenticated: under DirectOnly one that
// names a relay, or an address outside the site, refuses the connected
// path (the net.Conn fails with the policy error); a matching host one
// is reported.
func TestNotePeerAttestation(t *testing.T) {
	cfg := loopback()
	cfg.Policy = ice.DirectOnly
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	peer := b.t.Path().Local
	if err := a.t.NotePeerAttestation(peer); err != nil {
		t.Fatal(err)
	}
	if p := a.t.Path(); !p.PeerAttested || p.PeerLocal != peer || p.AttestationMatches != (peer.Address == p.Remote.Address) {
		t.Errorf("path %+v after the attestation of %+v", p, peer)
	}
	if err := a.t.NotePeerAttestation(ice.CandidateInfo{Type: "bogus", Address: peer.Address}); err == nil || errors.Is(err, ice.ErrPolicy) {
		t.Errorf("a malformed attestation: %v, want a plain error", err)
	}
	offSite := ice.CandidateInfo{Type: sdp.CandidateHost, Address: netip.MustParseAddrPort("203.0.113.9:5000"), Protocol: "udp"}
	relay := ice.CandidateInfo{Type: sdp.CandidateRelay, Address: peer.Address, Protocol: "udp"}
	for _, c := range []struct {
		name string
		side *side
		info ice.CandidateInfo
	}{{"relay", a, relay}, {"off site", b, offSite}} {
		err := c.side.t.NotePeerAttestation(c.info)
		var pe *ice.PolicyError
		if !errors.As(err, &pe) || pe.Address != c.info.Address || pe.Type != c.info.Type {
			t.Errorf("%s: NotePeerAttestation = %v, want a PolicyError naming %v", c.name, err, c.info.Address)
		}
		if _, err := c.side.conn.Write([]byte("x")); !errors.Is(err, ice.ErrPolicy) {
			t.Errorf("%s: Write after the refusal = %v, want the policy error", c.name, err)
		}
		if _, err := c.side.conn.Read(make([]byte, 10)); !errors.Is(err, ice.ErrPolicy) {
			t.Errorf("%s: Read after the refusal = %v, want the policy error", c.name, err)
		}
		if p := c.side.t.Path(); p.Local.Type != "" {
			t.Errorf("%s: path %+v after the refusal, want none", c.name, p)
		}
	}
	// PreferDirect records, and refuses nothing.
	x, y := newSide(t, loopback()), newSide(t, loopback())
	connect(t, x, y, false, false, nil)
	if err := x.t.NotePeerAttestation(relay); err != nil {
		t.Errorf("PreferDirect refused an attested relay: %v", err)
	}
	if p := x.t.Path(); !p.PeerAttested || p.PeerLocal.Type != sdp.CandidateRelay || p.AttestationMatches {
		t.Errorf("PreferDirect path %+v, want the relay attestation reported, not matching", p)
	}
}
