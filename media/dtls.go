package media

import (
	"context"
	"crypto/sha1" //nolint:gosec // RFC 8122 allows sha-1 fingerprints; the peer chooses
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v2"

	"github.com/securecall/securecall/internal/pionlog"
	"github.com/securecall/securecall/sdp"
)

// exporterLabel is the RFC 5764 section 4.2 exporter label.
const exporterLabel = "EXTRACTOR-dtls_srtp"

// dtlsQueueLen bounds the DTLS records waiting for pion/dtls.
const dtlsQueueLen = 16

// maxReadFailures is how many transport read errors in a row (other than
// timeouts and closing) the handshake pump and the readers ride out.
const maxReadFailures = 100

// earlyQueueLen bounds the SRTP packets that arrive before the keys.
const earlyQueueLen = 32

// fingerprintHash returns the hash of an RFC 8122 algorithm name.
func fingerprintHash(alg string) (hash.Hash, bool) {
	switch alg {
	case "sha-1":
		return sha1.New(), true //nolint:gosec
	case "sha-224":
		return sha256.New224(), true
	case "sha-256":
		return sha256.New(), true
	case "sha-384":
		return sha512.New384(), true
	case "sha-512":
		return sha512.New(), true
	}
	return nil, false
}

// matchFingerprint reports whether the DER certificate matches one of fps.
func matchFingerprint(der []byte, fps []sdp.Fingerprint) bool {
	for _, fp := range fps {
		h, ok := fingerprintHash(fp.Algorithm)
		if !ok {
			continue
		}
		h.Write(der)
		if subtle.ConstantTimeCompare(h.Sum(nil), fp.Value) == 1 {
			return true
		}
	}
	return false
}

// maxHandshakeAttempts bounds the DTLS handshakes one session starts
// before it gives up, on top of Config.HandshakeTimeout.
const maxHandshakeAttempts = 16

// handshake runs the DTLS handshake over the demultiplexed transport and
// returns the negotiated profile and the RFC 5764 exporter output. A pump
// goroutine reads the transport meanwhile; it ends with the first media
// packet after the keys are installed, or with Close.
//
// The first datagram of a handshake is not authenticated: ICE's checks
// prove that the peer answers at its address, not that every datagram from
// that address is the peer's. So a failed attempt (a certificate that
// matches no signalled fingerprint, a forged alert, a server flight that
// answered someone else's ClientHello) is discarded and a new one runs on
// the same transport until one completes, the handshake deadline passes or
// maxHandshakeAttempts have failed. As server, a ClientHello with a new
// client random while an attempt is under way starts a new attempt from
// that hello (see pump): the peer's own retry must not be answered with a
// flight computed for another hello.
func (s *Session) handshake(ctx context.Context) (Profile, []byte, error) {
	s.dtMu.Lock()
	s.dt = newDTLSTransport(s)
	s.dtMu.Unlock()
	if s.push.pusher == nil {
		s.earlyQ = make(chan *packetBuf, earlyQueueLen)
		// The pump holds the read token for as long as it runs, so that
		// readers wait on their queues rather than in a second conn.Read.
		s.tok <- struct{}{}
		s.wg.Add(1)
		go s.pump()
	} else {
		// The transport pushes each datagram to onDatagram, which does the
		// pump's job; what it queued meanwhile (a ClientHello that came
		// first) reaches s.dt before this returns.
		s.push.pusher.PushDatagrams(s.onDatagram, s.endReads)
	}

	s.log.Debug("media: DTLS handshake", "role", s.cfg.DTLSRole, "retransmit", s.cfg.retransmitInterval())
	var (
		dc          *dtls.Conn
		err         error
		sawMismatch bool
		attempt     int
	)
	for attempt = 1; ; attempt++ {
		dt := s.currentDT()
		var mismatch bool
		dcfg := s.dtlsConfig(&mismatch)
		if s.cfg.DTLSRole == DTLSClient {
			dc, err = dtls.ClientWithContext(ctx, dt, dcfg)
		} else {
			dc, err = dtls.ServerWithContext(ctx, dt, dcfg)
		}
		if err == nil {
			s.dtMu.Lock()
			s.dconn = dc
			s.dtDone = true
			s.dtMu.Unlock()
			break
		}
		sawMismatch = sawMismatch || mismatch
		if ctx.Err() != nil || attempt == maxHandshakeAttempts {
			break
		}
		s.log.Debug("media: DTLS handshake attempt failed, accepting another", "role", s.cfg.DTLSRole, "attempt", attempt, "err", err)
		s.nextDT(dt)
	}
	if err != nil {
		switch {
		case sawMismatch:
			return 0, nil, fmt.Errorf("media: DTLS handshake as %s (%d attempts): %w", s.cfg.DTLSRole, attempt, ErrFingerprintMismatch)
		case ctx.Err() != nil:
			return 0, nil, fmt.Errorf("media: DTLS handshake as %s (%d attempts): %w (%v)", s.cfg.DTLSRole, attempt, ctx.Err(), err)
		}
		return 0, nil, fmt.Errorf("media: DTLS handshake as %s (%d attempts): %w", s.cfg.DTLSRole, attempt, err)
	}
	s.dtlsLive.Store(true)
	sel, ok := dc.SelectedSRTPProtectionProfile()
	if !ok {
		return 0, nil, errors.New("media: DTLS handshake negotiated no SRTP protection profile (use_srtp)")
	}
	profile := Profile(sel)
	if !profile.valid() {
		return 0, nil, fmt.Errorf("media: DTLS peer chose unsupported profile %s", profile)
	}
	state := dc.ConnectionState()
	exported, err := state.ExportKeyingMaterial(exporterLabel, nil, 2*(profile.keyLen()+profile.saltLen()))
	if err != nil {
		return 0, nil, fmt.Errorf("media: DTLS-SRTP exporter: %w", err)
	}
	return profile, exported, nil
}

