package sdp

import (
	"fmt"
	"strings"
)

// Keying is how the SRTP keys of a call are made, as negotiated in the
// description.
type Keying string

// The keying modes. See the package documentation of media for what each
// one means for the keys.
const (
	// KeyingDTLS derives keys with DTLS-SRTP (RFC 5764); the description
	// carries fingerprints.
	KeyingDTLS Keying = "dtls"
	// KeyingKMS derives keys from the customer's KMS call key; the
	// description carries a key-mgmt reference and no fingerprint.
	KeyingKMS Keying = "kms"
	// KeyingHybrid derives keys from both DTLS-SRTP and the KMS call key;
	// the description carries fingerprints and a key-mgmt reference.
	KeyingHybrid Keying = "hybrid"
	// KeyingSDES uses the keys carried in "a=crypto" lines (RFC 4568).
	KeyingSDES Keying = "sdes"
)

func (k Keying) valid() bool {
	return k == KeyingDTLS || k == KeyingKMS || k == KeyingHybrid || k == KeyingSDES
}

func (k Keying) usesDTLS() bool { return k == KeyingDTLS || k == KeyingHybrid }
func (k Keying) usesKMS() bool  { return k == KeyingKMS || k == KeyingHybrid }

// Keying returns the keying mode that the description's active audio and
// video sections (port not 0) carry:
//
//   - key-mgmt and fingerprint: [KeyingHybrid]
//   - key-mgmt without fingerprint: [KeyingKMS]
//   - fingerprint only: [KeyingDTLS]
//   - crypto lines only: [KeyingSDES]
//
// A section with both fingerprints and crypto lines counts as dtls.
// Application (data channel) sections and rejected ones do not count.
//
// It fails, wrapping [ErrNegotiation], when a section carries none of
// these, when a UDP/TLS section has no fingerprint, or when sections
// disagree.
func (d *Description) Keying() (Keying, error) {
	var k Keying
	for i := range d.Media {
		m := &d.Media[i]
		if m.Port == 0 || !isRTPKind(m.Kind) {
			continue // SRTP keying concerns RTP sections only
		}
		mk, reason := m.keying()
		if reason != "" {
			return "", fmt.Errorf("%w: media section %d: %s", ErrNegotiation, i+1, reason)
		}
		if k != "" && mk != k {
			return "", fmt.Errorf("%w: media sections disagree on keying (%s and %s)", ErrNegotiation, k, mk)
		}
		k = mk
	}
	if k == "" {
		return "", fmt.Errorf("%w: description has no active media section", ErrNegotiation)
	}
	return k, nil
}

func (m *Media) keying() (Keying, string) {
	dtlsProto := strings.HasPrefix(m.Proto, "UDP/TLS/")
	fp := len(m.Fingerprints) > 0
	switch {
	case dtlsProto && !fp:
		return "", "missing fingerprint: " + m.Proto + " needs DTLS"
	case m.KeyRef != nil && fp:
		return KeyingHybrid, ""
	case m.KeyRef != nil:
		return KeyingKMS, ""
	case fp:
		return KeyingDTLS, ""
	case len(m.Crypto) > 0:
		return KeyingSDES, ""
	}
	return "", "no keying: no fingerprint, key-mgmt or crypto line (" + m.Proto + ")"
}
