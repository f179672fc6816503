// Package securecall is an embeddable SDK for secure calling endpoints:
// softphones, contact-center agents, gateways and on-premises calling
// appliances that must keep media on the shortest path and media keys in the
// customer's hands.
//
// An application makes a [Call] with [New], carries two session
// descriptions over the signaling it already has ([Call.Offer],
// [Call.Answer], [Call.SetAnswer]), waits for [Call.Connect], and then sends
// and receives RTP with [Call.WriteRTP] and [Call.ReadRTP]. Underneath, ICE
// finds the shortest working media path (host candidates first,
// server-reflexive next, a TURN relay only when nothing direct works), and
// SRTP protects the media with keys that, in kms and hybrid keying, come
// from the customer's own key management service and rotate during the call
// without losing a packet.
//
// # Keying
//
// [Config.Keying] selects where the SRTP keys come from:
//
//   - dtls: a DTLS-SRTP handshake (RFC 5764) whose certificates are bound to
//     the session descriptions by their fingerprints. This is what browsers
//     and standard WebRTC and SIP stacks speak.
//   - kms: keys derived from a call key that each device fetches from the
//     KMS with its own credentials; the descriptions carry only the key's
//     URI. Works through media relays that do not terminate DTLS.
//   - hybrid (the default when [Config.KeySource] is set): keys derived from
//     both the DTLS handshake and the KMS call key.
//   - sdes: the SRTP master keys travel in the descriptions' "a=crypto"
//     lines (RFC 4568), for SIP trunks, phones and border elements that
//     speak nothing else. Only when [Config.Keying] says so: never a
//     default, and an answerer never picks it on its own, even from an offer
//     that allows dtls and sdes. Each side sends with a fresh key of its own
//     (RFC 4568 keys are per direction), offered for the suites
//     AEAD_AES_128_GCM, AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80 and _32
//     ([DefaultSDESProfiles], or [Config.Profiles]); the peer's MKI is
//     honoured on receive, and lines that switch off encryption or
//     authentication (UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP,
//     UNAUTHENTICATED_SRTP) or change the key derivation rate are never
//     accepted. This side's lines carry no lifetime: its key is fresh per
//     call and bounded by the SRTP packet limits; a peer's lifetime is
//     kept in the agreement and is the peer's to respect.
//
// The key schedule of kms and hybrid keying is specified byte for byte,
// with test vectors, in docs/keyschedule.md of the repository.
//
// Every sender derives its own SRTP master key; each packet names its key
// version in the SRTP MKI, so receivers install a new version as soon as the
// KMS publishes it and senders switch at its activation time with no packet
// lost.
//
// # Security
//
// What an attacker can do depends on the keying:
//
//   - On the signaling path (can read and change the descriptions): in dtls
//     keying, swap the fingerprints and sit in the middle of the media, as
//     with any DTLS-SRTP whose signaling is not authenticated. In kms and
//     hybrid keying they learn the key's URI only, and without a device
//     authorized at the KMS they cannot derive any SRTP key; changing the
//     descriptions can only break the call: a Call with a KeySource never
//     falls back to dtls keying unless Config.Keying asks for it, so an
//     offer, answer or restart stripped of its a=key-mgmt line fails with
//     [ErrDowngrade] instead of leaving the customer's keys.
//   - Holding the KMS (or a participant's device credentials): in kms keying,
//     decrypt media it records. In hybrid keying, not recorded media: the
//     keys also depend on the DTLS handshake's ephemeral ECDH secret, which
//     the KMS never sees (forward secrecy). Only by also being in the middle
//     of both signaling and media while the call is set up could it read
//     hybrid media.
//   - A TURN relay (or any router) sees only SRTP: the timing and sizes of
//     packets and the endpoints' addresses, never the media.
//   - A participant removed from the call's key resource at the KMS cannot
//     fetch the version the KMS makes at the removal, so once the senders
//     switch to it the removed device can decrypt nothing more.
//   - sdes keying: whoever reads the signaling has the keys and can
//     decrypt the media; whoever can change it can replace them. Use sdes
//     only over signaling that is encrypted and authenticated hop by hop
//     (SIP over TLS) to a peer trusted with the keys.
//
// A Call with a KeySource never falls back to dtls keying on its own (see
// [ErrDowngrade]). The MKI of an SRTP packet is read before the packet is
// authenticated, so a party on the media path can make a receiver fetch a
// version that does not exist: at most one fetch runs at a time, failures
// are retried no sooner than 1 s (doubling to 30 s), and only versions up
// to 16 past the newest held are fetched.
//
// Keys, ICE passwords and credentials are never logged.
//
// # Peers without ICE
//
// SIP phones and trunks that speak RFC 3264 alone send descriptions
// without ICE: an address on "c=", a port on "m=", RTCP on the next port
// or where "a=rtcp" says. A Call answers such an offer without ICE, from a
// socket pair of its own (an ice.Direct), and [Config.NoICE] makes it offer
// that way. Media goes to the signalled address; the Call moves to the
// address the peer really sends from (symmetric RTP, for peers behind NAT)
// only on a packet that authenticates under SRTP or SRTCP, so a third party
// that sends first, forges packets or replays the peer's cannot take the
// stream. [Call.Path] then says NoICE, the address in use and whether it was
// latched. An attacker on the media path who can drop the peer's packets and
// race a copy of a fresh one from elsewhere can still move the stream (it
// stays encrypted and authenticated; the attacker can only drop it, which
// an on-path attacker can do anyway). Policies apply: ice.RelayOnly refuses
// peers without ICE (they can only be reached on this host's address), and
// ice.DirectOnly refuses a peer, and never latches onto a source, outside
// the site's networks. A call without ICE has no ICE to restart; a later
// offer of the peer that moves its media (a re-INVITE with a new c=/m=
// address, from a border element after a transfer or a phone that changed
// network) moves the stream to the new signalled address under the same
// rules, and one whose address the call would not take for a first offer
// is refused and changes nothing. Such gear may also change the o= session
// id inside one dialog (a B2BUA passing on the new party's description
// after a transfer), which RFC 3264 forbids: in sdes and dtls keying, where
// the session id names no key, a Call takes the description as the peer's
// session from then on (its keys and fingerprint must still be the call's);
// in kms and hybrid keying the session ids name the call's senders in the
// key schedule, so Answer and SetAnswer refuse it with a
// [*SessionChangedError] and the call goes on unchanged: a new party needs
// a new Call.
//
// # Media path
//
// [ice.Config.Policy] chooses the path: ice.PreferDirect (the default: a
// direct path when one works, the relay otherwise), ice.DirectOnly (media
// stays local: relays are never gathered or used, and the peer's address
// must lie in ice.Config.SiteNetworks whatever its candidate claims) and
// ice.RelayOnly (local addresses are never revealed to the peer).
// [Call.Path] reports the chosen path and [Config.OnPathChange] each
// change. In kms and hybrid keying each end attests its own end of the
// path inside SRTCP; the path reports what the peer attested, and a
// DirectOnly call whose peer attests a relay fails with ice.ErrPolicy. A
// DirectOnly call in those keying modes waits up to 2 s for the peer's
// attestation before [Call.Connect] returns (a peer that attests nothing
// is then unattested), so that no media is sent to a peer that attests a
// relay. The package documentation of ice says what DirectOnly can and
// cannot prove. A call whose path stops
// answering moves to [StateDisconnected]; [Call.Restart] then restarts ICE
// without ending the call. An ICE restart drops the old path at once: the
// call is StateDisconnected, with a zero Path, until the new path is
// selected. A path that stays dead past the failed timeout
// ends the call: [StateFailed], with [Call.Context] cancelled by a cause
// wrapping ice.ErrNoPath, which reads and writes then return.
//
// # Offer and answer
//
// The exchange of descriptions is a state machine ([SignalingState]: stable,
// have-local-offer, have-remote-offer, closed), apart from the call's [State].
// [Call.Offer], [Call.Restart], [Call.Hold] and [Call.Resume] leave the call in
// have-local-offer until [Call.SetAnswer]; [Call.Rollback] abandons the offer,
// and an unanswered later offer rolls back by itself after
// [Config.RestartTimeout]. [Call.Answer] recognizes what an offer is to a
// started call: the same offer again (same o= version and ICE credentials, as a
// retransmitting signaling layer sends it) gets the same answer and changes
// nothing; an older version (a late copy of an earlier offer) is refused and
// changes nothing; new ICE credentials are an ICE restart; a new version with
// the same credentials keeps the ICE session. When both ends offer at once (glare), the
// end that made the call's first offer wins (before the call has started, the
// end with the larger o= session id): its Answer returns [ErrGlare], and the
// other end's Answer rolls its own offer back and answers. Restarting on
// StateDisconnected is therefore safe from both ends. A restart replaces the
// ICE session as soon as it begins: one that fails while gathering, or is
// rolled back, leaves the call without a path until another restart, from
// either end, succeeds.
//
// Every exchange sets the media direction (RFC 3264): a SIP peer holds the
// call with a re-offer of sendonly or inactive (without ICE, also with
// the old-style connection address 0.0.0.0) and resumes it with
// sendrecv, and an answer of sendonly or inactive to this end's offer
// holds it too. This end holds the peer with [Call.Hold] (a later offer
// of sendonly that keeps the ICE session, or without ICE the addresses,
// and the keys and codec) and resumes it with [Call.Resume]; the answer
// goes to SetAnswer, which restarts nothing for it. Every later offer of
// a Call (Hold, Resume, Restart) is built from the last exchange and
// carries nothing it did not agree: the same media sections, protos and
// origin, a mid and a BUNDLE group only if the peer's description had
// them, no a=rtcp beside an agreed rtcp-mux, and no ICE attribute (not
// even ice-lite) toward a peer without ICE.
// [Call.Direction] reports the direction; while this end may not send,
// WriteRTP and WriteSample send nothing, return nil and count what they
// withheld in [Stats].RTPWithheld, and RTCP goes on. A later exchange
// keeps the call's codec when it lists it and may switch the call to
// another at the same RTP clock rate; one that would change the clock
// rate is refused with an error wrapping sdp.ErrNegotiation (see
// [Call.Answer]).
//
// # Keys during the call
//
// In kms and hybrid keying a receiver that meets a key version it does not
// hold, newer than those it has (its peer's KMS watch learnt of a rotation
// first, for example after a KMS outage), fetches it at once when the
// KeySource can ([media.KeyFetcher]; kms.Client can) and holds up to
// media.HeldPacketLimit packets meanwhile. A sender that nears its key's
// packet budget or lifetime ([MediaConfig]) asks its KeySource for a
// rotation ([media.KeyRotator]).
//
// # Call quality
//
// A Call sends RTCP sender and receiver reports itself (RFC 3550: SDES
// CNAME, at the RFC's interval of about 5 s for audio, a BYE on Close,
// all over SRTCP; [Config].RTCP turns them off for an application that
// writes its own) and reads the peer's. [Call.Stats] carries in Quality
// what the Call measured of the stream it receives (expected, received
// and lost packets, the loss fraction of the last interval, reordered,
// duplicate and late packets told apart from loss, interarrival jitter),
// what the peer reported of the stream it sends, the round trip from the
// reports, and an R-factor and MOS from a simplified ITU-T G.107 E-model
// for the negotiated codec (the media package documentation states the
// simplification; 4.41 is the best a narrowband call scores). Path().RTT
// follows the reports while media flows. [Call.WriteSample] sends one
// frame per call and numbers, times and marks the packets itself.
//
// # Packages
//
//   - [github.com/securecall/securecall/sdp]: typed session descriptions,
//     offer/answer negotiation.
//   - [github.com/securecall/securecall/ice]: candidate gathering, STUN and
//     TURN fallback, media-path policy, ICE-Lite.
//   - [github.com/securecall/securecall/media]: SRTP and SRTCP over a
//     connected transport with DTLS, KMS, hybrid or SDES keying and
//     loss-free key rotation.
//   - [github.com/securecall/securecall/kms]: the KMS client and a reference
//     KMS server.
//
// # Concurrency
//
// The methods of a Call may be called from any goroutine. ReadRTP and
// ReadRTCP may each be used by one goroutine at a time while other
// goroutines write. Callbacks in [Config] say on which goroutine they run.
// Every goroutine a Call starts is joined by [Call.Close].
package securecall