// dtlsConfig is the pion/dtls configuration of one handshake attempt;
// *mismatch is set when the peer's certificate matches no fingerprint.
func (s *Session) dtlsConfig(mismatch *bool) *dtls.Config {
	profiles := make([]dtls.SRTPProtectionProfile, len(s.cfg.Profiles))
	for i, p := range s.cfg.Profiles {
		profiles[i] = p.dtls()
	}
	return &dtls.Config{
		Certificates:           []tls.Certificate{s.cfg.Certificate},
		SRTPProtectionProfiles: profiles,
		ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		// The peer is authenticated by its fingerprint, not by a CA.
		InsecureSkipVerify: true,
		ClientAuth:         dtls.RequireAnyClientCert,
		// pion/dtls calls this on its handshake goroutine, which has
		// ended when ClientWithContext or ServerWithContext returns.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !matchFingerprint(raw[0], s.cfg.RemoteFingerprints) {
				*mismatch = true
				return ErrFingerprintMismatch
			}
			return nil
		},
		FlightInterval: s.cfg.retransmitInterval(),
		// pion/dtls's errors after the association is retired are about
		// the closed transport: debug material.
		LoggerFactory: &pionlog.Factory{Log: s.log, Prefix: "media: ", MaxLevel: slog.LevelDebug},
		// The HelloVerifyRequest cookie (RFC 6347 section 4.2.1) keeps a
		// spoofed source address from drawing a server's larger flight.
		// It is skipped: DTLS runs only on a path ICE has verified, so
		// the flight goes to an address that asked for this call, and
		// the cookie would not protect the handshake anyway: pion/dtls
		// v2 answers the cookie-bearing hello with the client random of
		// the first hello it saw, which may be a spoofer's. Spoofed
		// hellos are handled by discarding failed attempts (handshake)
		// instead. RFC 6347 lets a server skip the cookie and every
		// client must accept that; it also saves a round trip.
		InsecureSkipVerifyHello: true,
	}
}

