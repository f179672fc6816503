package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v2"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall/sdp"
)

// queueLen is how many packets of one kind wait for their reader when
// another reader read them off the transport.
const queueLen = 32

// Session is an SRTP/SRTCP session over one connected packet transport,
// with RTP and RTCP multiplexed (RFC 5761) and DTLS demultiplexed from them
// (RFC 7983). Create it with NewSession; all methods are safe for
// concurrent use.
type Session struct {
	cfg     Config
	conn    net.Conn
	latch   SourceLatcher // conn, when it latches onto authenticated sources
	log     *slog.Logger
	profile Profile
	closed  atomic.Bool // in profile's word
	done    chan struct{}
	wg      sync.WaitGroup
	stats   counters

	// Key versions (kms, hybrid keying). keysMu serializes InstallKey.
	keysMu    sync.Mutex
	callID    string
	exporter  []byte // hybrid: the DTLS exporter output, an input of every version
	stopWatch context.CancelFunc

	// Sending: the SRTP context and everything it protects is owned by
	// sendMu. WriteRTP and WriteRTCP hold it for one packet.
	sendMu      sync.Mutex
	send        *srtp.Context
	wHdr        rtp.Header
	wcHdr       rtcp.Header
	sendKey     sendKeyState
	pending     []pendingKey // kms/hybrid: installed, not yet active, ascending
	sendCheckAt int64        // unix ns of the next time-based send event; 0: none
	cbMu        sync.Mutex   // serializes OnRotationNeeded
	gateMu      sync.Mutex   // orders startCallback before Close's wait
	attestOut   attestSend   // this side's path attestation (attest.go)
	attestIn    attestRecv   // the peer's

	// Receiving: recvMu owns the SRTP context and the version bookkeeping.
	recvMu sync.Mutex
	recv   *srtp.Context
	// dtlsLive: the DTLS conn still answers retransmissions. Every
	// authentic packet looks at it, so it sits on recvMu's line.
	dtlsLive    atomic.Bool
	versioned   bool // MKI is the 4-byte key version (kms, hybrid); set before markReady
	rHdr        rtp.Header
	rcHdr       rtcp.Header
	rtpTrailer  int // bytes after the MKI in SRTP (the HMAC tag)
	rtcpTrailer int // likewise for SRTCP
	recvKeys    map[uint32]bool
	recvNewest  uint32 // newest version the peer has been seen to send
	removeBelow uint32 // versions below it are removed at removeAt
	removeAt    int64  // unix ns; 0: no removal pending
	removedUpTo uint32 // versions up to it were removed; never reinstalled
	// Withdrawn versions (RevokeKey, a KeyChangeWatcher) are never
	// installed again: those in revoked (at most maxRevoked) and those
	// below revokedBelow.
	revoked      map[uint32]bool
	revokedBelow uint32
	recvSelect   uint32 // the version the receiving context's selected MKI names; 0: the placeholder
	fetch        fetchState
	releaseMu    sync.Mutex // serializes releaseHeld

	// life is cancelled by Close: it bounds requests the session makes
	// on its own (on-demand fetches, rotation requests).
	life    context.Context
	endLife context.CancelFunc

	// Reading. Whoever holds tok reads the transport into rbuf, where a
	// packet of its kind is unprotected in place; packets of the other
	// kind go to its queue.
	tok         chan struct{}
	rbuf        []byte          // nil when dr is set
	dr          datagramReader  // conn, if it lends its own buffers
	held        any             // the datagram dr lent the token holder
	rtpQ, rtcpQ chan *packetBuf // rtpQ is nil with OnRTP
	rdl         deadline
	rtpMu       sync.Mutex   // serializes ReadRTP and OnRTP, owns lists
	lists       *headerLists // nil until a packet has CSRCs or an extension
	rtcpMu      sync.Mutex   // serializes ReadRTCP

	// DTLS (dtls and hybrid keying). dtMu guards dt, dconn and dtDone
	// while handshake attempts replace dt; after the handshake only
	// retireDTLS changes them.
	dtMu     sync.Mutex
	dt       *dtlsTransport
	dtDone   bool // a handshake completed: dt is final
	dconn    *dtls.Conn
	earlyMu  sync.Mutex
	ready    bool        // keys are installed; guarded by earlyMu
	readyNow atomic.Bool // ready, for the push path's check without earlyMu
	earlyQ   chan *packetBuf

	// Push delivery (Config.OnRTP, push.go).
	push pushState

	// The session's own RTCP reports and receive statistics
	// (rtcp_report.go).
	q reports
}

