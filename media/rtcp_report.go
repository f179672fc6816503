package media

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The session's own RTCP: reports are due at the RFC 3550 interval and go
// out with the first packet the session handles after they are due, sent
// or received, so a call owns no timer and no goroutine for them and a
// silent call sends nothing. The state is split by lock: what the sender
// knows lives under Session.sendMu, what the receiver knows under
// reports.mu; sendMu is taken first when both are needed.

// udpIPOverhead is the IPv4 and UDP header size counted in avg_rtcp_size
// (RFC 3550 section 6.3.1 counts lower-layer headers).
const udpIPOverhead = 28

// maxReportLen bounds a compound report: SR with one block, SDES with a
// 255-byte CNAME, BYE with a 255-byte reason, and room for one more small
// packet from another part of the session.
const maxReportLen = 28 + 24 + 4 + 4 + 2 + 256 + 4 + 4 + 256 + 64

// reportBuf is where a report is built; they are pooled, so that a session
// holds none between its reports (seconds apart).
type reportBuf [maxReportLen]byte

var reportBufs = sync.Pool{New: func() any { return new(reportBuf) }}

type reports struct {
	// cfg is the session's Config.RTCP, resolved by init: the session
	// keeps one copy, not two.
	cfg   *RTCPConfig
	epoch time.Time // base of the session's monotonic clock
	// due is when the next report is due, in ns since epoch; 0 while
	// reports are off.
	due atomic.Int64

	// Under Session.sendMu.
	tx struct {
		ssrc            uint32
		sent            bool // any RTP sent, ever
		sentThis        bool // RTP sent since the last report
		sentPrev        bool // RTP sent in the interval before
		packets, octets uint32
		lastTS          uint32
		lastAt          int64 // ns since epoch
	}
	// ourSSRC is the SSRC this side sends or reports from: next to tx,
	// whose line every WriteRTP touches anyway.
	ourSSRC atomic.Uint32
	initial bool
	byeSent bool

	mu         sync.Mutex
	src        rxSource
	heardThis  bool // RTP received since the last report
	heardPrev  bool
	peerSeen   bool // the peer is a member (sent RTP or RTCP)
	peerSender bool
	lastSR     uint32 // middle 32 bits of the peer's last SR's NTP time
	srAt       time.Time
	avgSize    float64
	remote     RemoteReport
	rtt        time.Duration
	bye        bool
	byeReason  string
	codec      string // the codec the estimate rates: cfg.Codec, or SetCodec's

	sent, received atomic.Uint64 // reports
}

// init prepares the reports of a session that starts now. It resolves *c
// in place, choosing the SSRC and CNAME where c leaves them zero, and
// keeps c.
func (q *reports) init(c *RTCPConfig, now time.Time) {
	*c = c.resolve()
	q.cfg = c
	q.epoch = now
	var rnd [12]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read does not fail
	if q.cfg.SSRC == 0 {
		q.cfg.SSRC = binary.BigEndian.Uint32(rnd[:4]) | 1
	}
	if q.cfg.CNAME == "" {
		q.cfg.CNAME = hex.EncodeToString(rnd[4:])
	}
	q.codec = q.cfg.Codec
	q.tx.ssrc = q.cfg.SSRC
	q.ourSSRC.Store(q.cfg.SSRC)
	q.initial = true
	// The probable size of the first report: an RR with one block and
	// the SDES, its SRTCP trailer and the lower layers.
	q.avgSize = float64(8+24+10+len(q.cfg.CNAME)+20+udpIPOverhead) + 4
	if !q.cfg.Disabled {
		q.due.Store(int64(q.interval()))
	}
}

// mono returns the session's monotonic clock reading at t.
func (q *reports) mono(t time.Time) int64 { return int64(t.Sub(q.epoch)) }

// sinceEpoch is mono(time.Now()) with one clock read instead of the two
// of time.Now (the wall clock is needed only when a report is built):
// the packet paths call it once per packet.
func (q *reports) sinceEpoch() int64 { return int64(time.Since(q.epoch)) }

// interval is RFC 3550 section 6.3.1's (appendix A.7), without timer
// reconsideration: the session has no timer to reconsider. It takes
// reports.mu for the member counts.
func (q *reports) interval() time.Duration {
	q.mu.Lock()
	members, senders := 1, 0
	if q.peerSeen {
		members++
	}
	if q.peerSender {
		senders++
	}
	avg := q.avgSize
	q.mu.Unlock()
	weSent := q.tx.sentThis || q.tx.sentPrev
	if weSent {
		senders++
	}
	tmin := q.cfg.Interval.Seconds()
	if q.initial {
		tmin /= 2
	}
	bw := 0.05 * float64(q.cfg.Bandwidth) / 8 // bytes per second for RTCP
	n := float64(members)
	if senders > 0 && float64(senders) <= 0.25*float64(members) {
		if weSent {
			bw *= 0.25
			n = float64(senders)
		} else {
			bw *= 0.75
			n -= float64(senders)
		}
	}
	t := max(avg*n/bw, tmin)
	t *= mrand.Float64() + 0.5
	t /= math.E - 1.5
	return time.Duration(t * float64(time.Second))
}