// currentDT returns the transport of the handshake attempt to run.
func (s *Session) currentDT() *dtlsTransport {
	s.dtMu.Lock()
	defer s.dtMu.Unlock()
	return s.dt
}

// nextDT discards the transport of a failed attempt and, unless the pump
// has already started a new one from a fresh ClientHello, gives the next
// attempt a fresh transport.
func (s *Session) nextDT(failed *dtlsTransport) {
	s.dtMu.Lock()
	if s.dt == failed {
		s.dt = newDTLSTransport(s)
	}
	s.dtMu.Unlock()
	failed.Close()
}

// clientHelloRandom returns the client random of a datagram whose first
// record is an unfragmented-start epoch 0 ClientHello (RFC 6347 sections
// 4.1, 4.2.2 and RFC 5246 section 7.4.1.2).
func clientHelloRandom(p []byte) ([32]byte, bool) {
	var r [32]byte
	const (
		recordHeader = 13
		hsHeader     = 12
		randomAt     = recordHeader + hsHeader + 2 // after client_version
	)
	if len(p) < randomAt+len(r) || p[0] != 22 || p[3] != 0 || p[4] != 0 {
		return r, false
	}
	if p[recordHeader] != 1 || p[recordHeader+6] != 0 || p[recordHeader+7] != 0 || p[recordHeader+8] != 0 {
		return r, false // not a ClientHello, or not the fragment at offset 0
	}
	copy(r[:], p[randomAt:])
	return r, true
}

// pump reads the transport while the handshake runs: DTLS to pion/dtls,
// media to the early queue. Once the keys are in, the first media packet it
// reads is routed to its reader and the pump ends, handing the read token
// to ReadRTP and ReadRTCP.
func (s *Session) pump() {
	defer s.wg.Done()
	defer s.release()
	buf := make([]byte, MaxPacketSize)
	failures := 0
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.earlyMu.Lock()
				ready := s.ready
				s.earlyMu.Unlock()
				if ready {
					return // SetReadDeadline: the readers take over
				}
			}
			// A connected UDP socket reports an ICMP port unreachable
			// (the peer not listening yet) as a read error: keep going,
			// unless the transport only fails.
			s.log.Debug("media: transport read during handshake", "err", err)
			if failures++; failures > maxReadFailures {
				return
			}
			continue
		}
		failures = 0
		raw := buf[:n]
		switch classify(raw) {
		case kindDTLS:
			s.toDTLS(raw)
		case kindRTP, kindRTCP:
			s.earlyMu.Lock()
			if !s.ready {
				s.queueEarlyLocked(raw)
				s.earlyMu.Unlock()
				continue
			}
			s.earlyMu.Unlock()
			s.deliverMedia(raw, true)
			return
		default:
			s.stats.malformed.Add(1)
		}
	}
}

// toDTLS hands a DTLS record to pion/dtls while it is still needed. Until
// a handshake completes, a server's attempt takes nothing before its
// ClientHello (the leftovers of a discarded attempt are of no use to it),
// and a ClientHello with a client random other than the attempt's starts a
// new attempt with it, discarding the current one.
func (s *Session) toDTLS(raw []byte) {
	s.dtMu.Lock()
	dt := s.dt
	if dt != nil && !s.dtDone && s.cfg.DTLSRole == DTLSServer {
		random, isHello := clientHelloRandom(raw)
		switch {
		case isHello && !dt.helloSeen:
			dt.hello, dt.helloSeen = random, true
		case isHello && random != dt.hello:
			fresh := newDTLSTransport(s)
			fresh.hello, fresh.helloSeen = random, true
			s.dt = fresh
			s.dtMu.Unlock()
			dt.Close()
			fresh.deliver(raw)
			return
		case !isHello && !dt.helloSeen:
			s.dtMu.Unlock()
			return
		}
	}
	s.dtMu.Unlock()
	if dt == nil || dt.isClosed() {
		return
	}
	dt.deliver(raw)
}