// sendKeyState is the key in use for sending and its consumption.
type sendKeyState struct {
	version     uint32
	activated   time.Time
	expiresAt   time.Time
	rtp, rtcp   uint64
	requested   bool // a rotation was requested for this version
	lifeAsked   bool // the lifetime check is done for this version
	expired     bool
	revoked     bool // withdrawn: expired is set too, WriteRTP says why
	rtcpBudget  uint64
	rtpHardStop uint64
}

// refusal is why the key cannot send.
func (k *sendKeyState) refusal() error {
	if k.revoked {
		return ErrKeyRevoked
	}
	return ErrKeyExhausted
}

type pendingKey struct {
	version              uint32
	activateAt, expireAt time.Time
}

// packetBuf carries one packet through a queue; they are pooled.
type packetBuf struct {
	buf  [MaxPacketSize]byte
	data []byte
}

var packetPool = sync.Pool{New: func() any { return new(packetBuf) }}

// outBuf is where a packet is built and protected in place before it is
// written. They are pooled, so that a session holds none between writes
// (conn.Write does not keep it, as net.Conn promises).
type outBuf [MaxPacketSize + 64]byte

var outPool = sync.Pool{New: func() any { return new(outBuf) }}

func getOut() *outBuf { return outPool.Get().(*outBuf) }

func putOut(b *outBuf) { outPool.Put(b) }

// datagramReader is implemented by transports that lend each datagram in
// a buffer of their own, such as the conns of an ice.Endpoint: the session
// unprotects it there and hands it back, so that a session keeps no read
// buffer while it waits and copies nothing. ReadDatagram has Read's
// deadlines and errors; the datagram is valid until ReleaseDatagram(held).
type datagramReader interface {
	ReadDatagram() (b []byte, held any, err error)
	ReleaseDatagram(held any)
}

func getPacket() *packetBuf { return packetPool.Get().(*packetBuf) }

// copyPacket returns a pooled buffer holding a copy of raw, which is at
// most MaxPacketSize long.
func copyPacket(raw []byte) *packetBuf {
	b := getPacket()
	b.data = append(b.buf[:0], raw...)
	return b
}

func putPacket(b *packetBuf) {
	b.data = nil
	packetPool.Put(b)
}

// NewSession starts a secure media session over conn, the connected
// transport that ICE hands over. Before it returns it fetches the call keys
// (kms, hybrid keying) and completes the DTLS handshake (dtls, hybrid),
// bounded by ctx and Config.HandshakeTimeout.
//
// The session owns conn from then on and closes it in Close. If the Config
// is invalid, NewSession returns an error wrapping ErrInvalidConfig, starts
// nothing and leaves conn alone; if setting up fails later, conn is closed
// and everything started is stopped before the error returns.
func NewSession(ctx context.Context, conn net.Conn, cfg Config) (*Session, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, configError("nil conn")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("media: new session: %w", err)
	}
	s := newSession(c, conn)
	ctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	if err := s.start(ctx); err != nil {
		s.abort()
		return nil, err
	}
	s.log.Debug("media session up", "keying", string(c.Keying), "profile", s.profile.String(),
		"send_version", s.stats.sendVersion.Load())
	return s, nil
}

