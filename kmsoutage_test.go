package securecall_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

// The kms client offers the optional abilities the media session uses.
var (
	_ media.KeyFetcher = (*kms.Client)(nil)
	_ media.KeyRotator = (*kms.Client)(nil)
)

// stream sends 20 ms RTP packets from one call and records what the other
// reads, by sequence number, so that loss is exact.
type stream struct {
	from, to *securecall.Call
	sent     atomic.Uint32 // packets sent
	mu       sync.Mutex
	got      map[uint16]bool
	stop     chan struct{}
	wg       sync.WaitGroup
	errs     chan error
}

func startStream(from, to *securecall.Call) *stream {
	s := &stream{from: from, to: to, got: map[uint16]bool{}, stop: make(chan struct{}), errs: make(chan error, 2)}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1500)
		for {
			h, _, err := to.ReadRTP(buf)
			if err != nil {
				if !errors.Is(err, securecall.ErrClosed) {
					s.errs <- err
				}
				return
			}
			s.mu.Lock()
			s.got[h.SequenceNumber] = true
			s.mu.Unlock()
		}
	}()
	go func() {
		defer s.wg.Done()
		h := media.RTPHeader{PayloadType: from.Codec().PayloadType, SSRC: from.SSRC(), SequenceNumber: 1000}
		payload := make([]byte, 160)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			if err := from.WriteRTP(h, payload); err != nil {
				s.errs <- err
				return
			}
			s.sent.Add(1)
			h.SequenceNumber++
			h.Timestamp += 160
		}
	}()
	return s
}

// lost returns how many of the packets sent are not received.
func (s *stream) lost() (lost, sent int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int(s.sent.Load())
	for i := 0; i < n; i++ {
		if !s.got[uint16(1000+i)] {
			lost++
		}
	}
	return lost, n
}

// With the KMS down across a scheduled rotation and then restarted on the
// same store, nothing is lost either way: the side whose watch reconnects
// first sends under the new version at once, and the peer, still in its
// watch backoff, fetches that version on demand when it meets it in an
// MKI and decrypts the packets it held meanwhile. Then the KMS goes down
// for good across another rotation time: still nothing is lost, because
// neither side can learn a version the other lacks. The KMS (both runs),
// both kms.Clients and both calls share one fake clock, so the rotation
// times pass when the test moves the clock; media and the clients' backoff
// run on real time.
func TestKMSOutageRotationNoLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clk := fakeclock.New(time.Now())
	dir := t.TempDir()
	env, err := devkms.StartWith(ctx, dir, clockKMSOptions(clk, devkms.Options{}), "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	envUp := env
	defer func() {
		if envUp != nil {
			envUp.Close()
		}
	}()
	addr := strings.TrimPrefix(env.URL, "https://")
	// Alice's watch comes back at once; Bob's stays in backoff for the
	// rest of the test (a retry is uniform in [0, 1 min)).
	aliceKMS := watched(clockClient(t, env, clk, "alice", kms.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}))
	bobKMS := clockClient(t, env, clk, "bob", kms.Backoff{Initial: time.Minute, Max: time.Minute})
	const every, delay = time.Minute, kmsserver.DefaultActivationDelay
	uri, err := aliceKMS.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pair(t,
		securecall.Config{ICE: loopbackICE(), KeySource: aliceKMS, KeyURI: uri, Media: securecall.MediaConfig{Clock: clk.Now}},
		securecall.Config{ICE: loopbackICE(), KeySource: bobKMS, Media: securecall.MediaConfig{Clock: clk.Now}})
	ab, ba := startStream(a, b), startStream(b, a)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(ab.stop)
			close(ba.stop)
		}
	}
	defer stop()
	waitParked(t, clk)
	waitFlow(t, 10, ab, ba)
	v1 := a.Stats().SendKeyVersion

	// Down across the next scheduled rotation.
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	envUp = nil
	clk.Advance(every + time.Second)
	waitFlow(t, 10, ab, ba) // media goes on without the KMS
	if va, vb := a.Stats().SendKeyVersion, b.Stats().SendKeyVersion; va != v1 || vb != v1 {
		t.Fatalf("with the KMS down the calls moved from version %d to %d and %d", v1, va, vb)
	}
	env2, err := devkms.StartWith(ctx, dir, clockKMSOptions(clk, devkms.Options{Addr: addr}), "alice", "bob")
	if err != nil {
		t.Fatalf("restart the KMS on the same store: %v", err)
	}
	envUp = env2
	// The restarted KMS makes the overdue rotation at once; Alice's watch
	// brings it back, and it activates when the clock reaches its time.
	waitParked(t, clk)
	aliceKMS.waitSeen(t, v1+1, 15*time.Second)
	clk.Advance(delay)
	waitFor(t, 15*time.Second, func() bool {
		va, vb := a.Stats().SendKeyVersion, b.Stats().SendKeyVersion
		return va > v1 && va == vb
	})
	t.Logf("after the outage: alice sends v%d, bob v%d; bob fetched %d versions on demand and held %d packets",
		a.Stats().SendKeyVersion, b.Stats().SendKeyVersion, b.Stats().KeyFetches, b.Stats().PacketsHeld)

	// Down for good across another rotation time, right after both ends
	// switched: neither can learn a version the other lacks. (Had the KMS
	// died between one end learning a version and the other fetching it,
	// the packets under that version would be lost while the KMS stays
	// down; see media.KeyFetcher.)
	if err := env2.Close(); err != nil {
		t.Fatal(err)
	}
	envUp = nil
	clk.Advance(every + time.Second)
	waitFlow(t, 25, ab, ba)
	stop()
	settleStreams(ab, ba) // the last packets in flight
	for name, s := range map[string]*stream{"alice to bob": ab, "bob to alice": ba} {
		lost, sent := s.lost()
		t.Logf("%s: %d of %d packets lost", name, lost, sent)
		if lost != 0 {
			t.Errorf("%s: %d of %d packets lost", name, lost, sent)
		}
	}
	a.Close()
	b.Close()
	ab.wg.Wait()
	ba.wg.Wait()
	for _, s := range []*stream{ab, ba} {
		select {
		case err := <-s.errs:
			t.Errorf("media error: %v", err)
		default:
		}
	}
}
