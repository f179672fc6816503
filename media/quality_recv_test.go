package media

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// feed runs the A.1/A.8 receiver over packets given as sequence numbers,
// with timestamps of 160 units (20 ms at 8 kHz) per sequence step and
// arrivals 20 ms apart in the order given, unless arrival says otherwise.
type synthPacket struct {
	seq     uint16
	ts      uint32
	arrival time.Duration
}

func runSource(pkts []synthPacket, clock float64) *rxSource {
	var r rxSource
	for i, p := range pkts {
		if i == 0 {
			r.reset(42, p.seq, clock)
		}
		r.update(p.seq, p.ts, int64(p.arrival))
	}
	return &r
}

// sequential makes n packets from seq0, 20 ms apart at 8 kHz, skipping
// the offsets in drop.
func sequential(seq0 uint16, n int, drop map[int]bool) []synthPacket {
	var out []synthPacket
	for i := range n {
		if drop[i] {
			continue
		}
		out = append(out, synthPacket{seq: seq0 + uint16(i), ts: uint32(160 * i), arrival: time.Duration(i) * 20 * time.Millisecond})
	}
	return out
}

func TestQualityRFC3550LossBursts(t *testing.T) {
	drop := map[int]bool{}
	for i := 100; i < 110; i++ { // a burst of 10
		drop[i] = true
	}
	for i := 500; i < 503; i++ { // and one of 3
		drop[i] = true
	}
	r := runSource(sequential(1000, 1000, drop), 8000)
	if r.expected() != 1000 || r.received != 987 || r.lost() != 13 {
		t.Fatalf("expected %d received %d lost %d, want 1000 987 13", r.expected(), r.received, r.lost())
	}
	if r.reordered != 0 || r.duplicates != 0 || r.late != 0 {
		t.Fatalf("reordered %d duplicates %d late %d, want none", r.reordered, r.duplicates, r.late)
	}
	// Interval fraction (A.3): the first report covers all 1000, 13 lost.
	b := r.block(0, time.Time{}, time.Time{})
	if want := uint8(13 * 256 / 1000); b.fractionLost != want || b.lost != 13 || b.highestSeq != 1999 {
		t.Fatalf("block %+v, want fraction %d lost 13 highest 1999", b, want)
	}
	// A second interval without loss reports 0, the cumulative count stays.
	for i := 1000; i < 1100; i++ {
		r.update(uint16(1000+i), uint32(160*i), int64(time.Duration(i)*20*time.Millisecond))
	}
	b = r.block(0, time.Time{}, time.Time{})
	if b.fractionLost != 0 || b.lost != 13 {
		t.Fatalf("second interval block %+v, want fraction 0 lost 13", b)
	}
	// A burst in a third interval: 50 of 100 lost, fraction 128/256.
	for i := 1100; i < 1200; i++ {
		if i%2 == 0 {
			continue
		}
		r.update(uint16(1000+i), uint32(160*i), int64(time.Duration(i)*20*time.Millisecond))
	}
	b = r.block(0, time.Time{}, time.Time{})
	if b.fractionLost != 128 || b.lost != 63 {
		t.Fatalf("third interval block %+v, want fraction 128 lost 63", b)
	}
}

func TestQualityRFC3550Reordering(t *testing.T) {
	pkts := sequential(10, 100, nil)
	// Swap neighbours 20/21 and move 50 after 55.
	pkts[20], pkts[21] = pkts[21], pkts[20]
	p50 := pkts[50]
	copy(pkts[50:55], pkts[51:56])
	pkts[55] = p50
	r := runSource(pkts, 8000)
	if r.lost() != 0 || r.received != 100 || r.expected() != 100 {
		t.Fatalf("lost %d received %d expected %d, want 0 100 100", r.lost(), r.received, r.expected())
	}
	if r.reordered != 2 {
		t.Fatalf("reordered %d, want 2 (21 before 20, 51..55 before 50)", r.reordered)
	}
	if r.duplicates != 0 {
		t.Fatalf("duplicates %d", r.duplicates)
	}
}