// noteSent records an RTP packet sent; sendMu is held.
func (q *reports) noteSent(h *RTPHeader, payloadLen int, mono int64) {
	q.tx.ssrc = h.SSRC
	q.tx.sent, q.tx.sentThis = true, true
	q.tx.packets++
	q.tx.octets += uint32(payloadLen)
	q.tx.lastTS = h.Timestamp
	q.tx.lastAt = mono
}

// isDue reports whether a report is due at now.
func (q *reports) isDue(now time.Time) bool { return q.dueAt(q.mono(now)) }

// dueAt is isDue at mono ns since the epoch.
func (q *reports) dueAt(mono int64) bool {
	d := q.due.Load()
	return d != 0 && mono >= d
}

// build appends this side's compound report to b: an SR while this
// side sends RTP (an RR otherwise) with a block for the peer's stream once
// it has been heard, and the SDES CNAME; with bye, a BYE last. It starts
// a new reporting interval. sendMu is held.
func (q *reports) build(b []byte, now time.Time, bye bool) []byte {
	weSent := q.tx.sentThis || q.tx.sentPrev
	q.tx.sentPrev, q.tx.sentThis = q.tx.sentThis, false
	var blocks [1]reportBlock
	nb := 0
	q.mu.Lock()
	if q.src.active && (q.heardThis || q.heardPrev) {
		blocks[0] = q.src.block(q.lastSR, q.srAt, now)
		nb = 1
	}
	q.heardPrev, q.heardThis = q.heardThis, false
	q.mu.Unlock()
	if weSent {
		elapsed := float64(q.mono(now)-q.tx.lastAt) / 1e9
		si := senderInfo{
			ntp:         ntpTime(now),
			rtpTime:     q.tx.lastTS + uint32(int64(elapsed*float64(q.cfg.ClockRate))),
			packetCount: q.tx.packets,
			octetCnt:    q.tx.octets,
		}
		b = appendSR(b, q.tx.ssrc, si, blocks[:nb])
	} else {
		b = appendRR(b, q.tx.ssrc, blocks[:nb])
	}
	b = appendSDESCNAME(b, q.tx.ssrc, q.cfg.CNAME)
	if bye {
		b = appendBYE(b, q.tx.ssrc, "")
	}
	return b
}

// sent records a report of n bytes sent on the wire and schedules the
// next; sendMu is held.
func (q *reports) reportSent(n int, now time.Time) {
	q.sent.Add(1)
	q.mu.Lock()
	q.avgSize += (float64(n+udpIPOverhead) - q.avgSize) / 16
	q.mu.Unlock()
	q.initial = false
	if !q.cfg.Disabled {
		q.due.Store(q.mono(now) + int64(q.interval()))
	}
}

// noteRTP records an accepted RTP packet of the peer (plain, header
// first).
func (q *reports) noteRTP(pkt []byte, now time.Time) { q.noteRTPAt(pkt, q.mono(now)) }

// noteRTPAt is noteRTP at mono ns since the epoch.
func (q *reports) noteRTPAt(pkt []byte, mono int64) {
	if len(pkt) < rtpFixedLen {
		return
	}
	seq := binary.BigEndian.Uint16(pkt[2:])
	ts := binary.BigEndian.Uint32(pkt[4:])
	ssrc := binary.BigEndian.Uint32(pkt[8:])
	q.mu.Lock()
	if !q.src.active || q.src.ssrc != ssrc {
		q.src.reset(ssrc, seq, float64(q.cfg.ClockRate))
		q.lastSR, q.srAt = 0, time.Time{}
	}
	q.src.update(seq, ts, mono)
	q.heardThis, q.peerSeen, q.peerSender = true, true, true
	q.mu.Unlock()
}

// noteReplay classifies an SRTP packet of the peer's source rejected as a
// replay (raw is still protected; its header is in the clear).
func (q *reports) noteReplay(raw []byte) {
	if len(raw) < rtpFixedLen {
		return
	}
	seq := binary.BigEndian.Uint16(raw[2:])
	ssrc := binary.BigEndian.Uint32(raw[8:])
	q.mu.Lock()
	if q.src.active && q.src.ssrc == ssrc {
		q.src.rejected(seq)
	}
	q.mu.Unlock()
}

