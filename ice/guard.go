package ice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3"
)

// The guard decides what is STUN exactly as pion does, and then checks
// every attribute pion would decode, by the type pion's decoder gives it,
// before pion sees the message.
//
// pion/stun/v2 v2.0.0's XORMappedAddress.GetFromAs reads the address
// family before it checks the attribute's length, so a value shorter than
// two bytes at the end of a buffer panics the goroutine that parses it
// (the bug fixed in stun/v3 as GO-2026-6163). Message.Decode also maps the
// legacy type 0x8020 to XOR-MAPPED-ADDRESS (0x0020), so a guard that
// matched raw types missed it. Here the message is decoded with pion's own
// Message.Decode and each attribute is judged by its decoded type, so a
// type pion aliases is judged as what pion will read it as; the value is
// then run through the decoder pion uses for that type, on a slice whose
// capacity ends with the value (the worst case: pion's TURN client and
// agent copy each message into a buffer of its exact size), and must also
// have exactly the size pion's encoder writes for it. pionAttributes lists
// every attribute pion/stun/v2 v2.0.0, pion/ice/v3 v3.0.16 and pion/turn/v3
// v3.0.3 decode (TestGuardKnowsEveryDecodedAttribute checks the list
// against their sources).

// maxSTUNAttributes bounds the attributes of a message the guard passes.
// pion's and coturn's messages carry at most a dozen; a 64 KiB datagram
// could carry 16,000 empty ones, each a linear search for pion.
const maxSTUNAttributes = 32

// Attribute value sizes, as pion's encoders write them.
const (
	ipv4AddressLen = 8  // family (2), port (2), IPv4 address (4)
	ipv6AddressLen = 20 // family (2), port (2), IPv6 address (16)
	maxUsernameLen = 513
	maxTextLen     = 763 // REALM, NONCE, SOFTWARE, ERROR-CODE reason: 127 characters
)

const (
	turnMinChannel = 0x4000 // RFC 5766 channel numbers, as pion/turn checks them
	turnMaxChannel = 0x7fff
)

// pionAttribute is one attribute type that pion decodes: the check of its
// value size and the decoder pion applies to it.
type pionAttribute struct {
	name   string // the pion constant, for TestGuardKnowsEveryDecodedAttribute
	valid  func(v []byte) bool
	decode func(p *guardProbe) error
}

func exactly(n int) func([]byte) bool { return func(v []byte) bool { return len(v) == n } }
func atMost(n int) func([]byte) bool  { return func(v []byte) bool { return len(v) <= n } }

// address is the check of every address attribute: an IPv4 or an IPv6
// address, with the family that matches its length.
func address(v []byte) bool {
	switch len(v) {
	case ipv4AddressLen:
		return v[0] == 0 && v[1] == 1
	case ipv6AddressLen:
		return v[0] == 0 && v[1] == 2
	}
	return false
}

// xorAddress and plainAddress decode into the probe's address, whose IP
// pion reuses: a decode allocates nothing.
func xorAddress(t stun.AttrType) func(*guardProbe) error {
	return func(p *guardProbe) error { return p.xor.GetFromAs(&p.m, t) }
}

func plainAddress(t stun.AttrType) func(*guardProbe) error {
	return func(p *guardProbe) error { return p.addr.GetFromAs(&p.m, t) }
}

// sized is pion/turn's decoder for its fixed-size attributes (its proto
// package is internal): stun.CheckSize, then fixed offsets.
func sized(t stun.AttrType, n int) func(*guardProbe) error {
	return func(p *guardProbe) error {
		v, err := p.m.Get(t)
		if err != nil {
			return err
		}
		if err := stun.CheckSize(t, len(v), n); err != nil {
			return err
		}
		_ = v[n-1]
		return nil
	}
}

func text(t stun.AttrType) func(*guardProbe) error {
	return func(p *guardProbe) error { var a stun.TextAttribute; return a.GetFromAs(&p.m, t) }
}

