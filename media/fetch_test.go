package media

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// gatedSource knows only the versions it was given, and fetches others
// from the full source once the test opens its gate: a receiver whose own
// watch has not yet learnt of a rotation.
type gatedSource struct {
	have    []CallKey
	all     *fakeKeys
	gate    chan struct{}
	fetches atomic.Int32
	fail    error
}

var _ KeyFetcher = (*gatedSource)(nil)

func (g *gatedSource) Keys(ctx context.Context, uri string) ([]CallKey, error) {
	return append([]CallKey(nil), g.have...), nil
}

func (g *gatedSource) FetchVersion(ctx context.Context, uri string, v uint32) (CallKey, error) {
	g.fetches.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return CallKey{}, ctx.Err()
	}
	if g.fail != nil {
		return CallKey{}, g.fail
	}
	keys, _ := g.all.Keys(ctx, uri)
	for _, k := range keys {
		if k.Version == v {
			k.Key = append([]byte(nil), k.Key...)
			return k, nil
		}
	}
	return CallKey{}, errors.New("no such version")
}

// A receiver that meets a version it lacks fetches it once, holds at most
// HeldPacketLimit packets meanwhile (dropping and counting the oldest),
// and decrypts the held ones when the key arrives.
func TestHeldPacketsUntilFetched(t *testing.T) {
	keys := newFakeKeys(t, 1)
	v1, _ := keys.Keys(context.Background(), testURI)
	gated := &gatedSource{have: v1, all: keys, gate: make(chan struct{})}
	ca, cb := pairConfigs(t, sdp.KeyingKMS, keys)
	cb.KeySource = gated
	ma, mb := memPair()
	a, b := mustPair(t, ma, mb, ca, cb)

	var mu sync.Mutex
	got := map[uint16]bool{}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 1500)
		for {
			b.SetReadDeadline(time.Now().Add(3 * time.Second))
			h, _, err := b.ReadRTP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[h.SequenceNumber] = true
			mu.Unlock()
		}
	}()
	keys.Publish(t, 2, time.Time{})
	waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 2 })
	h := RTPHeader{PayloadType: 0, SSRC: 5, SequenceNumber: 1000}
	const n = 100
	for range n {
		if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
		h.SequenceNumber++
	}
	waitUntil(t, func() bool { return b.Stats().PacketsHeld == n })
	if f := gated.fetches.Load(); f != 1 {
		t.Fatalf("%d fetches for one missing version, want 1", f)
	}
	if st := b.Stats(); st.UnknownMKIDrops != n-HeldPacketLimit {
		t.Fatalf("unknown-MKI drops %d, want %d (the hold keeps %d)", st.UnknownMKIDrops, n-HeldPacketLimit, HeldPacketLimit)
	}
	close(gated.gate)
	waitUntil(t, func() bool { return b.Stats().KeyFetches == 1 })
	for range 10 { // live packets wake the reader to take the held ones
		if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
		h.SequenceNumber++
		time.Sleep(5 * time.Millisecond)
	}
	waitUntil(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == HeldPacketLimit+10
	})
	mu.Lock()
	for seq := uint16(1000 + n - HeldPacketLimit); seq < h.SequenceNumber; seq++ {
		if !got[seq] {
			t.Errorf("packet %d not delivered", seq)
		}
	}
	mu.Unlock()
	if b.Stats().SendKeyVersion != 2 {
		t.Errorf("the receiver sends with version %d after fetching 2", b.Stats().SendKeyVersion)
	}
	b.Close()
	<-readDone
}

// A forged MKI far ahead of the installed versions triggers no fetch, and
// a failed fetch drops what it held and is not retried at once.
func TestHeldPacketsBounded(t *testing.T) {
	keys := newFakeKeys(t, 1)
	v1, _ := keys.Keys(context.Background(), testURI)
	gated := &gatedSource{have: v1, all: keys, gate: make(chan struct{}), fail: errors.New("kms down")}
	close(gated.gate)
	ca, cb := pairConfigs(t, sdp.KeyingKMS, keys)
	cb.KeySource = gated
	ma, mb := memPair()
	a, b := mustPair(t, ma, mb, ca, cb)
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := b.ReadRTP(buf); err != nil {
				return
			}
		}
	}()
	// A forged MKI far ahead (AEAD_AES_128_GCM: the MKI ends the packet;
	// the tag is wrong, but the MKI is read first).
	forged := make([]byte, 12+160+16+mkiLen)
	forged[0], forged[1] = 0x80, 0
	copy(forged[len(forged)-mkiLen:], versionMKI(1+fetchAhead+1))
	mb.inject(forged)
	waitUntil(t, func() bool { return b.Stats().UnknownMKIDrops == 1 })
	if f := gated.fetches.Load(); f != 0 {
		t.Fatalf("a forged MKI far ahead triggered %d fetches", f)
	}

	keys.Publish(t, 2, time.Time{})
	waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 2 })
	h := RTPHeader{PayloadType: 0, SSRC: 5, SequenceNumber: 1000}
	for range 50 {
		if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
		h.SequenceNumber++
		time.Sleep(time.Millisecond)
	}
	waitUntil(t, func() bool { return b.Stats().UnknownMKIDrops == 51 })
	if f := gated.fetches.Load(); f != 1 {
		t.Fatalf("%d fetches within the retry interval, want 1", f)
	}
	if st := b.Stats(); st.PacketsHeld > 50 {
		t.Fatalf("held %d packets", st.PacketsHeld)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