// noteRTCP reads the reports in an authenticated compound RTCP packet.
// It returns the peer's BYE reason and true the first time a BYE arrives,
// for the caller to report once no lock is held.
func (q *reports) noteRTCP(pkt []byte, now time.Time, ourSSRC uint32) (string, bool) {
	var byeNow bool
	var reason string
	report := false
	q.mu.Lock()
	defer func() {
		if report {
			q.received.Add(1)
		}
		q.mu.Unlock()
	}()
	ok := walkRTCP(pkt, func(p rtcpPacket) {
		switch p.pt {
		case rtcpTypeSR:
			if len(p.body) < 24 {
				return
			}
			report = true
			if q.src.active && binary.BigEndian.Uint32(p.body) == q.src.ssrc || !q.src.active {
				q.lastSR = ntpMiddle(binary.BigEndian.Uint64(p.body[4:]))
				q.srAt = now
			}
			q.peerSender = true
			q.blocks(p.body[24:], p.count, now, ourSSRC)
		case rtcpTypeRR:
			if len(p.body) < 4 {
				return
			}
			report = true
			q.blocks(p.body[4:], p.count, now, ourSSRC)
		case rtcpTypeBYE:
			for i := 0; i < p.count && 4*i+4 <= len(p.body); i++ {
				ssrc := binary.BigEndian.Uint32(p.body[4*i:])
				if q.bye || ssrc == ourSSRC || (q.src.active && ssrc != q.src.ssrc) {
					continue
				}
				q.bye, byeNow = true, true
				if 4*p.count > len(p.body) {
					continue
				}
				if r := p.body[4*p.count:]; len(r) > 0 && int(r[0]) < len(r) {
					q.byeReason = string(r[1 : 1+int(r[0])])
				}
				reason = q.byeReason
			}
		}
	})
	q.peerSeen = true
	if ok {
		q.avgSize += (float64(len(pkt)+udpIPOverhead) - q.avgSize) / 16
	}
	return reason, byeNow
}

// blocks reads count report blocks from b and keeps the one about our
// stream; reports.mu is held.
func (q *reports) blocks(b []byte, count int, now time.Time, ourSSRC uint32) {
	for i := 0; i < count && 24*i+24 <= len(b); i++ {
		rb := parseReportBlock(b[24*i:])
		if rb.ssrc != ourSSRC {
			continue
		}
		clock := float64(q.cfg.ClockRate)
		q.remote = RemoteReport{
			At:              now,
			FractionLost:    float64(rb.fractionLost) / 256,
			Lost:            int64(rb.lost),
			HighestSequence: rb.highestSeq,
			Jitter:          time.Duration(float64(rb.jitter) / clock * float64(time.Second)),
		}
		if rb.lsr != 0 {
			rtt := int32(ntpMiddle(ntpTime(now)) - rb.lsr - rb.dlsr)
			if rtt >= 0 {
				// A round trip below the fields' resolution (0 units,
				// loopback on a fast machine) reads as one unit, about
				// 15 µs, not as zero, which means "not measured".
				q.rtt = time.Duration(int64(max(rtt, 1)) * int64(time.Second) / 65536)
			}
		}
	}
}

// snapshot returns the quality figures.
func (q *reports) snapshot() Quality {
	q.mu.Lock()
	defer q.mu.Unlock()
	src := &q.src
	qs := Quality{
		RTT:             q.rtt,
		Remote:          q.remote,
		ReportsSent:     q.sent.Load(),
		ReportsReceived: q.received.Load(),
		PeerBye:         q.bye,
		ByeReason:       q.byeReason,
	}
	if src.active {
		clock := float64(q.cfg.ClockRate)
		qs.Receive = ReceiveStats{
			SSRC:         src.ssrc,
			Expected:     src.expected(),
			Received:     src.received,
			Lost:         src.lost(),
			FractionLost: src.fractionLost(),
			Reordered:    src.reordered,
			Duplicates:   src.duplicates,
			Late:         src.late,
			Jitter:       time.Duration(src.jitter / clock * float64(time.Second)),
		}
		// The estimate is for the call so far: the cumulative loss, which
		// a few seconds' interval would make jumpy.
		var loss float64
		if e := src.expected(); e > 0 && src.lost() > 0 {
			loss = float64(src.lost()) / float64(e)
		}
		qs.RFactor, qs.MOS = eModel(q.codec, loss, q.mouthToEar(qs.Receive.Jitter))
	}
	if !q.remote.At.IsZero() {
		qs.Remote.RFactor, qs.Remote.MOS = eModel(q.codec, q.remote.FractionLost, q.mouthToEar(q.remote.Jitter))
	}
	return qs
}

