package ice

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"hash"
	"sync"
)

// STUN short-term credentials (RFC 5389 section 15.4, RFC 8445 section
// 7.2.2): a connectivity check is signed with the receiver's ICE password,
// and its response with the same password (RFC 5389 section 10.1.3), the
// answering agent's. These functions read a message with their own bounds
// checks and never hand it to a STUN parser nor change it (in the process
// it may be a writer's buffer).

// stunIntegrity returns the offset of b's MESSAGE-INTEGRITY attribute, or
// false when it has none (or a malformed one, or malformed attributes
// before it).
func stunIntegrity(b []byte) (int, bool) {
	off, n, ok := stunAttrAt(b, attrIntegrity)
	return off, ok && n == sha1.Size
}

// integrityMatches reports whether the MESSAGE-INTEGRITY attribute at
// offset at of b (from stunIntegrity) is the HMAC-SHA1 of the message
// under key: over the message up to the attribute, with the length field
// counting up to the attribute's end.
func integrityMatches(b []byte, at int, key string) bool {
	var m stunMAC // keyed for this one message
	return m.matches(b, at, key)
}

// authentic reports whether b carries a MESSAGE-INTEGRITY that key signed.
func authentic(b []byte, key string) bool {
	var m stunMAC // keyed for this one message
	return m.authentic(b, key)
}

// stunMAC is a keyed HMAC-SHA1 kept by the owner of an ICE password (a
// consent session, pion's STUN conn on an Endpoint), so that checking or
// signing a message allocates nothing: after the first use, crypto/hmac
// starts each message over from its saved pads. A parked Transport checks
// and signs a consent message every second or so, and a gateway has
// thousands of them. The zero value is ready; mu serializes the
// Endpoint's reader and writers in the process.
type stunMAC struct {
	mu  sync.Mutex
	key string
	h   hash.Hash
	hdr [stunHeaderLen]byte
	sum [sha1.Size]byte
}

// keyedLocked returns m's HMAC for key, ready for a message; m.mu is held.
func (m *stunMAC) keyedLocked(key string) hash.Hash {
	if m.h == nil || m.key != key {
		m.h, m.key = hmac.New(sha1.New, []byte(key)), key
		return m.h
	}
	m.h.Reset()
	return m.h
}

// matches reports what integrityMatches does, with m's HMAC.
func (m *stunMAC) matches(b []byte, at int, key string) bool {
	if at < stunHeaderLen || at+4+sha1.Size > len(b) || key == "" {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.keyedLocked(key)
	copy(m.hdr[:], b)
	binary.BigEndian.PutUint16(m.hdr[2:4], uint16(at+4+sha1.Size-stunHeaderLen))
	h.Write(m.hdr[:])
	h.Write(b[stunHeaderLen:at])
	return hmac.Equal(h.Sum(m.sum[:0]), b[at+4:at+4+sha1.Size])
}

// authentic reports what the function authentic does, with m's HMAC.
func (m *stunMAC) authentic(b []byte, key string) bool {
	at, ok := stunIntegrity(b)
	return ok && m.matches(b, at, key)
}

// sign appends to the message in b (a header and attributes) a
// MESSAGE-INTEGRITY under key, with the header's length counting it
// (RFC 5389 section 15.4).
func (m *stunMAC) sign(b []byte, key string) []byte {
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)+4+sha1.Size-stunHeaderLen))
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.keyedLocked(key)
	h.Write(b)
	b = binary.BigEndian.AppendUint16(b, attrIntegrity)
	b = binary.BigEndian.AppendUint16(b, sha1.Size)
	return h.Sum(b)
}
