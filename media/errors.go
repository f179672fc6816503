package media

import (
	"errors"
)

// Errors a caller may branch on. Others are wrapped with context and the
// "media: " prefix.
var (
	// ErrInvalidConfig is wrapped by every error NewSession returns for a
	// Config that cannot work; nothing was started and the conn is untouched.
	ErrInvalidConfig = errors.New("media: invalid config")

	// ErrFingerprintMismatch means the DTLS peer's certificate matched none
	// of Config.RemoteFingerprints: the peer is not the one the signaling
	// described, or the signaling was tampered with.
	ErrFingerprintMismatch = errors.New("media: peer certificate matches no remote fingerprint")

	// ErrKeyExhausted means the sending key has protected as many packets as
	// SRTP allows (2^48 SRTP, 2^31 SRTCP) or has expired, and no newer key
	// is active; the packet was not sent. Install a new key version (kms,
	// hybrid) or set up a new session.
	ErrKeyExhausted = errors.New("media: sending key exhausted or expired")

	// ErrKeyRevoked means the key source withdrew the key version
	// (compromised, destroyed, below the call's minimum; see
	// [KeyChangeWatcher] and [Session.RevokeKey]): WriteRTP and WriteRTCP
	// return it while the sending version is withdrawn and no other is
	// installed, and InstallKey for a withdrawn version.
	ErrKeyRevoked = errors.New("media: key version revoked")

	// ErrNoRotation means InstallKey was called on a session whose keying
	// (dtls, sdes) has no key versions.
	ErrNoRotation = errors.New("media: keying mode has no key versions")
)

// ErrRTPHandled is wrapped by ReadRTP's error on a session with
// Config.OnRTP set: its RTP packets are delivered to OnRTP instead.
var ErrRTPHandled = errors.New("media: RTP is delivered to Config.OnRTP")
