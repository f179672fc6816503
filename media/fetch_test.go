package media

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// heldPair pairs a sender with a receiver b that knows version 1 only,
// pushes to log over a pushing transport (unless hook clears OnRTP) and
// fetches the versions it lacks through gated, whose gate the test opens.
// hook may change b's config first.
func heldPair(t *testing.T, hook func(*Config)) (keys *fakeKeys, gated *gatedSource, ma, mb *memConn, a, b *Session, log *rtpLog) {
	t.Helper()
	keys = newFakeKeys(t, 1)
	v1, _ := keys.Keys(context.Background(), testURI)
	gated = &gatedSource{have: v1, all: keys, gate: make(chan struct{})}
	ca, cb := pairConfigs(t, sdp.KeyingKMS, keys)
	cb.KeySource = gated
	log = newRTPLog()
	cb.OnRTP = log.on
	if hook != nil {
		hook(&cb)
	}
	ma, mb = memPair()
	var conn net.Conn = mb
	if cb.OnRTP != nil {
		pc := newPushingConn(mb)
		t.Cleanup(pc.wait)
		conn = pc
	}
	a, b = mustPair(t, ma, conn, ca, cb)
	return keys, gated, ma, mb, a, b, log
}

// sendSeq writes one RTP packet with sequence number seq from a.
func sendSeq(t *testing.T, a *Session, seq uint16) {
	t.Helper()
	if err := a.WriteRTP(RTPHeader{SSRC: 5, SequenceNumber: seq}, make([]byte, 160)); err != nil {
		t.Fatal(err)
	}
}

// onStack reports whether a function whose name contains name is on the
// calling goroutine's stack.
func onStack(name string) bool {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, name) {
			return true
		}
		if !more {
			return false
		}
	}
}

// closeAwareFetcher's FetchVersion waits for the session's life to end,
// then a while for Close to return, and records whether it did.
type closeAwareFetcher struct {
	*gatedSource
	closeDone         chan struct{}
	afterClose, ended atomic.Bool
}

func (f *closeAwareFetcher) FetchVersion(ctx context.Context, uri string, v uint32) (CallKey, error) {
	<-ctx.Done()
	select {
	case <-f.closeDone:
		f.afterClose.Store(true)
	case <-time.After(100 * time.Millisecond): // a Close that waits for this call
	}
	f.ended.Store(true)
	return CallKey{}, ctx.Err()
}

// A fetch that a packet starts while Close runs (holdLocked looked at
// closed before Close set it) is one Close waits for: no goroutine of the
// session's calls the KeyFetcher after Close returned. The packet still
// held then is counted as dropped.
func TestSessionCloseWaitsForKeyFetchStart(t *testing.T) {
	f := &closeAwareFetcher{closeDone: make(chan struct{})}
	var armed atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	keys, _, _, _, a, b, _ := heldPair(t, func(c *Config) {
		f.gatedSource = c.KeySource.(*gatedSource)
		c.KeySource = f
		// The clock holdLocked reads after its look at closed, before
		// it starts the fetch: a receiver descheduled there.
		c.Clock = func() time.Time {
			if armed.Load() && onStack("holdLocked") && armed.CompareAndSwap(true, false) {
				close(entered)
				<-release
			}
			return time.Now()
		}
	})
	keys.Publish(t, 2, time.Time{})
	waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 2 })
	armed.Store(true)
	sendSeq(t, a, 1)
	<-entered
	go func() {
		b.Close()
		close(f.closeDone)
	}()
	waitUntil(t, func() bool { return b.closed.Load() })
	// Time for Close to reach its wait for the session's goroutines, or to
	// return if it does not wait for the receiver.
	select {
	case <-f.closeDone:
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-f.closeDone
	waitUntil(t, f.ended.Load)
	if f.afterClose.Load() {
		t.Fatal("Close returned while a session goroutine ran KeyFetcher.FetchVersion")
	}
	if st := b.Stats(); st.PacketsHeld != 1 || st.UnknownMKIDrops != 1 {
		t.Fatalf("held %d, unknown-MKI drops %d after Close: want the packet held at Close counted as dropped", st.PacketsHeld, st.UnknownMKIDrops)
	}
}

