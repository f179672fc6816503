package sdp

import (
	"encoding/hex"
	"strings"
)

// Fingerprint is a certificate fingerprint as carried in an "a=fingerprint"
// attribute (RFC 8122 section 5): a hash function name and the digest of the
// DER certificate. DTLS peers check each other's certificate against it.
type Fingerprint struct {
	// Algorithm is the hash function's name from the IANA "Hash Function
	// Textual Names" registry in lower case, such as "sha-256".
	Algorithm string
	// Value is the raw digest.
	Value []byte
}

// String returns the attribute value: the algorithm, a space, and the digest
// as upper-case hex pairs separated by colons.
func (f Fingerprint) String() string {
	var b strings.Builder
	b.Grow(len(f.Algorithm) + 1 + 3*len(f.Value))
	b.WriteString(f.Algorithm)
	b.WriteByte(' ')
	const digits = "0123456789ABCDEF"
	for i, v := range f.Value {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteByte(digits[v>>4])
		b.WriteByte(digits[v&0x0f])
	}
	return b.String()
}

// digestSizes are the hash functions RFC 8122 allows, with their digest sizes.
var digestSizes = map[string]int{
	"sha-1":   20,
	"sha-224": 28,
	"sha-256": 32,
	"sha-384": 48,
	"sha-512": 64,
}

// ParseFingerprint parses an "a=fingerprint" attribute value such as
// "sha-256 AB:CD:...". The algorithm name is matched without regard to case
// and returned in lower case; the digest must have the algorithm's length.
func ParseFingerprint(s string) (Fingerprint, error) {
	alg, digest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Fingerprint{}, &ParseError{Text: quoteText(s), Reason: "fingerprint must be a hash name, a space and a digest"}
	}
	alg = strings.ToLower(alg)
	size, known := digestSizes[alg]
	if !known {
		return Fingerprint{}, &ParseError{Text: quoteText(s), Reason: "fingerprint hash must be sha-1, sha-224, sha-256, sha-384 or sha-512"}
	}
	digest = strings.TrimSpace(digest)
	if len(digest) != 3*size-1 {
		return Fingerprint{}, &ParseError{Text: quoteText(s), Reason: "fingerprint digest has the wrong length for " + alg}
	}
	v := make([]byte, size)
	for i := range size {
		if i > 0 && digest[3*i-1] != ':' {
			return Fingerprint{}, &ParseError{Text: quoteText(s), Reason: "fingerprint digest must be hex pairs separated by colons"}
		}
		if _, err := hex.Decode(v[i:i+1], []byte(digest[3*i:3*i+2])); err != nil {
			return Fingerprint{}, &ParseError{Text: quoteText(s), Reason: "fingerprint digest must be hex pairs separated by colons"}
		}
	}
	return Fingerprint{Algorithm: alg, Value: v}, nil
}
