package securecall

import (
	"crypto/tls"
	"log/slog"
	"time"

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
	// otherwise.
	//
	// A zero Keying with a KeySource means "kms or hybrid, never less": the
	// call offers hybrid, and as answerer it accepts a kms or hybrid offer
	// and refuses any other (such as an offer whose a=key-mgmt line was
	// stripped on the signaling path, which would otherwise read as dtls)
	// with [ErrDowngrade]. A Call with a KeySource runs dtls keying only when
	// Keying is set to sdp.KeyingDTLS. A Keying set here is the only mode
	// the call accepts. Once started, a call keeps its keying: an answer or
	// a restart offer in another mode is refused, and one that drops the KMS
	// key fails with ErrDowngrade. A refused description changes nothing.
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
	// itself, and must not call Close (which waits for that goroutine).
	// A later description that keeps the ICE session (Hold,
	// Resume, the answer to a later offer) carries every candidate passed
	// here so far, and a=end-of-candidates once gathering is done, so
	// that a peer that takes it as a full description keeps the path; a
	// restart's description starts again with none.
	OnCandidate func(sdp.Candidate)

	// OnGatheringDone, if set (it needs OnCandidate), is called once a
	// trickled gathering has handed its last candidate to OnCandidate, on
	// the same goroutine and after it, so that the application can tell
	// the peer that no more candidates follow (RFC 8838 section 4: an
	// a=end-of-candidates in a SIP INFO, RFC 8840, or a null candidate
	// to a browser). err is nil when the gathering completed, and says
	// why when it failed (under ice.RelayOnly with no TURN server
	// answering, for one), when the call has no candidate to send and
	// should be ended or retried. Each gathering (the first description,
	// each Restart) reports at most once; one that a restart replaced, or
	// that Close cut short, reports nothing, and from then on neither it
	// nor OnCandidate hands over anything of that gathering. Like
	// OnCandidate it must not call Close, which waits for the goroutine
	// it runs on: to end the call on an error, call Close from another
	// goroutine.
	OnGatheringDone func(err error)

	// Media configures the media session: key budgets, the replay window,
	// rotation requests and media-silence reports. If zero, see
	// [MediaConfig] for its defaults.
	Media MediaConfig

	// RestartTimeout is how long a later offer (from Restart, Hold or Resume)
	// waits for its answer before the call rolls it back by itself (see
	// [Call.Rollback]), so that an offer lost on the way or a peer that never
	// answers cannot wedge the call. If zero, defaults to DefaultRestartTimeout
	// (10 s).
	RestartTimeout time.Duration

	// OnStateChange, if set, is called with each new state. On
	// StateDisconnected while Call.Path reports a path (it stopped
	// answering) an application would usually call Restart and send the
	// new offer to the peer; both ends may do so at once (Answer resolves
	// the glare, see [ErrGlare]). StateDisconnected with a zero Path is an
	// ICE restart under way (this end's Restart, or its Answer to the
	// peer's restart offer), which needs no other restart: StateConnected
	// follows once the new path is selected. StateFailed ends the call:
	// after ice.Config.DisconnectedTimeout plus ice.Config.FailedTimeout
	// (30 s by default) without an answer on any path, including while a
	// restart runs; only Close is left to do. It is called on a goroutine
	// of the Call or of the caller of the method that changed the state
	// (Answer, SetAnswer, Restart, Close), never concurrently with itself,
	// in the order of the changes; a change made by a method it calls
	// (Restart, say) is reported after it returns. It must not call Close
	// (start a goroutine to do that).
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

	// RTCP configures the RTCP the Call sends and reads itself: sender and
	// receiver reports (RFC 3550) with SDES CNAME at the RFC's interval
	// and a BYE on Close, all over SRTCP, and the receive statistics and
	// quality estimate in Stats().Quality. If zero, reports are on at the
	// RFC 3550 interval (see [media.RTCPConfig]); set Disabled when the
	// application writes its own RTCP. SSRC, CNAME, ClockRate and Codec
	// are filled in from the call's description and negotiated codec when
	// zero; a Codec filled in follows a later switch of codec. Close waits for an RTCP.OnBye call in progress (see
	// media.RTCPConfig.OnBye), so OnBye must not call Close: a call that
	// hangs up on the peer's BYE starts a goroutine to do it.
	RTCP media.RTCPConfig

	// Logger receives the call's diagnostic messages. If nil, the call is
	// silent. Keys, ICE passwords and credentials are never logged.
	Logger *slog.Logger
}

// DefaultRestartTimeout is the default of Config.RestartTimeout.
const DefaultRestartTimeout = 10 * time.Second

// Bounds New checks in MediaConfig, as the media package does.
const (
	maxReplayWindow = 1 << 15
	maxSRTPPackets  = 1 << 48
)

// withDefaults returns a copy of c with the zero fields the Call itself
// uses set; the ice and media packages apply their own defaults.
func (c Config) withDefaults() Config {
	if c.RestartTimeout <= 0 {
		c.RestartTimeout = DefaultRestartTimeout
	}
	return c
}

