package ice

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"sync"
)

// The consent messages of a parked Transport (RFC 7675: a Binding request
// every KeepaliveInterval and its success response) are built and read
// here without pion/stun, which allocates a message, its attributes and
// an HMAC for each; these allocate nothing, in pooled buffers. They read
// a message with their own bounds checks, as integrity.go does, and never
// change it.

const (
	attrXORMappedAddress = 0x0020
	attrPriority         = 0x0024
	stunBindingSuccess   = 0x0101
	fingerprintXOR       = 0x5354554e // RFC 5389 section 15.5
)

// stunBufCap fits any consent message with ufrags of up to 256
// characters each (RFC 8445 section 5.3); one with longer ufrags grows
// its buffer and still goes out.
const stunBufCap = 640

type stunBuf [stunBufCap]byte

var stunBufs = sync.Pool{New: func() any { return new(stunBuf) }}

// appendSTUNHeader appends a message header of type typ and transaction
// id, with a length of 0 for the attributes to set.
func appendSTUNHeader(b []byte, typ uint16, id [12]byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, stunCookie)
	return append(b, id[:]...)
}

// appendSTUNAttr appends an attribute header of type typ for a value of n
// bytes; the caller appends the value and then padSTUN.
func appendSTUNAttr(b []byte, typ uint16, n int) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	return binary.BigEndian.AppendUint16(b, uint16(n))
}

// padSTUN pads the last attribute's value to a multiple of 4 bytes.
func padSTUN(b []byte) []byte {
	for (len(b)-stunHeaderLen)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendFingerprint appends FINGERPRINT, the last attribute, with the
// header's length counting it (RFC 5389 section 15.5).
func appendFingerprint(b []byte) []byte {
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)+8-stunHeaderLen))
	crc := crc32.ChecksumIEEE(b) ^ fingerprintXOR
	b = appendSTUNAttr(b, attrFingerprint, 4)
	return binary.BigEndian.AppendUint32(b, crc)
}

// fingerprintOK reports whether b is a well-formed message (its length
// is the header's, its attributes lie within it) whose last attribute is
// a FINGERPRINT that matches, as pion/stun's Fingerprint.Check requires
// of a message it decoded.
func fingerprintOK(b []byte) bool {
	if len(b) < stunHeaderLen+8 || stunHeaderLen+int(binary.BigEndian.Uint16(b[2:4])) != len(b) {
		return false
	}
	last := -1
	for off := stunHeaderLen; off < len(b); {
		if off+4 > len(b) {
			return false
		}
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if off+4+n > len(b) {
			return false
		}
		last = off
		off += 4 + (n+3)&^3
	}
	at := len(b) - 8
	return last == at && binary.BigEndian.Uint16(b[at:at+2]) == attrFingerprint &&
		binary.BigEndian.Uint16(b[at+2:at+4]) == 4 &&
		binary.BigEndian.Uint32(b[at+4:]) == crc32.ChecksumIEEE(b[:at])^fingerprintXOR
}

// usernameIs reports whether un is USERNAME "to:from" without building
// the string.
func usernameIs(un []byte, to, from string) bool {
	return len(un) == len(to)+1+len(from) && string(un[:len(to)]) == to &&
		un[len(to)] == ':' && string(un[len(to)+1:]) == from
}

// appendConsentRequest appends cs's consent check with transaction id:
// USERNAME, the role with cs's tie-breaker, PRIORITY, MESSAGE-INTEGRITY
// under the peer's password, FINGERPRINT.
func (cs *consentSession) appendConsentRequest(b []byte, id [12]byte) []byte {
	b = appendSTUNHeader(b, stunBindingRequest, id)
	b = appendSTUNAttr(b, attrUsername, len(cs.remoteUfrag)+1+len(cs.localUfrag))
	b = append(b, cs.remoteUfrag...)
	b = append(b, ':')
	b = append(b, cs.localUfrag...)
	b = padSTUN(b)
	role := uint16(attrICEControlled)
	if cs.controlling {
		role = attrICEControlling
	}
	b = appendSTUNAttr(b, role, 8)
	b = binary.BigEndian.AppendUint64(b, cs.tieBreaker)
	b = appendSTUNAttr(b, attrPriority, 4)
	b = binary.BigEndian.AppendUint32(b, cs.priority)
	b = cs.remoteMAC.sign(b, cs.remotePwd)
	return appendFingerprint(b)
}

// appendConsentAnswer appends cs's success response to the request with
// transaction id from src: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY under
// the local password, FINGERPRINT.
func (cs *consentSession) appendConsentAnswer(b []byte, id [12]byte, src netip.AddrPort) []byte {
	b = appendSTUNHeader(b, stunBindingSuccess, id)
	b = appendXORMappedAddress(b, id, src)
	b = cs.localMAC.sign(b, cs.localPwd)
	return appendFingerprint(b)
}

// appendXORMappedAddress appends XOR-MAPPED-ADDRESS for a (RFC 5389
// section 15.2): the port and address XORed with the magic cookie, and an
// IPv6 address also with the transaction id.
func appendXORMappedAddress(b []byte, id [12]byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	family, n := byte(1), 4
	if ip.Is6() {
		family, n = 2, 16
	}
	b = appendSTUNAttr(b, attrXORMappedAddress, 4+n)
	b = append(b, 0, family)
	b = binary.BigEndian.AppendUint16(b, a.Port()^uint16(stunCookie>>16))
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], stunCookie)
	copy(key[4:], id[:])
	raw := ip.As16()
	addr := raw[16-n:]
	for i := range n {
		b = append(b, addr[i]^key[i])
	}
	return b
}