// pionAttributes maps each attribute type pion decodes to its check. The
// call sites, in the pinned versions: stun's addr.go, xoraddr.go,
// errorcode.go, uattrs.go, textattrs.go, integrity.go and fingerprint.go;
// ice's priority.go, icecontrol.go, usecandidate.go, agent.go (username,
// integrity), gather.go (srflx XOR-MAPPED-ADDRESS), tcp_mux.go and
// udp_mux.go (USERNAME); turn's client.go and internal/client (XOR-MAPPED,
// XOR-RELAYED, XOR-PEER, LIFETIME, ERROR-CODE, NONCE, REALM, DATA,
// CONNECTION-ID) and internal/proto (the rest).
var pionAttributes = map[stun.AttrType]pionAttribute{
	stun.AttrMappedAddress:     {"AttrMappedAddress", address, plainAddress(stun.AttrMappedAddress)},
	stun.AttrAlternateServer:   {"AttrAlternateServer", address, plainAddress(stun.AttrAlternateServer)},
	stun.AttrResponseOrigin:    {"AttrResponseOrigin", address, plainAddress(stun.AttrResponseOrigin)},
	stun.AttrOtherAddress:      {"AttrOtherAddress", address, plainAddress(stun.AttrOtherAddress)},
	stun.AttrXORMappedAddress:  {"AttrXORMappedAddress", address, xorAddress(stun.AttrXORMappedAddress)},
	stun.AttrXORPeerAddress:    {"AttrXORPeerAddress", address, xorAddress(stun.AttrXORPeerAddress)},
	stun.AttrXORRelayedAddress: {"AttrXORRelayedAddress", address, xorAddress(stun.AttrXORRelayedAddress)},
	stun.AttrErrorCode: {"AttrErrorCode", func(v []byte) bool {
		return len(v) >= 4 && len(v) <= 4+maxTextLen && v[2] >= 3 && v[2] <= 6 && v[3] < 100
	}, func(p *guardProbe) error { var a stun.ErrorCodeAttribute; return a.GetFrom(&p.m) }},
	stun.AttrUnknownAttributes: {"AttrUnknownAttributes", func(v []byte) bool { return len(v)%2 == 0 },
		func(p *guardProbe) error { var a stun.UnknownAttributes; return a.GetFrom(&p.m) }},
	stun.AttrUsername:         {"AttrUsername", atMost(maxUsernameLen), text(stun.AttrUsername)},
	stun.AttrRealm:            {"AttrRealm", atMost(maxTextLen), text(stun.AttrRealm)},
	stun.AttrNonce:            {"AttrNonce", atMost(maxTextLen), text(stun.AttrNonce)},
	stun.AttrSoftware:         {"AttrSoftware", atMost(maxTextLen), text(stun.AttrSoftware)},
	stun.AttrMessageIntegrity: {"AttrMessageIntegrity", exactly(20), text(stun.AttrMessageIntegrity)},
	stun.AttrFingerprint:      {"AttrFingerprint", exactly(4), sized(stun.AttrFingerprint, 4)},
	stun.AttrPriority: {"AttrPriority", exactly(4),
		func(p *guardProbe) error { var a pice.PriorityAttr; return a.GetFrom(&p.m) }},
	stun.AttrICEControlled: {"AttrICEControlled", exactly(8),
		func(p *guardProbe) error { var a pice.AttrControlled; return a.GetFrom(&p.m) }},
	stun.AttrICEControlling: {"AttrICEControlling", exactly(8),
		func(p *guardProbe) error { var a pice.AttrControlling; return a.GetFrom(&p.m) }},
	stun.AttrUseCandidate: {"AttrUseCandidate", exactly(0),
		func(p *guardProbe) error { pice.UseCandidateAttr{}.IsSet(&p.m); return nil }},
	stun.AttrLifetime:               {"AttrLifetime", exactly(4), sized(stun.AttrLifetime, 4)},
	stun.AttrChannelNumber:          {"AttrChannelNumber", exactly(4), sized(stun.AttrChannelNumber, 4)},
	stun.AttrConnectionID:           {"AttrConnectionID", exactly(4), sized(stun.AttrConnectionID, 4)},
	stun.AttrRequestedTransport:     {"AttrRequestedTransport", exactly(4), sized(stun.AttrRequestedTransport, 4)},
	stun.AttrRequestedAddressFamily: {"AttrRequestedAddressFamily", exactly(4), sized(stun.AttrRequestedAddressFamily, 4)},
	stun.AttrEvenPort:               {"AttrEvenPort", exactly(1), sized(stun.AttrEvenPort, 1)},
	stun.AttrReservationToken:       {"AttrReservationToken", exactly(8), sized(stun.AttrReservationToken, 8)},
	stun.AttrDontFragment:           {"AttrDontFragment", exactly(0), func(p *guardProbe) error { _, err := p.m.Get(stun.AttrDontFragment); return err }},
	stun.AttrData:                   {"AttrData", func([]byte) bool { return true }, text(stun.AttrData)},
}

