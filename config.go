package securecall

import (
	"crypto/tls"
	"log/slog"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// Config configures a Call. The zero value is valid: a call in dtls keying
// that gathers host candidates on every interface. New never modifies the
// Config it is given.
type Config struct {
	// ICE configures candidate gathering, STUN and TURN servers and the
	// media-path policy. If zero, see [ice.Config] for its defaults.
	ICE ice.Config

	// Keying selects how SRTP keys are made: sdp.KeyingDTLS,
	// sdp.KeyingKMS, sdp.KeyingHybrid or sdp.KeyingSDES. If zero, defaults
	// to sdp.KeyingHybrid when KeySource is set and to sdp.KeyingDTLS
	// otherwise. An answerer follows the offer's keying and fails Answer if
	// it differs from a Keying set here.
	//
	// sdp.KeyingSDES (RFC 4568, for SIP trunks, phones and border
	// elements) is never a default and never chosen by an answerer on its
	// own: the SRTP master keys travel in the session descriptions, so
	// anyone who reads the signaling can decrypt the media and anyone who
	// can change it can replace the keys. Use it only when the signaling is
	// encrypted and authenticated hop by hop to a peer trusted with the
	// keys (SIP over TLS, HTTPS, WSS). Each side sends with its own fresh
	// key; see the package documentation.
	Keying sdp.Keying

	// KeySource supplies the call's keys in kms and hybrid keying, for
	// example a *kms.Client. If it also implements [media.KeyWatcher],
	// rotations reach the media session without the application doing
	// anything. If nil, the call can use dtls keying only.
	KeySource media.KeySource

	// KeyURI names the call's key resource in the KMS. The offerer sets it
	// in kms and hybrid keying (see kms.Client.CreateCall); the answerer
	// takes it from the offer and may leave it empty.
	KeyURI string

	// Profiles lists the SRTP protection profiles in order of preference.
	// If nil, defaults to AEAD_AES_128_GCM, then AES_CM_128_HMAC_SHA1_80.
	Profiles []media.Profile

	// Codecs lists the audio codecs offered or accepted, in order of
	// preference. If nil, defaults to the sdp package's defaults: Opus,
	// PCMU and PCMA.
	Codecs []sdp.Format

	// Certificate is the call's DTLS identity in dtls and hybrid keying.
	// If zero, New generates a self-signed ECDSA P-256 certificate.
	Certificate tls.Certificate

	// OnCandidate, if set, turns on trickle ICE: Offer and Answer return
	// before gathering completes and each further local candidate is
	// passed here, to be sent to the peer, which hands it to
	// [Call.AddRemoteCandidate]. If nil, Offer and Answer wait for
	// gathering to complete and put every candidate in the description.
	// It is called on a goroutine of the Call, never concurrently with
	// itself.
	OnCandidate func(sdp.Candidate)

	// OnStateChange, if set, is called with each new state. On
	// StateDisconnected an application would usually call Restart and
	// send the new offer to the peer. It is called
	// on a goroutine of the Call or of the caller of Close, never
	// concurrently with itself, and must not call Close (start a
	// goroutine to do that).
	OnStateChange func(State)

	// OnPathChange, if set, is called when ICE selects a new media path.
	// It runs on a goroutine of the ice transport, never concurrently
	// with itself.
	OnPathChange func(ice.Path)

	// NoICE makes this call's offers carry no ICE, for SIP gear that
	// speaks none (RFC 3264 alone): the offer's "c=" and "m=" lines carry
	// a socket of the call's own, "a=rtcp" the one for RTCP. An offer
	// without ICE is answered without ICE whatever NoICE says. It cannot
	// be combined with ice.RelayOnly. If false, offers carry ICE.
	NoICE bool

	// OfferRTCPComponent makes this call's ICE offers also gather ICE
	// component 2 and carry "a=rtcp", next to "a=rtcp-mux" (RFC 5761
	// section 5.1.1), so that a peer that declines rtcp-mux (baresip by
	// default, many SIP phones) can still answer; RTCP then runs on
	// component 2. It costs a second ICE agent and its sockets per call,
	// closed as soon as the answer accepts rtcp-mux. If false, offers are
	// rtcp-mux only and an answer that declines it fails SetAnswer.
	OfferRTCPComponent bool

	// Logger receives the call's diagnostic messages. If nil, the call is
	// silent. Keys, ICE passwords and credentials are never logged.
	Logger *slog.Logger
}
