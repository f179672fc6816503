package ice

import (
	"crypto/sha1"
	"encoding/binary"
	"net"
	"sync/atomic"

	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3"
)

// Role conflicts (RFC 8445 section 7.3.1.1). pion/ice/v3 (v3.0.16, agent.go
// handleInbound) silently drops a check whose role attribute equals its own
// role. A full agent that wrongly stays controlled against an ICE-Lite one
// (rtpengine and Janus do, when the Lite side offers) then never connects:
// its checks carry ICE-CONTROLLED, the Lite agent is controlled too, and the
// RFC's remedy, a 487 (Role Conflict) error response that makes the full
// agent switch to controlling, never comes. A Lite agent can never take
// the controlling role (it sends no checks and nominates nothing), so the
// RFC's tie-breaker always resolves the conflict in the full agent's
// direction: this layer answers every authenticated check that carries
// ICE-CONTROLLED to a Lite Transport with a 487, before pion sees it.
//
// A full agent that pion runs as controlled against a peer that also stays
// controlled is not helped here: pion offers no way to switch an agent's
// role once checks run, and its tie-breaker is not exported. Such a pair of
// full agents cannot meet; the offerer is controlling by default (RFC 8445
// section 6.1.1), which is what real stacks do.

// STUN attribute types and values the role layer reads and writes.
const (
	stunHeaderLen      = 20
	stunCookie         = 0x2112a442 // RFC 5389 magic cookie
	attrIntegrity      = 0x0008
	attrFingerprint    = 0x8028
	attrICEControlled  = 0x8029
	attrICEControlling = 0x802a
	stunBindingRequest = 0x0001
	roleConflictCode   = 487
)

// roleConflicts answers role conflicts for a Lite Transport.
type roleConflicts struct {
	t        *Transport
	answered atomic.Uint64 // 487 responses sent
}

// localCreds returns the Transport's current local ufrag and pwd.
func (r *roleConflicts) localCreds() (string, string) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	return r.t.local.Ufrag, r.t.local.Pwd
}

// controlled reports whether the agent runs, controlled, in Connect: a
// Lite agent is controlling only against another Lite one that it offered
// to, and then a check with ICE-CONTROLLED is no conflict.
func (r *roleConflicts) controlled() bool {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	return r.t.started && !r.t.controlling
}

// conflict reports whether b is a Binding request to this Lite agent that
// carries ICE-CONTROLLED, is addressed to its ufrag and passes
// MESSAGE-INTEGRITY under its password; it parses with its own bounds
// checks and never hands b to a STUN parser.
func (r *roleConflicts) conflict(b []byte) ([12]byte, bool) {
	var id [12]byte
	if len(b) < stunHeaderLen || b[0]&0xc0 != 0 || binary.BigEndian.Uint16(b[0:2]) != stunBindingRequest ||
		binary.BigEndian.Uint32(b[4:8]) != stunCookie {
		return id, false
	}
	end := stunHeaderLen + int(binary.BigEndian.Uint16(b[2:4]))
	if end != len(b) || (end-stunHeaderLen)%4 != 0 {
		return id, false
	}
	copy(id[:], b[8:20])
	var username []byte
	controlled, integrityAt := false, -1
	for off := stunHeaderLen; off+4 <= end; {
		typ := binary.BigEndian.Uint16(b[off : off+2])
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if off+4+n > end {
			return id, false
		}
		switch typ {
		case attrUsername:
			username = b[off+4 : off+4+n]
		case attrICEControlled:
			controlled = true
		case attrICEControlling:
			return id, false
		case attrIntegrity:
			if n != sha1.Size {
				return id, false
			}
			integrityAt = off
		}
		if integrityAt >= 0 {
			break // what follows MESSAGE-INTEGRITY is not covered by it
		}
		off += 4 + (n+3)&^3
	}
	if !controlled || integrityAt < 0 || !r.controlled() {
		return id, false
	}
	ufrag, pwd := r.localCreds()
	if len(username) <= len(ufrag) || string(username[:len(ufrag)+1]) != ufrag+":" {
		return id, false
	}
	return id, integrityMatches(b, integrityAt, pwd)
}

// response builds the 487 error response to the request with id.
func (r *roleConflicts) response(id [12]byte) ([]byte, error) {
	_, pwd := r.localCreds()
	m, err := stun.Build(
		stun.NewType(stun.MethodBinding, stun.ClassErrorResponse),
		stun.NewTransactionIDSetter(id),
		stun.ErrorCodeAttribute{Code: roleConflictCode, Reason: []byte("Role Conflict")},
		stun.NewShortTermIntegrity(pwd),
		stun.Fingerprint,
	)
	if err != nil {
		return nil, err
	}
	return m.Raw, nil
}

// roleNet wraps the Net given to pion so that a Lite Transport's UDP
// sockets answer role conflicts.
type roleNet struct {
	*guardNet
	roles *roleConflicts
}

func (n *roleNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.guardNet.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &roleUDPConn{UDPConn: c, roles: n.roles}, nil
}

func (n *roleNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.guardNet.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &rolePacketConn{PacketConn: c, roles: n.roles}, nil
}

// roleUDPConn answers role conflicts on a host socket; pion reads host
// sockets with ReadFrom.
type roleUDPConn struct {
	transport.UDPConn
	roles *roleConflicts
}

func (c *roleUDPConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err == nil && c.roles.handle(p[:n], addr, c.UDPConn.WriteTo) {
			continue
		}
		return n, addr, err
	}
}

// rolePacketConn is roleUDPConn for a net.PacketConn.
type rolePacketConn struct {
	net.PacketConn
	roles *roleConflicts
}

func (c *rolePacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil && c.roles.handle(p[:n], addr, c.PacketConn.WriteTo) {
			continue
		}
		return n, addr, err
	}
}

// handle answers b with a 487 if it is a role conflict, reporting whether
// it did (then b must not reach pion, which would drop it anyway).
func (r *roleConflicts) handle(b []byte, addr net.Addr, write func([]byte, net.Addr) (int, error)) bool {
	id, ok := r.conflict(b)
	if !ok {
		return false
	}
	resp, err := r.response(id)
	if err != nil {
		return true
	}
	if r.answered.Add(1) == 1 {
		r.t.cfg.Logger.Debug("ice: answering a role conflict with 487: the full peer sent ICE-CONTROLLED to this Lite agent", "from", addr.String())
	}
	_, _ = write(resp, addr)
	return true
}

// RoleConflicts returns how many checks this Transport answered with 487
// (Role Conflict): checks from a full agent that stayed controlled against
// this Lite one (see the package documentation).
func (t *Transport) RoleConflicts() uint64 {
	if t.roles == nil {
		return 0
	}
	return t.roles.answered.Load()
}
