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

// handshake runs the DTLS handshake over the demultiplexed transport and
// returns the negotiated profile and the RFC 5764 exporter output. A pump
// goroutine reads the transport meanwhile; it ends with the first media
// packet after the keys are installed, or with Close.
func (s *Session) handshake(ctx context.Context) (Profile, []byte, error) {
	s.dt = newDTLSTransport(s)
	s.earlyQ = make(chan *packetBuf, earlyQueueLen)
	// The pump holds the read token for as long as it runs, so that readers
	// wait on their queues rather than in a second conn.Read.
	s.tok <- struct{}{}
	s.wg.Add(1)
	go s.pump()

	profiles := make([]dtls.SRTPProtectionProfile, len(s.cfg.Profiles))
	for i, p := range s.cfg.Profiles {
		profiles[i] = p.dtls()
	}
	var mismatch atomic.Bool
	dcfg := &dtls.Config{
		Certificates:           []tls.Certificate{s.cfg.Certificate},
		SRTPProtectionProfiles: profiles,
		ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		// The peer is authenticated by its fingerprint, not by a CA.
		InsecureSkipVerify: true,
		ClientAuth:         dtls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !matchFingerprint(raw[0], s.cfg.RemoteFingerprints) {
				mismatch.Store(true)
				return ErrFingerprintMismatch
			}
			return nil
		},
		// pion/dtls's errors after the association is retired are about
		// the closed transport: debug material.
		LoggerFactory: &pionlog.Factory{Log: s.log, Prefix: "media: ", MaxLevel: slog.LevelDebug},
		// The HelloVerifyRequest cookie (RFC 6347 section 4.2.1) keeps a
		// spoofed source address from drawing a server's larger flight.
		// DTLS here runs only on a path ICE has verified with
		// message-integrity checks under the ICE password, so the cookie
		// adds a round trip and no protection; RFC 6347 lets a server skip
		// it and every client must accept that.
		InsecureSkipVerifyHello: true,
	}
	var (
		dc  *dtls.Conn
		err error
	)
	if s.cfg.DTLSRole == DTLSClient {
		dc, err = dtls.ClientWithContext(ctx, s.dt, dcfg)
	} else {
		dc, err = dtls.ServerWithContext(ctx, s.dt, dcfg)
	}
	if err != nil {
		if mismatch.Load() {
			return 0, nil, fmt.Errorf("media: DTLS handshake as %s: %w", s.cfg.DTLSRole, ErrFingerprintMismatch)
		}
		if ctx.Err() != nil {
			return 0, nil, fmt.Errorf("media: DTLS handshake as %s: %w (%v)", s.cfg.DTLSRole, ctx.Err(), err)
		}
		return 0, nil, fmt.Errorf("media: DTLS handshake as %s: %w", s.cfg.DTLSRole, err)
	}
	s.dconn = dc
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
				b := getPacket()
				b.data = append(b.buf[:0], raw...)
				select {
				case s.earlyQ <- b:
				default:
					s.stats.queueDrops.Add(1)
					putPacket(b)
				}
				s.earlyMu.Unlock()
				continue
			}
			s.earlyMu.Unlock()
			if s.routeToQueue(raw) {
				s.noteAuthentic()
			}
			return
		default:
			s.stats.malformed.Add(1)
		}
	}
}

// toDTLS hands a DTLS record to pion/dtls while it is still needed.
func (s *Session) toDTLS(raw []byte) {
	if s.dt == nil || s.dt.isClosed() {
		return
	}
	b := getPacket()
	b.data = append(b.buf[:0], raw...)
	select {
	case s.dt.in <- b:
	default:
		putPacket(b)
	}
}

// retireDTLS ends the DTLS association without a close_notify. It is called
// when the first packet from the peer authenticates: the peer then has its
// keys, so it will never again need a retransmission from this side, and
// pion/dtls's goroutines can go. The association is not closed on the wire:
// browsers treat a close_notify as the end of the call.
func (s *Session) retireDTLS() {
	if s.dt == nil || !s.dt.silent.CompareAndSwap(false, true) {
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
	s.dt.Close()
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
}

func newDTLSTransport(s *Session) *dtlsTransport {
	return &dtlsTransport{s: s, in: make(chan *packetBuf, dtlsQueueLen), closed: make(chan struct{})}
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
