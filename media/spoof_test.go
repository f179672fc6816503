package media

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v2"
	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

// tapConn is the net.Conn of an attacker on the media path: what it writes
// is injected into the victim's transport as if the victim's peer had sent
// it, and it reads what the victim writes (a copy; the victim's peer gets
// the original too).
type tapConn struct {
	in        chan []byte
	write     func([]byte)
	closed    chan struct{}
	closeOnce sync.Once
	wrote     chan struct{} // closed after the first Write
	wroteOnce sync.Once
	// rdl is the read deadline, which pion/dtls sets to end a read when
	// its handshake's context ends: without it, an attacker whose
	// handshake is cancelled while it waits for a datagram that never
	// comes would never return.
	rdl deadline
}

func newTapConn(write func([]byte)) *tapConn {
	return &tapConn{in: make(chan []byte, 256), write: write, closed: make(chan struct{}), wrote: make(chan struct{})}
}

// see hands the attacker a copy of a datagram the victim wrote.
func (c *tapConn) see(p []byte) {
	select {
	case c.in <- append([]byte(nil), p...):
	default:
	}
}

func (c *tapConn) Read(p []byte) (int, error) { return readQueued(p, c.in, c.closed, &c.rdl) }

func (c *tapConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.write(append([]byte(nil), p...))
	c.wroteOnce.Do(func() { close(c.wrote) })
	return len(p), nil
}

func (c *tapConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.rdl.stop()
	})
	return nil
}

func (c *tapConn) LocalAddr() net.Addr               { return memAddr("attacker") }
func (c *tapConn) RemoteAddr() net.Addr              { return memAddr("victim") }
func (c *tapConn) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c *tapConn) SetReadDeadline(t time.Time) error { c.rdl.set(t); return nil }
func (c *tapConn) SetWriteDeadline(time.Time) error  { return nil }

// attackerConfig is a DTLS-SRTP configuration with a certificate of the
// attacker's own, which matches no fingerprint the victims signalled.
func attackerConfig(t *testing.T) *dtls.Config {
	t.Helper()
	cert, err := GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return &dtls.Config{
		Certificates:            []tls.Certificate{cert},
		SRTPProtectionProfiles:  []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80},
		ExtendedMasterSecret:    dtls.RequireExtendedMasterSecret,
		InsecureSkipVerify:      true,
		ClientAuth:              dtls.RequireAnyClientCert,
		InsecureSkipVerifyHello: true,
	}
}

// TestSecurityDTLSSpoofedClientHello is issue 10 finding 6: an attacker on
// the media path sends a DTLS handshake of its own, with its own
// certificate, from the peer's address before the real peer's first flight.
// It must not take the session down: the attempt whose certificate matches
// no signalled fingerprint is discarded and the real handshake completes,
// whichever role the attacker plays against whichever side.
func TestSecurityDTLSSpoofedClientHello(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingHybrid} {
		for _, victim := range []DTLSRole{DTLSServer, DTLSClient} {
			t.Run(string(mode)+"/on-path/"+victim.String(), func(t *testing.T) {
				before := goleak.IgnoreCurrent()
				spoofedHandshake(t, mode, victim)
				goleak.VerifyNone(t, before)
			})
		}
		t.Run(string(mode)+"/off-path/server", func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			spoofedHelloOnly(t, mode)
			goleak.VerifyNone(t, before)
		})
	}
}

