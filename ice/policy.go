package ice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	pice "github.com/pion/ice/v3"
	"github.com/pion/transport/v3"

	"github.com/securecall/securecall/sdp"
)

// ErrPolicy is wrapped by every error that reports a refusal by the path
// policy: a remote candidate, a learnt address, a selected pair or a
// peer's attestation that DirectOnly does not allow. Callers branch on it
// with errors.Is; errors.As with a *PolicyError gives the address.
var ErrPolicy = errors.New("ice: refused by the path policy")

// PolicyError says what the path policy refused and why. It unwraps to
// ErrPolicy.
type PolicyError struct {
	// Address is the remote transport address that was refused, or the
	// address the peer attested.
	Address netip.AddrPort
	// Type is the candidate type as the candidate, the peer's attestation
	// or the agent named it; prflx for an address learnt from a
	// connectivity check. DirectOnly does not trust it: an address outside
	// Config.SiteNetworks is refused whatever its type.
	Type sdp.CandidateType
	// Reason says which rule refused it.
	Reason string
}

// Error describes the refusal.
func (e *PolicyError) Error() string {
	return fmt.Sprintf("ice: DirectOnly refused %s (%s): %s", e.Address, e.Type, e.Reason)
}

// Unwrap returns ErrPolicy.
func (e *PolicyError) Unwrap() error { return ErrPolicy }

// The reasons of a PolicyError.
const (
	reasonOffSite       = "outside the site networks"
	reasonRelay         = "a relay candidate"
	reasonAttestedRelay = "the peer attests a relay candidate"
	reasonAttestOffSite = "the peer attests an address outside the site networks"
)

// DefaultSiteNetworks returns the networks that Config.SiteNetworks
// defaults to (a fresh slice each call): loopback (127.0.0.0/8, ::1/128),
// the private IPv4 networks of RFC 1918 (10.0.0.0/8, 172.16.0.0/12,
// 192.168.0.0/16), IPv4 link-local (169.254.0.0/16), IPv6 unique local
// addresses (fc00::/7, RFC 4193) and IPv6 link-local (fe80::/10).
//
// The shared address space of RFC 6598 (100.64.0.0/10) is not included:
// it numbers the link between a carrier-grade NAT and its customers, so a
// peer in it is on the carrier's network, among other customers, not on
// the site. Sites that number their own networks from it (some overlay
// VPNs do) add it to Config.SiteNetworks.
func DefaultSiteNetworks() []netip.Prefix {
	return append([]netip.Prefix(nil), defaultSiteNetworks...)
}

// defaultSiteNetworks is what DefaultSiteNetworks returns a copy of;
// Configs without SiteNetworks share it (nothing modifies it).
var defaultSiteNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// siteNetworks holds the prefixes a DirectOnly Transport calls local.
type siteNetworks []netip.Prefix

// contains reports whether a is on the site. IPv4-mapped IPv6 addresses
// are judged as the IPv4 address they carry, and a zone is ignored.
func (s siteNetworks) contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range s {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkSiteNetworks reports an unusable prefix in Config.SiteNetworks.
func checkSiteNetworks(ps []netip.Prefix) error {
	for _, p := range ps {
		if !p.IsValid() {
			return errors.New("ice: SiteNetworks has an invalid prefix")
		}
	}
	return nil
}

// refusals remembers the last remote address the site filter dropped
// traffic from, so that a Connect that found no path can say why.
type refusals struct {
	mu    sync.Mutex
	last  *PolicyError
	count uint64
}

// note keeps e, unless it is traffic from an address whose signalled
// candidate was already refused: that refusal names the claimed type.
func (r *refusals) note(e *PolicyError) {
	r.mu.Lock()
	if r.last == nil || r.last.Address != e.Address || e.Type != sdp.CandidatePeerReflexive {
		r.last = e
	}
	r.count++
	r.mu.Unlock()
}

func (r *refusals) get() (*PolicyError, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.count
}

// siteGuard drops, under DirectOnly, everything that arrives from outside
// the site networks except STUN responses. pion learns a peer-reflexive
// remote candidate from every authenticated binding request, whatever its
// source (RFC 8445 section 7.3.1.3), so filtering signalled candidates is
// not enough: a peer behind a relay reaches us from the relay's address.
// Dropping those requests at the socket means no pair with an off-site
// remote address ever exists. STUN responses are let through because the
// server-reflexive answer of a STUN server comes from off the site; a
// response from an address pion sent no check to matches no pair (pion
// requires the response's source to be the request's destination), and
// the txid guard already drops unsolicited ones.
type siteGuard struct {
	site    siteNetworks
	refused func(netip.AddrPort)
}

// admit reports whether a datagram b from addr may reach pion.
func (g *siteGuard) admit(b []byte, addr net.Addr) bool {
	ap, ok := remoteAddrPort(addr)
	if ok && g.site.contains(ap.Addr()) {
		return true
	}
	if isSTUNResponse(b) {
		return true
	}
	if ok {
		g.refused(ap)
	}
	return false
}

// isSTUNResponse reports whether b is a STUN success or error response.
func isSTUNResponse(b []byte) bool {
	return isSTUN(b) && b[0]&0xc0 == 0 &&
		binary.BigEndian.Uint16(b[0:2])&0x0100 != 0
}

func remoteAddrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// siteNet wraps the transport.Net given to pion so that every UDP socket
// it opens passes through the site guard.
type siteNet struct {
	transport.Net
	g *siteGuard
}

func (n *siteNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &sitePacketConn{PacketConn: c, g: n.g}, nil
}

func (n *siteNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &siteUDPConn{UDPConn: c, g: n.g}, nil
}

// sitePacketConn filters a net.PacketConn through the site guard.
type sitePacketConn struct {
	net.PacketConn
	g *siteGuard
}

func (c *sitePacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil && !c.g.admit(p[:n], addr) {
			continue
		}
		return n, addr, err
	}
}

