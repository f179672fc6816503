package media

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// readSeq reads one RTP packet and returns its sequence number.
func readSeq(t *testing.T, s *Session) uint16 {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, _, err := s.ReadRTP(make([]byte, 1500))
	if err != nil {
		t.Fatalf("ReadRTP: %v; stats %+v", err, s.Stats())
	}
	return h.SequenceNumber
}

func writeSeq(t *testing.T, s *Session, seq uint16) {
	t.Helper()
	if err := s.WriteRTP(RTPHeader{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 42}, make([]byte, 160)); err != nil {
		t.Fatal(err)
	}
}

// capture records what a memConn writes.
type capture struct {
	mu   sync.Mutex
	pkts [][]byte
	drop bool
}

func (c *capture) tap(p []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pkts = append(c.pkts, p)
	return !c.drop
}

func (c *capture) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.pkts[len(c.pkts)-1]...)
}

func (c *capture) setDrop(d bool) {
	c.mu.Lock()
	c.drop = d
	c.mu.Unlock()
}

func TestAttackFingerprintMismatch(t *testing.T) {
	other, err := GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := CertificateFingerprint(other)
	for _, side := range []string{"client checks", "server checks"} {
		t.Run(side, func(t *testing.T) {
			ca, cb := udpPair(t)
			a, b := pairConfigs(t, sdp.KeyingDTLS, nil)
			checker := &a
			if side == "server checks" {
				checker = &b
			}
			checker.RemoteFingerprints = []sdp.Fingerprint{wrong}
			sa, sb, errA, errB := startPair(t, ca, cb, a, b)
			if sa != nil || sb != nil {
				t.Fatal("a session came up despite the wrong fingerprint")
			}
			errCheck, errOther := errA, errB
			if side == "server checks" {
				errCheck, errOther = errB, errA
			}
			if !errors.Is(errCheck, ErrFingerprintMismatch) {
				t.Fatalf("checking side: %v, want ErrFingerprintMismatch", errCheck)
			}
			if !strings.Contains(errCheck.Error(), "matches no remote fingerprint") {
				t.Errorf("unclear error: %v", errCheck)
			}
			if errOther == nil {
				t.Fatal("the other side completed its handshake")
			}
		})
	}
}

func TestAttackReplayAndTamper(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingSDES} {
		t.Run(string(mode), func(t *testing.T) {
			ca, cb := memPair()
			cap := &capture{}
			ca.setTap(cap.tap)
			a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
			sa, sb := mustPair(t, ca, cb, a, b)

			writeSeq(t, sa, 1)
			if got := readSeq(t, sb); got != 1 {
				t.Fatalf("got %d", got)
			}
			genuine := cap.last()

			// A replayed packet is dropped: the next read returns packet 2.
			cb.inject(genuine)
			writeSeq(t, sa, 2)
			if got := readSeq(t, sb); got != 2 {
				t.Fatalf("replayed packet delivered: got seq %d", got)
			}

			// A tampered tag and a tampered payload fail authentication.
			// With GCM the tag precedes the MKI (4 bytes in kms keying).
			mki := 0
			if mode == sdp.KeyingKMS {
				mki = 4
			}
			cap.setDrop(true)
			writeSeq(t, sa, 3)
			cap.setDrop(false)
			fresh := cap.last()
			tag := bytes.Clone(fresh)
			tag[len(tag)-1-mki] ^= 1
			cb.inject(tag)
			body := bytes.Clone(fresh)
			body[20] ^= 0x80
			cb.inject(body)
			writeSeq(t, sa, 4)
			if got := readSeq(t, sb); got != 4 {
				t.Fatalf("tampered packet delivered: got seq %d", got)
			}
			// The genuine packet 3, never delivered before, still is.
			cb.inject(fresh)
			if got := readSeq(t, sb); got != 3 {
				t.Fatalf("got seq %d, want 3", got)
			}

			// SRTCP: tampered (the tag precedes the 4-byte index and the
			// MKI), then genuine, then replayed.
			cap.setDrop(true)
			if err := sa.WriteRTCP(rtcpRR(42)); err != nil {
				t.Fatal(err)
			}
			cap.setDrop(false)
			rtcpPkt := cap.last()
			bad := bytes.Clone(rtcpPkt)
			bad[len(bad)-1-4-mki] ^= 1
			cb.inject(bad)
			cb.inject(rtcpPkt)
			sb.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := sb.ReadRTCP(make([]byte, 1500)); err != nil {
				t.Fatal(err)
			}
			cb.inject(rtcpPkt)
			writeSeq(t, sa, 5)
			if got := readSeq(t, sb); got != 5 {
				t.Fatalf("got seq %d, want 5", got)
			}

			st := sb.Stats()
			if st.ReplaysDropped != 2 || st.AuthFailures != 3 || st.UnknownMKIDrops != 0 || st.RTPPacketsReceived != 5 || st.RTCPPacketsReceived != 1 {
				t.Fatalf("stats %+v: want 2 replays (RTP, RTCP), 3 auth failures, 5 RTP and 1 RTCP received", st)
			}
			// Whatever else was injected stays undelivered.
			if n := len(sb.rtcpQ); n != 0 {
				t.Fatalf("%d RTCP packets queued after the attack", n)
			}
		})
	}
}

func TestAttackRemovedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t, 1)
		// Packet 2 under version 1 is held back by the attacker.
		sa, sb, cb, old := withheldPair(t, sdp.KeyingKMS, keys, 50*time.Millisecond)

		keys.Publish(t, 2, time.Now())
		for give := time.Now().Add(5 * time.Second); sa.Stats().SendKeyVersion != 2 || !hasRecvKey(sb, 2); {
			if time.Now().After(give) {
				t.Fatal("version 2 was not installed by the watchers")
			}
			time.Sleep(time.Millisecond)
		}
		writeSeq(t, sa, 3) // under version 2: sb schedules removal of version 1
		readSeq(t, sb)
		time.Sleep(100 * time.Millisecond)
		writeSeq(t, sa, 4) // the next packet lets the removal happen
		readSeq(t, sb)
		if hasRecvKey(sb, 1) {
			t.Fatal("version 1 still installed after its grace period")
		}
		refusedHeld(t, sa, sb, cb, old, 5)
		// A removed version is not installed again.
		keys.mu.Lock()
		v1 := keys.versions[0]
		keys.mu.Unlock()
		if err := sb.InstallKey(v1); err != nil {
			t.Fatal(err)
		}
		if hasRecvKey(sb, 1) {
			t.Fatal("removed version 1 was installed again")
		}
	})
}

// dtlsRecorder counts the DTLS records a memConn carries by content type.
type dtlsRecorder struct {
	mu     sync.Mutex
	counts map[byte]int
}

func (r *dtlsRecorder) tap(p []byte) bool {
	if classify(p) != kindDTLS {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(p) >= 13 {
		r.counts[p[0]]++
		l := 13 + (int(p[11])<<8 | int(p[12]))
		if l > len(p) {
			break
		}
		p = p[l:]
	}
	return true
}

// TestNoDTLSApplicationData checks the claim in SECURITY.md about
// GO-2026-4479: a whole call, handshake to Close, writes no DTLS record of
// type application_data (23), in dtls and hybrid keying, on either side.
func TestNoDTLSApplicationData(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingHybrid} {
		t.Run(string(mode), func(t *testing.T) {
			rec := &dtlsRecorder{counts: map[byte]int{}}
			ca, cb := memPair()
			ca.setTap(rec.tap)
			cb.setTap(rec.tap)
			a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
			sa, sb, errA, errB := startPair(t, ca, cb, a, b)
			if errA != nil || errB != nil {
				t.Fatal(errA, errB)
			}
			exchange(t, sa, sb, 1, 5)
			exchange(t, sb, sa, 2, 5)
			sa.Close()
			sb.Close()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.counts[22] == 0 || rec.counts[20] == 0 {
				t.Fatalf("no handshake seen: %v", rec.counts)
			}
			if rec.counts[23] != 0 {
				t.Fatalf("%d DTLS application data records written", rec.counts[23])
			}
		})
	}
	// And the transport under pion/dtls refuses such a record outright.
	s := newSession(Config{}, &memConn{closed: make(chan struct{})})
	dt := newDTLSTransport(s)
	record := []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 0xaa, 0xbb}
	if _, err := dt.Write(record); !errors.Is(err, errDTLSApplicationData) {
		t.Fatalf("Write of application data: %v", err)
	}
}

func TestDTLSRetiredAfterFirstPacket(t *testing.T) {
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingDTLS, nil)
	sa, sb := mustPair(t, ca, cb, a, b)
	if !sa.dtlsLive.Load() || !sb.dtlsLive.Load() {
		t.Fatal("DTLS retired before any packet arrived")
	}
	exchange(t, sa, sb, 1, 1)
	exchange(t, sb, sa, 2, 1)
	if sa.dtlsLive.Load() || sb.dtlsLive.Load() {
		t.Fatal("DTLS still live after both sides received media")
	}
}

func TestCloseIdempotentAndUnblocksReaders(t *testing.T) {
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
	sa, sb, errA, errB := startPair(t, ca, cb, a, b)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	defer sb.Close()
	errs := make(chan error, 2)
	go func() { _, _, err := sa.ReadRTP(make([]byte, 10)); errs <- err }()
	go func() { _, err := sa.ReadRTCP(make([]byte, 10)); errs <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read returned %v, want net.ErrClosed", err)
		}
	}
	if err := sa.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := sa.WriteRTP(RTPHeader{}, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteRTP after Close: %v", err)
	}
	if err := sa.InstallKey(CallKey{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("InstallKey after Close: %v", err)
	}
}

func TestReadDeadline(t *testing.T) {
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	sa, _ := mustPair(t, ca, cb, a, b)
	sa.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, _, err := sa.ReadRTP(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadRTP past deadline: %v, want a timeout net.Error", err)
	}
	// A waiter on the queue (ReadRTCP, while ReadRTP holds the transport)
	// times out too.
	sa.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := make(chan error, 1)
	go func() { _, _, err := sa.ReadRTP(make([]byte, 10)); done <- err }()
	_, err = sa.ReadRTCP(make([]byte, 10))
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadRTCP past deadline: %v", err)
	}
	<-done
}

func TestKeyFetchFailureUndoesStart(t *testing.T) {
	keys := newFakeKeys(t)
	keys.fetchErr = errors.New("kms says no")
	ca, cb := udpPair(t)
	defer cb.Close()
	a, _ := pairConfigs(t, sdp.KeyingHybrid, keys)
	_, err := NewSession(context.Background(), ca, a)
	if err == nil || !strings.Contains(err.Error(), "kms says no") {
		t.Fatalf("NewSession: %v", err)
	}
	if _, err := ca.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("conn not closed after a failed start: %v", err)
	}
}
