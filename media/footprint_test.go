package media

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"

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

// TestSessionSizeClass keeps a Session within the 2,304-byte size class of
// Go's allocator on 64-bit platforms: one class up costs 384 bytes per call
// end, and BENCHMARKS.md's heap per endpoint (at most 20 KB, issue 14)
// counts on this one. A field that must grow it should come with a trim
// elsewhere or a new figure there.
func TestSessionSizeClass(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the size class is that of 64-bit platforms")
	}
	if n := unsafe.Sizeof(Session{}); n > 2304 {
		t.Fatalf("a Session is %d bytes, past the 2,304-byte size class", n)
	}
}

// TestHeaderListsOnlyWhenUsed checks that a session whose peer sends no
// CSRCs and no header extension keeps no storage for them, and that one
// whose peer does makes it once and reuses it, on the pull and the push
// path alike.
func TestHeaderListsOnlyWhenUsed(t *testing.T) {
	for _, push := range []bool{false, true} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			ca, cb := memPair()
			a, b := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
			got := make(chan RTPHeader, 4)
			if push {
				b.OnRTP = func(h RTPHeader, _ []byte) {
					h.CSRC = slices.Clone(h.CSRC)
					h.Extension = slices.Clone(h.Extension)
					got <- h
				}
			}
			sa, sb := mustPair(t, ca, cb, a, b)
			read := func() RTPHeader {
				t.Helper()
				if push {
					select {
					case h := <-got:
						return h
					case <-time.After(5 * time.Second):
						t.Fatal("no packet pushed")
					}
				}
				sb.SetReadDeadline(time.Now().Add(5 * time.Second))
				h, _, err := sb.ReadRTP(make([]byte, 1500))
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			lists := func() *headerLists {
				sb.rtpMu.Lock()
				defer sb.rtpMu.Unlock()
				return sb.lists
			}
			plain := RTPHeader{PayloadType: 0, SequenceNumber: 1, SSRC: 5}
			if err := sa.WriteRTP(plain, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			if h := read(); h.CSRC != nil || h.Extension != nil || h.SequenceNumber != 1 {
				t.Fatalf("plain packet read as %+v", h)
			}
			if l := lists(); l != nil {
				t.Fatal("header lists made for a packet without CSRCs or an extension")
			}
			rich := RTPHeader{PayloadType: 0, SequenceNumber: 2, SSRC: 5, CSRC: []uint32{7, 8},
				ExtensionProfile: 0xBEDE, Extension: []byte{0x10, 0x7f, 0, 0}}
			if err := sa.WriteRTP(rich, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			if h := read(); !slices.Equal(h.CSRC, rich.CSRC) || !bytes.Equal(h.Extension, rich.Extension) {
				t.Fatalf("packet with lists read as %+v", h)
			}
			first := lists()
			if first == nil {
				t.Fatal("no header lists after a packet with CSRCs and an extension")
			}
			rich.SequenceNumber, rich.CSRC = 3, []uint32{9}
			if err := sa.WriteRTP(rich, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			if h := read(); !slices.Equal(h.CSRC, []uint32{9}) || !bytes.Equal(h.Extension, rich.Extension) {
				t.Fatalf("second packet with lists read as %+v", h)
			}
			if lists() != first {
				t.Fatal("header lists made again for a later packet")
			}
		})
	}
}
