package media

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// The wire format is the one attest.go documents, byte for byte.
func TestAttestationWireFormat(t *testing.T) {
	a := Attestation{SSRC: 0x01020304, Type: sdp.CandidateRelay, Protocol: "udp", Address: netip.MustParseAddrPort("192.0.2.7:3478")}
	got, err := marshalAttestation(a, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x80, 204, 0, 6, // V=2, subtype 0, APP, length 6 (28 bytes)
		1, 2, 3, 4, // SSRC
		'S', 'C', 'P', 'A',
		1, 4, 1, 4, // version 1, relay, udp, IPv4
		0, 0, 0, 5, // sequence number
		0x0d, 0x96, 0, 0, // port 3478, reserved
		192, 0, 2, 7,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("marshal = %x, want %x", got, want)
	}
	for _, in := range []Attestation{
		a,
		{SSRC: 9, Type: sdp.CandidateHost, Protocol: "tcp", Address: netip.MustParseAddrPort("[fd00::1]:9")},
		{SSRC: 9, Type: sdp.CandidatePeerReflexive, Protocol: "udp", Address: netip.MustParseAddrPort("10.0.0.1:1")},
		{SSRC: 9, Type: sdp.CandidateServerReflexive, Protocol: "udp", Address: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")},
	} {
		p, err := marshalAttestation(in, 7)
		if err != nil {
			t.Fatal(err)
		}
		out, seq, ok := parseAttestation(p)
		in.Address = netip.AddrPortFrom(in.Address.Addr().Unmap(), in.Address.Port())
		if !ok || seq != 7 || out != in {
			t.Errorf("parse(marshal(%+v)) = %+v, %d, %v", in, out, seq, ok)
		}
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"version 2":    func(p []byte) []byte { p[12] = 2; return p },
		"type 9":       func(p []byte) []byte { p[13] = 9; return p },
		"protocol 3":   func(p []byte) []byte { p[14] = 3; return p },
		"family 6, v4": func(p []byte) []byte { p[15] = 6; return p },
		"short":        func(p []byte) []byte { return p[:20] },
	} {
		p := mutate(append([]byte(nil), want...))
		if _, _, ok := parseAttestation(p); ok {
			t.Errorf("%s: parsed", name)
		}
	}
	for _, bad := range []Attestation{
		{Type: "bogus", Protocol: "udp", Address: a.Address},
		{Type: sdp.CandidateHost, Protocol: "sctp", Address: a.Address},
		{Type: sdp.CandidateHost, Protocol: "udp"},
	} {
		if _, err := marshalAttestation(bad, 1); err == nil {
			t.Errorf("marshal(%+v) succeeded", bad)
		}
	}
}

// attestPair starts two sessions in mode over an in-memory link; got
// collects what b is told.
type attestPair struct {
	a, b   *Session
	ca, cb *memConn
	mu     sync.Mutex
	got    []Attestation
}

func (p *attestPair) seen() []Attestation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Attestation(nil), p.got...)
}

func newAttestPair(t *testing.T, mode sdp.Keying) *attestPair {
	t.Helper()
	p := &attestPair{}
	p.ca, p.cb = memPair()
	ca, cb := pairConfigs(t, mode, newFakeKeys(t, 1))
	// Only the attestation's own sends cross: the session's reports carry
	// it too (TestQualityReportsCarryAttestation).
	ca.RTCP.Disabled = true
	cb.OnPeerAttestation = func(a Attestation) {
		p.mu.Lock()
		p.got = append(p.got, a)
		p.mu.Unlock()
	}
	p.a, p.b = mustPair(t, p.ca, p.cb, ca, cb)
	return p
}

var testAttestation = Attestation{SSRC: 0xa, Type: sdp.CandidateRelay, Protocol: "udp", Address: netip.MustParseAddrPort("10.1.2.3:50000")}

// An attestation reaches the peer's OnPeerAttestation and never its
// ReadRTCP, sent alone or inside a compound packet; under kms and hybrid
// keying.
func TestAttestationConsumed(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(mode), func(t *testing.T) {
			var p *attestPair
			if mode == sdp.KeyingHybrid {
				// DTLS needs a real datagram socket's timing; the memory
				// link is fine for kms only.
				p = &attestPair{}
				ca, cb := udpPair(t)
				cfgA, cfgB := pairConfigs(t, mode, newFakeKeys(t, 1))
				cfgB.OnPeerAttestation = func(a Attestation) { p.mu.Lock(); p.got = append(p.got, a); p.mu.Unlock() }
				p.a, p.b = mustPair(t, ca, cb, cfgA, cfgB)
			} else {
				p = newAttestPair(t, mode)
			}
			if err := p.a.Attest(testAttestation); err != nil {
				t.Fatal(err)
			}
			app, err := marshalAttestation(Attestation{SSRC: 0xa, Type: sdp.CandidateHost, Protocol: "udp", Address: netip.MustParseAddrPort("10.1.2.3:50001")}, 99)
			if err != nil {
				t.Fatal(err)
			}
			compound := append(rtcpRR(0xa), app...)
			if err := p.a.WriteRTCP(compound); err != nil {
				t.Fatal(err)
			}
			p.b.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			n, err := p.b.ReadRTCP(buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], rtcpRR(0xa)) {
				t.Errorf("ReadRTCP = %x, want the receiver report alone", buf[:n])
			}
			got := p.seen()
			if len(got) != 2 || got[0] != testAttestation || got[1].Address.Port() != 50001 {
				t.Errorf("attestations seen = %+v, want %+v and the one in the compound packet", got, testAttestation)
			}
		})
	}
}

