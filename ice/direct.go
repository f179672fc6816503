package ice

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v3/packetio"

	"github.com/securecall/securecall/sdp"
)

// ErrNoICEPolicy is wrapped by the error ListenDirect and Direct.Connect
// return when the path policy forbids a peer without ICE: RelayOnly (a
// peer without ICE is reached on this host's own address, which RelayOnly
// never reveals) and DirectOnly with a peer address outside the site's
// networks.
// It wraps ErrPolicy; a DirectOnly refusal also wraps a *PolicyError.
var ErrNoICEPolicy = fmt.Errorf("ice: a peer without ICE: %w", ErrPolicy)

// Direct is the media transport for a peer that speaks no ICE (RFC 3264
// alone: SIP phones, trunks, border elements without ICE). It owns one UDP
// socket for RTP, and for RTCP as well when the peer multiplexes it (RFC
// 5761), and a second socket on the next port for RTCP otherwise (RFC 3550
// section 11). Media goes to the peer's signalled address; a Direct moves
// to the address the peer really sends from (symmetric RTP, as border
// elements do behind NAT) only when the media session reports that a
// datagram from it authenticated under SRTP or SRTCP (see [Direct.Connect]),
// so that nobody can take the stream by sending first.
//
// Make it with ListenDirect; its methods may be called from any goroutine.
type Direct struct {
	cfg   Config
	socks []*net.UDPConn // [0] RTP (and muxed RTCP), [1] RTCP when apart
	local []netip.AddrPort
	adv   netip.Addr // the address the descriptions carry
	buf   *packetio.Buffer
	wg    sync.WaitGroup
	pathQ chan struct{} // wakes the path notifier
	quit  chan struct{}

	readMu  sync.Mutex // one Read at a time; guards scratch and last
	scratch []byte
	last    directSource // where the datagram Read returned last came from

	pathMu sync.Mutex // serializes OnPathChange
	mu     sync.Mutex
	dest   [2]netip.AddrPort // where RTP and RTCP go
	told   [2]netip.AddrPort // what the signaling said
	mux    bool
	conn   *directConn
	closed bool
	wdl    time.Time
}

// directSource identifies the socket and the source of one datagram.
type directSource struct {
	sock int
	src  netip.AddrPort
}

// directHeader prefixes each datagram in the buffer: the socket index, the
// source address (16 bytes, IPv4 mapped) and port.
const directHeader = 1 + 16 + 2

// maxDatagram is the largest datagram a Direct delivers.
const maxDatagram = 1500

// maxAdjacentTries bounds the attempts to bind RTCP on the port after
// RTP's.
const maxAdjacentTries = 8

// ListenDirect opens the sockets of a Direct transport on one local
// address: the one the system routes to peer when peer is valid (an
// answerer knows it from the offer), otherwise the first address of an
// interface that Config.InterfaceFilter and Config.IPFilter allow,
// preferring IPv4 and non-loopback ones. Config.PublicAddresses, if set,
// replaces the address in what [Direct.Candidates] returns (a static NAT).
// It refuses RelayOnly, and under DirectOnly a peer outside the site's
// networks, with an error wrapping ErrNoICEPolicy.
func ListenDirect(cfg Config, peer netip.Addr) (*Direct, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Policy == RelayOnly {
		return nil, fmt.Errorf("%w: RelayOnly never reveals this host's address, and a peer without ICE can only be reached on it", ErrNoICEPolicy)
	}
	if peer.IsValid() {
		if err := directSiteCheck(cfg, netip.AddrPortFrom(peer, 0)); err != nil {
			return nil, err
		}
	}
	ip, err := directLocalAddr(cfg, peer)
	if err != nil {
		return nil, err
	}
	rtp, rtcp, err := listenPair(ip)
	if err != nil {
		return nil, err
	}
	d := &Direct{
		cfg:     cfg,
		socks:   []*net.UDPConn{rtp, rtcp},
		buf:     packetio.NewBuffer(),
		pathQ:   make(chan struct{}, 1),
		quit:    make(chan struct{}),
		scratch: make([]byte, directHeader+maxDatagram),
		adv:     ip,
	}
	for _, a := range cfg.PublicAddresses {
		if a.Is4() == ip.Is4() {
			d.adv = a
			break
		}
	}
	d.buf.SetLimitSize(receiveBufferSize)
	for i, s := range d.socks {
		d.local = append(d.local, s.LocalAddr().(*net.UDPAddr).AddrPort())
		d.wg.Add(1)
		go d.pump(i, s)
	}
	d.wg.Add(1)
	go d.notifyPaths()
	return d, nil
}

