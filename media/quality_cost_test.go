package media

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

// TestQualityZeroAllocsWithReports: with a report due on every packet
// (both ways), WriteRTP and ReadRTP still allocate nothing per packet, and
// the reports start no goroutine: building, protecting and reading them
// happens on the caller's goroutine.
func TestQualityZeroAllocsWithReports(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	sa, sb := mustPair(t, ca, cb, a, b)
	ha := RTPHeader{PayloadType: 0, SSRC: 5}
	hb := RTPHeader{PayloadType: 0, SSRC: 6}
	payload := make([]byte, 160)
	buf := make([]byte, 1500)
	step := func() {
		sa.q.due.Store(1)
		sb.q.due.Store(1)
		ha.SequenceNumber++
		ha.Timestamp += 160
		hb.SequenceNumber++
		hb.Timestamp += 160
		if err := sa.WriteRTP(ha, payload); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sb.ReadRTP(buf); err != nil {
			t.Fatal(err)
		}
		if err := sb.WriteRTP(hb, payload); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sa.ReadRTP(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		step()
	}
	if allocs := testing.AllocsPerRun(300, step); allocs > allocBound(6) { // two RTP packets, two reports (each built in one pooled buffer, protected in another)
		t.Fatalf("%.2f allocations per packet pair with reports due, want %v", allocs, allocBound(6))
	}
	qa, qb := sa.Stats().Quality, sb.Stats().Quality
	if qa.ReportsSent < 300 || qb.ReportsReceived < 300 || qa.Remote.At.IsZero() || qa.RTT <= 0 {
		t.Fatalf("reports did not flow: a %+v b %+v", qa, qb)
	}
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// discardConn is a transport that accepts and forgets every datagram.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) Close() error                     { return nil }

// BenchmarkQualityReport is the cost of one report: build the compound
// SR + SDES, protect and send it.
func BenchmarkQualityReport(b *testing.B) {
	s, r := benchSessions(b, ProfileAEADAES128GCM, false)
	s.conn, r.conn = discardConn{}, discardConn{}
	h := RTPHeader{PayloadType: 0, SSRC: 1}
	payload := make([]byte, 160)
	s.sendMu.Lock()
	out, _ := s.protectRTPLocked(new(outBuf)[:0], &h, payload)
	s.sendMu.Unlock()
	r.unprotectRTP(out, out)
	b.ReportAllocs()
	for b.Loop() {
		s.sendMu.Lock()
		s.sendReportLocked(time.Now(), false)
		s.sendMu.Unlock()
	}
}

// BenchmarkQualityReceiveUpdate is what every received RTP packet adds:
// the A.1/A.8 update with the clock read.
func BenchmarkQualityReceiveUpdate(b *testing.B) {
	var q reports
	q.init(&RTCPConfig{Disabled: true}, time.Now())
	pkt := make([]byte, 172)
	pkt[0] = 0x80
	seq, ts := uint16(0), uint32(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		ts += 160
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		pkt[4], pkt[5], pkt[6], pkt[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
		q.noteRTP(pkt, time.Now())
	}
}
