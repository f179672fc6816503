package ice

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v3"
)

// STUN attribute types whose value pion/stun/v2 v2.0.0 decodes with
// XORMappedAddress.GetFromAs. That function reads the address family
// before it checks the attribute's length, so a value shorter than two
// bytes panics the goroutine that parses it (the bug fixed in stun/v3 as
// GO-2026-6163). The pion/ice/v3 paths that reach it are srflx gathering,
// which takes the first STUN message from any source as the server's
// answer, and the TURN client, which accepts Data indications from any
// source. The guard drops every such message before pion sees it.
const (
	attrXORMappedAddress  = 0x0020
	attrXORPeerAddress    = 0x0012
	attrXORRelayedAddress = 0x0016
)

// minXORAddressLen is the length of the shortest valid XOR address value:
// family (2), port (2) and an IPv4 address (4).
const minXORAddressLen = 8

const stunMagicCookie = 0x2112A442

// unsafeSTUN reports whether b is a STUN message with an XOR address
// attribute too short to be valid.
func unsafeSTUN(b []byte) bool {
	if len(b) < 20 || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return false
	}
	end := 20 + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		end = len(b)
	}
	for off := 20; off+4 <= end; {
		typ := binary.BigEndian.Uint16(b[off : off+2])
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		switch typ {
		case attrXORMappedAddress, attrXORPeerAddress, attrXORRelayedAddress:
			if n < minXORAddressLen {
				return true
			}
		}
		off += 4 + (n+3)&^3
	}
	return false
}

// unwrapTURN returns the payload of a TURN ChannelData message or of a
// Send or Data indication, so that checks relayed through TURN are
// measured too; anything else is returned as it is.
func unwrapTURN(b []byte) []byte {
	if len(b) >= 4 && b[0]&0xc0 == 0x40 {
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if 4+n <= len(b) {
			return b[4 : 4+n]
		}
		return nil
	}
	if len(b) < 20 || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return b
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if typ != 0x0016 && typ != 0x0017 { // Send and Data indications
		return b
	}
	end := min(20+int(binary.BigEndian.Uint16(b[2:4])), len(b))
	for off := 20; off+4 <= end; {
		at := binary.BigEndian.Uint16(b[off : off+2])
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if at == 0x0013 && off+4+n <= end { // DATA
			return b[off+4 : off+4+n]
		}
		off += 4 + (n+3)&^3
	}
	return nil
}

// stunBinding returns the transaction ID and class of a STUN binding
// message, for round-trip measurement.
func stunBinding(b []byte) (id [12]byte, class uint16, ok bool) {
	b = unwrapTURN(b)
	if len(b) < 20 || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return id, 0, false
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if typ&0x3eef != 0x0001 { // method bits: Binding
		return id, 0, false
	}
	class = typ & 0x0110
	copy(id[:], b[8:20])
	return id, class, true
}

// rttMeter measures the round trip of ICE connectivity checks from the
// moment a binding request leaves a socket to the moment its success
// response arrives. It keeps a bounded set of outstanding requests.
type rttMeter struct {
	mu      sync.Mutex
	pending map[[12]byte]time.Time
	last    time.Duration
}

const maxPendingChecks = 64

func (m *rttMeter) sent(b []byte) {
	id, class, ok := stunBinding(b)
	if !ok || class != 0x0000 {
		return
	}
	m.mu.Lock()
	if m.pending == nil {
		m.pending = make(map[[12]byte]time.Time)
	}
	if len(m.pending) >= maxPendingChecks {
		clear(m.pending)
	}
	m.pending[id] = time.Now()
	m.mu.Unlock()
}

func (m *rttMeter) received(b []byte) {
	id, class, ok := stunBinding(b)
	if !ok || class != 0x0100 { // success response
		return
	}
	m.mu.Lock()
	if t0, ok := m.pending[id]; ok {
		m.last = time.Since(t0)
		delete(m.pending, id)
	}
	m.mu.Unlock()
}

