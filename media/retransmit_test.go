package media

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// TestDTLSRetransmitInterval is issue 12 finding 6: the DTLS handshake
// retransmits a lost flight after the interval Config.HandshakeRTT asks for
// (twice the RTT, 100 ms to 1 s), not after pion/dtls's 1 s default. The
// client's first ClientHello is lost; on the bubble's clock the handshake
// then completes one retransmission interval later.
func TestDTLSRetransmitInterval(t *testing.T) {
	for _, tc := range []struct {
		rtt  time.Duration
		want time.Duration
	}{
		{0, DefaultRetransmitInterval},
		{time.Millisecond, MinRetransmitInterval},
		{150 * time.Millisecond, 300 * time.Millisecond},
		{2 * time.Second, DefaultRetransmitInterval},
	} {
		t.Run(tc.rtt.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca, cb := memPair()
				var (
					mu      sync.Mutex
					hellos  int
					dropped bool
				)
				ca.setTap(func(p []byte) bool {
					if _, ok := clientHelloRandom(p); !ok {
						return true
					}
					mu.Lock()
					defer mu.Unlock()
					hellos++
					if !dropped {
						dropped = true
						return false
					}
					return true
				})
				a, b := pairConfigs(t, sdp.KeyingDTLS, nil)
				a.HandshakeRTT, b.HandshakeRTT = tc.rtt, tc.rtt
				start := time.Now()
				sa, sb, errA, errB := startPair(t, ca, cb, a, b)
				elapsed := time.Since(start)
				if errA != nil || errB != nil {
					t.Fatal(errA, errB)
				}
				exchange(t, sa, sb, 1, 1)
				exchange(t, sb, sa, 2, 1)
				sa.Close()
				sb.Close()
				mu.Lock()
				defer mu.Unlock()
				if hellos != 2 {
					t.Errorf("%d ClientHellos sent, want the lost one and one retransmission", hellos)
				}
				// Everything but the timer takes no time on the bubble's clock.
				if elapsed != tc.want {
					t.Errorf("handshake with the first hello lost took %v, want the retransmission interval %v", elapsed, tc.want)
				}
			})
		})
	}
}
