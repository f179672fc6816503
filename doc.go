// Package securecall is an embeddable SDK for secure calling endpoints:
// softphones, contact-center agents, gateways and on-premises calling
// appliances that must keep media on the shortest path and media keys in the
// customer's hands.
//
// Two endpoints exchange session descriptions over whatever signaling the
// application already has, find the shortest media path with ICE (host
// candidates first, server-reflexive next, a TURN relay only when nothing
// direct works), and carry SRTP media whose keys come from the customer's
// own key management service, rotated during the call without losing a
// packet.
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
// # Security
//
// In kms and hybrid keying the session description carries only the URI of
// the call's key resource, never key material; each device fetches the key
// with its own credentials and receives it wrapped to its own key. See the
// media and kms packages for the full model.
//
// # Concurrency
//
// Every type documents which of its methods may be called concurrently.
// Every goroutine a type starts is joined by its Close method.
package securecall