func TestQualityRFC3550Duplicates(t *testing.T) {
	pkts := sequential(10, 50, nil)
	pkts = append(pkts[:30], append([]synthPacket{pkts[25], pkts[29]}, pkts[30:]...)...)
	r := runSource(pkts, 8000)
	if r.duplicates != 2 || r.received != 50 || r.lost() != 0 || r.reordered != 0 {
		t.Fatalf("duplicates %d received %d lost %d reordered %d, want 2 50 0 0",
			r.duplicates, r.received, r.lost(), r.reordered)
	}
	// What SRTP rejects as a replay: a copy of one accepted is a
	// duplicate; one never accepted must have fallen behind SRTP's replay
	// window, so it is late (and stays lost). Neither changes the counts.
	r = runSource(sequential(10, 300, map[int]bool{20: true}), 8000)
	r.rejected(10 + 250)
	r.rejected(10 + 20)
	if r.duplicates != 1 || r.late != 1 || r.received != 299 || r.lost() != 1 {
		t.Fatalf("after rejections: duplicates %d late %d received %d lost %d, want 1 1 299 1",
			r.duplicates, r.late, r.received, r.lost())
	}
}

func TestQualityRFC3550SequenceWrap(t *testing.T) {
	drop := map[int]bool{5: true, 15: true}
	pkts := sequential(65530, 40, drop)
	// A packet from before the wrap arrives after it.
	pkts[3], pkts[8] = pkts[8], pkts[3]
	r := runSource(pkts, 8000)
	if r.cycles != 1<<16 {
		t.Fatalf("cycles %d, want 65536", r.cycles)
	}
	if r.extHighest() != 65530+39 || r.expected() != 40 || r.received != 38 || r.lost() != 2 {
		t.Fatalf("highest %d expected %d received %d lost %d, want %d 40 38 2",
			r.extHighest(), r.expected(), r.received, r.lost(), 65530+39)
	}
	// 65539 (seq 3) came before 65534..65538 (three of them before the
	// wrap) and 65533.
	if r.reordered != 5 {
		t.Fatalf("reordered %d, want 5", r.reordered)
	}
}

func TestQualityRFC3550SenderRestart(t *testing.T) {
	r := runSource(sequential(100, 10, nil), 8000)
	// A jump of more than MAX_DROPOUT is ignored once, accepted when the
	// next packet follows it (A.1).
	r.update(40000, 0, 0)
	if r.received != 10 || r.extHighest() != 109 {
		t.Fatalf("after one jump: received %d highest %d", r.received, r.extHighest())
	}
	r.update(40001, 160, int64(20*time.Millisecond))
	if r.received != 1 || r.baseSeq != 40001 || r.lost() != 0 {
		t.Fatalf("after restart: received %d base %d lost %d", r.received, r.baseSeq, r.lost())
	}
}

// With arrivals exactly on the media clock, jitter is zero; alternating
// transit times of 0 and 10 ms make |D| 10 ms for every packet, so the
// A.8 estimate converges to 10 ms (80 units at 8 kHz).
func TestQualityRFC3550JitterKnownPattern(t *testing.T) {
	r := runSource(sequential(0, 500, nil), 8000)
	if r.jitter != 0 {
		t.Fatalf("jitter %v on a perfect clock, want 0", r.jitter)
	}
	var pkts []synthPacket
	for i := range 500 {
		extra := time.Duration(0)
		if i%2 == 1 {
			extra = 10 * time.Millisecond
		}
		pkts = append(pkts, synthPacket{seq: uint16(i), ts: uint32(160 * i), arrival: time.Duration(i)*20*time.Millisecond + extra})
	}
	r = runSource(pkts, 8000)
	if math.Abs(r.jitter-80) > 0.01 {
		t.Fatalf("jitter %.3f units, want 80", r.jitter)
	}
	// The first steps of the filter, computed by hand: J1 = 80/16 = 5,
	// J2 = 5 + (80-5)/16 = 9.6875.
	r = runSource(pkts[:3], 8000)
	if math.Abs(r.jitter-9.6875) > 1e-9 {
		t.Fatalf("jitter after 3 packets %.4f, want 9.6875", r.jitter)
	}
}

// A sender whose clock runs 100 ppm fast adds a steady drift of 2 µs per
// packet to the transit time: the jitter estimate stays at that drift,
// far below a millisecond, and nothing is counted lost or reordered.
func TestQualityRFC3550ClockSkew(t *testing.T) {
	var pkts []synthPacket
	for i := range 3000 {
		pkts = append(pkts, synthPacket{seq: uint16(i), ts: uint32(float64(160*i) * 1.0001), arrival: time.Duration(i) * 20 * time.Millisecond})
	}
	r := runSource(pkts, 8000)
	if j := r.jitter / 8000 * 1e6; j > 10 { // µs
		t.Fatalf("jitter %.1f µs under 100 ppm skew, want about 2", j)
	}
	if r.lost() != 0 || r.reordered != 0 {
		t.Fatalf("lost %d reordered %d", r.lost(), r.reordered)
	}
}

