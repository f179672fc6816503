// Package sdp is the typed session description of securecall: the offers
// and answers (RFC 3264, RFC 8829) that two calls exchange over the
// application's signaling.
//
// A [Description] models what this SDK negotiates and nothing more:
// origin, one or more media sections (audio, video, and application
// sections such as a browser's data channel, which an answer rejects) with
// payload formats,
// direction, mid, rtcp-mux, rtcp (RFC 3605), ptime and SSRCs, the BUNDLE group, ICE (credentials,
// options, candidates with every RFC 8839 field, end-of-candidates,
// ice-lite), DTLS (fingerprints, setup role), SDES crypto lines (RFC 4568)
// and the KMS key reference. [Unmarshal] parses text, [Description.Marshal]
// writes it in the layout browsers use. The wire format is read and
// written by a dependency that stays internal: no exported name of this
// package exposes its types, so it can change without breaking callers.
//
// [NewOffer] builds an offer from local [Capabilities]; [NewAnswer] answers
// a remote offer and [AcceptAnswer] checks the answer to a local offer.
// [NewLaterOffer] builds a later offer of an established session (a hold,
// a resume, an ICE restart) from the last exchange: it keeps that
// exchange's media sections, protos and origin, and carries no mid,
// BUNDLE group, rtcp port or ICE attribute that the peer's description
// did not have (RFC 3264 section 8, RFC 8843).
// Both return an [Agreement]: the keying mode, the common codecs, the DTLS
// role, the peer's ICE credentials and candidates, the key reference or
// SDES keys. What cannot be agreed fails with an error that wraps
// [ErrNegotiation] and says what failed.
//
// # Keying
//
// [Description.Keying] reads the keying mode from what a description
// carries: fingerprints only mean [KeyingDTLS]; a key-mgmt reference with
// fingerprints [KeyingHybrid], without them [KeyingKMS]; crypto lines
// [KeyingSDES]. A section with both fingerprints and crypto lines counts
// as dtls: keys negotiated in DTLS are preferred over keys in the
// signaling. [Description.Keyings] lists every mode an offer lets the
// answerer pick: such a section on RTP/SAVP or RTP/SAVPF allows dtls and
// sdes, while a key-mgmt reference allows only kms or hybrid (an answer in
// a weaker mode would be a downgrade), and a UDP/TLS proto means DTLS.
// [NewAnswer] answers in Capabilities.Keying when the offer allows it and
// otherwise fails with an error that names what the offer supports; plain
// RTP (RTP/AVP without any keying) is refused with a reason that says so.
// The answer keeps the offer's proto, as RFC 3264 requires.
//
// # Peers without ICE
//
// SIP phones, trunks and many border elements speak RFC 3264 alone: the
// address is on the "c=" line (session or media level), the port on the
// "m=" line, RTCP on the port above it or where "a=rtcp" says (RFC 3605)
// unless "a=rtcp-mux" is agreed. A section without ice-ufrag and ice-pwd is
// such a section ([Media.HasICE] is false); one credential without the
// other, or candidates without credentials, is malformed. An answer to an
// offer without ICE carries no ICE either (not even ice-lite), and
// Capabilities.NoICE makes an offer without ICE. The [Agreement] says NoICE and gives the peer's RTP
// and RTCP addresses (RemoteRTP, RemoteRTCP) and whether RTCP is muxed. A
// peer's addresses from the signaling are only where to send: whoever sends
// from them is not thereby authenticated (see the securecall package for
// how a Call latches only onto authenticated packets).
//
// Crypto lines may carry a lifetime and an MKI, and several master keys
// told apart by MKI ([Crypto.MoreKeys]); negotiation picks the first
// offered line with a known suite and one key, so that each direction has
// one master key with its own MKI, as RFC 4568 requires of each sender.
//
// # Roles
//
// The DTLS role follows RFC 5763 and RFC 8842: the offer says actpass, and
// [NewAnswer] takes active (the answerer is the DTLS client) unless the
// offer named a role, in which case it takes the other one. The ICE role
// follows RFC 8445 section 6.1.1, reported in the ICEControlling field of
// [Agreement]:
// a full agent facing an ICE-Lite peer (session-level "a=ice-lite") is
// controlling whether it offered or answered; between two full agents or
// two Lite agents the offerer is controlling.
//
// # The key-mgmt attribute
//
// In kms and hybrid keying the description names the call key with an
// RFC 4567 attribute whose protocol id is [KeyMgmtProtocol]:
//
//	a=key-mgmt:securecall <data>
//
// where <data> is the standard base64 encoding (RFC 4648 section 4, with
// padding) of a UTF-8 JSON object with exactly two members:
//
//	{"uri":"https://kms.example.com/v1/calls/42/key","version":3}
//
// "uri" is the key resource at the KMS, an absolute URI of at most 2048
// bytes without spaces or control characters; "version" is the key
// version, an integer from 0 to 2^32-1, 0 leaving the choice to the KMS.
// Any other member is rejected, so that a key can never ride along by
// mistake. The attribute may appear once per level (session or media);
// the media level wins. A key-mgmt attribute with another protocol id
// (such as MIKEY) is rejected as an unknown keying.
//
// # Validation
//
// [Unmarshal] accepts at most [MaxSize] (64 KiB) of text with CRLF or LF
// line endings; the last line must end with a line ending, so text cut off
// mid-line is reported as truncated. It rejects, with a *[ParseError] that
// names the line and the reason: lines out of the RFC 8866 order; unknown
// line types; media kinds other than audio, video and application; unknown
// protos; ports
// and payload types out of range; a media section with only one of the ICE
// credentials, or candidates without them; malformed candidates, rtcp and
// ptime attributes, fingerprints, crypto lines (the
// inline key must have the length of its suite) and key-mgmt attributes;
// and attributes repeated where they must be unique (ice-ufrag, ice-pwd,
// setup, key-mgmt and the direction per level, mid, rtcp, ptime and
// rtpmap/fmtp per payload type per section). An empty "s=" line, which RFC
// 3264's examples use, is read as "-". Attributes it does not model are skipped. No
// input makes it panic.
//
// # Security
//
// In sdes keying the description carries the SRTP master keys in the
// clear: anyone who reads the signaling can decrypt the media, and anyone
// who can modify it can substitute keys. Use sdes only when the signaling
// is encrypted (SIP over TLS, HTTPS, WSS) to a peer you trust with the
// keys. [Crypto] prints its key redacted, and [ICE] its password; a
// [ParseError] that quotes a line redacts SDES keys, ICE passwords and
// "k=" values, so that errors can be logged.
//
// In kms and hybrid keying the key-mgmt attribute carries only the key's
// URI and version, never key material: the media keys come from the
// customer's KMS, fetched by authorized devices, so reading the signaling
// reveals nothing that decrypts the media. The fingerprints of dtls and
// hybrid keying are public, but a signaling-path attacker who can change
// them can intercept DTLS-only calls; hybrid keying defends against that
// because the attacker lacks the KMS key.
//
// # Concurrency
//
// The functions of this package keep no state and are safe to call from
// any goroutine. A [Description] is a plain value: concurrent reads are
// safe, and a goroutine that modifies one must not share it meanwhile.
// [NewOffer], [NewAnswer] and [AcceptAnswer] never modify their arguments,
// and the values they return share no memory with them.
package sdp