// newSession allocates a session without starting anything.
func newSession(c Config, conn net.Conn) *Session {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{
		cfg:      c,
		conn:     conn,
		log:      log,
		done:     make(chan struct{}),
		tok:      make(chan struct{}, 1),
		rtcpQ:    make(chan *packetBuf, queueLen),
		recvKeys: map[uint32]bool{},
	}
	s.latch, _ = conn.(SourceLatcher)
	if c.OnRTP == nil {
		// With OnRTP, RTP goes there (held packets too: fetch's
		// pushed), never to a queue, and ReadRTP refuses.
		s.rtpQ = make(chan *packetBuf, queueLen)
	} else {
		s.push.ended = make(chan struct{})
		if p, ok := conn.(datagramPusher); ok {
			s.push.pusher = p
			// Media that arrives before the keys waits here rather than
			// in the transport, which no longer queues.
			s.earlyQ = make(chan *packetBuf, earlyQueueLen)
		}
	}
	if dr, ok := conn.(datagramReader); ok {
		s.dr = dr
	} else if s.push.pusher == nil {
		s.rbuf = make([]byte, MaxPacketSize)
	} // else nothing reads the transport: it pushes
	s.q.init(&s.cfg.RTCP, time.Now())
	s.life, s.endLife = context.WithCancel(context.Background())
	if usesKMS(c.Keying) {
		s.fetch.fetcher, _ = c.KeySource.(KeyFetcher)
	}
	return s
}

// start fetches keys and runs the handshake as the keying mode needs.
func (s *Session) start(ctx context.Context) error {
	if s.push.pusher != nil && !usesDTLS(s.cfg.Keying) {
		// With DTLS, handshake starts the pushing once its transport is
		// there to take the first flight.
		s.push.pusher.PushDatagrams(s.onDatagram, s.endReads)
	}
	var keys []CallKey
	if usesKMS(s.cfg.Keying) {
		var err error
		keys, err = s.cfg.KeySource.Keys(ctx, s.cfg.KeyURI)
		if err != nil {
			return fmt.Errorf("media: fetch call key %.96q: %w", s.cfg.KeyURI, err)
		}
	}
	switch s.cfg.Keying {
	case sdp.KeyingSDES:
		s.profile = s.cfg.SDES.Profile
		if err := s.initSDES(); err != nil {
			return err
		}
	case sdp.KeyingKMS:
		s.profile = s.cfg.Profiles[0]
		if err := s.initVersioned(keys); err != nil {
			return err
		}
	case sdp.KeyingDTLS, sdp.KeyingHybrid:
		profile, exported, err := s.handshake(ctx)
		if err != nil {
			return err
		}
		s.profile = profile
		if s.cfg.Keying == sdp.KeyingDTLS {
			err = s.initDTLS(exported)
			clear(exported)
		} else {
			s.exporter = exported
			err = s.initVersioned(keys)
		}
		if err != nil {
			return err
		}
	}
	s.rtpTrailer, s.rtcpTrailer = s.profile.rtpTrailerLen(), s.profile.rtcpTrailerLen()
	s.markReady()
	if s.pushing() && s.push.pusher == nil {
		s.wg.Add(1)
		go s.pushLoop()
	}
	if usesKMS(s.cfg.Keying) {
		switch s.cfg.KeySource.(type) {
		case KeyChangeWatcher, KeyWatcher:
			s.watch(s.cfg.KeySource)
		}
	}
	return nil
}

// markReady lets packets that arrived during the handshake through, in
// order and under earlyMu, so that a packet read meanwhile (by the pump or
// a pusher, which take earlyMu to look at ready) follows them. Nothing is
// queued early once ready, so the queue goes.
func (s *Session) markReady() {
	s.earlyMu.Lock()
	defer s.earlyMu.Unlock()
	s.ready = true
	for s.earlyQ != nil {
		select {
		case b := <-s.earlyQ:
			s.deliverMedia(b.data, false)
			putPacket(b)
			continue
		default:
		}
		break
	}
	s.earlyQ = nil
	s.readyNow.Store(true)
}

// watch installs the versions a KeyChangeWatcher or KeyWatcher reports,
// and withdraws those a KeyChangeWatcher reports withdrawn, until Close.
func (s *Session) watch(w KeySource) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		install := func(k CallKey) {
			// On the watch's goroutine, which holds no lock of the
			// session's: it delivers the held packets itself.
			if err := s.installOpen(k); err != nil {
				s.log.Warn("media: install watched key version", "version", k.Version, "err", err)
				return
			}
			s.releaseHeld()
		}
		var err error
		if cw, ok := w.(KeyChangeWatcher); ok {
			err = cw.WatchChanges(ctx, s.cfg.KeyURI, func(c KeyChange) {
				if c.Key.Version != 0 {
					install(c.Key)
				}
				if len(c.Revoked) > 0 || c.MinVersion > 1 {
					s.withdraw(c.Revoked, c.MinVersion)
				}
			})
		} else {
			err = w.(KeyWatcher).Watch(ctx, s.cfg.KeyURI, install)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("media: key watch ended; keys no longer rotate on their own", "err", err)
		}
	}()
}