// A packet held under a version that then falls below the newest
// installed one (it arrived late, while the fetch of a newer version was
// in flight) is dropped and counted when the newer version is installed:
// holdLocked no longer holds such a version, so no fetch will ask for it.
func TestSessionHeldBelowNewestDropped(t *testing.T) {
	keys, gated, ma, mb, a, b, log := heldPair(t, nil)
	keys.Publish(t, 2, time.Time{})
	waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 2 })
	kept := keepBackRTP(ma)
	sendSeq(t, a, 10) // under version 2, kept back by the network
	late := kept()
	keys.Publish(t, 3, time.Time{})
	waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 3 })
	sendSeq(t, a, 20) // under 3: held, the fetch of 3 waits at the gate
	waitUntil(t, func() bool { return b.Stats().PacketsHeld == 1 })
	mb.inject(late) // version 2 arrives late: held as well
	waitUntil(t, func() bool { return b.Stats().PacketsHeld == 2 })
	close(gated.gate)
	waitUntil(t, func() bool { return b.Stats().KeyFetches == 1 })
	log.wait(t, 1)
	if got := log.got(); len(got) != 1 || got[0] != 20 {
		t.Fatalf("OnRTP got %v, want [20]", got)
	}
	b.recvMu.Lock()
	stuck := len(b.fetch.held)
	b.recvMu.Unlock()
	if st := b.Stats(); stuck != 0 || st.UnknownMKIDrops != 1 {
		t.Fatalf("%d packets still held, %d unknown-MKI drops: want the version 2 packet dropped and counted", stuck, st.UnknownMKIDrops)
	}
}

// InstallKey of a version whose packets are held (its fetch still in
// flight) decrypts them before any live packet can use the version, so
// that live packets do not move the replay window past them, and
// delivers them: with OnRTP, in order before later packets, also when
// InstallKey is called from OnRTP; with ReadRTP, through the queue (a
// reader waiting on the transport takes them after the next packet).
func TestSessionInstallKeyReleasesHeld(t *testing.T) {
	const held, live = 10, 150 // more live packets than DefaultReplayWindow
	for _, push := range []bool{true, false} {
		t.Run(map[bool]string{true: "OnRTP", false: "ReadRTP"}[push], func(t *testing.T) {
			var (
				install    atomic.Pointer[func()]
				installErr = make(chan error, 1)
			)
			keys, _, ma, mb, a, b, log := heldPair(t, func(c *Config) {
				if !push {
					c.OnRTP = nil
					return
				}
				inner := c.OnRTP
				c.OnRTP = func(h RTPHeader, payload []byte) {
					inner(h, payload)
					if f := install.Swap(nil); f != nil {
						(*f)()
					}
				}
			})
			got := log.got
			if !push {
				// The reader records what it reads in the same log.
				go func() {
					buf := make([]byte, 1500)
					for {
						h, n, err := b.ReadRTP(buf)
						if err != nil {
							return
						}
						log.on(h, buf[:n])
					}
				}()
			}
			// Packet 0 under version 1, kept back by the network: with
			// OnRTP, its call installs version 2 once the others are held.
			kept := keepBackRTP(ma)
			sendSeq(t, a, 0)
			v1pkt := kept()
			k2 := keys.Publish(t, 2, time.Time{})
			waitUntil(t, func() bool { return a.Stats().SendKeyVersion == 2 })
			for seq := uint16(1); seq <= held; seq++ {
				sendSeq(t, a, seq)
			}
			waitUntil(t, func() bool { return b.Stats().PacketsHeld == held })
			k2.Key = append([]byte(nil), k2.Key...)
			if push {
				f := func() { installErr <- b.InstallKey(k2) }
				install.Store(&f)
				mb.inject(v1pkt)
				if err := <-installErr; err != nil {
					t.Fatal(err)
				}
			} else if err := b.InstallKey(k2); err != nil {
				t.Fatal(err)
			}
			for seq := uint16(held + 1); seq <= held+live; seq++ {
				sendSeq(t, a, seq)
			}
			last := uint16(held + live)
			waitUntil(t, func() bool { return slices.Contains(got(), last) })
			allHeld := func() bool {
				seqs := got()
				for seq := uint16(1); seq <= held; seq++ {
					if !slices.Contains(seqs, seq) {
						return false
					}
				}
				return true
			}
			// A reader that waits on the transport looks at its queue again
			// when the next packet arrives.
			for !push && !allHeld() && last < held+live+10 {
				last++
				sendSeq(t, a, last)
				waitUntil(t, func() bool { return slices.Contains(got(), last) })
			}
			seqs := got()
			if st := b.Stats(); st.ReplaysDropped != 0 {
				t.Fatalf("%d packets dropped as replays; received %v", st.ReplaysDropped, seqs)
			}
			for seq := uint16(1); seq <= held; seq++ {
				if !slices.Contains(seqs, seq) {
					t.Fatalf("held packet %d not delivered; received %v", seq, seqs)
				}
			}
			if push {
				for i, seq := range seqs {
					if seq != uint16(i) {
						t.Fatalf("OnRTP got %v, want 0..%d in order", seqs, last)
					}
				}
			}
		})
	}
}

