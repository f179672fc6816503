package media

import (
	"strconv"
	"strings"

	"github.com/pion/dtls/v2"
	"github.com/pion/srtp/v3"
)

// Profile is an SRTP protection profile, numbered as in the IANA "DTLS-SRTP
// Protection Profiles" registry (RFC 5764, RFC 7714).
type Profile uint16

// The protection profiles a Session supports.
const (
	// ProfileAES128CMHMACSHA1_80 is AES-128 counter mode with a 80-bit
	// HMAC-SHA1 tag: the profile every SRTP stack speaks.
	ProfileAES128CMHMACSHA1_80 Profile = 0x0001
	// ProfileAES128CMHMACSHA1_32 is like ProfileAES128CMHMACSHA1_80 with a
	// 32-bit tag on SRTP (SRTCP keeps 80 bits).
	ProfileAES128CMHMACSHA1_32 Profile = 0x0002
	// ProfileAEADAES128GCM is AES-128-GCM with a 128-bit tag (RFC 7714):
	// the preferred profile, about three times faster than the CM ones.
	ProfileAEADAES128GCM Profile = 0x0007
	// ProfileAEADAES256GCM is AES-256-GCM with a 128-bit tag (RFC 7714).
	ProfileAEADAES256GCM Profile = 0x0008
)

// String returns the profile's name as SDES (RFC 4568, RFC 7714) spells it,
// such as "AEAD_AES_128_GCM" or "AES_CM_128_HMAC_SHA1_80".
func (p Profile) String() string {
	switch p {
	case ProfileAES128CMHMACSHA1_80:
		return "AES_CM_128_HMAC_SHA1_80"
	case ProfileAES128CMHMACSHA1_32:
		return "AES_CM_128_HMAC_SHA1_32"
	case ProfileAEADAES128GCM:
		return "AEAD_AES_128_GCM"
	case ProfileAEADAES256GCM:
		return "AEAD_AES_256_GCM"
	}
	return "Profile(0x" + strconv.FormatUint(uint64(p), 16) + ")"
}

// ProfileFromSuite returns the profile named by an SDES crypto suite
// (RFC 4568, RFC 7714), such as "AES_CM_128_HMAC_SHA1_80" or
// "AEAD_AES_128_GCM". It also accepts the DTLS-SRTP spellings such as
// "SRTP_AES128_CM_HMAC_SHA1_80" and "SRTP_AEAD_AES_128_GCM", which some tools
// (ffmpeg) use. Case is ignored; ok is false for unsupported suites.
func ProfileFromSuite(name string) (p Profile, ok bool) {
	switch strings.ToUpper(strings.TrimSpace(name)) {
	case "AES_CM_128_HMAC_SHA1_80", "SRTP_AES128_CM_HMAC_SHA1_80":
		return ProfileAES128CMHMACSHA1_80, true
	case "AES_CM_128_HMAC_SHA1_32", "SRTP_AES128_CM_HMAC_SHA1_32":
		return ProfileAES128CMHMACSHA1_32, true
	case "AEAD_AES_128_GCM", "SRTP_AEAD_AES_128_GCM":
		return ProfileAEADAES128GCM, true
	case "AEAD_AES_256_GCM", "SRTP_AEAD_AES_256_GCM":
		return ProfileAEADAES256GCM, true
	}
	return 0, false
}

// valid reports whether p is one of the supported profiles.
func (p Profile) valid() bool {
	switch p {
	case ProfileAES128CMHMACSHA1_80, ProfileAES128CMHMACSHA1_32, ProfileAEADAES128GCM, ProfileAEADAES256GCM:
		return true
	}
	return false
}

// keyLen and saltLen are the master key and salt sizes (RFC 3711, RFC 7714).
func (p Profile) keyLen() int {
	if p == ProfileAEADAES256GCM {
		return 32
	}
	return 16
}

func (p Profile) saltLen() int {
	if p == ProfileAEADAES128GCM || p == ProfileAEADAES256GCM {
		return 12
	}
	return 14
}

// rtpTrailerLen is what follows the payload and MKI on the wire for SRTP:
// the HMAC tag for the CM profiles; GCM's tag precedes the MKI.
func (p Profile) rtpTrailerLen() int {
	switch p {
	case ProfileAES128CMHMACSHA1_80:
		return 10
	case ProfileAES128CMHMACSHA1_32:
		return 4
	}
	return 0
}

// rtcpTrailerLen is the like of rtpTrailerLen for SRTCP.
func (p Profile) rtcpTrailerLen() int {
	if p == ProfileAES128CMHMACSHA1_80 || p == ProfileAES128CMHMACSHA1_32 {
		return 10
	}
	return 0
}

// overhead is the most an SRTP packet grows by, without MKI.
func (p Profile) overhead() int {
	if p == ProfileAEADAES128GCM || p == ProfileAEADAES256GCM {
		return 16
	}
	return 10
}

func (p Profile) srtp() srtp.ProtectionProfile { return srtp.ProtectionProfile(p) }

func (p Profile) dtls() dtls.SRTPProtectionProfile { return dtls.SRTPProtectionProfile(p) }