// directSiteCheck refuses, under DirectOnly, a peer address without ICE
// outside Config.SiteNetworks (cfg has its defaults applied).
func directSiteCheck(cfg Config, a netip.AddrPort) error {
	if cfg.Policy != DirectOnly || siteNetworks(cfg.SiteNetworks).contains(a.Addr()) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNoICEPolicy, &PolicyError{Address: a, Type: sdp.CandidateHost, Reason: reasonOffSite})
}

// directLocalAddr picks the local address of a Direct transport.
func directLocalAddr(cfg Config, peer netip.Addr) (netip.Addr, error) {
	allowed := func(a netip.Addr) bool { return cfg.IPFilter == nil || cfg.IPFilter(a) }
	if peer.IsValid() {
		// The routing table knows the source address for peer; a UDP
		// "connect" asks it without sending anything.
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer.Unmap(), 9)))
		if err == nil {
			a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
			c.Close()
			if allowed(a) {
				return a, nil
			}
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ice: list interfaces: %w", err)
	}
	var best netip.Addr
	rank := func(a netip.Addr) int {
		r := 0
		if !a.IsLoopback() {
			r += 2
		}
		if a.Is4() {
			r++
		}
		return r
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || (cfg.InterfaceFilter != nil && !cfg.InterfaceFilter(ifc.Name)) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			pfx, err := netip.ParsePrefix(ad.String())
			if err != nil {
				continue
			}
			a := pfx.Addr().Unmap()
			if a.IsLinkLocalUnicast() || !allowed(a) {
				continue
			}
			if !best.IsValid() || rank(a) > rank(best) {
				best = a
			}
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errors.New("ice: no local address for a peer without ICE: no interface passes the filters")
	}
	return best, nil
}

// listenPair binds RTP on a port and RTCP, where it can, on the next one.
func listenPair(ip netip.Addr) (*net.UDPConn, *net.UDPConn, error) {
	var lastErr error
	for range maxAdjacentTries {
		rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return nil, nil, fmt.Errorf("ice: listen for a peer without ICE: %w", err)
		}
		port := rtp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		if port < 65535 {
			rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port+1)))
			if err == nil {
				return rtp, rtcp, nil
			}
			lastErr = err
		}
		rtp.Close()
	}
	// No adjacent pair: any port will do, since a=rtcp carries it.
	rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, nil, fmt.Errorf("ice: listen for a peer without ICE: %w", errors.Join(err, lastErr))
	}
	rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		rtp.Close()
		return nil, nil, fmt.Errorf("ice: listen for a peer without ICE: %w", err)
	}
	return rtp, rtcp, nil
}

