package securecall_test

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
)

// TestCallQualityReports: two Calls that only write samples and read RTP
// exchange the Call's own RTCP reports: each sees the other's stream
// without loss, measures a round trip that also refreshes Path().RTT, and
// learns of the peer's BYE when it hangs up. WriteSample numbers and
// times the packets itself.
func TestCallQualityReports(t *testing.T) {
	rtcp := media.RTCPConfig{Interval: 400 * time.Millisecond}
	var byes sync.WaitGroup
	byes.Add(1)
	var byeOnce sync.Once
	cb := securecall.Config{ICE: loopbackICE(), RTCP: rtcp}
	cb.RTCP.OnBye = func(string) { byeOnce.Do(byes.Done) }
	a, b := connectPair(t, securecall.Config{ICE: loopbackICE(), RTCP: rtcp}, cb)
	defer b.Close()
	iceRTT := a.Path().RTT

	var wg sync.WaitGroup
	var seqMu sync.Mutex
	var seqs []uint16
	var marks int
	for _, c := range []*securecall.Call{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				h, _, err := c.ReadRTP(buf)
				if errors.Is(err, net.ErrClosed) || errors.Is(err, securecall.ErrClosed) {
					return
				}
				if err == nil && c == b {
					seqMu.Lock()
					seqs = append(seqs, h.SequenceNumber)
					if h.Marker {
						marks++
					}
					seqMu.Unlock()
				}
			}
		}()
	}
	frame := make([]byte, 160)
	for range 100 { // 2 s of 20 ms frames
		for _, c := range []*securecall.Call{a, b} {
			if err := c.WriteSample(frame, 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v", sa.Quality)
	t.Logf("b: %+v", sb.Quality)
	for name, q := range map[string]media.Quality{"caller": sa.Quality, "callee": sb.Quality} {
		if q.ReportsSent < 2 || q.ReportsReceived < 2 {
			t.Errorf("%s: %d reports sent, %d received", name, q.ReportsSent, q.ReportsReceived)
		}
		if q.RTT <= 0 || q.RTT > 100*time.Millisecond {
			t.Errorf("%s: RTT %v on loopback", name, q.RTT)
		}
		if q.Receive.Received < 90 || q.Receive.Lost != 0 || q.Receive.Expected != q.Receive.Received {
			t.Errorf("%s: receive %+v, want about 100 and no loss on loopback", name, q.Receive)
		}
		if q.Remote.At.IsZero() || q.MOS < 4 {
			t.Errorf("%s: remote %+v MOS %.2f", name, q.Remote, q.MOS)
		}
	}
	if sa.Path.RTT != sa.Quality.RTT || a.Path().RTT == 0 {
		t.Errorf("Path().RTT %v (ICE's at set-up %v), Stats().Path.RTT %v, RTCP's %v: not refreshed",
			a.Path().RTT, iceRTT, sa.Path.RTT, sa.Quality.RTT)
	}
	seqMu.Lock()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("sequence %d after %d", seqs[i], seqs[i-1])
			break
		}
	}
	if marks != 1 {
		t.Errorf("%d packets with the marker bit, want the first only", marks)
	}
	seqMu.Unlock()

	a.Close()
	done := make(chan struct{})
	go func() { byes.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the callee never saw the caller's BYE")
	}
	if !b.Stats().Quality.PeerBye {
		t.Error("Stats().Quality.PeerBye not set after the BYE")
	}
	b.Close()
	wg.Wait()
}

// TestCallQualityReportsDisabled: with RTCP.Disabled the Call sends no
// RTCP of its own, not even a BYE, and still measures what it receives.
func TestCallQualityReportsDisabled(t *testing.T) {
	off := securecall.Config{ICE: loopbackICE(), RTCP: media.RTCPConfig{Disabled: true, Interval: 200 * time.Millisecond}}
	a, b := pair(t, off, off)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := b.ReadRTP(buf); err != nil && !errors.Is(err, media.ErrKeyExhausted) {
				return
			}
		}
	}()
	for range 50 {
		if err := a.WriteSample(make([]byte, 160), 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 2*time.Second, func() bool { return b.Stats().Quality.Receive.Received >= 45 })
	if sa := a.Stats(); sa.RTCPPacketsSent != 0 || sa.Quality.ReportsSent != 0 {
		t.Errorf("sent %d RTCP packets with reports disabled", sa.RTCPPacketsSent)
	}
	b.Close()
	wg.Wait()
}
