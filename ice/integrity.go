package ice

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
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
	if at < stunHeaderLen || at+4+sha1.Size > len(b) || key == "" {
		return false
	}
	var hdr [stunHeaderLen]byte
	copy(hdr[:], b)
	binary.BigEndian.PutUint16(hdr[2:4], uint16(at+4+sha1.Size-stunHeaderLen))
	mac := hmac.New(sha1.New, []byte(key))
	mac.Write(hdr[:])
	mac.Write(b[stunHeaderLen:at])
	var sum [sha1.Size]byte
	return hmac.Equal(mac.Sum(sum[:0]), b[at+4:at+4+sha1.Size])
}

// authentic reports whether b carries a MESSAGE-INTEGRITY that key signed.
func authentic(b []byte, key string) bool {
	at, ok := stunIntegrity(b)
	return ok && integrityMatches(b, at, key)
}