// pump moves datagrams from socket i into the buffer, each prefixed with
// where it came from.
func (d *Direct) pump(i int, s *net.UDPConn) {
	defer d.wg.Done()
	b := make([]byte, directHeader+maxDatagram)
	for {
		n, src, err := s.ReadFromUDPAddrPort(b[directHeader:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// An ICMP error reported on the socket: the next datagram
			// may be fine. Closing the socket ends the loop.
			select {
			case <-d.quit:
				return
			default:
				continue
			}
		}
		b[0] = byte(i)
		a16 := src.Addr().As16()
		copy(b[1:17], a16[:])
		binary.BigEndian.PutUint16(b[17:19], src.Port())
		// A full buffer drops the datagram, as a socket would.
		_, _ = d.buf.Write(b[:directHeader+n])
	}
}

// Candidates returns the transport's addresses as host candidates: the
// RTP socket as component 1 and the RTCP socket as component 2. A
// description without ICE carries them as its "m=", "c=" and "a=rtcp"
// lines (see sdp.Capabilities.NoICE).
func (d *Direct) Candidates() []sdp.Candidate {
	out := make([]sdp.Candidate, 0, len(d.local))
	for i, l := range d.local {
		out = append(out, sdp.Candidate{
			Foundation: "1", Component: uint16(i + 1), Transport: "udp", Priority: uint32(2130706432 - i),
			Address: d.adv.String(), Port: l.Port(), Type: sdp.CandidateHost,
		})
	}
	return out
}

// Connect returns the net.Conn that carries media to a peer without ICE at
// rtp, with RTCP at rtcp unless mux (RFC 5761) is true. It sends to those
// addresses until the media session, which detects it by type assertion,
// calls the conn's Authentic method for a datagram that authenticated
// under SRTP or SRTCP; the conn then sends that stream (RTP, or RTCP apart)
// to the address the datagram came from. Datagrams from any address reach
// the session, which drops those that fail to authenticate: they never move
// the stream. It refuses what [Direct.CheckRemote] refuses. It may be
// called once; [Direct.Move] points it at the peer's new addresses later.
func (d *Direct) Connect(ctx context.Context, rtp, rtcp netip.AddrPort, mux bool) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ice: connect without ICE: %w", err)
	}
	if err := d.checkRemote("connect without ICE", rtp, rtcp, mux); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return nil, fmt.Errorf("ice: connect without ICE: %w", net.ErrClosed)
	case d.conn != nil:
		return nil, errors.New("ice: connect without ICE: already called")
	}
	d.dest = [2]netip.AddrPort{unmap(rtp), unmap(rtcp)}
	d.told = d.dest
	d.mux = mux
	d.conn = &directConn{d: d}
	d.wakePath()
	return d.conn, nil
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Path returns the media path: NoICE, this side's RTP socket, and where
// RTP goes, with Latched set once an authenticated packet moved it away
// from the signalled address (the remote type is then prflx, as ICE would
// call an address learnt from traffic). It is zero before Connect.
func (d *Direct) Path() Path {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return Path{}
	}
	p := Path{
		NoICE:  true,
		Local:  CandidateInfo{Type: sdp.CandidateHost, Address: netip.AddrPortFrom(d.adv, d.local[0].Port()), Protocol: "udp"},
		Remote: CandidateInfo{Type: sdp.CandidateHost, Address: d.dest[0], Protocol: "udp"},
	}
	if d.dest[0] != d.told[0] {
		p.Latched = true
		p.Remote.Type = sdp.CandidatePeerReflexive
	}
	return p
}

// wakePath asks the notifier to report the path; d.mu is held.
func (d *Direct) wakePath() {
	if d.cfg.OnPathChange == nil {
		return
	}
	select {
	case d.pathQ <- struct{}{}:
	default:
	}
}

// notifyPaths calls OnPathChange on a goroutine of the Direct, so that the
// media reader that latched never runs application code.
func (d *Direct) notifyPaths() {
	defer d.wg.Done()
	for {
		select {
		case <-d.quit:
			return
		case <-d.pathQ:
			p := d.Path()
			d.pathMu.Lock()
			d.cfg.OnPathChange(p)
			d.pathMu.Unlock()
		}
	}
}