// retireDTLS ends the DTLS association without a close_notify. It is called
// when the first packet from the peer authenticates: the peer then has its
// keys, so it will never again need a retransmission from this side, and
// pion/dtls's goroutines can go. The association is not closed on the wire:
// browsers treat a close_notify as the end of the call.
func (s *Session) retireDTLS() {
	s.dtMu.Lock()
	dt := s.dt
	s.dtMu.Unlock()
	if dt == nil || !dt.silent.CompareAndSwap(false, true) {
		return
	}
	s.dtlsLive.Store(false)
	if s.dconn != nil {
		_ = s.dconn.Close()
		// Only this function touches dconn after the handshake, and the
		// CompareAndSwap above lets it run once: dropping the reference lets
		// pion/dtls's handshake state (several KB a call) be collected.
		s.dconn = nil
	}
	dt.Close()
}

// dtlsTransport is the net.Conn pion/dtls runs over: it reads the DTLS
// records the session demultiplexes and writes to the session's transport.
// It never writes application data (content type 23), and once retired it
// writes nothing at all.
type dtlsTransport struct {
	s         *Session
	in        chan *packetBuf
	closed    chan struct{}
	closeOnce sync.Once
	silent    atomic.Bool
	rdl       deadline

	// The ClientHello a server's attempt answers; guarded by Session.dtMu.
	hello     [32]byte
	helloSeen bool
}

func newDTLSTransport(s *Session) *dtlsTransport {
	return &dtlsTransport{s: s, in: make(chan *packetBuf, dtlsQueueLen), closed: make(chan struct{})}
}

// deliver queues a copy of a DTLS datagram for pion/dtls, or drops it
// when the queue is full (pion/dtls retransmits).
func (t *dtlsTransport) deliver(raw []byte) {
	b := copyPacket(raw)
	select {
	case t.in <- b:
	default:
		putPacket(b)
	}
}

var errDTLSApplicationData = errors.New("media: refusing to send DTLS application data")

func (t *dtlsTransport) Read(p []byte) (int, error) {
	for {
		select {
		case b := <-t.in:
			n := copy(p, b.data)
			putPacket(b)
			return n, nil
		case <-t.closed:
			return 0, net.ErrClosed
		case <-t.rdl.wait():
			if t.rdl.exceeded() {
				return 0, os.ErrDeadlineExceeded
			}
		}
	}
}

func (t *dtlsTransport) Write(p []byte) (int, error) {
	if t.silent.Load() {
		return len(p), nil
	}
	if hasApplicationData(p) {
		return 0, errDTLSApplicationData
	}
	return t.s.conn.Write(p)
}

// hasApplicationData reports whether a datagram holds a DTLS record of
// content type application_data (RFC 6347 section 4.1).
func hasApplicationData(p []byte) bool {
	for len(p) >= 13 {
		if p[0] == 23 {
			return true
		}
		l := 13 + (int(p[11])<<8 | int(p[12]))
		if l > len(p) {
			break
		}
		p = p[l:]
	}
	return false
}

func (t *dtlsTransport) isClosed() bool {
	select {
	case <-t.closed:
		return true
	default:
		return false
	}
}

func (t *dtlsTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.rdl.stop()
	})
	return nil
}

func (t *dtlsTransport) LocalAddr() net.Addr  { return t.s.conn.LocalAddr() }
func (t *dtlsTransport) RemoteAddr() net.Addr { return t.s.conn.RemoteAddr() }

func (t *dtlsTransport) SetDeadline(d time.Time) error { return t.SetReadDeadline(d) }

// SetReadDeadline is used by pion/dtls to interrupt its reads.
func (t *dtlsTransport) SetReadDeadline(d time.Time) error {
	t.rdl.set(d)
	return nil
}

// SetWriteDeadline does nothing: writes go straight to the shared transport,
// whose deadline belongs to the session.
func (t *dtlsTransport) SetWriteDeadline(time.Time) error { return nil }
