package media

import "time"

// The receive side of RFC 3550's statistics for one remote source:
// sequence number bookkeeping (appendix A.1), expected and lost packets
// (A.3) and interarrival jitter (A.8).

// Limits of appendix A.1.
const (
	maxDropout  = 3000 // a forward jump this large or larger is suspect
	maxMisorder = 100  // a backward step this small is a late packet
	seqMod      = 1 << 16
)

// seenWindow is how many extended sequence numbers behind the highest the
// receiver remembers, to tell a duplicate from a reordered packet. It is
// larger than the SRTP replay window, so that every packet SRTP rejects as
// a replay can be classified.
const seenWindow = 1024

// rxSource holds the statistics of the stream received from one SSRC.
// The zero value waits for the first packet.
type rxSource struct {
	active   bool
	ssrc     uint32
	maxSeq   uint16 // highest sequence number seen
	cycles   uint32 // sequence number cycles, times 2^16
	baseSeq  uint32 // first sequence number
	badSeq   uint32 // the sequence number after a suspect jump, A.1
	received uint64 // packets accepted (SRTP has dropped duplicates)

	expectedPrior, receivedPrior uint64 // at the last report sent

	// lastFraction is the loss fraction of the last interval reported,
	// unrounded; intervalAt is when that report was made.
	lastFraction float64
	reported     bool

	reordered, duplicates, late uint64

	// Jitter, A.8, in RTP timestamp units (as a float instead of the
	// appendix's fixed point), and the previous packet's arrival and
	// timestamp.
	jitter      float64
	prevArrival int64 // ns on the session's monotonic clock
	prevTS      uint32
	haveTransit bool
	clockRate   float64

	// seen marks the extended sequence numbers accepted in the last
	// seenWindow, indexed modulo seenWindow.
	seen [seenWindow / 64]uint64
}

// extHighest returns the extended highest sequence number received.
func (r *rxSource) extHighest() uint32 { return r.cycles + uint32(r.maxSeq) }

// reset starts the statistics over for ssrc with first packet seq.
func (r *rxSource) reset(ssrc uint32, seq uint16, clockRate float64) {
	*r = rxSource{active: true, ssrc: ssrc, clockRate: clockRate}
	r.initSeq(seq)
}

// initSeq is A.1's init_seq.
func (r *rxSource) initSeq(seq uint16) {
	r.baseSeq = uint32(seq)
	r.maxSeq = seq
	r.badSeq = seqMod + 1 // so that seq == badSeq is false
	r.cycles = 0
	r.received = 0
	r.expectedPrior, r.receivedPrior = 0, 0
	r.seen = [seenWindow / 64]uint64{}
	r.mark(uint32(seq))
}

func (r *rxSource) mark(ext uint32) { r.seen[ext/64%(seenWindow/64)] |= 1 << (ext % 64) }

func (r *rxSource) isSeen(ext uint32) bool {
	return r.seen[ext/64%(seenWindow/64)]&(1<<(ext%64)) != 0
}

// advance clears the marks of the numbers the window moves past when the
// highest extended sequence number goes from old to new.
func (r *rxSource) advance(old, new uint32) {
	if new-old >= seenWindow {
		r.seen = [seenWindow / 64]uint64{}
		return
	}
	for e := old + 1; e != new+1; e++ {
		r.seen[e/64%(seenWindow/64)] &^= 1 << (e % 64)
	}
}

// extend returns the extended sequence number of seq relative to the
// highest one seen, and whether it lies ahead of it.
func (r *rxSource) extend(seq uint16) (uint32, bool) {
	udelta := seq - r.maxSeq
	if udelta < maxDropout {
		ext := r.cycles + uint32(seq)
		if seq < r.maxSeq {
			ext += seqMod
		}
		return ext, udelta != 0
	}
	// Behind the highest: from this cycle, or from the previous one.
	ext := r.cycles + uint32(seq)
	if seq > r.maxSeq {
		ext -= seqMod
	}
	return ext, false
}

