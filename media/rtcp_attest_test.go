package media

import (
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// TestQualityReportsCarryAttestation: when every stand-alone send of the
// path attestation is lost (the first and all its resends, over the first
// 6 s), the peer still learns it from the next RTCP report, which carries
// it in the compound packet.
func TestQualityReportsCarryAttestation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, cb := memPair()
		cfgA, cfgB := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
		var mu sync.Mutex
		var got []Attestation
		cfgB.OnPeerAttestation = func(a Attestation) { mu.Lock(); got = append(got, a); mu.Unlock() }
		a, b := mustPair(t, ca, cb, cfgA, cfgB)
		start := time.Now()
		ca.setTap(func(p []byte) bool {
			return classify(p) != kindRTCP || time.Since(start) > 6*time.Second
		})
		if err := a.Attest(testAttestation); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for {
				if _, _, err := b.ReadRTP(buf); errors.Is(err, net.ErrClosed) {
					return
				}
			}
		}()
		seenAt := time.Duration(0)
		for i := range 1000 { // 20 s of 20 ms media
			h := RTPHeader{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(160 * i), SSRC: 0xa}
			if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n > 0 && seenAt == 0 {
				seenAt = time.Since(start)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || got[0] != testAttestation {
			t.Fatalf("attestations seen %+v, want %+v once", got, testAttestation)
		}
		if seenAt < 6*time.Second {
			t.Fatalf("seen at %v, before any RTCP crossed", seenAt)
		}
		t.Logf("attestation learnt from a report %v into the call", seenAt)
		b.Close()
		a.Close()
		<-done
	})
}
