package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// fakeKeys is a hand-written KeySource and KeyWatcher: a KMS with one call
// key whose versions the test publishes.
type fakeKeys struct {
	mu       sync.Mutex
	versions []CallKey
	revoked  []uint32
	min      uint32
	changed  chan struct{} // closed and replaced on every Publish, Revoke, Raise
	fetchErr error
}

var (
	_ KeySource        = (*fakeKeys)(nil)
	_ KeyWatcher       = (*fakeKeys)(nil)
	_ KeyChangeWatcher = (*fakeKeys)(nil)
)

// Revoke withdraws version v, as a KMS does when it is compromised.
func (f *fakeKeys) Revoke(v uint32) {
	f.mu.Lock()
	f.revoked = append(f.revoked, v)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Raise withdraws the versions below min.
func (f *fakeKeys) Raise(min uint32) {
	f.mu.Lock()
	f.min = min
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// WatchChanges is Watch that also reports withdrawals, each time they
// change.
func (f *fakeKeys) WatchChanges(ctx context.Context, uri string, fn func(KeyChange)) error {
	var reported uint32
	var revoked int
	var min uint32
	for {
		f.mu.Lock()
		var fresh []CallKey
		for _, k := range f.versions {
			if k.Version > reported {
				fresh = append(fresh, k)
				reported = k.Version
			}
		}
		var change *KeyChange
		if len(f.revoked) != revoked || f.min != min {
			revoked, min = len(f.revoked), f.min
			change = &KeyChange{Revoked: append([]uint32(nil), f.revoked...), MinVersion: min}
		}
		changed := f.changed
		f.mu.Unlock()
		for _, k := range fresh {
			fn(KeyChange{Key: k})
		}
		if change != nil {
			fn(*change)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

const testURI = "kms://test/calls/1/key"

func newFakeKeys(t testing.TB, versions ...uint32) *fakeKeys {
	f := &fakeKeys{changed: make(chan struct{})}
	for _, v := range versions {
		f.Publish(t, v, time.Time{})
	}
	return f
}

// Publish adds version v, active from activateAt (zero: at once).
func (f *fakeKeys) Publish(t testing.TB, v uint32, activateAt time.Time) CallKey {
	t.Helper()
	key := make([]byte, CallKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	k := CallKey{URI: testURI, CallID: "call-1", Version: v, Key: key, ActivateAt: activateAt}
	f.mu.Lock()
	f.versions = append(f.versions, k)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return k
}

func (f *fakeKeys) Keys(ctx context.Context, uri string) ([]CallKey, error) {
	if uri != testURI {
		return nil, errors.New("fake kms: no such key")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fetchErr != nil {
		return nil, f.fetchErr
	}
	return append([]CallKey(nil), f.versions...), nil
}

func (f *fakeKeys) Watch(ctx context.Context, uri string, fn func(CallKey)) error {
	return f.WatchChanges(ctx, uri, func(c KeyChange) {
		if c.Key.Version != 0 {
			fn(c.Key)
		}
	})
}

// udpPair returns two UDP sockets on loopback connected to each other.
func udpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	la, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addrA, addrB := la.LocalAddr().(*net.UDPAddr), lb.LocalAddr().(*net.UDPAddr)
	la.Close()
	lb.Close()
	a, err := net.DialUDP("udp", addrA, addrB)
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.DialUDP("udp", addrB, addrA)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// testCert is generated once: key generation is the slow part of a test.
var testCert = sync.OnceValues(func() ([2]tls.Certificate, error) {
	var certs [2]tls.Certificate
	for i := range certs {
		c, err := GenerateCertificate()
		if err != nil {
			return certs, err
		}
		certs[i] = c
	}
	return certs, nil
})

// pairConfigs returns matching configs for the two ends of a call in mode.
func pairConfigs(t testing.TB, mode sdp.Keying, keys KeySource) (Config, Config) {
	t.Helper()
	a := Config{Keying: mode}
	b := Config{Keying: mode}
	switch mode {
	case sdp.KeyingDTLS, sdp.KeyingHybrid:
		certs, err := testCert()
		if err != nil {
			t.Fatal(err)
		}
		fa, _ := CertificateFingerprint(certs[0])
		fb, _ := CertificateFingerprint(certs[1])
		a.Certificate, a.DTLSRole, a.RemoteFingerprints = certs[0], DTLSClient, []sdp.Fingerprint{fb}
		b.Certificate, b.DTLSRole, b.RemoteFingerprints = certs[1], DTLSServer, []sdp.Fingerprint{fa}
	case sdp.KeyingSDES:
		ka, kb := make([]byte, 28), make([]byte, 28)
		rand.Read(ka)
		rand.Read(kb)
		a.SDES = SDES{Profile: ProfileAEADAES128GCM, LocalKey: ka, RemoteKey: kb}
		b.SDES = SDES{Profile: ProfileAEADAES128GCM, LocalKey: kb, RemoteKey: ka}
	}
	if mode == sdp.KeyingKMS || mode == sdp.KeyingHybrid {
		a.KeySource, a.KeyURI, a.LocalID, a.RemoteID = keys, testURI, "alice", "bob"
		b.KeySource, b.KeyURI, b.LocalID, b.RemoteID = keys, testURI, "bob", "alice"
	}
	return a, b
}

// startPair runs NewSession on both ends concurrently over ca and cb.
func startPair(t testing.TB, ca, cb net.Conn, a, b Config) (*Session, *Session, error, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var (
		sb   *Session
		errB error
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sb, errB = NewSession(ctx, cb, b)
	}()
	sa, errA := NewSession(ctx, ca, a)
	wg.Wait()
	return sa, sb, errA, errB
}

// mustPair is startPair for tests that need both sessions up; Close is
// registered as cleanup.
func mustPair(t testing.TB, ca, cb net.Conn, a, b Config) (*Session, *Session) {
	t.Helper()
	sa, sb, errA, errB := startPair(t, ca, cb, a, b)
	if errA != nil || errB != nil {
		if sa != nil {
			sa.Close()
		}
		if sb != nil {
			sb.Close()
		}
		t.Fatalf("NewSession: %v / %v", errA, errB)
	}
	t.Cleanup(func() {
		sa.Close()
		sb.Close()
	})
	return sa, sb
}

// rtcpRR is a minimal receiver report: V=2, RC=0, PT=201, length 1.
func rtcpRR(ssrc uint32) []byte {
	return []byte{0x80, 201, 0, 1, byte(ssrc >> 24), byte(ssrc >> 16), byte(ssrc >> 8), byte(ssrc)}
}

// exchange sends n RTP packets and one RTCP packet from s to r and checks
// that r receives them unchanged.
func exchange(t *testing.T, s, r *Session, ssrc uint32, n int) {
	t.Helper()
	ext := []byte{0x10, 0xff, 0x00, 0x00} // one-byte element id 1, len 1 (audio level), padding
	for i := range n {
		h := RTPHeader{PayloadType: 111, SequenceNumber: uint16(1000 + i), Timestamp: uint32(960 * i), SSRC: ssrc,
			Marker: i == 0, CSRC: []uint32{7, 8}, ExtensionProfile: 0xBEDE, Extension: ext}
		payload := bytes.Repeat([]byte{byte(i)}, 100+i)
		if err := s.WriteRTP(h, payload); err != nil {
			t.Fatalf("WriteRTP %d: %v", i, err)
		}
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		got, m, err := r.ReadRTP(buf)
		if err != nil {
			t.Fatalf("ReadRTP %d: %v; sender %+v receiver %+v", i, err, s.Stats(), r.Stats())
		}
		if got.SequenceNumber != h.SequenceNumber || got.SSRC != ssrc || got.Timestamp != h.Timestamp ||
			got.PayloadType != 111 || got.Marker != h.Marker || len(got.CSRC) != 2 || got.CSRC[1] != 8 ||
			got.ExtensionProfile != 0xBEDE || !bytes.Equal(got.Extension, ext) || !bytes.Equal(buf[:m], payload) {
			t.Fatalf("packet %d: got %+v %x, sent %+v %x", i, got, buf[:m], h, payload)
		}
	}
	if err := s.WriteRTCP(rtcpRR(ssrc)); err != nil {
		t.Fatalf("WriteRTCP: %v", err)
	}
	buf := make([]byte, 1500)
	var m int
	// The session's own reports may come first: skip them, boundedly.
	for range 5 {
		var err error
		if m, err = r.ReadRTCP(buf); err != nil {
			t.Fatalf("ReadRTCP: %v", err)
		}
		if bytes.Equal(buf[:m], rtcpRR(ssrc)) {
			break
		}
	}
	if !bytes.Equal(buf[:m], rtcpRR(ssrc)) {
		t.Fatalf("RTCP: got %x", buf[:m])
	}
}
