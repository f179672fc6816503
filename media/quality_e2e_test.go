package media

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// netemLink impairs one direction of a memConn pair like a network
// emulator: every packet is delayed by base; RTP packets also by a random
// extra of up to jitter (which reorders them when it exceeds the packet
// interval), some are dropped and some duplicated, from a seeded source.
// RTCP keeps the base delay, so that the round trip the reports measure
// is exactly twice base. The link keeps the truth to compare with: how
// many RTP packets it dropped and duplicated and the RFC 3550 A.8 jitter
// of what it delivered, computed here independently of the session's
// code.
type netemLink struct {
	base, jitter time.Duration
	loss, dup    float64
	clock        float64

	mu                   sync.Mutex
	rng                  *rand.Rand
	sent, dropped, duped int
	prevArr              time.Time
	prevTS               uint32
	have                 bool
	truthJitter          float64 // timestamp units
}

func (l *netemLink) install(from *memConn) {
	from.setTap(func(p []byte) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		delay := l.base
		if classify(p) == kindRTP {
			l.sent++
			if l.rng.Float64() < l.loss {
				l.dropped++
				return false
			}
			extra := time.Duration(l.rng.Int64N(int64(l.jitter) + 1))
			delay += extra
			if l.rng.Float64() < l.dup {
				l.duped++
				q := append([]byte(nil), p...)
				time.AfterFunc(delay+time.Millisecond, func() { from.peer.deliver(q) })
			}
			ts := binary.BigEndian.Uint32(p[4:])
			time.AfterFunc(delay, func() {
				l.mu.Lock()
				now := time.Now()
				if l.have {
					d := now.Sub(l.prevArr).Seconds()*l.clock - float64(int32(ts-l.prevTS))
					l.truthJitter += (math.Abs(d) - l.truthJitter) / 16
				}
				l.prevArr, l.prevTS, l.have = now, ts, true
				l.mu.Unlock()
				from.peer.deliver(p)
			})
			return false
		}
		time.AfterFunc(delay, func() { from.peer.deliver(p) })
		return false
	})
}

type netemResult struct {
	recv       Stats // of the receiving side b
	send       Stats // of the sending side a
	link       *netemLink
	lossTruth  float64
	jitterTrue time.Duration
}

