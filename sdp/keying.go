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
	ks, reason := m.keyings()
	if reason != "" {
		return "", reason
	}
	return ks[0], ""
}

// keyings returns the keying modes a section allows the answerer to pick,
// the preferred first, or says why it allows none:
//
//   - key-mgmt and fingerprint: hybrid only;
//   - key-mgmt alone: kms only (a key-mgmt reference asks for the KMS's
//     keys, so an answer in a weaker mode would be a downgrade);
//   - fingerprint: dtls, and also sdes when the section has crypto lines
//     and its proto is not a UDP/TLS one (which means DTLS);
//   - crypto lines alone: sdes.
func (m *Media) keyings() ([]Keying, string) {
	dtlsProto := strings.HasPrefix(m.Proto, "UDP/TLS/")
	fp := len(m.Fingerprints) > 0
	sdes := len(m.Crypto) > 0 && !dtlsProto
	switch {
	case dtlsProto && !fp:
		return nil, "missing fingerprint: " + m.Proto + " needs DTLS"
	case m.KeyRef != nil && fp:
		return []Keying{KeyingHybrid}, ""
	case m.KeyRef != nil:
		return []Keying{KeyingKMS}, ""
	case fp && sdes:
		return []Keying{KeyingDTLS, KeyingSDES}, ""
	case fp:
		return []Keying{KeyingDTLS}, ""
	case sdes:
		return []Keying{KeyingSDES}, ""
	case m.Proto == "RTP/AVP" || m.Proto == "RTP/AVPF":
		return nil, "no keying: plain RTP (" + m.Proto + ") without a fingerprint, key-mgmt or crypto line; this SDK carries only SRTP"
	}
	return nil, "no keying: no fingerprint, key-mgmt or crypto line (" + m.Proto + ")"
}

// Keyings returns the keying modes that the first active audio section
// lets an answerer choose from, the preferred first (see
// [Description.Keying] for the one-mode reading): a section with
// fingerprints and crypto lines on RTP/SAVP or RTP/SAVPF allows dtls and
// sdes; a key-mgmt reference allows only kms or hybrid. It fails, wrapping
// [ErrNegotiation], when there is no such section or it allows none.
func (d *Description) Keyings() ([]Keying, error) {
	idx := audioSection(d)
	if idx < 0 {
		return nil, fmt.Errorf("%w: description has no active audio section", ErrNegotiation)
	}
	ks, reason := d.Media[idx].keyings()
	if reason != "" {
		return nil, fmt.Errorf("%w: media section %d: %s", ErrNegotiation, idx+1, reason)
	}
	return ks, nil
}