// read returns the next datagram and remembers its source.
func (d *Direct) read(p []byte) (int, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	n, err := d.buf.Read(d.scratch)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, timeoutError{op: "read"}
		}
		if errors.Is(err, io.ErrShortBuffer) {
			return 0, fmt.Errorf("ice: read: %w", err)
		}
		return 0, fmt.Errorf("ice: read: %w", net.ErrClosed)
	}
	if n < directHeader {
		return 0, errors.New("ice: read: short internal record")
	}
	addr := netip.AddrFrom16([16]byte(d.scratch[1:17])).Unmap()
	d.last = directSource{sock: int(d.scratch[0]), src: netip.AddrPortFrom(addr, binary.BigEndian.Uint16(d.scratch[17:19]))}
	m := copy(p, d.scratch[directHeader:n])
	if m < n-directHeader {
		return m, fmt.Errorf("ice: read: datagram of %d bytes: %w", n-directHeader, io.ErrShortBuffer)
	}
	return m, nil
}

// authentic latches the stream of the last datagram read to its source.
func (d *Direct) authentic() {
	d.readMu.Lock()
	last := d.last
	d.readMu.Unlock()
	if !last.src.IsValid() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	i := last.sock
	if d.mux || len(d.socks) < 2 {
		i = 0
	}
	if d.dest[i] == last.src {
		return
	}
	if directSiteCheck(d.cfg, last.src) != nil {
		// DirectOnly: even an authentic packet does not move the stream
		// off the site.
		return
	}
	d.dest[i] = last.src
	if i == 0 {
		d.wakePath()
	}
}

// write sends one datagram: RTCP on the RTCP socket when it is apart,
// everything else on the RTP socket.
func (d *Direct) write(p []byte) (int, error) {
	d.mu.Lock()
	closed, dl, mux, dest := d.closed, d.wdl, d.mux, d.dest
	d.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("ice: write: %w", net.ErrClosed)
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, timeoutError{op: "write"}
	}
	i := 0
	if !mux && isRTCP(p) {
		i = 1
	}
	n, err := d.socks[i].WriteToUDPAddrPort(p, dest[i])
	if err != nil {
		return n, fmt.Errorf("ice: write: %w", err)
	}
	return n, nil
}

// isRTCP tells RTCP from RTP by the packet type (RFC 5761 section 4).
func isRTCP(p []byte) bool {
	return len(p) >= 2 && p[0]>>6 == 2 && p[1] >= 192 && p[1] <= 223
}

// Close closes the sockets and the net.Conn from Connect and waits for the
// Direct's goroutines. A second call returns an error wrapping
// net.ErrClosed.
func (d *Direct) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("ice: close: %w", net.ErrClosed)
	}
	d.closed = true
	d.mu.Unlock()
	close(d.quit)
	var errs []error
	for _, s := range d.socks {
		errs = append(errs, s.Close())
	}
	d.buf.Close()
	d.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ice: close: %w", err)
	}
	return nil
}

// directConn is the net.Conn of a Direct.
type directConn struct {
	d *Direct

	mu     sync.Mutex
	closed bool
}

var _ net.Conn = (*directConn)(nil)

// Read reads one datagram from either socket.
func (c *directConn) Read(p []byte) (int, error) { return c.d.read(p) }

// Write sends one datagram to the peer.
func (c *directConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("ice: write: %w", net.ErrClosed)
	}
	return c.d.write(p)
}

// Authentic tells the conn that the datagram Read returned last
// authenticated under SRTP or SRTCP: the stream it belongs to is sent to
// its source from now on. The media session calls it (media.SourceLatcher)
// before it reads the next datagram; nothing else should.
func (c *directConn) Authentic() { c.d.authentic() }

// Close closes the conn: Read and Write fail with net.ErrClosed. The
// sockets stay open until Direct.Close.
func (c *directConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("ice: close conn: %w", net.ErrClosed)
	}
	c.closed = true
	return c.d.buf.Close()
}

// LocalAddr returns the RTP socket's address.
func (c *directConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.d.local[0]) }