func TestQualityEModel(t *testing.T) {
	r0, mos0 := eModel("PCMU", 0, 40*time.Millisecond)
	if math.Abs(r0-93.2) > 1e-9 || math.Abs(mos0-4.41) > 0.01 {
		t.Fatalf("no loss: R %.2f MOS %.2f, want 93.2 4.41", r0, mos0)
	}
	prev := mos0
	for _, loss := range []float64{0.01, 0.02, 0.05, 0.10, 0.20} {
		_, mos := eModel("PCMU", loss, 40*time.Millisecond)
		if mos >= prev {
			t.Fatalf("MOS %.2f at %.0f%% loss, not below %.2f", mos, loss*100, prev)
		}
		prev = mos
	}
	// G.107's Idd is zero up to 100 ms and grows beyond.
	rLong, _ := eModel("PCMU", 0, 300*time.Millisecond)
	if rLong >= r0-5 {
		t.Fatalf("R at 300 ms %.2f, want well below %.2f", rLong, r0)
	}
	// Ie,eff at 5% random loss for G.711 with PLC: 95*5/(5+25.1) = 15.78.
	r5, _ := eModel("PCMU", 0.05, 0)
	if math.Abs(r5-(93.2-95*5/30.1)) > 1e-9 {
		t.Fatalf("R at 5%% loss %.3f", r5)
	}
	if m := mosFromR(-3); m != 1 {
		t.Fatalf("MOS(R<0) = %v", m)
	}
	if m := mosFromR(120); m != 4.5 {
		t.Fatalf("MOS(R>100) = %v", m)
	}
}

// TestRTCPConfigDefaults checks each "defaults to" of RTCPConfig against
// its constant and that resolve applies it; and that bad values are
// refused.
func TestRTCPConfigDefaults(t *testing.T) {
	src, err := os.ReadFile("quality.go")
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	for _, w := range strings.Fields(string(src)) {
		if w != "//" {
			words = append(words, w)
		}
	}
	doc := strings.Join(words, " ")
	for _, want := range []string{
		"defaults to DefaultRTCPInterval (5 s)",
		"defaults to DefaultSessionBandwidth (128 kbit/s)",
		"defaults to DefaultClockRate (48000, Opus)",
		"defaults to DefaultFrameDuration (20 ms)",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("quality.go does not say %q", want)
		}
	}
	if DefaultRTCPInterval != 5*time.Second || DefaultSessionBandwidth != 128000 || DefaultClockRate != 48000 || DefaultFrameDuration != 20*time.Millisecond {
		t.Error("a default differs from its documentation")
	}
	c := RTCPConfig{}.resolve()
	if c.Interval != DefaultRTCPInterval || c.Bandwidth != DefaultSessionBandwidth || c.ClockRate != DefaultClockRate || c.FrameDuration != DefaultFrameDuration {
		t.Errorf("resolve: %+v", c)
	}
	for _, bad := range []RTCPConfig{{Interval: -1}, {Bandwidth: -1}, {FrameDuration: -1}, {CNAME: strings.Repeat("x", 256)}} {
		if err := bad.check(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestRTCPIntervalRFC3550: the deterministic interval is Tmin for an
// audio call (bandwidth is plentiful), half of it for the first report,
// and stretches with a low session bandwidth; each interval is randomised
// within [0.5, 1.5] / (e - 3/2) of it.
func TestRTCPIntervalRFC3550(t *testing.T) {
	var q reports
	q.init(&RTCPConfig{}, time.Now())
	lo, hi := 0.5/(math.E-1.5), 1.5/(math.E-1.5)
	check := func(name string, td float64) {
		t.Helper()
		for range 200 {
			got := q.interval().Seconds()
			if got < td*lo-1e-9 || got > td*hi+1e-9 {
				t.Fatalf("%s: interval %.3f s outside [%.3f, %.3f]", name, got, td*lo, td*hi)
			}
		}
	}
	check("first report", 2.5)
	q.initial = false
	q.peerSeen, q.peerSender, q.tx.sentThis = true, true, true
	check("audio call", 5)
	// 2 kbit/s: RTCP gets 12.5 B/s; two members at avg_rtcp_size each.
	q.cfg.Bandwidth = 2000
	check("low bandwidth", q.avgSize*2/12.5)
}