// isSTUN is pion's own test (agent, TURN client and muxes all use it).
func isSTUN(b []byte) bool { return stun.IsMessage(b) }

// isChannelData is pion/turn's test for a ChannelData message, which its
// client applies after isSTUN; it returns the payload pion delivers.
func isChannelData(b []byte) ([]byte, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	ch := binary.BigEndian.Uint16(b[0:2])
	if n > len(b)-4 || ch < turnMinChannel || ch > turnMaxChannel {
		return nil, false
	}
	return b[4 : 4+n], true
}

// safeDatagram reports whether pion may be given b, one datagram (or one
// frame of a stream) read from a socket. turn says the socket talks to a
// TURN server: its client unwraps Data indications and ChannelData and
// hands the payload to the agent, which parses it as a datagram from the
// peer, so the payload is checked too.
func safeDatagram(b []byte, turn bool) bool {
	if isSTUN(b) {
		return safeSTUN(b, turn)
	}
	if turn {
		if payload, ok := isChannelData(b); ok {
			return safeDatagram(payload, false)
		}
	}
	return true // media, DTLS: not parsed by pion's STUN code
}

// safeSTUN checks one STUN message (isSTUN is true) as described above.
func safeSTUN(b []byte, turn bool) bool {
	p := guardProbes.Get().(*guardProbe)
	defer p.release()
	m := &p.msg
	*m = stun.Message{Raw: b[:len(b):len(b)], Attributes: p.attrs[:0]}
	if m.Decode() != nil {
		return false // pion drops it too, after a warning
	}
	if 20+int(m.Length) != len(b) || len(m.Attributes) > maxSTUNAttributes {
		return false // trailing bytes would change FINGERPRINT's view
	}
	for _, a := range m.Attributes {
		pa, ok := pionAttributes[a.Type]
		if !ok {
			continue // pion never reads it
		}
		v := a.Value[:len(a.Value):len(a.Value)]
		if !pa.valid(v) || !decodes(p, a.Type, v, pa.decode) {
			return false
		}
	}
	if turn && m.Type.Method == stun.MethodData && m.Type.Class == stun.ClassIndication {
		if data, err := m.Get(stun.AttrData); err == nil {
			return safeDatagram(data, false)
		}
	}
	return true
}

// guardProbe is safeSTUN's scratch, pooled so that a check allocates
// nothing: msg is the message decoded, in attrs while it has few enough
// attributes to pass; m is the probe that holds one attribute, in one, for
// pion's decoder, whose addresses pion decodes into xor and addr.
type guardProbe struct {
	msg   stun.Message
	attrs [maxSTUNAttributes + 1]stun.RawAttribute
	m     stun.Message
	one   [1]stun.RawAttribute
	xor   stun.XORMappedAddress
	addr  stun.MappedAddress
	ips   [2][net.IPv6len]byte // xor's and addr's IP: one allocation
}

// release forgets the message checked, whose buffer the pool must not
// keep alive, and puts p back.
func (p *guardProbe) release() {
	clear(p.attrs[:min(len(p.msg.Attributes), len(p.attrs))])
	p.msg = stun.Message{}
	p.one[0] = stun.RawAttribute{}
	guardProbes.Put(p)
}

var guardProbes = sync.Pool{New: func() any {
	p := new(guardProbe)
	p.m.Attributes = p.one[:]
	p.xor.IP, p.addr.IP = p.ips[0][:0], p.ips[1][:0]
	return p
}}