// abort undoes a half-finished start.
func (s *Session) abort() {
	s.closed.Store(true)
	close(s.done)
	s.endLife()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	_ = s.conn.Close()
	s.retireDTLS()
	s.gateMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier, see Close
	s.gateMu.Unlock()
	s.wg.Wait()
	s.freeHeld()
	s.wipe()
}

// Close ends the session: it stops the key watcher, closes the transport
// and waits for the session's goroutines. No DTLS close_notify is sent (see
// the package documentation). A second Close returns an error wrapping
// net.ErrClosed.
func (s *Session) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("media: close: %w", net.ErrClosed)
	}
	s.sendBye()
	close(s.done)
	s.endLife()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	err := s.conn.Close()
	s.retireDTLS()
	if s.pushing() {
		// Taking rtpMu once waits for an OnRTP call in progress; later
		// ones see closed and return without calling it. Taking retireMu
		// once orders Close after a retireLater that might still start
		// its goroutine, so that wg.Wait sees it.
		s.rtpMu.Lock()
		//lint:ignore SA2001 the empty critical section is a barrier, see above
		s.rtpMu.Unlock()
		s.push.retireMu.Lock()
		//lint:ignore SA2001 the empty critical section is a barrier, see above
		s.push.retireMu.Unlock()
	}
	// Taking sendMu once orders Close after any WriteRTP that might still
	// start an OnRotationNeeded goroutine, so that wg.Wait sees it. Taking
	// recvMu once does the same for an unprotect that might still start a
	// key fetch (holdLocked) and an InstallKey that might still start a
	// release (releaseLater): both look at closed and call wg.Add under
	// recvMu. Taking gateMu once does it for a callback that a reader or a
	// pusher might still start (startCallback).
	s.sendMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier, see above
	s.sendMu.Unlock()
	s.recvMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier, see above
	s.recvMu.Unlock()
	s.gateMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier, see above
	s.gateMu.Unlock()
	s.wg.Wait()
	s.freeHeld()
	s.rdl.stop()
	s.wipe()
	for _, q := range []chan *packetBuf{s.rtpQ, s.rtcpQ} {
	drain:
		for {
			select {
			case b := <-q:
				putPacket(b)
			default:
				break drain
			}
		}
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("media: close transport: %w", err)
	}
	return nil
}

// startCallback admits a call of OnBye or OnPeerAttestation, which run on
// goroutines that Close does not join (a ReadRTP or ReadRTCP caller's, a
// pusher's): it reports false once Close has begun, and otherwise counts
// the call in wg, so that Close waits for it; the caller calls wg.Done
// when the callback returns. The look at closed and wg.Add are under
// gateMu, which Close takes once before it waits. (OnRTP has rtpMu for
// this, which serializes it too; OnRotationNeeded runs on a goroutine of
// the session's own.)
func (s *Session) startCallback() bool {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Add(1)
	return true
}

// wipe forgets secrets the session still holds outside the SRTP contexts.
func (s *Session) wipe() {
	s.keysMu.Lock()
	clear(s.exporter)
	s.exporter = nil
	s.keysMu.Unlock()
}

// errClosed is returned by I/O after Close.
func errClosed(op string) error { return fmt.Errorf("media: %s: %w", op, net.ErrClosed) }

// SetReadDeadline sets the deadline for ReadRTP and ReadRTCP, like
// net.Conn's; it relies on the transport's own SetReadDeadline. With
// Config.OnRTP set it bounds ReadRTCP only and leaves the transport's
// deadline alone, so that delivery to OnRTP goes on.
func (s *Session) SetReadDeadline(t time.Time) error {
	s.rdl.set(t)
	if s.pushing() {
		// Only ReadRTCP waits, on its queue; the transport's reader must
		// keep reading.
		return nil
	}
	if err := s.conn.SetReadDeadline(t); err != nil {
		return fmt.Errorf("media: set read deadline: %w", err)
	}
	return nil
}