func (m *rttMeter) rtt() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// txidSet remembers the transaction IDs of the last STUN requests a
// socket sent, so that a response can be matched to a request. pion takes
// the first STUN message to arrive on a server-reflexive gathering socket
// as the server's answer, whoever sent it; with this, a response must
// answer a request sent from the same socket, which an off-path sender
// cannot know (96 random bits).
type txidSet struct {
	mu   sync.Mutex
	ids  [maxPendingChecks][12]byte
	next int
	n    int
}

func (s *txidSet) sent(b []byte) {
	if len(b) < 20 || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return
	}
	if binary.BigEndian.Uint16(b[0:2])&0x0110 != 0 { // not a request
		return
	}
	s.mu.Lock()
	copy(s.ids[s.next][:], b[8:20])
	s.next = (s.next + 1) % len(s.ids)
	s.n = min(s.n+1, len(s.ids))
	s.mu.Unlock()
}

// unsolicited reports whether b is a STUN response to no request that
// this socket sent recently.
func (s *txidSet) unsolicited(b []byte) bool {
	if len(b) < 20 || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return false
	}
	if binary.BigEndian.Uint16(b[0:2])&0x0100 == 0 { // requests and indications
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.n {
		if string(s.ids[i][:]) == string(b[8:20]) {
			return false
		}
	}
	return true
}

// guardNet is the transport.Net given to pion: every UDP socket it opens is
// wrapped so that malformed STUN is dropped before pion parses it, and the
// check round trips are measured.
type guardNet struct {
	transport.Net
	ifs     []*transport.Interface // from interfaces, when the transport was made
	rtt     *rttMeter
	relays  *relayIndex
	dropped func()
}

// Interfaces returns the interfaces as listed when the transport was made,
// as pion's own Net does.
func (n *guardNet) Interfaces() ([]*transport.Interface, error) { return n.ifs, nil }

// InterfaceByIndex returns the interface with the given index.
func (n *guardNet) InterfaceByIndex(index int) (*transport.Interface, error) {
	for _, ifc := range n.ifs {
		if ifc.Index == index {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("ice: no interface with index %d", index)
}

// InterfaceByName returns the interface with the given name.
func (n *guardNet) InterfaceByName(name string) (*transport.Interface, error) {
	for _, ifc := range n.ifs {
		if ifc.Name == name {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("ice: no interface named %q", name)
}

// interfaces lists the network interfaces and their addresses, copying
// every byte slice: on Linux the standard library's results point into the
// kernel's whole netlink reply, which a transport would otherwise keep alive
// for its lifetime (about 6 KB each, most of a call's idle footprint after
// the SRTP contexts).
func interfaces() ([]*transport.Interface, error) {
	list, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	ifs := make([]*transport.Interface, 0, len(list))
	for _, ni := range list {
		ni.HardwareAddr = slices.Clone(ni.HardwareAddr)
		ifc := transport.NewInterface(ni)
		addrs, err := ni.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			switch a := a.(type) {
			case *net.IPNet:
				ifc.AddAddress(&net.IPNet{IP: slices.Clone(a.IP), Mask: slices.Clone(a.Mask)})
			case *net.IPAddr:
				ifc.AddAddress(&net.IPAddr{IP: slices.Clone(a.IP), Zone: a.Zone})
			}
		}
		ifs = append(ifs, ifc)
	}
	return ifs, nil
}

// ResolveUDPAddr remembers the names of the servers it resolves, so that a
// relay socket's destination can be mapped back to its server's URL.
func (n *guardNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	a, err := n.Net.ResolveUDPAddr(network, address)
	if err == nil {
		n.relays.addResolved(a.String(), address)
	}
	return a, err
}

func (n *guardNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &guardPacketConn{PacketConn: c, n: n, txids: &txidSet{}}, nil
}

func (n *guardNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &guardUDPConn{UDPConn: c, n: n, txids: &txidSet{}}, nil
}

// guardPacketConn filters a net.PacketConn.
type guardPacketConn struct {
	net.PacketConn
	n        *guardNet
	recorded atomic.Bool
	// txids, when set, drops unsolicited STUN responses. A socket shared
	// by many Transports is not matched (its set would overflow).
	txids *txidSet
}

func (c *guardPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil && (unsafeSTUN(p[:n]) || c.txids != nil && c.txids.unsolicited(p[:n])) {
			c.n.dropped()
			continue
		}
		if err == nil {
			c.n.rtt.received(p[:n])
		}
		return n, addr, err
	}
}

func (c *guardPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.recorded.Load() {
		c.recorded.Store(true)
		c.n.relays.sentTo(c.LocalAddr(), addr)
	}
	if c.txids != nil {
		c.txids.sent(p)
	}
	c.n.rtt.sent(p)
	return c.PacketConn.WriteTo(p, addr)
}

// guardUDPConn filters a transport.UDPConn. pion reads host and srflx
// sockets with ReadFrom; the other read methods are filtered as well so
// that no path bypasses the guard.
type guardUDPConn struct {
	transport.UDPConn
	n     *guardNet
	txids *txidSet
}

// drop reports whether a received packet must not reach pion.
func (c *guardUDPConn) drop(b []byte) bool {
	if unsafeSTUN(b) || c.txids.unsolicited(b) {
		c.n.dropped()
		return true
	}
	return false
}

func (c *guardUDPConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err == nil && c.drop(p[:n]) {
			continue
		}
		if err == nil {
			c.n.rtt.received(p[:n])
		}
		return n, addr, err
	}
}

func (c *guardUDPConn) ReadFromUDP(p []byte) (int, *net.UDPAddr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFromUDP(p)
		if err == nil && c.drop(p[:n]) {
			continue
		}
		return n, addr, err
	}
}