// spoofedHelloOnly is the blind form: one ClientHello of another party's
// reaches the server from the client's address first, and its sender never
// sees the answer.
func spoofedHelloOnly(t *testing.T, mode sdp.Keying) {
	hello := make(chan []byte, 1)
	tc := newTapConn(func(p []byte) {
		select {
		case hello <- p:
		default:
		}
	})
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if dc, err := dtls.ClientWithContext(actx, tc, attackerConfig(t)); err == nil {
			dc.Close()
		}
	}()
	spoofed := <-hello
	acancel()
	tc.Close()
	<-done
	if _, ok := clientHelloRandom(spoofed); !ok {
		t.Fatalf("the attacker's first datagram is not a ClientHello: %x", spoofed[:min(len(spoofed), 32)])
	}

	ca, cb := memPair()
	a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
	cb.inject(spoofed) // waiting before the server reads at all
	sa, sb, errA, errB := startPair(t, ca, cb, a, b)
	if sa != nil {
		defer sa.Close()
	}
	if sb != nil {
		defer sb.Close()
	}
	if errA != nil || errB != nil {
		t.Fatalf("a spoofed ClientHello took the session down: client %v; server %v", errA, errB)
	}
	exchange(t, sa, sb, 1, 3)
	exchange(t, sb, sa, 2, 3)
}

func spoofedHandshake(t *testing.T, mode sdp.Keying, victim DTLSRole) {
	ca, cb := memPair() // a is the DTLS client, b the server
	a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
	a.HandshakeTimeout, b.HandshakeTimeout = 10*time.Second, 10*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	type result struct {
		s   *Session
		err error
	}
	start := func(c net.Conn, cfg Config) chan result {
		ch := make(chan result, 1)
		go func() {
			s, err := NewSession(ctx, c, cfg)
			ch <- result{s, err}
		}()
		return ch
	}

	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	var resA, resB chan result
	attackerDone := make(chan error, 1)
	if victim == DTLSServer {
		// The server is waiting; the attacker's ClientHello reaches it
		// first, from the client's address, and the attacker reads what
		// the server answers.
		tc := newTapConn(cb.inject)
		cb.setTap(func(p []byte) bool { tc.see(p); return true })
		resB = start(cb, b)
		go func() {
			dc, err := dtls.ClientWithContext(actx, tc, attackerConfig(t))
			if err == nil {
				dc.Close()
			}
			attackerDone <- err
		}()
		<-tc.wrote
		// Let the server answer the spoofed hello before the real
		// client speaks.
		waitFor(t, func() bool { return len(ca.in) > 0 })
		resA = start(ca, a)
		defer tc.Close()
	} else {
		// The attacker answers the client's ClientHello with a server
		// flight of its own before the real server is up.
		tc := newTapConn(ca.inject)
		ca.setTap(func(p []byte) bool { tc.see(p); return true })
		go func() {
			dc, err := dtls.ServerWithContext(actx, tc, attackerConfig(t))
			if err == nil {
				dc.Close()
			}
			attackerDone <- err
		}()
		resA = start(ca, a)
		<-tc.wrote
		resB = start(cb, b)
		defer tc.Close()
	}

	ra, rb := <-resA, <-resB
	if ra.s != nil {
		defer ra.s.Close()
	}
	if rb.s != nil {
		defer rb.s.Close()
	}
	if ra.err != nil || rb.err != nil {
		t.Fatalf("a spoofed handshake took the session down: client %v; server %v", ra.err, rb.err)
	}
	acancel()
	if err := <-attackerDone; err == nil {
		t.Fatal("the attacker completed a handshake with a certificate nobody signalled")
	}
	exchange(t, ra.s, rb.s, 1, 3)
	exchange(t, rb.s, ra.s, 2, 3)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5 s")
}

// The attacker's handshake ends when its context does, even with no
// datagram coming: pion/dtls ends the read it waits in by setting a read
// deadline, which tapConn must honour. Without it the spoofing tests hung
// once in CI, waiting for an attacker that could not return.
func TestTapConnEndsWithHandshakeContext(t *testing.T) {
	tc := newTapConn(func([]byte) {}) // what the attacker writes goes nowhere
	defer tc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := dtls.ClientWithContext(ctx, tc, attackerConfig(t))
		done <- err
	}()
	<-tc.wrote // the ClientHello is out; no answer will come
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a handshake with nobody completed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attacker's handshake did not end within 10 s of its context")
	}
}