// SetWriteDeadline sets the transport's write deadline for WriteRTP and
// WriteRTCP.
func (s *Session) SetWriteDeadline(t time.Time) error {
	if err := s.conn.SetWriteDeadline(t); err != nil {
		return fmt.Errorf("media: set write deadline: %w", err)
	}
	return nil
}

// WriteRTP protects an RTP packet with header h and payload and sends it.
// The header and payload together must fit in MaxPacketSize once
// protected. It does not retain h or payload.
func (s *Session) WriteRTP(h RTPHeader, payload []byte) error {
	if err := h.check(); err != nil {
		return err
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.attestOut.next != 0 {
		s.resendAttestationLocked(time.Now())
	}
	ob := getOut()
	defer putOut(ob)
	out, err := s.protectRTPLocked(ob[:0], &h, payload)
	if err != nil {
		return err
	}
	if _, err := s.conn.Write(out); err != nil {
		if s.closed.Load() {
			return errClosed("write RTP")
		}
		return fmt.Errorf("media: write RTP: %w", err)
	}
	s.stats.rtpSent.Add(1)
	s.stats.rtpBytesSent.Add(uint64(len(payload)))
	s.afterRTPSentLocked(&h, len(payload))
	return nil
}

// protectRTPLocked builds and protects one RTP packet into buf, which
// has room for MaxPacketSize+64 bytes.
func (s *Session) protectRTPLocked(buf []byte, h *RTPHeader, payload []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, errClosed("write RTP")
	}
	if n := h.marshalledLen() + len(payload) + s.profile.overhead() + 4; n > MaxPacketSize {
		return nil, fmt.Errorf("media: RTP packet of up to %d bytes exceeds %d", n, MaxPacketSize)
	}
	if s.sendCheckAt != 0 {
		s.sendEventsLocked(s.cfg.Clock())
	}
	k := &s.sendKey
	if k.expired || k.rtp >= k.rtpHardStop {
		return nil, fmt.Errorf("media: write RTP with key version %d: %w", k.version, k.refusal())
	}
	// pion/srtp protects in place when dst and the plaintext are one
	// buffer: one buffer instead of two.
	plain := h.appendTo(buf)
	plain = append(plain, payload...)
	out, err := s.send.EncryptRTP(plain, plain, &s.wHdr)
	if err != nil {
		return nil, fmt.Errorf("media: protect RTP: %w", err)
	}
	k.rtp++
	if k.rtp == s.cfg.MaxPackets {
		s.requestRotationLocked(RotationPacketBudget)
	}
	return out, nil
}