func (c *guardUDPConn) ReadMsgUDP(p, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	for {
		n, oobn, flags, addr, err = c.UDPConn.ReadMsgUDP(p, oob)
		if err == nil && c.drop(p[:n]) {
			continue
		}
		return n, oobn, flags, addr, err
	}
}

func (c *guardUDPConn) Read(p []byte) (int, error) {
	for {
		n, err := c.UDPConn.Read(p)
		if err == nil && c.drop(p[:n]) {
			continue
		}
		return n, err
	}
}

func (c *guardUDPConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.txids.sent(p)
	c.n.rtt.sent(p)
	return c.UDPConn.WriteTo(p, addr)
}

// guardStream filters a TCP or TLS connection to a TURN server, where STUN
// messages and ChannelData are framed back to back (RFC 5766 section
// 11.5): complete frames are passed on, STUN messages that would crash
// pion's parser are dropped, and relayed checks are timed.
type guardStream struct {
	net.Conn
	n     *guardNet
	in    []byte // bytes read but not yet framed
	out   []byte // the frame being delivered
	tmp   []byte
	txids txidSet
}

func newGuardStream(c net.Conn, n *guardNet) *guardStream {
	return &guardStream{Conn: c, n: n, tmp: make([]byte, 4096)}
}

// frameLen returns the length of the frame at the start of b, or 0 when
// more bytes are needed; -1 when b does not start with a frame.
func frameLen(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	var n int
	switch b[0] >> 6 {
	case 0: // STUN
		n = 20 + int(binary.BigEndian.Uint16(b[2:4]))
	case 1: // ChannelData, padded to 4 bytes over streams
		n = 4 + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
	default:
		return -1
	}
	if len(b) < n {
		return 0
	}
	return n
}

func (s *guardStream) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		switch n := frameLen(s.in); {
		case n > 0:
			frame := s.in[:n:n]
			s.in = s.in[n:]
			if unsafeSTUN(frame) || s.txids.unsolicited(frame) {
				s.n.dropped()
				continue
			}
			s.n.rtt.received(frame)
			s.out = frame
		case n < 0:
			// Not framed: pass it on and let pion reject it.
			s.out, s.in = s.in, nil
		default:
			m, err := s.Conn.Read(s.tmp)
			if m > 0 {
				s.in = append(s.in, s.tmp[:m]...)
				continue
			}
			if err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

func (s *guardStream) Write(p []byte) (int, error) {
	s.txids.sent(p)
	s.n.rtt.sent(p)
	return s.Conn.Write(p)
}