// siteUDPConn filters a transport.UDPConn through the site guard, on
// every read method (pion uses ReadFrom; the others must not bypass it).
type siteUDPConn struct {
	transport.UDPConn
	g *siteGuard
}

func (c *siteUDPConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err == nil && !c.g.admit(p[:n], addr) {
			continue
		}
		return n, addr, err
	}
}

func (c *siteUDPConn) ReadFromUDP(p []byte) (int, *net.UDPAddr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFromUDP(p)
		if err == nil && !c.g.admit(p[:n], addr) {
			continue
		}
		return n, addr, err
	}
}

func (c *siteUDPConn) ReadMsgUDP(p, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	for {
		n, oobn, flags, addr, err = c.UDPConn.ReadMsgUDP(p, oob)
		if err == nil && !c.g.admit(p[:n], addr) {
			continue
		}
		return n, oobn, flags, addr, err
	}
}

// Read has no source address to judge on an unconnected socket, so it
// reads with ReadFrom.
func (c *siteUDPConn) Read(p []byte) (int, error) {
	n, _, err := c.ReadFrom(p)
	return n, err
}

// siteListener refuses ICE-TCP connections from outside the site: on
// them pion would learn a peer-reflexive TCP candidate as on UDP.
type siteListener struct {
	net.Listener
	g *siteGuard
}

func (l *siteListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ap, ok := remoteAddrPort(c.RemoteAddr()); ok && l.g.site.contains(ap.Addr()) {
			return c, nil
		}
		if ap, ok := remoteAddrPort(c.RemoteAddr()); ok {
			l.g.refused(ap)
		}
		_ = c.Close()
	}
}

// remoteCandidateAllowed applies DirectOnly to a signalled candidate:
// relays are refused by type, and every other candidate by address.
func (t *Transport) remoteCandidateAllowed(c sdp.Candidate, ap netip.AddrPort) *PolicyError {
	if t.cfg.Policy != DirectOnly {
		return nil
	}
	if c.Type == sdp.CandidateRelay {
		return &PolicyError{Address: ap, Type: c.Type, Reason: reasonRelay}
	}
	if !t.site.contains(ap.Addr()) {
		return &PolicyError{Address: ap, Type: c.Type, Reason: reasonOffSite}
	}
	return nil
}

// pathAllowed applies DirectOnly to a selected pair. The socket guard and
// the candidate filter mean pion should never select such a pair; this is
// the last check, on what pion actually selected.
func (t *Transport) pathAllowed(local, remote pice.Candidate) *PolicyError {
	if t.cfg.Policy != DirectOnly {
		return nil
	}
	info := candidateInfo(remote)
	switch {
	case local.Type() == pice.CandidateTypeRelay:
		return &PolicyError{Address: candidateInfo(local).Address, Type: sdp.CandidateRelay, Reason: "a local relay candidate"}
	case remote.Type() == pice.CandidateTypeRelay:
		return &PolicyError{Address: info.Address, Type: info.Type, Reason: reasonRelay}
	case !t.site.contains(info.Address.Addr()):
		return &PolicyError{Address: info.Address, Type: info.Type, Reason: reasonOffSite}
	}
	return nil
}

// siteGuard returns the guard that drops off-site traffic for t, or nil
// when the policy is not DirectOnly.
func (t *Transport) siteGuard() *siteGuard {
	if t.cfg.Policy != DirectOnly {
		return nil
	}
	return &siteGuard{site: t.site, refused: t.noteRefused}
}

// refusePath handles a selected pair the policy refuses: no path is
// reported, and the net.Conn from Connect, if any, fails from then on
// with the refusal, so that no more media is written on that pair.
func (t *Transport) refusePath(err *PolicyError) {
	t.refused.note(err)
	t.cfg.Logger.Warn("ice: the selected path is refused by the DirectOnly policy", "err", err)
	t.mu.Lock()
	t.path = Path{}
	c := t.conn
	t.mu.Unlock()
	if c != nil {
		c.refuse(err)
	}
}

// refuse makes Read and Write fail with err from now on.
func (c *conn) refuse(err error) {
	c.mu.Lock()
	c.refusal = err
	c.mu.Unlock()
	_ = c.buf.Close()
}

func (c *conn) refused() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refusal
}

// noteRefused records traffic the site guard dropped.
func (t *Transport) noteRefused(ap netip.AddrPort) {
	t.refused.note(&PolicyError{Address: ap, Type: sdp.CandidatePeerReflexive, Reason: reasonOffSite})
	t.cfg.Logger.Debug("ice: DirectOnly dropped a packet from outside the site networks", "from", ap.String())
}

// noPathError is Connect's error when no pair worked: under DirectOnly,
// if the site guard refused the peer's traffic, it wraps the refusal as
// well as ErrNoPath.
func (t *Transport) noPathError(detail string) error {
	if e, _ := t.refused.get(); e != nil {
		return fmt.Errorf("%w%s: %w", ErrNoPath, detail, e)
	}
	return fmt.Errorf("%w%s", ErrNoPath, detail)
}