// keepBackRTP has the network keep back the next RTP packet written to
// ma; the function it returns lets the rest through and returns that
// packet.
func keepBackRTP(ma *memConn) func() []byte {
	var kept []byte
	ma.setTap(func(p []byte) bool {
		if classify(p) == kindRTP && kept == nil {
			kept = p
			return false
		}
		return true
	})
	return func() []byte {
		ma.setTap(nil)
		return kept
	}
}

// A held packet that turns out to be a replay when its version is
// installed (the link duplicated it while the key was fetched) counts as
// a duplicate in the receive statistics, as a replay on the live path
// does: ReplaysDropped and Quality.Receive.Duplicates agree on every
// path, with OnRTP and with ReadRTP.
func TestSessionHeldReplayCountedAsDuplicate(t *testing.T) {
	for _, push := range []bool{true, false} {
		t.Run(map[bool]string{true: "OnRTP", false: "ReadRTP"}[push], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				keys, gated, ma, mb, a, b, log := heldPair(t, func(c *Config) {
					if !push {
						c.OnRTP = nil
					}
				})
				if !push {
					go func() {
						buf := make([]byte, 1500)
						for {
							h, n, err := b.ReadRTP(buf)
							if err != nil {
								return
							}
							log.on(h, buf[:n])
						}
					}()
				}
				sendSeq(t, a, 1) // under version 1: the statistics know the source
				keys.Publish(t, 2, time.Time{})
				synctest.Wait()
				if v := a.Stats().SendKeyVersion; v != 2 {
					t.Fatalf("sender on version %d, want 2", v)
				}
				kept := keepBackRTP(ma)
				sendSeq(t, a, 2) // under version 2, which b fetches
				dup := kept()
				mb.inject(dup)
				mb.inject(dup) // the link's duplicate, held too
				synctest.Wait()
				if st := b.Stats(); st.PacketsHeld != 2 {
					t.Fatalf("%d packets held, want 2", st.PacketsHeld)
				}
				close(gated.gate)
				synctest.Wait()
				mb.inject(dup) // and one more, after the install
				synctest.Wait()
				st := b.Stats()
				if got := log.got(); !slices.Equal(got, []uint16{1, 2}) {
					t.Fatalf("received %v, want [1 2]", got)
				}
				if q := st.Quality.Receive; st.ReplaysDropped != 2 || q.Duplicates != 2 || q.Received != 2 {
					t.Fatalf("replays dropped %d, quality duplicates %d, received %d: want 2, 2, 2", st.ReplaysDropped, q.Duplicates, q.Received)
				}
			})
		})
	}
}

// Packets held under a version newer than the one being fetched (the
// sender rotated twice while the fetch ran) get a fetch of their own when
// that fetch succeeds: they do not wait for a further packet under their
// version, which may never come. One fetch at a time, as ever: two
// versions, two fetches.
func TestSessionHeldNewerVersionFetchedNext(t *testing.T) {
	for _, push := range []bool{true, false} {
		t.Run(map[bool]string{true: "OnRTP", false: "ReadRTP"}[push], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				keys, gated, _, _, a, b, log := heldPair(t, func(c *Config) {
					if !push {
						c.OnRTP = nil
					}
				})
				if !push {
					go func() {
						buf := make([]byte, 1500)
						for {
							h, n, err := b.ReadRTP(buf)
							if err != nil {
								return
							}
							log.on(h, buf[:n])
						}
					}()
				}
				for v := uint32(2); v <= 3; v++ {
					keys.Publish(t, v, time.Time{})
					synctest.Wait()
					if got := a.Stats().SendKeyVersion; got != v {
						t.Fatalf("sender on version %d, want %d", got, v)
					}
					sendSeq(t, a, uint16(v)) // held: b has version 1 only
					synctest.Wait()
				}
				if st := b.Stats(); st.PacketsHeld != 2 || gated.fetches.Load() != 1 {
					t.Fatalf("%d packets held, %d fetches; want 2 held and one fetch (of version 2) at a time", st.PacketsHeld, gated.fetches.Load())
				}
				close(gated.gate)
				synctest.Wait()
				st := b.Stats()
				if f := gated.fetches.Load(); f != 2 || st.KeyFetches != 2 || st.UnknownMKIDrops != 0 {
					t.Fatalf("%d fetches, %d installed, %d unknown-MKI drops; want 2, 2, 0", f, st.KeyFetches, st.UnknownMKIDrops)
				}
				got, want := log.got(), []uint16{2, 3}
				if !push {
					// A reader waiting on the transport takes the queued held
					// packets after the next packet, which it returns first.
					sendSeq(t, a, 4)
					synctest.Wait()
					got, want = log.got(), append(want, 4)
					slices.Sort(got)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("received %v, want %v", got, want)
				}
			})
		})
	}
}