// The first copy is lost; resends ride on WriteRTP at the documented
// times, a bounded number of them, and the peer reports the attestation
// once.
func TestAttestationResends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newAttestPair(t, sdp.KeyingKMS)
		var dropped, rtcp int
		var mu sync.Mutex
		p.ca.setTap(func(b []byte) bool {
			if classify(b) != kindRTCP {
				return true
			}
			mu.Lock()
			defer mu.Unlock()
			rtcp++
			if dropped == 0 {
				dropped++
				return false
			}
			return true
		})
		if err := p.a.Attest(testAttestation); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for {
				if _, _, err := p.b.ReadRTP(buf); err != nil {
					return
				}
			}
		}()
		// 20 ms media for 8 s.
		for i := range 400 {
			h := RTPHeader{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(160 * i), SSRC: 0xa}
			if err := p.a.WriteRTP(h, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if i == 10 { // 220 ms: the first resend (at 100 ms) has arrived
				synctest.Wait()
				if got := p.seen(); len(got) != 1 || got[0] != testAttestation {
					t.Errorf("after the first resend: attestations seen = %+v", got)
				}
			}
		}
		synctest.Wait()
		mu.Lock()
		sent := rtcp
		mu.Unlock()
		if want := 1 + len(attestResends); sent != want {
			t.Errorf("attestation sent %d times, want %d", sent, want)
		}
		if got := p.seen(); len(got) != 1 {
			t.Errorf("attestations seen = %+v, want one", got)
		}
		p.b.Close()
		p.a.Close()
		<-done
	})
}

// dtls keying sends no attestation, and one a peer sends anyway is
// dropped unreported: its keys are only as trustworthy as the signaling.
func TestAttestationNotInDTLS(t *testing.T) {
	ca, cb := udpPair(t)
	cfgA, cfgB := pairConfigs(t, sdp.KeyingDTLS, nil)
	var reported int
	cfgB.OnPeerAttestation = func(Attestation) { reported++ }
	a, b := mustPair(t, ca, cb, cfgA, cfgB)
	if err := a.Attest(testAttestation); err == nil {
		t.Error("Attest succeeded under dtls keying")
	}
	app, _ := marshalAttestation(testAttestation, 1)
	if err := a.WriteRTCP(app); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteRTCP(rtcpRR(0xa)); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := b.ReadRTCP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], rtcpRR(0xa)) || reported != 0 {
		t.Errorf("ReadRTCP = %x, reported %d: want the receiver report and nothing reported", buf[:n], reported)
	}
}

// takeAttestations never panics, and what it leaves is the input with
// whole APP packets removed.
func FuzzTakeAttestations(f *testing.F) {
	app, _ := marshalAttestation(testAttestation, 1)
	f.Add(app)
	f.Add(append(rtcpRR(1), app...))
	f.Add(append(app, rtcpRR(1)...))
	f.Add([]byte{0x80, 204, 0, 2, 0, 0, 0, 0, 'S', 'C', 'P', 'A'})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s := newSession(Config{Keying: sdp.KeyingKMS, OnPeerAttestation: func(Attestation) {}}, nil)
		in := append([]byte(nil), pkt...)
		out := s.takeAttestations(pkt)
		if len(out) > len(in) {
			t.Fatalf("grew: %x -> %x", in, out)
		}
		if len(out) == len(in) && !bytes.Equal(out, in) {
			t.Fatalf("changed without removing: %x -> %x", in, out)
		}
	})
}

// AwaitPeerAttestation returns as soon as the peer's attestation is
// taken, keeps the media it read meanwhile for ReadRTP, and gives up at
// ctx's end without an error when the peer attests nothing.
func TestAwaitPeerAttestation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newAttestPair(t, sdp.KeyingKMS)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if ok, err := p.b.AwaitPeerAttestation(ctx); ok || err != nil {
			t.Fatalf("with no attestation: AwaitPeerAttestation = %v, %v; want false, nil", ok, err)
		}
		if err := p.a.WriteRTP(RTPHeader{SequenceNumber: 1, SSRC: 0xa}, []byte("early media")); err != nil {
			t.Fatal(err)
		}
		if err := p.a.Attest(testAttestation); err != nil {
			t.Fatal(err)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel2()
		start := time.Now()
		ok, err := p.b.AwaitPeerAttestation(ctx2)
		if !ok || err != nil || time.Since(start) > awaitSlice {
			t.Fatalf("AwaitPeerAttestation = %v, %v after %v; want true at once", ok, err, time.Since(start))
		}
		if got := p.seen(); len(got) != 1 || got[0] != testAttestation {
			t.Errorf("attestations seen = %+v", got)
		}
		buf := make([]byte, 100)
		p.b.SetReadDeadline(time.Now().Add(time.Second))
		if _, n, err := p.b.ReadRTP(buf); err != nil || string(buf[:n]) != "early media" {
			t.Errorf("ReadRTP after the wait = %q, %v; want the media read during it", buf[:n], err)
		}
	})
}
