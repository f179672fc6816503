// Package media turns a connected packet transport (the net.Conn that ICE
// hands over) into a secure RTP/RTCP session: SRTP and SRTCP (RFC 3711,
// RFC 7714) with RTP and RTCP on one transport (RFC 5761) and DTLS
// demultiplexed from them by the first byte (RFC 7983).
//
// [NewSession] keys the session, then [Session.WriteRTP] and
// [Session.ReadRTP] carry media and [Session.WriteRTCP] and
// [Session.ReadRTCP] compound RTCP. Keys rotate during the call without
// losing a packet: [Session.InstallKey], or automatically when the
// [KeySource] is also a [KeyWatcher]. A version the KMS withdraws
// (compromised, destroyed) stops protecting media at once:
// [Session.RevokeKey], or automatically when the KeySource is a
// [KeyChangeWatcher].
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
// Every time decision of the key schedule (activation, expiry,
// KeyLifetime, the grace-period removal and the pacing of retried version
// fetches) reads Config.Clock, time.Now by default. Since none of them
// runs on a timer, a test can give the session the same fake clock as its
// KMS and move both across a rotation while packets flow on real time
// (TestClockDrivesKeySchedule). The DTLS handshake, RTCP reports,
// attestation resends and read deadlines stay on real time.
//
// A receiver that meets, in an MKI, a version newer than every one it holds
// (its peer learnt of a rotation first, as after a KMS outage when the
// peer's watch reconnected sooner) fetches it at once from a KeySource that
// is a [KeyFetcher], instead of waiting for its own watch, and holds up to
// [HeldPacketLimit] such packets meanwhile; when the key arrives, from the
// fetch, the watch or InstallKey, they are decrypted at once, before any
// later packet under that version, and delivered. If the fetch fails they
// are dropped and counted in Stats.UnknownMKIDrops. Fetches are coalesced (one at a time), retried
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
// # RTCP reports and call quality
//
// A session sends its own RTCP (RFC 3550 section 6) unless
// [RTCPConfig].Disabled says the application does: a compound packet of a
// sender report while it sends RTP (a receiver report otherwise), with one
// report block for the peer's stream once it has been heard, and an SDES
// CNAME; the path attestation rides in it too. All of it is SRTCP. The
// interval is section 6.3's: Tmin (RTCPConfig.Interval, 5 s) or the
// bandwidth-scaled one when 5% of RTCPConfig.Bandwidth cannot carry a
// report per member that often, halved for the first report, and
// randomised to 0.5 to 1.5 times that divided by e-3/2 (so 2.05 to 6.16 s
// for an audio call). There is no timer behind it: a report that is due
// goes out with the next packet the session writes or reads, so a call
// that sends and receives nothing sends no RTCP either, and the timer
// reconsideration of section 6.3.3 does not apply. Close sends a last
// report with a BYE (waiting at most 50 ms for the transport), and a BYE
// from the peer sets Quality.PeerBye and calls RTCPConfig.OnBye.
//
// Every accepted RTP packet updates the receive statistics of appendix A
// (A.1 sequence bookkeeping without probation, since SRTP authenticates
// each packet; A.3 expected, lost and fraction lost per interval; A.8
// interarrival jitter) in [Stats].Quality. SRTP drops duplicates and
// packets more than 128 behind the newest before they are counted, so
// Received counts each packet once and Lost never goes negative;
// Reordered counts accepted packets that came after a later one,
// Duplicates and Late the replays SRTP refused (copies of packets
// accepted, and packets that fell behind its window: those stay lost).
// Replays are refused before authentication, so those two counts are
// informational: a party on the path can raise them. Reports from the
// peer give Quality.Remote (its view of this side's stream) and, for a
// side that sends sender reports, Quality.RTT from the report block's
// LSR and DLSR (1/65536 s resolution).
//
// Quality.RFactor and MOS come from the E-model of ITU-T G.107,
// simplified as G.107 and G.113 allow: every parameter at its G.107
// default except the delay and loss terms (R = 93.2 - Idd - Ie,eff), no
// echo impairments (an endpoint with echo cancellation), random loss
// (BurstR 1), the codec's Ie and Bpl from G.113 appendix I (G.711 with
// packet loss concealment: 0 and 25.1; G.729: 11 and 19; Opus and G.722
// are rated like G.711 on the narrowband scale, for G.113 gives no
// narrowband values for them), the cumulative loss of the received
// stream, and a mouth-to-ear delay of half the RTT plus twice the jitter
// (a jitter buffer) plus one frame. MOS follows G.107 annex B, so a
// perfect narrowband call scores 4.41; read it as a trend and to compare
// calls, not as a listening test's score.
//
// [SampleWriter] sends one frame per call: it keeps the SSRC, a sequence
// number from a random start, a timestamp advancing at the codec's clock
// rate from a random start, and the marker bit on the first packet of
// each talkspurt ([SampleWriter.Skip] marks silence not sent).
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
//   - kms and hybrid keying with a KeyChangeWatcher or KeyWatcher: one,
//     running WatchChanges (preferred) or Watch.
//   - kms and hybrid keying with a KeyFetcher: one while a version met in
//     an MKI is fetched; it hands the held packets to the queues, waiting
//     for the reader when they are full. When InstallKey installs a
//     version whose packets are held, one short-lived goroutine delivers
//     them likewise.
//   - With Config.OnRTP on a transport that does not push: one reader,
//     for the session's life. On an ice.Endpoint's conn in dtls and
//     hybrid keying: one short-lived goroutine that retires the DTLS
//     association, off the Endpoint's reader.
//   - OnRotationNeeded and KeyRotator requests: one short-lived goroutine
//     per request, serialized,
//     so callbacks never run concurrently. Close waits for them, so a
//     callback must return promptly.
//
// Close waits for every callback in progress (OnRTP, OnBye,
// OnPeerAttestation, OnRotationNeeded), whichever goroutine runs it, and
// none is called once Close has returned: an application may free what its
// callbacks use then. So no callback may call Close itself; one that wants
// the session closed starts a goroutine to do it.
//
// No timer runs while a session is idle: key activation, expiry and grace
// periods are checked on the packet paths, and the clock is read there only
// while such an event is pending; RTCP reports are sent from the packet
// paths too (a reader sends a due report only if no writer holds the send
// lock, which then sends it itself), and each packet reads the clock once
// for them. SetReadDeadline arms one timer, which
// fires once, at the deadline.
//
// # Performance
//
// WriteRTP and ReadRTP allocate nothing per packet, reports and receive
// statistics included (TestQualityZeroAllocsWithReports; a report costs
// about 0.3 µs and the statistics about 60 ns per received packet, a
// clock read included, BenchmarkQualityReport and
// BenchmarkQualityReceiveUpdate). A session keeps no packet buffer of its
// own between packets: writes build and protect in pooled buffers, and on
// a transport that lends its datagrams (an ice.Endpoint's) reads decrypt
// in the transport's buffer. See BENCHMARKS.md for the measured costs of
// the protect and unprotect paths against the raw cryptography they
// cannot avoid.
//
// # Push delivery
//
// With Config.OnRTP set, the session hands each authenticated RTP packet
// to OnRTP on the goroutine that delivers it, and ReadRTP returns an error
// wrapping ErrRTPHandled. On a transport that pushes its datagrams (an
// ice.Endpoint's conns) that goroutine is the transport's reader: the
// session decrypts in the reader's buffer and keeps no goroutine, queue or
// buffer of its own for receiving, and the DTLS handshake's datagrams
// reach pion/dtls the same way (no pump goroutine). Media from another
// call on the same Endpoint comes on the Endpoint's hand-over goroutine,
// in a pooled copy, and a datagram that arrives while another goroutine
// runs OnRTP for the session is delivered by that goroutine next. On any
// other transport the session runs one goroutine that reads it. A packet
// held while its key version is fetched comes on the fetch's or the key
// watch's goroutine, on one that InstallKey starts, or on the goroutine
// delivering the next packet, before that packet. Media that arrived
// before the keys comes on the goroutine calling NewSession, before it
// returns: securecall's Call has not published the session then, so its
// WriteRTP from OnRTP for those packets fails with ErrNotConnected. Packets pass the
// same checks as on ReadRTP's path (authentication, replay, key versions,
// on-demand fetches); media that arrives before the keys waits in the
// early queue and is delivered first once they are in. RTCP still goes to
// ReadRTCP, which then only waits on its queue (SetReadDeadline bounds it,
// and it returns the transport's error once the transport stops
// delivering). The goroutine that delivers to OnRTP fills that queue, so
// ReadRTCP belongs on a goroutine of its own: called from OnRTP it gets
// only what is queued already, or waits for its deadline or Close while
// nothing is delivered. Close waits for an OnRTP call in progress, and none starts
// after Close.
package media
