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
	signedHeader(&hdr, b, at)
	sum, ok := stackHMAC(key, hdr[:], b[stunHeaderLen:at])
	if !ok {
		sum = heapHMAC(key, b, at)
	}
	return hmac.Equal(sum[:], b[at+4:at+4+sha1.Size])
}

// signedHeader copies b's header into hdr with the length that
// MESSAGE-INTEGRITY at offset at signs: up to the attribute's end.
func signedHeader(hdr *[stunHeaderLen]byte, b []byte, at int) {
	copy(hdr[:], b)
	binary.BigEndian.PutUint16(hdr[2:4], uint16(at+4+sha1.Size-stunHeaderLen))
}

// heapHMAC is integrityMatches' HMAC with crypto/hmac, for what
// stackHMAC declines.
func heapHMAC(key string, b []byte, at int) (sum [sha1.Size]byte) {
	var hdr [stunHeaderLen]byte
	signedHeader(&hdr, b, at)
	mac := hmac.New(sha1.New, []byte(key))
	mac.Write(hdr[:])
	mac.Write(b[stunHeaderLen:at])
	copy(sum[:], mac.Sum(nil))
	return sum
}

// maxStackHMAC is the longest message stackHMAC signs: a datagram of the
// Endpoint's (endpointBufSize).
const maxStackHMAC = 2048

// stackHMAC returns HMAC-SHA1 (RFC 2104) under key of hdr followed by
// body, as crypto/hmac does, in buffers on the stack: the Endpoint's
// reader checks every STUN request and response of its calls, and
// crypto/hmac allocates 7 times per message. ok is false for a key or a
// message longer than maxStackHMAC.
func stackHMAC(key string, hdr, body []byte) (sum [sha1.Size]byte, ok bool) {
	const block = 64 // SHA-1's block size
	if len(key) > maxStackHMAC || len(hdr)+len(body) > maxStackHMAC {
		return sum, false
	}
	var in [block + maxStackHMAC]byte
	var k [block]byte
	if len(key) > block {
		n := copy(in[:], key)
		kh := sha1.Sum(in[:n])
		copy(k[:], kh[:])
	} else {
		copy(k[:], key)
	}
	for i := range k {
		in[i] = k[i] ^ 0x36
	}
	n := block + copy(in[block:], hdr)
	n += copy(in[n:], body)
	inner := sha1.Sum(in[:n])
	var out [block + sha1.Size]byte
	for i := range k {
		out[i] = k[i] ^ 0x5c
	}
	copy(out[block:], inner[:])
	return sha1.Sum(out[:]), true
}

// authentic reports whether b carries a MESSAGE-INTEGRITY that key signed.
func authentic(b []byte, key string) bool {
	at, ok := stunIntegrity(b)
	return ok && integrityMatches(b, at, key)
}