// mouthToEar is the one-way delay the quality estimate assumes: half the
// round trip, a jitter buffer of twice the jitter, and one frame of
// packetization.
func (q *reports) mouthToEar(jitter time.Duration) time.Duration {
	return q.rtt/2 + 2*jitter + q.cfg.FrameDuration
}

// check reports why c is invalid, or nil.
func (c RTCPConfig) check() error {
	switch {
	case c.Interval < 0:
		return configError("negative RTCP.Interval")
	case c.Bandwidth < 0:
		return configError("negative RTCP.Bandwidth")
	case c.FrameDuration < 0:
		return configError("negative RTCP.FrameDuration")
	case len(c.CNAME) > 255:
		return configError("RTCP.CNAME longer than 255 bytes")
	}
	return nil
}

// afterRTPSentLocked records a packet WriteRTP sent and sends the report
// if one is due; sendMu is held.
func (s *Session) afterRTPSentLocked(h *RTPHeader, payloadLen int) {
	m := s.q.sinceEpoch()
	s.q.noteSent(h, payloadLen, m)
	if s.q.ourSSRC.Load() != h.SSRC {
		s.q.ourSSRC.Store(h.SSRC)
	}
	if s.q.dueAt(m) {
		s.sendReportLocked(time.Now(), false)
	}
}

// afterRTPReceived records an accepted RTP packet and sends the report if
// one is due and no writer holds the send lock (that writer sends it).
func (s *Session) afterRTPReceived(pkt []byte) {
	m := s.q.sinceEpoch()
	s.q.noteRTPAt(pkt, m)
	s.reportIfDueAt(m)
}

// reportIfDueAt sends the report if one is due at m ns since the epoch
// and no writer holds the send lock.
func (s *Session) reportIfDueAt(m int64) {
	if s.q.dueAt(m) {
		s.reportIfDue(time.Now())
	}
}

// afterRTCPReceived reads the peer's reports in an accepted RTCP packet.
func (s *Session) afterRTCPReceived(pkt []byte) {
	now := time.Now()
	reason, bye := s.q.noteRTCP(pkt, now, s.q.ourSSRC.Load())
	if bye {
		s.log.Debug("media: peer sent RTCP BYE")
		if s.q.cfg.OnBye != nil && s.startCallback() {
			defer s.wg.Done()
			s.q.cfg.OnBye(reason)
		}
	}
	s.reportIfDue(now)
}

func (s *Session) reportIfDue(now time.Time) {
	if !s.q.isDue(now) || !s.sendMu.TryLock() {
		return
	}
	defer s.sendMu.Unlock()
	if s.q.isDue(now) && !s.closed.Load() {
		s.sendReportLocked(now, false)
	}
}

// sendReportLocked builds, protects and sends this side's report; sendMu
// is held. A report that cannot be sent is skipped until the next
// interval.
func (s *Session) sendReportLocked(now time.Time, bye bool) {
	rb := reportBufs.Get().(*reportBuf)
	defer reportBufs.Put(rb)
	pkt := s.q.build(rb[:0], now, bye)
	// The path attestation (attest.go) rides in every report, so that a
	// peer that missed its first sends still gets it.
	// The BYE goes last and alone (Close has begun, so it skips the
	// closed check).
	var err error
	if bye {
		err = s.sendRTCPLocked(pkt)
	} else {
		if a := s.attestOut.pkt; a != nil && len(pkt)+len(a) <= len(rb) {
			pkt = append(pkt, a...)
		}
		err = s.writeRTCPLocked(pkt)
	}
	if err != nil {
		s.log.Debug("media: RTCP report not sent", "err", err)
	}
	s.q.reportSent(len(pkt)+s.profile.overhead()+4, now)
}

// byeTimeout bounds how long Close tries to send the BYE.
const byeTimeout = 50 * time.Millisecond

// sendBye sends a last report with a BYE as Close begins, unless reports
// are off or the session never had keys.
func (s *Session) sendBye() {
	if s.q.cfg.Disabled {
		return
	}
	s.earlyMu.Lock()
	ready := s.ready
	s.earlyMu.Unlock()
	if !ready {
		return
	}
	// Close must not wait on a transport that does not drain (a writer
	// blocked in Write, a pipe nobody reads): the BYE gets byeTimeout,
	// then the session closes without it. The write deadline no longer
	// matters once the session closes.
	deadline := time.Now().Add(byeTimeout)
	_ = s.conn.SetWriteDeadline(deadline)
	for !s.sendMu.TryLock() {
		if !time.Now().Before(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	defer s.sendMu.Unlock()
	if s.q.byeSent {
		return
	}
	s.q.byeSent = true
	s.sendReportLocked(time.Now(), true)
}
