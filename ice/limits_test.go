package ice_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/net/ipv4"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// checkSink receives every datagram sent to one port on any loopback
// address (127.0.0.0/8 is all routed to lo on Linux) and records the
// destinations of STUN binding requests.
type checkSink struct {
	pc   *ipv4.PacketConn
	port uint16
	done chan struct{}

	mu     sync.Mutex
	checks int
	dsts   map[netip.Addr]bool
}

func startSink(t *testing.T) *checkSink {
	t.Helper()
	// Bound to the unspecified address so that checks to any 127.x.y.z
	// arrive; the candidates all name loopback addresses, so nothing
	// leaves the machine.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		c.Close()
		t.Skipf("no IP_PKTINFO on this system: %v", err)
	}
	s := &checkSink{pc: pc, port: uint16(c.LocalAddr().(*net.UDPAddr).Port), done: make(chan struct{}), dsts: make(map[netip.Addr]bool)}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1500)
		for {
			n, cm, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if cm == nil || !stun.IsMessage(buf[:n]) {
				continue
			}
			a, _ := netip.AddrFromSlice(cm.Dst.To4())
			s.mu.Lock()
			s.checks++
			s.dsts[a] = true
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *checkSink) counts() (checks, distinct int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checks, len(s.dsts)
}

// floodCandidates returns n host candidates on distinct loopback
// addresses, all on port.
func floodCandidates(n int, port uint16) []sdp.Candidate {
	var cs []sdp.Candidate
	for i := range n {
		cs = append(cs, sdp.Candidate{
			Foundation: fmt.Sprint(i), Component: 1, Transport: "udp", Priority: uint32(2130706431 - i),
			Address: fmt.Sprintf("127.1.%d.%d", i/250, i%250+1), Port: port, Type: sdp.CandidateHost,
		})
	}
	return cs
}

// An offer with 1,072 host candidates (what fits in 64 KiB) made the
// answerer check every one of them: checks to 1,064 distinct addresses in
// 12 s. The Transport now takes at most MaxRemoteCandidates of them and
// keeps its check list within MaxCandidatePairs, counting the rest.
func TestSecurityCandidateFlood(t *testing.T) {
	const offered = 1072
	sink := startSink(t)
	cfg := loopback()
	cfg.ConnectTimeout = 1500 * time.Millisecond
	s := newSide(t, cfg)
	s.gather(t)
	for _, c := range floodCandidates(offered, sink.port) {
		if err := s.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	// The same candidate again is not a new one.
	if err := s.t.AddRemoteCandidate(floodCandidates(1, sink.port)[0]); err != nil {
		t.Fatal(err)
	}
	// As the answerer (controlled), until the checks have failed.
	_, err := s.t.Connect(context.Background(), ice.Peer{Ufrag: "flood", Pwd: "floodfloodfloodfloodfl"}, false)
	if err == nil {
		t.Fatal("connected to a sink")
	}
	checks, distinct := sink.counts()
	t.Logf("%d checks to %d distinct addresses", checks, distinct)
	limit := min(ice.DefaultMaxRemoteCandidates, ice.DefaultMaxCandidatePairs/len(s.cands))
	if distinct > limit {
		t.Errorf("checks went to %d distinct addresses, want at most %d", distinct, limit)
	}
	// Each pair gets at most 15 checks (doc.go) before it fails.
	if checks > ice.DefaultMaxCandidatePairs*15 {
		t.Errorf("%d checks sent, want at most %d", checks, ice.DefaultMaxCandidatePairs*15)
	}
	if got, want := s.t.Stats().CandidatesDropped, uint64(offered-limit); got != want {
		t.Errorf("Stats().CandidatesDropped = %d, want %d", got, want)
	}
}

// The pair limit counts the local candidates: with three local candidates
// of the candidate's network type and a pair limit of 6, two remote
// candidates fit and the third is dropped. A restart starts the count
// again.
func TestCandidatePairLimit(t *testing.T) {
	cfg := loopback()
	cfg.MaxCandidatePairs = 6
	cfg.MaxRemoteCandidates = 10
	cfg.IPFilter = func(netip.Addr) bool { return true }
	cfg.InterfaceFilter = nil
	s := newSide(t, cfg)
	s.gather(t)
	var udp4 int
	for _, c := range s.cands {
		if a, err := netip.ParseAddr(c.Address); err == nil && a.Is4() {
			udp4++
		}
	}
	if udp4 == 0 {
		t.Skip("no IPv4 host candidate")
	}
	fits := 6 / udp4
	for _, c := range floodCandidates(fits+3, 9) {
		if err := s.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.t.Stats().CandidatesDropped; got != 3 {
		t.Errorf("with %d local IPv4 candidates, dropped %d of %d, want 3", udp4, got, fits+3)
	}
	if _, err := s.t.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.gather(t)
	if err := s.t.AddRemoteCandidate(floodCandidates(1, 9)[0]); err != nil {
		t.Fatal(err)
	}
	if got := s.t.Stats().CandidatesDropped; got != 3 {
		t.Errorf("after a restart a candidate was dropped: %d", got)
	}
}