// runNetem sends 20 ms frames both ways for dur through impaired links
// and returns the receiving side's view of a's stream. It runs inside a
// synctest bubble, so the clock is exact and the run deterministic.
func runNetem(t *testing.T, loss, dup float64, jitter, base, dur time.Duration) netemResult {
	t.Helper()
	var res netemResult
	synctest.Test(t, func(t *testing.T) {
		ca, cb := memPairCap(1 << 14)
		ab := &netemLink{base: base, jitter: jitter, loss: loss, dup: dup, clock: 8000, rng: rand.New(rand.NewPCG(7, uint64(loss*1000)))}
		ba := &netemLink{base: base, jitter: jitter, loss: loss, dup: dup, clock: 8000, rng: rand.New(rand.NewPCG(9, uint64(loss*1000)))}
		ab.install(ca)
		ba.install(cb)
		keys := newFakeKeys(t, 1)
		cfgA, cfgB := pairConfigs(t, sdp.KeyingKMS, keys)
		cfgA.RTCP = RTCPConfig{ClockRate: 8000, Codec: "PCMU"}
		cfgB.RTCP = RTCPConfig{ClockRate: 8000, Codec: "PCMU"}
		a, b, errA, errB := startPair(t, ca, cb, cfgA, cfgB)
		if errA != nil || errB != nil {
			t.Fatalf("NewSession: %v / %v", errA, errB)
		}
		var wg sync.WaitGroup
		for _, s := range []*Session{a, b} {
			wg.Add(2)
			go func() { // reader
				defer wg.Done()
				buf := make([]byte, 1500)
				for {
					if _, _, err := s.ReadRTP(buf); errors.Is(err, net.ErrClosed) {
						return
					}
				}
			}()
			go func() { // sender
				defer wg.Done()
				w, err := s.NewSampleWriter(0, 8000, uint32(rand.Uint32()))
				if err != nil {
					t.Error(err)
					return
				}
				payload := make([]byte, 160)
				for range int(dur / (20 * time.Millisecond)) {
					if err := w.WriteSample(payload, 20*time.Millisecond); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		time.Sleep(dur + time.Second)
		res.recv, res.send = b.Stats(), a.Stats()
		a.Close()
		b.Close()
		wg.Wait()
		ab.mu.Lock()
		res.link = ab
		res.lossTruth = float64(ab.dropped) / float64(ab.sent)
		res.jitterTrue = time.Duration(ab.truthJitter / 8000 * float64(time.Second))
		ab.mu.Unlock()
	})
	return res
}

// TestQualityEndToEndLossyJitteryLink: through a link with 5% loss, 1%
// duplicates and up to 30 ms of extra delay per packet (so packets also
// arrive out of order) on top of 15 ms each way, the receiver's loss
// matches what the link dropped, duplicates and reordered packets are
// told apart from loss, jitter matches the link's own A.8 figure, both
// sides measure the 30 ms round trip from the reports, and the peer's
// reports carry the same view back to the sender.
func TestQualityEndToEndLossyJitteryLink(t *testing.T) {
	r := runNetem(t, 0.05, 0.01, 30*time.Millisecond, 15*time.Millisecond, 60*time.Second)
	q := r.recv.Quality.Receive
	lossMeasured := float64(q.Lost) / float64(q.Expected)
	t.Logf("link: sent %d dropped %d (%.2f%%) duplicated %d; receiver: expected %d received %d lost %d (%.2f%%), "+
		"reordered %d duplicates %d late %d; jitter %v (link's A.8 %v); RTT %v / %v; MOS %.2f (R %.1f); reports %d sent %d received",
		r.link.sent, r.link.dropped, 100*r.lossTruth, r.link.duped, q.Expected, q.Received, q.Lost, 100*lossMeasured,
		q.Reordered, q.Duplicates, q.Late, q.Jitter, r.jitterTrue, r.send.Quality.RTT, r.recv.Quality.RTT,
		r.recv.Quality.MOS, r.recv.Quality.RFactor, r.recv.Quality.ReportsSent, r.recv.Quality.ReportsReceived)
	if math.Abs(lossMeasured-r.lossTruth) > 0.1*r.lossTruth {
		t.Errorf("loss %.3f%%, link dropped %.3f%%: not within 10%%", 100*lossMeasured, 100*r.lossTruth)
	}
	if q.Duplicates == 0 || q.Reordered == 0 {
		t.Errorf("duplicates %d reordered %d: the link made both", q.Duplicates, q.Reordered)
	}
	if rel := math.Abs(float64(q.Jitter-r.jitterTrue)) / float64(r.jitterTrue); rel > 0.1 {
		t.Errorf("jitter %v, link's %v: off by %.0f%%", q.Jitter, r.jitterTrue, 100*rel)
	}
	for name, rtt := range map[string]time.Duration{"sender": r.send.Quality.RTT, "receiver": r.recv.Quality.RTT} {
		if d := rtt - 30*time.Millisecond; d < -2*time.Millisecond || d > 2*time.Millisecond {
			t.Errorf("%s RTT %v, want 30 ms within 2 ms", name, rtt)
		}
	}
	// What the sender learns of its stream from the receiver's reports.
	rem := r.send.Quality.Remote
	if rem.At.IsZero() || rem.Lost <= 0 || rem.Jitter <= 0 {
		t.Errorf("the sender has no report of its stream: %+v", rem)
	}
	if d := rem.Lost - q.Lost; d < -20 || d > 20 {
		t.Errorf("peer reported %d lost, the receiver counts %d", rem.Lost, q.Lost)
	}
	// RFC 3550 section 6.2: at most one report per 5 s on average; the
	// first comes after half of that.
	if n := r.recv.Quality.ReportsSent; n < 8 || n > 20 {
		t.Errorf("%d reports in 60 s, want about 60/5/(e-3/2)*... between 8 and 20", n)
	}
}

// TestQualityMOSDropsWithLoss: the estimate falls as the link loses more.
func TestQualityMOSDropsWithLoss(t *testing.T) {
	prev := 5.0
	for _, loss := range []float64{0, 0.02, 0.05, 0.10} {
		r := runNetem(t, loss, 0, 20*time.Millisecond, 15*time.Millisecond, 20*time.Second)
		q := r.recv.Quality
		t.Logf("loss %.0f%%: measured %.2f%%, jitter %v, RTT %v, R %.1f, MOS %.2f",
			100*loss, 100*q.Receive.FractionLost, q.Receive.Jitter, q.RTT, q.RFactor, q.MOS)
		if q.MOS >= prev {
			t.Errorf("MOS %.2f at %.0f%% loss, not below %.2f", q.MOS, 100*loss, prev)
		}
		prev = q.MOS
	}
}