// MediaConfig holds the media session settings that matter to an
// application. Its zero value is valid: each field says its default, which
// is the media package's.
type MediaConfig struct {
	// MaxPackets is how many SRTP (or SRTCP) packets a key version may
	// protect before the call asks for a rotation (see OnRotationNeeded).
	// If zero, defaults to media.DefaultMaxPackets (2^30).
	MaxPackets uint64

	// KeyLifetime is how long a key version may be used for sending before
	// the call asks for a rotation. If zero, defaults to no time limit.
	KeyLifetime time.Duration

	// RotationGrace is how long a replaced key version stays installed for
	// late and reordered packets. If zero, defaults to
	// media.DefaultRotationGrace (5 s).
	RotationGrace time.Duration

	// Clock is the time the call's key schedule goes by (media.Config's
	// Clock): when a new key version activates for sending, when a version
	// expires, when KeyLifetime runs out and when versions the peer has
	// moved on from are removed after RotationGrace. Media packets, ICE,
	// DTLS and RTCP stay on real time. Tests give the call the same fake
	// clock as the KMS (kmsserver.Config Clock and WakeAt) and the
	// kms.Client (kms.Config.Clock), so that a rotation needs no wall-time
	// wait. If nil, defaults to time.Now.
	Clock func() time.Time

	// ReplayWindow is the SRTP and SRTCP replay window in packets: a packet
	// further behind the newest one received is dropped as a replay. It
	// must lie above media.HeldPacketLimit and at most 32768. If zero,
	// defaults to media.DefaultReplayWindow (128).
	ReplayWindow uint

	// HandshakeTimeout bounds the DTLS handshake and the key fetch when the
	// call connects. If zero, defaults to media.DefaultHandshakeTimeout
	// (15 s).
	HandshakeTimeout time.Duration

	// OnRotationNeeded, if set, is called once per key version when the
	// sending key reaches MaxPackets or KeyLifetime. In kms and hybrid
	// keying the call first asks its KeySource for a new version itself
	// when the KeySource implements [media.KeyRotator] (a *kms.Client
	// does); in dtls keying a new key needs a new call. It runs on a
	// goroutine of the call, never concurrently with itself. If nil,
	// requests are only logged (and passed to a KeyRotator).
	OnRotationNeeded func(media.RotationRequest)

	// SilenceTimeout, if positive, turns on media-silence reports: when no
	// authenticated SRTP or SRTCP packet has arrived for this long on a
	// connected call, OnSilence is called with true, and with false when
	// one arrives again. ICE consent keeps a path alive without media, so
	// this is how an application tells a silent peer. If zero, defaults to
	// off.
	SilenceTimeout time.Duration

	// OnSilence receives the media-silence reports (see SilenceTimeout).
	// It runs on a goroutine of the call, never concurrently with itself,
	// and must not call Close (start a goroutine to do that).
	OnSilence func(silent bool)

	// OnRTP, if set, receives every authenticated RTP packet of the call
	// in place of [Call.ReadRTP], which then returns an error wrapping
	// media.ErrRTPHandled: push delivery, for a gateway that carries many
	// calls. On an ice.Endpoint (ice.Config.Endpoint) it runs on the
	// Endpoint's one reader goroutine, which decrypts the packet in its
	// own buffer, so a call has no goroutine of its own on the receive
	// path; every call on the Endpoint waits while it runs, so it must be
	// quick and must not block. Media from a call on the same Endpoint
	// comes on the Endpoint's hand-over goroutine, in a pooled copy, and a
	// datagram that arrives while another goroutine runs OnRTP for the
	// call is delivered by that goroutine next. On the call's own sockets
	// it runs on one goroutine of the call. A packet held while its key
	// version is fetched comes on the fetch's or the key watch's
	// goroutine (or one the session starts for InstallKey, or the one
	// delivering the next packet). It is never called concurrently with
	// itself, and packets come in the order read (but for one held while
	// its key version is fetched). Media that arrived while the call's
	// keys were set up is pushed during media.NewSession, before the Call
	// publishes its session: WriteRTP from OnRTP for such packets fails
	// with ErrNotConnected. h's CSRC and Extension and payload are valid
	// only until it returns. It may write to this call or others, but
	// must not call Close (start a goroutine to do that); after Close
	// returns it is not called again. ReadRTCP still reads RTCP, and
	// SetReadDeadline then bounds ReadRTCP only. See media.Config.OnRTP.
	OnRTP func(h media.RTPHeader, payload []byte)
}

// session returns the media.Config fields that c sets.
func (c MediaConfig) session() media.Config {
	return media.Config{
		MaxPackets:       c.MaxPackets,
		KeyLifetime:      c.KeyLifetime,
		RotationGrace:    c.RotationGrace,
		Clock:            c.Clock,
		ReplayWindow:     c.ReplayWindow,
		HandshakeTimeout: c.HandshakeTimeout,
		OnRotationNeeded: c.OnRotationNeeded,
	}
}
