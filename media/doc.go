// Package media turns a connected packet transport (the net.Conn that ICE
// hands over) into a secure RTP/RTCP session: SRTP and SRTCP (RFC 3711,
// RFC 7714) with RTP and RTCP on one transport (RFC 5761) and DTLS
// demultiplexed from them by the first byte (RFC 7983).
//
// [NewSession] keys the session, then [Session.WriteRTP] and
// [Session.ReadRTP] carry media and [Session.WriteRTCP] and
// [Session.ReadRTCP] compound RTCP. Keys rotate during the call without
// losing a packet: [Session.InstallKey], or automatically when the
// [KeySource] is also a [KeyWatcher].
//
// # Keying modes
//
// Config.Keying chooses where the SRTP master keys come from:
//
//	mode    master key and salt from                        MKI on the wire
//	dtls    DTLS-SRTP exporter (RFC 5764), peer checked      none (use_srtp has none)
//	        against the SDP fingerprint (RFC 8122)
//	kms     key schedule over the KMS call key               4 bytes: key version
//	hybrid  key schedule over the DTLS exporter output       4 bytes: key version
//	        and the KMS call key
//	sdes    the keys of "a=crypto" (RFC 4568), as given      as given, or none
//
// The key schedule (internal/keyschedule) is HKDF-SHA256 with the call key
// (followed, in hybrid keying, by the exporter output) as input keying
// material, the call id as salt, and an info string naming the purpose, the
// keying mode, the sending endpoint (Config.LocalID or RemoteID), the key
// version and the protection profile. Every sender has its own master key
// and salt for every version: no two senders ever share one. The exact byte
// layout (IKM, salt, info string, sender identities, MKI, key and salt
// lengths) is specified, with test vectors that the tests check the code
// against, in docs/keyschedule.md of the repository
// (https://github.com/securecall/securecall/blob/main/docs/keyschedule.md):
// an independent implementation, such as a call recorder that holds the
// call key, derives the same SRTP keys from it.
//
// In dtls and hybrid keying DTLS negotiates the profile from
// Config.Profiles (AEAD_AES_128_GCM, then AES_CM_128_HMAC_SHA1_80 by
// default). In kms keying nothing is negotiated: both sides use the first
// of their Profiles, which is the same when both keep the default.
//
// # Rotation
//
// A new version is installed for receiving as soon as it is known, and for
// sending from its ActivateAt on. A receiver removes the versions older
// than the newest one its peer sends with, Config.RotationGrace (5 s) after
// it first saw that newest one, so late and reordered packets still
// decrypt. When the sending key nears Config.MaxPackets or
// Config.KeyLifetime, the session asks a KeySource that is a [KeyRotator]
// for a new version and calls Config.OnRotationNeeded; a key never
// protects more than the SRTP limits (2^48 SRTP, 2^31 SRTCP packets), nor
// anything after its ExpiresAt: WriteRTP then fails with ErrKeyExhausted.
//
// A receiver that meets, in an MKI, a version newer than every one it holds
// (its peer learnt of a rotation first, as after a KMS outage when the
// peer's watch reconnected sooner) fetches it at once from a KeySource that
// is a [KeyFetcher], instead of waiting for its own watch, and holds up to
// [HeldPacketLimit] such packets meanwhile; when the key arrives they are
// decrypted and delivered. If the fetch fails they are dropped and counted
// in Stats.UnknownMKIDrops. Fetches are coalesced (one at a time), retried
// no sooner than 1 s after a failure (doubling to 30 s), and only for
// versions up to 16 past the newest installed one, since the MKI is read
// before the packet is authenticated.
//
// # Security
//
// What each keying mode protects against:
//
//   - dtls: a passive eavesdropper anywhere, and an active attacker on the
//     media path (the peer must prove the certificate whose fingerprint the
//     signaling carried). Keys have forward secrecy (ECDHE). Whoever can
//     change the signaling can swap fingerprints and sit in the middle.
//   - kms: eavesdroppers and media relays, including ones that do not
//     terminate DTLS; the signaling carries only the key's URI, so an
//     attacker on the signaling path learns nothing and cannot swap keys.
//     Anyone who obtains the call key (the KMS, a compromised participant)
//     can decrypt recorded media of its versions: there is no forward
//     secrecy beyond rotation.
//   - hybrid (the default when a KeySource is set): both. An attacker who
//     swaps fingerprints in the signaling lacks the call key; a KMS
//     compromise alone cannot decrypt recorded media, because the DTLS
//     exporter output (ECDHE) is an input of every key.
//   - sdes: the keys travel in the signaling, so media is exactly as safe as
//     the signaling channel. Use it only where that channel is encrypted and
//     trusted, for SIP trunks, border elements and tools that speak nothing
//     else.
//
// The DTLS handshake starts on a datagram nobody has authenticated yet:
// ICE proves that the peer answers at its address, not that every datagram
// from that address is the peer's. A handshake attempt that fails (a
// certificate that matches no signalled fingerprint, a forged alert, a
// server flight computed for someone else's ClientHello) is discarded and
// another one runs on the same transport; as server, a ClientHello with a
// new client random starts a new attempt at once. The session fails only
// when Config.HandshakeTimeout passes or 16 attempts have failed; its error
// is ErrFingerprintMismatch if any attempt met a wrong certificate. So a
// spoofed handshake costs the real one a retry, not the call; an attacker
// who can keep injecting can still delay setup until it fails, as one who
// drops packets can.
//
// In every mode each packet is authenticated before it is used: forged,
// tampered and replayed packets (replay protection is always on, with a
// window of Config.ReplayWindow, 128 packets by default) and packets under unknown or removed key versions are
// dropped and counted in [Stats], never returned. The DTLS record layer
// carries only the handshake: the session never sends DTLS application
// data (see GO-2026-4479 in SECURITY.md), and it never sends a
// close_notify, which browsers take as the end of the call. Key material is
// never logged; [CallKey] and [SDES] print redacted. In hybrid keying the
// session keeps the DTLS exporter output in memory to derive later key
// versions, and wipes it in Close.
//
// # Path attestation
//
// In kms and hybrid keying, [Session.Attest] tells the peer, in an RTCP
// APP packet named "SCPA" (layout in attest.go) protected as SRTCP, the
// type and address of this side's local candidate on the media path; the
// peer's session hands it to Config.OnPeerAttestation. Its SRTCP keys come
// from the call key, so the attestation proves that a holder of the call
// key sent it, which no relay or router between can forge; it does not
// prove that the holder tells the truth. It is sent at once and resent
// four times within five seconds (RTCP may be lost) as packets are
// written. Attestations are taken out of the SRTCP stream before
// ReadRTCP, so the application never sees them; a packet holding only
// attestations is not delivered at all. They count in RTCPPacketsSent.
// [Session.AwaitPeerAttestation] reads until the peer's first attestation
// arrives, for a caller that must know it before sending media.
// dtls and sdes keying neither send nor report them: their keys are only
// as trustworthy as the signaling.
//
// # Concurrency
//
// All methods of [Session] are safe for concurrent use. WriteRTP and
// WriteRTCP share one mutex around the sending SRTP context (uncontended,
// about 10 ns of the 150 ns a 160-byte GCM packet takes; pion/srtp's
// contexts are not safe for concurrent use, and key rotation changes them
// while packets flow); ReadRTP and ReadRTCP share the receiving one. Concurrent calls of one Read method are
// serialized.
//
// The session starts no goroutine to read: whichever of ReadRTP and
// ReadRTCP is called reads the transport, and hands a packet of the other
// kind to a small queue (32 packets; overflow is counted as QueueDrops).
// So an application that only calls ReadRTP still gets its RTCP counted
// and can call ReadRTCP later; one that never calls ReadRTCP loses only
// RTCP. Goroutines a session owns:
//
//   - dtls and hybrid keying: during the handshake, one reader plus
//     pion/dtls's own (three). They end when the first packet from the peer
//     authenticates (proof that the peer has its keys and will never need a
//     DTLS retransmission); pion/dtls's end asynchronously, within
//     milliseconds of that.
//   - kms and hybrid keying with a KeyWatcher: one, running Watch.
//   - kms and hybrid keying with a KeyFetcher: one while a version met in
//     an MKI is fetched; it hands the held packets to the queues, waiting
//     for the reader when they are full.
//   - OnRotationNeeded and KeyRotator requests: one short-lived goroutine
//     per request, serialized,
//     so callbacks never run concurrently. Close waits for them, so a
//     callback must return promptly.
//
// No timer runs while a session is idle: key activation, expiry and grace
// periods are checked on the packet paths, and the clock is read there only
// while such an event is pending. SetReadDeadline arms one timer, which
// fires once, at the deadline.
//
// # Performance
//
// WriteRTP and ReadRTP allocate nothing per packet. See README.md for the
// measured costs of the protect and unprotect paths against the raw
// cryptography they cannot avoid.
package media
