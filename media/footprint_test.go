package media

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

// TestNoGoroutinesAfterHandshake checks the footprint DESIGN.md asks for:
// once media flows both ways, a dtls-keyed session (and an sdes one) runs
// no goroutine at all, pion/dtls's included.
func TestNoGoroutinesAfterHandshake(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingSDES} {
		t.Run(string(mode), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			ca, cb := udpPair(t)
			a, b := pairConfigs(t, mode, nil)
			sa, sb := mustPair(t, ca, cb, a, b)
			exchange(t, sa, sb, 1, 2)
			exchange(t, sb, sa, 2, 2)
			goleak.VerifyNone(t, before)
		})
	}
}

// TestZeroAllocsWriteRead checks that WriteRTP and ReadRTP, over a real
// UDP socket, allocate nothing per packet once warm, header extension
// included.
func TestZeroAllocsWriteRead(t *testing.T) {
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
	sa, sb := mustPair(t, ca, cb, a, b)
	h := RTPHeader{PayloadType: 111, SSRC: 5, ExtensionProfile: 0xBEDE, Extension: []byte{0x10, 0x7f, 0, 0}}
	payload := make([]byte, 160)
	buf := make([]byte, 1500)
	step := func() {
		h.SequenceNumber++
		if err := sa.WriteRTP(h, payload); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sb.ReadRTP(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		step()
	}
	if allocs := testing.AllocsPerRun(200, step); allocs > allocBound(1) {
		t.Fatalf("%.2f allocations per WriteRTP+ReadRTP, want %v", allocs, allocBound(1))
	}
}

// allocBound is how many allocations a step that takes n pooled buffers
// may make: none. Under the race detector a sync.Pool drops a quarter of
// what is put back, at random, and the next taker allocates anew: 0.25
// per buffer on average, so up to 0.5 per buffer is the pool's refill,
// while an allocation of the packet path itself adds at least 1 per
// packet. CI runs the exact check without -race (its stage
// "allocations").
func allocBound(buffers int) float64 {
	if raceEnabled {
		return 0.5 * float64(buffers)
	}
	return 0
}