// decodes runs pion's decoder on a message holding only v, as type t, and
// reports whether it returned (with or without an error) rather than
// panicked.
func decodes(p *guardProbe, t stun.AttrType, v []byte, decode func(*guardProbe) error) (ok bool) {
	p.one[0] = stun.RawAttribute{Type: t, Length: uint16(len(v)), Value: v}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_ = decode(p)
	return true
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
	if !isSTUN(b) {
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
	if !isSTUN(b) {
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

// forget drops the checks still unanswered (a parked Transport sends
// none through the meter: its map would only hold memory).
func (m *rttMeter) forget() {
	m.mu.Lock()
	m.pending = nil
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
	if !isSTUN(b) {
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
	if !isSTUN(b) {
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
	// pion opens packet sockets for TURN clients only (gatherCandidatesRelay).
	return &guardPacketConn{PacketConn: c, n: n, txids: &txidSet{}, turn: true}, nil
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
	turn  bool // a TURN client's socket: relayed payloads are checked too
}

func (c *guardPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil && (!safeDatagram(p[:n], c.turn) || c.txids != nil && c.txids.unsolicited(p[:n])) {
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
	if !safeDatagram(b, false) || c.txids.unsolicited(b) {
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
// more bytes are needed; -1 when b does not start with a frame. It frames
// as pion/turn's STUNConn does (consumeSingleTURNFrame): STUN by pion's
// test first, then a ChannelData channel number, padded to 4 bytes. pion
// computes the size in 16 bits, so a length near 65535 wraps to a frame of
// a few bytes (and a zero-length frame it never moves past): such a
// stream is not framed at all here.
func frameLen(b []byte) int {
	if len(b) < 9 {
		return 0
	}
	var n int
	ch := binary.BigEndian.Uint16(b[0:2])
	switch {
	case isSTUN(b):
		n = 20 + int(binary.BigEndian.Uint16(b[2:4]))
	case ch >= turnMinChannel && ch <= turnMaxChannel:
		n = 4 + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
	case len(b) < 20:
		return 0
	default:
		return -1
	}
	if n > 0xffff {
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
			if !safeDatagram(frame, true) || s.txids.unsolicited(frame) {
				s.n.dropped()
				continue
			}
			s.n.rtt.received(frame)
			s.out = frame
		case n < 0:
			// pion would stop reading this stream too.
			return 0, fmt.Errorf("ice: TURN stream from %v is not framed as STUN or ChannelData", s.RemoteAddr())
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

// errUnguardedSocket is returned for the socket kinds pion may ask for but
// this package never lets it use (turns: over UDP, TURN over TCP without
// the proxy dialer): a socket the guard does not read must not be opened.
var errUnguardedSocket = errors.New("ice: this kind of socket is not guarded and not used")

// Dial refuses: see errUnguardedSocket.
func (n *guardNet) Dial(network, address string) (net.Conn, error) { return nil, errUnguardedSocket }

// DialUDP refuses: see errUnguardedSocket.
func (n *guardNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	return nil, errUnguardedSocket
}

// DialTCP refuses: see errUnguardedSocket.
func (n *guardNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	return nil, errUnguardedSocket
}

// ListenTCP refuses: see errUnguardedSocket.
func (n *guardNet) ListenTCP(network string, laddr *net.TCPAddr) (transport.TCPListener, error) {
	return nil, errUnguardedSocket
}

// guardListener guards the ICE-TCP listener: pion's TCP mux reads RFC 4571
// frames (a 16-bit length, then one STUN message or media packet) from
// every connection it accepts, and parses the first and every later STUN
// frame as the agent does a datagram.
type guardListener struct {
	net.Listener
	n *guardNet
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardFramed{Conn: c, n: l.n}, nil
}

// guardFramed re-frames an ICE-TCP connection and drops the frames pion
// must not parse.
type guardFramed struct {
	net.Conn
	n   *guardNet
	in  []byte // bytes read but not yet framed
	out []byte // the frame being delivered, with its length prefix
	tmp [4096]byte
}

func (s *guardFramed) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if len(s.in) >= 2 {
			n := 2 + int(binary.BigEndian.Uint16(s.in[0:2]))
			if len(s.in) >= n {
				frame := s.in[:n:n]
				s.in = s.in[n:]
				if !safeDatagram(frame[2:], false) {
					s.n.dropped()
					continue
				}
				s.n.rtt.received(frame[2:])
				s.out = frame
				break
			}
		}
		m, err := s.Conn.Read(s.tmp[:])
		if m > 0 {
			s.in = append(s.in, s.tmp[:m]...)
			continue
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

func (s *guardFramed) Write(p []byte) (int, error) {
	if len(p) > 2 {
		s.n.rtt.sent(p[2:])
	}
	return s.Conn.Write(p)
}
