package ice

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// TestRTCPComponent: with component 2 enabled on both sides, candidates of
// both components are gathered (component 2 one priority step lower), both
// components connect, RTP leaves on component 1 and RTCP on component 2,
// and the reader gets both.
func TestRTCPComponent(t *testing.T) {
	cfg := Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") },
		Networks:        []Network{UDP4},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var ts [2]*Transport
	var cands [2][]sdp.Candidate
	for i := range ts {
		tr, err := NewTransport(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if err := tr.EnableRTCPComponent(); err != nil {
			t.Fatal(err)
		}
		if err := tr.Gather(ctx, func(c sdp.Candidate) { cands[i] = append(cands[i], c) }); err != nil {
			t.Fatal(err)
		}
		ts[i] = tr
	}
	for i, cs := range cands {
		var c1, c2 *sdp.Candidate
		for j := range cs {
			switch cs[j].Component {
			case 1:
				c1 = &cs[j]
			case 2:
				c2 = &cs[j]
			}
		}
		if c1 == nil || c2 == nil || c2.Priority != c1.Priority-1 || c1.Port == c2.Port {
			t.Fatalf("side %d candidates: %+v", i, cs)
		}
		for _, c := range cs {
			if err := ts[1-i].AddRemoteCandidate(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	type res struct {
		c   interface{ Write([]byte) (int, error) }
		err error
	}
	got := make(chan res, 2)
	for i, tr := range ts {
		go func() {
			other := ts[1-i].LocalCredentials()
			c, err := tr.Connect(ctx, Peer{Ufrag: other.Ufrag, Pwd: other.Pwd}, i == 0)
			got <- res{c, err}
		}()
	}
	for range ts {
		if r := <-got; r.err != nil {
			t.Fatal(r.err)
		}
	}
	a := ts[0].conn.(*conn)
	rtp := []byte{0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0xaa}
	rtcp := []byte{0x80, 200, 0, 1, 0, 0, 0, 9}
	rtpBytes, rtcpBytes := a.pc.BytesSent(), a.rtcp.pc.BytesSent()
	if _, err := a.Write(rtp); err != nil {
		t.Fatal(err)
	}
	if a.pc.BytesSent() != rtpBytes+uint64(len(rtp)) || a.rtcp.pc.BytesSent() != rtcpBytes {
		t.Errorf("RTP left on the wrong component")
	}
	if _, err := a.Write(rtcp); err != nil {
		t.Fatal(err)
	}
	if a.rtcp.pc.BytesSent() != rtcpBytes+uint64(len(rtcp)) {
		t.Errorf("RTCP did not leave on component 2")
	}
	b := ts[1].conn.(*conn)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	seen := map[byte]bool{}
	buf := make([]byte, 1500)
	for len(seen) < 2 {
		n, err := b.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (seen %v)", err, seen)
		}
		seen[buf[1]] = n > 0
	}
	if !seen[0] || !seen[200] {
		t.Errorf("reader saw %v", seen)
	}
	// DTLS on component 2 never reaches the reader (DTLS runs on
	// component 1 only); RTCP sent after it does.
	if _, err := a.rtcp.Write([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(rtcp); err != nil {
		t.Fatal(err)
	}
	n, err := b.Read(buf)
	if err != nil || n != len(rtcp) || buf[0] != 0x80 {
		t.Errorf("after a DTLS record on component 2 the reader got %x, %v; want the RTCP packet", buf[:n], err)
	}
}