// RemoteAddr returns where RTP goes.
func (c *directConn) RemoteAddr() net.Addr {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return net.UDPAddrFromAddrPort(c.d.dest[0])
}

// SetDeadline sets the read and write deadlines.
func (c *directConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes Read return a timeout error at t.
func (c *directConn) SetReadDeadline(t time.Time) error { return c.d.buf.SetReadDeadline(t) }

// SetWriteDeadline makes Write fail once t has passed.
func (c *directConn) SetWriteDeadline(t time.Time) error {
	c.d.mu.Lock()
	c.d.wdl = t
	c.d.mu.Unlock()
	return nil
}

// CheckRemote reports whether Connect and Move take a peer's signalled
// addresses: RTP at rtp, RTCP at rtcp unless mux. It refuses an address
// that is not an IP address with a port (a host name, port 0), the
// unspecified address (a peer on hold, RFC 3264 section 8.4), an address
// of the other IP family than this transport's sockets (they could not
// send there) and, under DirectOnly, an address outside the site's
// networks (wrapping ErrNoICEPolicy and a *PolicyError).
func (d *Direct) CheckRemote(rtp, rtcp netip.AddrPort, mux bool) error {
	return d.checkRemote("peer without ICE", rtp, rtcp, mux)
}

// checkRemote is CheckRemote for the operation op, which its errors name.
func (d *Direct) checkRemote(op string, rtp, rtcp netip.AddrPort, mux bool) error {
	family := func(a netip.AddrPort) error {
		if a.Addr().Unmap().Is4() != d.local[0].Addr().Is4() {
			return fmt.Errorf("ice: %s: the peer's address %v is of the other IP family than this transport's %v", op, a, d.local[0].Addr())
		}
		return nil
	}
	if !rtp.IsValid() || rtp.Addr().IsUnspecified() || rtp.Port() == 0 {
		return fmt.Errorf("ice: %s: the peer gave no address to send to (%v)", op, rtp)
	}
	if err := family(rtp); err != nil {
		return err
	}
	if err := directSiteCheck(d.cfg, rtp); err != nil {
		return err
	}
	if mux {
		return nil
	}
	if !rtcp.IsValid() || rtcp.Addr().IsUnspecified() || rtcp.Port() == 0 {
		return fmt.Errorf("ice: %s: no RTCP address for a peer that does not multiplex RTCP (%v)", op, rtcp)
	}
	if err := family(rtcp); err != nil {
		return err
	}
	return directSiteCheck(d.cfg, rtcp)
}

// Move points the transport at the peer's addresses from a later
// description of the call (a re-INVITE that moves the media, RFC 3264
// section 8.3.1): RTP at rtp, RTCP at rtcp unless mux. It refuses what
// CheckRemote refuses, and fails before Connect and after Close; a refusal
// changes nothing. A stream whose signalled address changes is sent to the
// new one at once, whatever it had latched onto: the signaling, which
// carries the keys in sdes keying, is trusted as much as the first offer.
// A stream whose address stays keeps its latch. Latching goes on as
// before, following only datagrams that authenticate (see Connect), so a
// datagram of the peer still in flight from its old address can move the
// stream back until one from the new address arrives.
func (d *Direct) Move(rtp, rtcp netip.AddrPort, mux bool) error {
	if err := d.checkRemote("move without ICE", rtp, rtcp, mux); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return fmt.Errorf("ice: move without ICE: %w", net.ErrClosed)
	case d.conn == nil:
		return errors.New("ice: move without ICE: Connect first")
	}
	told := [2]netip.AddrPort{unmap(rtp), unmap(rtcp)}
	if mux {
		told[1] = netip.AddrPort{}
	}
	was := d.dest[0]
	for i := range told {
		if told[i] != d.told[i] {
			d.dest[i] = told[i]
		}
	}
	d.told, d.mux = told, mux
	if d.dest[0] != was {
		d.wakePath()
	}
	return nil
}
