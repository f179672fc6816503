// Package keyschedule derives SRTP master keys and salts for securecall's kms
// and hybrid keying.
//
// The schedule is HKDF-SHA256 (RFC 5869). The input keying material is the
// KMS call key, followed in hybrid keying by the DTLS-SRTP exporter output
// (RFC 5764 section 4.2); the HKDF salt is the call id; the info string names
// the purpose, the keying mode, the sending endpoint, the key version and the
// SRTP protection profile. Each sender therefore gets its own master key and
// salt for every version and profile: no two senders ever share one, and a
// key derived for one profile is never reused under another.
//
// The info string is, byte by byte:
//
//	"securecall srtp master v1" 0x00
//	mode (1 byte: 1 = kms, 2 = hybrid)
//	len(sender) (2 bytes, big endian) || sender
//	version (4 bytes, big endian)
//	profile (2 bytes, big endian: the IANA DTLS-SRTP protection profile id)
//
// and HKDF-Expand yields keyLen+saltLen bytes: the master key, then the
// master salt. docs/keyschedule.md in the repository is the specification,
// with test vectors that spec_test.go checks this package against.
package keyschedule

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Mode names the keying mode, so that kms and hybrid derivations of the same
// call key never collide even if the exporter input were empty.
type Mode uint8

const (
	// KMS derives from the call key alone.
	KMS Mode = 1
	// Hybrid derives from the call key and the DTLS exporter output.
	Hybrid Mode = 2
)

const label = "securecall srtp master v1"

// MinCallKeyLen is the shortest call key accepted: 128 bits.
const MinCallKeyLen = 16

// Input is everything a derivation depends on.
type Input struct {
	Mode Mode
	// CallKey is the KMS call key (at least MinCallKeyLen bytes).
	CallKey []byte
	// Exporter is the DTLS-SRTP exporter output; required in Hybrid mode,
	// must be empty in KMS mode.
	Exporter []byte
	// CallID salts the derivation; it must not be empty.
	CallID string
	// Sender is the identity of the endpoint that sends with the key; it
	// must not be empty and is at most 65535 bytes.
	Sender string
	// Version is the call key version (the SRTP MKI on the wire).
	Version uint32
	// Profile is the IANA DTLS-SRTP protection profile id.
	Profile uint16
	// KeyLen and SaltLen are the profile's master key and salt sizes.
	KeyLen, SaltLen int
}

// Derive returns the SRTP master key and master salt for in.
func Derive(in Input) (key, salt []byte, err error) {
	switch {
	case in.Mode != KMS && in.Mode != Hybrid:
		return nil, nil, fmt.Errorf("keyschedule: unknown mode %d", in.Mode)
	case len(in.CallKey) < MinCallKeyLen:
		return nil, nil, fmt.Errorf("keyschedule: call key has %d bytes, need at least %d", len(in.CallKey), MinCallKeyLen)
	case in.Mode == Hybrid && len(in.Exporter) == 0:
		return nil, nil, errors.New("keyschedule: hybrid mode needs the DTLS exporter output")
	case in.Mode == KMS && len(in.Exporter) != 0:
		return nil, nil, errors.New("keyschedule: kms mode takes no exporter output")
	case in.CallID == "":
		return nil, nil, errors.New("keyschedule: empty call id")
	case in.Sender == "" || len(in.Sender) > 0xffff:
		return nil, nil, fmt.Errorf("keyschedule: sender id must have 1 to 65535 bytes, has %d", len(in.Sender))
	case in.KeyLen <= 0 || in.SaltLen <= 0 || in.KeyLen+in.SaltLen > 255*sha256.Size:
		return nil, nil, fmt.Errorf("keyschedule: bad key/salt sizes %d/%d", in.KeyLen, in.SaltLen)
	}
	ikm := make([]byte, 0, len(in.CallKey)+len(in.Exporter))
	ikm = append(ikm, in.CallKey...)
	ikm = append(ikm, in.Exporter...)

	info := infoString(in)
	okm, err := hkdf.Key(sha256.New, ikm, []byte(in.CallID), string(info), in.KeyLen+in.SaltLen)
	clear(ikm)
	if err != nil {
		return nil, nil, fmt.Errorf("keyschedule: %w", err)
	}
	return okm[:in.KeyLen:in.KeyLen], okm[in.KeyLen:], nil
}

// infoString returns the HKDF info of in, laid out as docs/keyschedule.md
// specifies.
func infoString(in Input) []byte {
	info := make([]byte, 0, len(label)+1+1+2+len(in.Sender)+4+2)
	info = append(info, label...)
	info = append(info, 0, byte(in.Mode))
	info = binary.BigEndian.AppendUint16(info, uint16(len(in.Sender)))
	info = append(info, in.Sender...)
	info = binary.BigEndian.AppendUint32(info, in.Version)
	return binary.BigEndian.AppendUint16(info, in.Profile)
}
