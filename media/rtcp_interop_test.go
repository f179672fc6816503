package media

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// TestInteropPionRTCPReadsOurReports: pion/rtcp, the parser behind
// pion/webrtc's RTCP readers and interceptors, reads this session's
// compound reports field by field.
func TestInteropPionRTCPReadsOurReports(t *testing.T) {
	var q reports
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	q.init(&RTCPConfig{SSRC: 0x1111, CNAME: "alice@example", ClockRate: 8000}, now)
	for i := range 100 {
		if i == 40 || i == 41 {
			continue // two lost
		}
		pkt := make([]byte, 12)
		pkt[0] = 0x80
		pkt[2], pkt[3] = 0, byte(i)
		pkt[7] = byte(i)
		pkt[8], pkt[9], pkt[10], pkt[11] = 0, 0, 0x22, 0x22
		q.noteRTP(pkt, now.Add(time.Duration(i)*20*time.Millisecond))
	}
	q.tx.ssrc, q.tx.sentThis, q.tx.packets, q.tx.octets, q.tx.lastTS = 0x1111, true, 50, 8000, 1234
	q.tx.lastAt = q.mono(now)
	pkts, err := rtcp.Unmarshal(q.build(nil, now.Add(2*time.Second), true))
	if err != nil {
		t.Fatalf("pion/rtcp: %v", err)
	}
	if len(pkts) != 3 {
		t.Fatalf("pion/rtcp read %d packets, want SR, SDES, BYE", len(pkts))
	}
	sr, ok := pkts[0].(*rtcp.SenderReport)
	if !ok {
		t.Fatalf("first packet %T, want an SR", pkts[0])
	}
	if sr.SSRC != 0x1111 || sr.PacketCount != 50 || sr.OctetCount != 8000 || sr.RTPTime != 1234+2*8000 ||
		sr.NTPTime != ntpTime(now.Add(2*time.Second)) || len(sr.Reports) != 1 {
		t.Fatalf("SR %+v", sr)
	}
	rr := sr.Reports[0]
	if rr.SSRC != 0x2222 || rr.TotalLost != 2 || rr.LastSequenceNumber != 99 || rr.FractionLost != 2*256/100 {
		t.Fatalf("report block %+v", rr)
	}
	sdes, ok := pkts[1].(*rtcp.SourceDescription)
	if !ok || len(sdes.Chunks) != 1 || sdes.Chunks[0].Source != 0x1111 ||
		sdes.Chunks[0].Items[0].Type != rtcp.SDESCNAME || sdes.Chunks[0].Items[0].Text != "alice@example" {
		t.Fatalf("SDES %#v", pkts[1])
	}
	if bye, ok := pkts[2].(*rtcp.Goodbye); !ok || len(bye.Sources) != 1 || bye.Sources[0] != 0x1111 {
		t.Fatalf("BYE %#v", pkts[2])
	}
	// A receiver report (nothing sent) with a long CNAME needing padding.
	q.tx.sentThis, q.tx.sentPrev = false, false
	q.cfg.CNAME = "abc"
	pkts, err = rtcp.Unmarshal(q.build(nil, now.Add(4*time.Second), false))
	if err != nil {
		t.Fatalf("pion/rtcp: %v", err)
	}
	if r, ok := pkts[0].(*rtcp.ReceiverReport); !ok || r.SSRC != 0x1111 || len(r.Reports) != 1 {
		t.Fatalf("RR %#v", pkts[0])
	}
}

// TestInteropPionRTCPReportsReadByUs: what pion/webrtc sends (SR and RR
// with report blocks, SDES, BYE with a reason, and feedback packets this
// session does not use) is read: the peer's view of our stream, the round
// trip from LSR/DLSR and the BYE.
func TestInteropPionRTCPReportsReadByUs(t *testing.T) {
	var q reports
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	q.init(&RTCPConfig{SSRC: 0x1111, ClockRate: 48000}, t0)
	// Our SR left at t0; pion held it 250 ms, and its RR arrives 40 ms
	// after that on top: RTT 40 ms.
	lsr := ntpMiddle(ntpTime(t0))
	compound := []rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 0x2222, Reports: []rtcp.ReceptionReport{{
			SSRC: 0x1111, FractionLost: 64, TotalLost: 17, LastSequenceNumber: 70000, Jitter: 480,
			LastSenderReport: lsr, Delay: uint32(250 * 65536 / 1000),
		}}},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 0x2222,
			Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "pion"}}}}},
		&rtcp.PictureLossIndication{SenderSSRC: 0x2222, MediaSSRC: 0x1111},
	}
	raw, err := rtcp.Marshal(compound)
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(290 * time.Millisecond)
	if _, bye := q.noteRTCP(raw, at, 0x1111); bye {
		t.Fatal("BYE reported without one")
	}
	st := q.snapshot()
	if d := st.RTT - 40*time.Millisecond; d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("RTT %v, want 40 ms", st.RTT)
	}
	rem := st.Remote
	if !rem.At.Equal(at) || rem.FractionLost != 0.25 || rem.Lost != 17 || rem.HighestSequence != 70000 ||
		rem.Jitter != 10*time.Millisecond || rem.MOS <= 1 {
		t.Fatalf("remote report %+v", rem)
	}
	if st.ReportsReceived != 1 {
		t.Fatalf("reports received %d", st.ReportsReceived)
	}
	// A sender report from pion is remembered for our next LSR/DLSR.
	srNTP := ntpTime(t0.Add(time.Second))
	raw, _ = rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 0x2222, NTPTime: srNTP, RTPTime: 1, PacketCount: 3, OctetCount: 9}})
	q.noteRTCP(raw, t0.Add(time.Second), 0x1111)
	if q.lastSR != ntpMiddle(srNTP) {
		t.Fatalf("LSR %x, want %x", q.lastSR, ntpMiddle(srNTP))
	}
	raw, _ = rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 0x2222}, &rtcp.Goodbye{Sources: []uint32{0x2222}, Reason: "hung up"}})
	reason, bye := q.noteRTCP(raw, t0.Add(2*time.Second), 0x1111)
	if !bye || reason != "hung up" || !q.snapshot().PeerBye {
		t.Fatalf("BYE: %v %q", bye, reason)
	}
	if _, again := q.noteRTCP(raw, t0.Add(3*time.Second), 0x1111); again {
		t.Fatal("second BYE reported again")
	}
}

// FuzzRTCPReports feeds arbitrary compound packets to the report reader:
// it must not panic and must keep its figures bounded.
func FuzzRTCPReports(f *testing.F) {
	raw, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 2, Reports: []rtcp.ReceptionReport{{SSRC: 1, LastSenderReport: 5}}},
		&rtcp.Goodbye{Sources: []uint32{2}, Reason: "x"},
	})
	f.Add(raw)
	f.Add([]byte{0x81, 203, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{0xa1, 203, 0, 1, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var q reports
		q.init(&RTCPConfig{SSRC: 1}, time.Now())
		q.noteRTCP(b, time.Now(), 1)
		st := q.snapshot()
		if st.RTT < 0 || st.Remote.FractionLost > 1 || len(st.ByeReason) > 255 {
			t.Fatalf("snapshot %+v", st)
		}
	})
}