// WriteRTCP protects a plain compound RTCP packet and sends it. Its first
// packet must have an RTCP packet type (192 to 223) so that the peer can
// tell it from RTP (RFC 5761).
func (s *Session) WriteRTCP(pkt []byte) error {
	if len(pkt) < 8 || pkt[0]>>6 != 2 || pkt[1] < 192 || pkt[1] > 223 {
		return errors.New("media: write RTCP: not an RTCP packet (version 2, type 192..223, at least 8 bytes)")
	}
	if len(pkt)+s.profile.overhead()+4+4 > MaxPacketSize {
		return fmt.Errorf("media: RTCP packet of %d bytes too large", len(pkt))
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.attestOut.next != 0 {
		s.resendAttestationLocked(time.Now())
	}
	return s.writeRTCPLocked(pkt)
}

// writeRTCPLocked protects and sends one RTCP packet.
func (s *Session) writeRTCPLocked(pkt []byte) error {
	if s.closed.Load() {
		return errClosed("write RTCP")
	}
	return s.sendRTCPLocked(pkt)
}

// sendRTCPLocked protects and sends a compound RTCP packet, also while
// Close runs (for the BYE); sendMu is held.
func (s *Session) sendRTCPLocked(pkt []byte) error {
	if s.sendCheckAt != 0 {
		s.sendEventsLocked(s.cfg.Clock())
	}
	k := &s.sendKey
	if k.expired || k.rtcp >= maxSRTCPPackets {
		return fmt.Errorf("media: write RTCP with key version %d: %w", k.version, k.refusal())
	}
	ob := getOut()
	defer putOut(ob)
	out, err := s.send.EncryptRTCP(ob[:0], pkt, &s.wcHdr)
	if err != nil {
		return fmt.Errorf("media: protect RTCP: %w", err)
	}
	k.rtcp++
	if k.rtcp == k.rtcpBudget {
		s.requestRotationLocked(RotationPacketBudget)
	}
	if _, err := s.conn.Write(out); err != nil {
		if s.closed.Load() {
			return errClosed("write RTCP")
		}
		return fmt.Errorf("media: write RTCP: %w", err)
	}
	s.stats.rtcpSent.Add(1)
	s.stats.rtcpBytesSent.Add(uint64(len(pkt)))
	return nil
}

// ReadRTP reads the next authenticated RTP packet, copies its payload into
// payload and returns its header and the number of payload bytes copied. If
// payload is too short, the rest is lost and the error wraps
// io.ErrShortBuffer. Packets that fail authentication, replays and packets
// under unknown keys are dropped and counted in Stats, never returned.
// RTCP and DTLS packets read meanwhile are passed on to ReadRTCP and the
// DTLS layer.
func (s *Session) ReadRTP(payload []byte) (RTPHeader, int, error) {
	if s.pushing() {
		return RTPHeader{}, 0, fmt.Errorf("media: read RTP: %w", ErrRTPHandled)
	}
	s.rtpMu.Lock()
	defer s.rtpMu.Unlock()
	pkt, b, err := s.next(kindRTP, s.rtpQ)
	if err != nil {
		return RTPHeader{}, 0, err
	}
	var h RTPHeader
	body, perr := parseRTP(pkt, &h, &s.lists)
	if b != nil {
		defer putPacket(b)
	} else {
		defer s.release()
	}
	if perr != nil {
		// Authenticated but malformed: the peer's bug, not an attack.
		s.stats.malformed.Add(1)
		return RTPHeader{}, 0, fmt.Errorf("media: read RTP: %w", perr)
	}
	n := copy(payload, body)
	s.stats.rtpRecv.Add(1)
	s.stats.rtpBytesRecv.Add(uint64(len(body)))
	if n < len(body) {
		return h, n, fmt.Errorf("media: read RTP: payload of %d bytes: %w", len(body), io.ErrShortBuffer)
	}
	return h, n, nil
}

// ReadRTCP reads the next authenticated compound RTCP packet into buf and
// returns its length. If buf is too short, the rest is lost and the error
// wraps io.ErrShortBuffer. It drops what ReadRTP drops, and passes RTP read
// meanwhile on to ReadRTP.
//
// With Config.OnRTP set it only waits on its queue, which the goroutine
// that delivers to OnRTP fills. Called from OnRTP (or from a callback on
// that goroutine), it returns a packet already queued, and otherwise waits
// until the read deadline or Close while that goroutine delivers nothing
// (on an ice.Endpoint's conn, to no call on the Endpoint): call it on a
// goroutine of its own.
func (s *Session) ReadRTCP(buf []byte) (int, error) {
	s.rtcpMu.Lock()
	defer s.rtcpMu.Unlock()
	var pkt []byte
	var b *packetBuf
	var err error
	if s.pushing() {
		pkt, b, err = s.queued(s.rtcpQ, "read RTCP")
	} else {
		pkt, b, err = s.next(kindRTCP, s.rtcpQ)
	}
	if err != nil {
		return 0, err
	}
	n := copy(buf, pkt)
	if b != nil {
		putPacket(b)
	} else {
		s.release()
	}
	s.stats.rtcpRecv.Add(1)
	s.stats.rtcpBytesRecv.Add(uint64(len(pkt)))
	if n < len(pkt) {
		return n, fmt.Errorf("media: read RTCP: packet of %d bytes: %w", len(pkt), io.ErrShortBuffer)
	}
	return n, nil
}

// release gives the read token back.
func (s *Session) release() {
	s.dropRaw()
	<-s.tok
}

// readRaw reads the next datagram off the transport for the token holder:
// into rbuf, or lent by dr until dropRaw (or release).
func (s *Session) readRaw() ([]byte, error) {
	if s.dr == nil {
		n, err := s.conn.Read(s.rbuf)
		return s.rbuf[:n], err
	}
	for {
		b, held, err := s.dr.ReadDatagram()
		if err != nil {
			return nil, err
		}
		if len(b) <= MaxPacketSize {
			s.held = held
			return b, nil
		}
		// Longer than any packet a session accepts: dropped and counted,
		// as a packet that fails authentication is, not a read failure
		// (consecutive failures end ReadRTP).
		s.dr.ReleaseDatagram(held)
		s.stats.malformed.Add(1)
	}
}

// dropRaw hands back the datagram dr lent, if any.
func (s *Session) dropRaw() {
	if s.held != nil {
		s.dr.ReleaseDatagram(s.held)
		s.held = nil
	}
}

// testHookBeforeToken, set only by tests, runs between a reader's look at
// its queue and its try for the read token. It is atomic because readers of
// sessions that other tests left behind may look at it at any time.
var testHookBeforeToken atomic.Pointer[func(*Session)]

// next returns the next authenticated packet of kind want. Either it comes
// from q (b is not nil: the caller returns it to the pool), or the caller
// read it off the transport and still holds the read token (b is nil: the
// caller calls release when done with pkt, which is in s.rbuf or lent
// by s.dr).
func (s *Session) next(want packetKind, q chan *packetBuf) (pkt []byte, b *packetBuf, err error) {
	op := "read RTP"
	if want == kindRTCP {
		op = "read RTCP"
	}
	failures := 0
	for {
		if s.closed.Load() {
			return nil, nil, errClosed(op)
		}
		select {
		case b := <-q:
			return b.data, b, nil
		default:
		}
		if h := testHookBeforeToken.Load(); h != nil {
			(*h)(s)
		}
		select {
		case s.tok <- struct{}{}:
		default:
			select {
			case b := <-q:
				return b.data, b, nil
			case s.tok <- struct{}{}:
			case <-s.rdl.wait():
				if s.rdl.exceeded() {
					return nil, nil, fmt.Errorf("media: %s: %w", op, os.ErrDeadlineExceeded)
				}
				continue // the deadline moved
			case <-s.done:
				return nil, nil, errClosed(op)
			}
		}
		// The previous holder may have queued a packet of this kind just
		// before it released the token, and select picks at random among
		// ready cases: look again, or the packet would wait in the queue
		// while this reader blocks on the transport.
		select {
		case b := <-q:
			s.release()
			return b.data, b, nil
		default:
		}
		raw, err := s.readRaw()
		if err != nil {
			s.release()
			if s.closed.Load() {
				return nil, nil, errClosed(op)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) || failures >= maxReadFailures {
				return nil, nil, fmt.Errorf("media: %s: %w", op, err)
			}
			// Transient, such as an ICMP port unreachable reported on a
			// connected UDP socket: the next datagram may be fine.
			failures++
			continue
		}
		failures = 0
		if pkt, ok := s.handle(raw, want); ok {
			return pkt, nil, nil
		}
		s.release()
	}
}

// packetKind is what a datagram carries (RFC 7983, RFC 5761).
type packetKind uint8

const (
	kindOther packetKind = iota
	kindDTLS
	kindRTP
	kindRTCP
)

// classify demultiplexes by the first byte (RFC 7983 section 7) and, for
// RTP and RTCP, by the second (RFC 5761 section 4).
func classify(p []byte) packetKind {
	if len(p) == 0 {
		return kindOther
	}
	switch b := p[0]; {
	case b >= 20 && b <= 63:
		return kindDTLS
	case b >= 128 && b <= 191:
		if len(p) < 2 {
			return kindOther
		}
		if p[1] >= 192 && p[1] <= 223 {
			return kindRTCP
		}
		return kindRTP
	}
	return kindOther
}

// handle processes one datagram read by the token holder. A packet of kind
// want is unprotected in place and returned; anything else goes where
// it belongs.
func (s *Session) handle(raw []byte, want packetKind) ([]byte, bool) {
	kind := classify(raw)
	switch {
	case kind == kindDTLS:
		s.toDTLS(raw)
	case kind == want && want == kindRTP:
		out, ok := s.unprotectRTP(raw, raw) // in place (pion/srtp allows it)
		if ok {
			s.noteAuthentic()
		}
		return out, ok
	case kind == want && want == kindRTCP:
		out, ok := s.unprotectRTCP(raw, raw)
		if ok {
			s.noteAuthentic()
		}
		return out, ok
	case kind == kindRTP || kind == kindRTCP:
		s.deliverMedia(raw, true)
	default:
		s.stats.malformed.Add(1)
	}
	return nil, false
}

// routeToQueue unprotects an SRTP or SRTCP packet into a pooled buffer and
// queues it for its reader; with the queue full it is dropped and counted.
// It reports whether the packet authenticated.
func (s *Session) routeToQueue(raw []byte) bool {
	b := getPacket()
	var ok bool
	var q chan *packetBuf
	switch classify(raw) {
	case kindRTP:
		b.data, ok = s.unprotectRTP(b.buf[:0], raw)
		q = s.rtpQ
	case kindRTCP:
		b.data, ok = s.unprotectRTCP(b.buf[:0], raw)
		q = s.rtcpQ
	default:
		s.stats.malformed.Add(1)
	}
	if !ok {
		putPacket(b)
		return false
	}
	select {
	case q <- b:
	default:
		s.stats.queueDrops.Add(1)
		putPacket(b)
	}
	return true
}

// unprotectRTP authenticates and decrypts raw into dst.
func (s *Session) unprotectRTP(dst, raw []byte) ([]byte, bool) {
	s.recvMu.Lock()
	if s.removeAt != 0 {
		s.removeOldKeysLocked(s.cfg.Clock())
	}
	out, err := s.recv.DecryptRTP(dst, raw, &s.rHdr)
	if err == nil && s.versioned {
		s.observeVersionLocked(raw, s.rtpTrailer)
	}
	if err != nil && s.fetch.fetcher != nil && errors.Is(err, srtp.ErrMKINotFound) && s.holdLocked(raw, s.rtpTrailer) {
		s.recvMu.Unlock()
		return nil, false
	}
	s.recvMu.Unlock()
	if err != nil {
		s.countRTPDrop(raw, err)
		return nil, false
	}
	s.stats.authOK.Add(1)
	if s.dtlsLive.Load() {
		s.retireOnAuthentic()
	}
	s.afterRTPReceived(out)
	return out, true
}

// unprotectRTCP authenticates and decrypts raw into dst.
func (s *Session) unprotectRTCP(dst, raw []byte) ([]byte, bool) {
	s.recvMu.Lock()
	if s.removeAt != 0 {
		s.removeOldKeysLocked(s.cfg.Clock())
	}
	out, err := s.recv.DecryptRTCP(dst, raw, &s.rcHdr)
	if err == nil && s.versioned {
		s.observeVersionLocked(raw, s.rtcpTrailer)
	}
	if err != nil && s.fetch.fetcher != nil && errors.Is(err, srtp.ErrMKINotFound) && s.holdLocked(raw, s.rtcpTrailer) {
		s.recvMu.Unlock()
		return nil, false
	}
	s.recvMu.Unlock()
	if err != nil {
		s.countDrop(err)
		return nil, false
	}
	s.stats.authOK.Add(1)
	if s.dtlsLive.Load() {
		s.retireOnAuthentic()
	}
	s.afterRTCPReceived(out)
	if out = s.takeAttestations(out); len(out) == 0 {
		return nil, false // only attestations: nothing for ReadRTCP
	}
	return out, true
}

// countDrop counts a packet that failed to unprotect.
func (s *Session) countDrop(err error) {
	switch {
	case errors.Is(err, srtp.ErrFailedToVerifyAuthTag):
		s.stats.authFailures.Add(1)
	case errors.Is(err, srtp.ErrMKINotFound):
		s.stats.unknownMKI.Add(1)
	case isReplay(err):
		s.stats.replays.Add(1)
	default:
		s.stats.malformed.Add(1)
	}
}

// countRTPDrop counts an SRTP packet that failed to unprotect, raw still
// protected: a replay also in the receive statistics, which tell a
// duplicate from a packet that came too late.
func (s *Session) countRTPDrop(raw []byte, err error) {
	s.countDrop(err)
	if isReplay(err) {
		s.q.noteReplay(raw)
	}
}

// isReplay recognizes pion/srtp's replay error, whose type and sentinel are
// unexported; TestAttackReplay pins the text.
func isReplay(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == "duplicated packet" {
			return true
		}
	}
	return false
}