// update records an accepted (authenticated, not replayed) packet with
// sequence number seq and timestamp ts that arrived at arrival (ns on the
// session's monotonic clock). It is A.1's update_seq without the probation
// of a new source, which SRTP's authentication makes unnecessary, and
// A.8's jitter.
func (r *rxSource) update(seq uint16, ts uint32, arrival int64) {
	udelta := seq - r.maxSeq
	switch {
	case udelta == 0:
		// The first packet (already marked by reset), or a duplicate of
		// the highest, which SRTP normally drops before it gets here.
		if r.received != 0 {
			r.duplicates++
			return
		}
		r.received = 1
	case udelta < maxDropout:
		// In order, with a permissible gap.
		old := r.extHighest()
		if seq < r.maxSeq {
			r.cycles += seqMod
		}
		r.maxSeq = seq
		r.advance(old, r.extHighest())
		r.mark(r.extHighest())
		r.received++
	case udelta <= seqMod-maxMisorder:
		// A very large jump: two sequential packets after it mean the
		// sender restarted its numbering (A.1).
		if uint32(seq) == r.badSeq {
			r.initSeq(seq)
			r.received = 1
			r.haveTransit = false
		} else {
			r.badSeq = uint32(seq+1) & (seqMod - 1)
			return
		}
	default:
		// Behind the highest: a reordered packet.
		ext, _ := r.extend(seq)
		if r.extHighest()-ext < seenWindow && r.isSeen(ext) {
			r.duplicates++
			return
		}
		if r.extHighest()-ext < seenWindow {
			r.mark(ext)
		}
		r.reordered++
		r.received++
	}
	r.jitterUpdate(ts, arrival)
}

// jitterUpdate is A.8: J += (|D| - J)/16, with D the difference of the
// relative transit times of this packet and the previous one, both in RTP
// timestamp units.
func (r *rxSource) jitterUpdate(ts uint32, arrival int64) {
	if r.haveTransit && r.clockRate > 0 {
		arrivalDelta := float64(arrival-r.prevArrival) * r.clockRate / 1e9
		d := arrivalDelta - float64(int32(ts-r.prevTS))
		if d < 0 {
			d = -d
		}
		r.jitter += (d - r.jitter) / 16
	}
	r.prevArrival, r.prevTS, r.haveTransit = arrival, ts, true
}

// rejected classifies a packet of this source that SRTP refused as a
// replay: a duplicate of one accepted, or one that fell behind the replay
// window (late). The packet was not authenticated, so these counts are
// informational only.
func (r *rxSource) rejected(seq uint16) {
	ext, ahead := r.extend(seq)
	switch {
	case ahead:
		return // not a replay by our reckoning; leave it alone
	case r.extHighest()-ext < seenWindow && r.isSeen(ext):
		r.duplicates++
	default:
		r.late++
	}
}

// expected is A.3's expected packet count.
func (r *rxSource) expected() uint64 {
	return uint64(r.extHighest()-r.baseSeq) + 1
}

// lost is A.3's cumulative number of packets lost; negative with
// duplicates in the RFC's reckoning, never here since SRTP drops them.
func (r *rxSource) lost() int64 { return int64(r.expected()) - int64(r.received) }

// block makes the report block for this source and starts a new
// interval (A.3). lastSR and srAt are the middle 32 bits of the NTP time
// of the source's last SR and when it arrived; now is the report time.
func (r *rxSource) block(lastSR uint32, srAt, now time.Time) reportBlock {
	expected := r.expected()
	expInterval := expected - r.expectedPrior
	recvInterval := r.received - r.receivedPrior
	r.expectedPrior, r.receivedPrior = expected, r.received
	lostInterval := int64(expInterval) - int64(recvInterval)
	var fraction uint8
	r.lastFraction = 0
	if expInterval > 0 && lostInterval > 0 {
		fraction = uint8((lostInterval << 8) / int64(expInterval))
		r.lastFraction = float64(lostInterval) / float64(expInterval)
	}
	r.reported = true
	lost := r.lost()
	if lost > 0x7fffff {
		lost = 0x7fffff
	}
	b := reportBlock{
		ssrc:         r.ssrc,
		fractionLost: fraction,
		lost:         int32(lost),
		highestSeq:   r.extHighest(),
		jitter:       uint32(r.jitter + 0.5),
	}
	if lastSR != 0 && !srAt.IsZero() {
		b.lsr = lastSR
		b.dlsr = uint32(now.Sub(srAt) * 65536 / time.Second)
	}
	return b
}

// fractionLost is the loss of the last reported interval, or of the whole
// stream before the first report.
func (r *rxSource) fractionLost() float64 {
	if r.reported {
		return r.lastFraction
	}
	if e := r.expected(); e > 0 && r.lost() > 0 {
		return float64(r.lost()) / float64(e)
	}
	return 0
}
