package media

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/securecall/securecall/sdp"
)

// Defaults of Config fields; a test checks the documentation against them.
const (
	// DefaultRotationGrace is how long a replaced key version stays
	// installed for receiving.
	DefaultRotationGrace = 5 * time.Second
	// DefaultMaxPackets is the per-key packet budget before a rotation is
	// requested: 2^30, far below the SRTP (2^48) and SRTCP (2^31) limits,
	// and about 6 days of 2,000 packets per second.
	DefaultMaxPackets = 1 << 30
	// DefaultHandshakeTimeout bounds the DTLS handshake and the key fetch.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultReplayWindow is the SRTP and SRTCP replay window in packets,
	// libsrtp's default. Reordered packets within the window are
	// accepted; a repeated index, or one older than the window, is always
	// dropped. It must stay above HeldPacketLimit, so that held packets
	// released behind newer ones are not taken for replays.
	DefaultReplayWindow = 128
	// maxReplayWindow bounds Config.ReplayWindow: a larger window costs
	// time and memory on every packet.
	maxReplayWindow = 1 << 15
	// DefaultRetransmitInterval is how long a DTLS handshake flight waits
	// for its answer before it is sent again when the path's round-trip
	// time is not known: RFC 6347 section 4.2.4.1's initial timer.
	DefaultRetransmitInterval = time.Second
	// MinRetransmitInterval is the shortest retransmission interval
	// derived from Config.HandshakeRTT.
	MinRetransmitInterval = 100 * time.Millisecond
)

// DefaultProfiles is the DTLS-SRTP preference order used when
// Config.Profiles is empty.
var DefaultProfiles = []Profile{ProfileAEADAES128GCM, ProfileAES128CMHMACSHA1_80}

// Hard SRTP limits (RFC 3711 section 9.2): a key never protects more.
const (
	maxSRTPPackets  = 1 << 48
	maxSRTCPPackets = 1<<31 - 1
)

// DTLSRole says which side of the DTLS handshake a session plays. In SDP
// offer/answer, "a=setup:active" is the client and "a=setup:passive" the
// server (RFC 5763).
type DTLSRole int

const (
	// DTLSClient starts the handshake (setup:active).
	DTLSClient DTLSRole = iota + 1
	// DTLSServer waits for the peer's ClientHello (setup:passive).
	DTLSServer
)

// String returns "client" or "server".
func (r DTLSRole) String() string {
	switch r {
	case DTLSClient:
		return "client"
	case DTLSServer:
		return "server"
	}
	return fmt.Sprintf("DTLSRole(%d)", int(r))
}

// SDES holds the keys of sdes keying (RFC 4568): the master key and salt of
// each direction as "a=crypto" carries them. They are secret; SDES prints
// redacted. SDES keying is only as safe as the signaling that carried the
// keys: use it only where the signaling itself is encrypted and trusted.
type SDES struct {
	// Profile is the crypto suite both sides agreed on.
	Profile Profile
	// LocalKey is the master key followed by the master salt this side
	// sends with; RemoteKey the one the peer sends with.
	LocalKey, RemoteKey []byte
	// LocalMKI and RemoteMKI are the optional MKI values of each direction
	// ("inline:KEY|2^20|1:4" carries MKI 1 in 4 bytes). Empty means no MKI.
	LocalMKI, RemoteMKI []byte
}

// String describes s without its keys.
func (s SDES) String() string {
	return fmt.Sprintf("SDES{Profile: %s, LocalKey: [REDACTED], RemoteKey: [REDACTED], LocalMKI: %x, RemoteMKI: %x}",
		s.Profile, s.LocalMKI, s.RemoteMKI)
}

// GoString is like String, so that %#v does not reveal the keys either.
func (s SDES) GoString() string { return s.String() }

// LogValue implements [slog.LogValuer]; the keys are never logged.
func (s SDES) LogValue() slog.Value {
	return slog.GroupValue(slog.String("profile", s.Profile.String()))
}

// RotationReason says why a rotation is requested.
type RotationReason int

const (
	// RotationPacketBudget: the sending key protected Config.MaxPackets
	// SRTP or SRTCP packets.
	RotationPacketBudget RotationReason = iota + 1
	// RotationLifetime: the sending key has been in use for
	// Config.KeyLifetime.
	RotationLifetime
)

// String returns "packet budget" or "lifetime".
func (r RotationReason) String() string {
	switch r {
	case RotationPacketBudget:
		return "packet budget"
	case RotationLifetime:
		return "lifetime"
	}
	return fmt.Sprintf("RotationReason(%d)", int(r))
}

// RotationRequest asks the application (or its KMS) for a new key version.
type RotationRequest struct {
	// Keying is the session's keying mode. In dtls and sdes keying a new
	// key needs a new session (a new handshake or offer/answer).
	Keying sdp.Keying
	// Version is the key version in use for sending (0 in dtls and sdes
	// keying without MKI).
	Version uint32
	// Reason says which limit was reached.
	Reason RotationReason
	// RTPPackets and RTCPPackets are the packets protected with the key.
	RTPPackets, RTCPPackets uint64
}

// Config configures a [Session]. The zero value is not enough on its own:
// every keying mode needs its peer's identity or keys (see each field). A
// Config is copied by NewSession and never modified.
type Config struct {
	// Keying is the keying mode. If zero, defaults to sdp.KeyingHybrid when
	// KeySource is set, else sdp.KeyingDTLS.
	Keying sdp.Keying

	// Profiles lists the SRTP protection profiles in order of preference.
	// In dtls and hybrid keying DTLS negotiates one of them; in kms keying
	// the first one is used, so both sides must list the same first
	// profile. If empty, defaults to DefaultProfiles (AEAD_AES_128_GCM,
	// then AES_CM_128_HMAC_SHA1_80).
	Profiles []Profile

	// Certificate is this side's DTLS certificate (dtls and hybrid keying);
	// its fingerprint is what the local SDP carries. If zero, one is
	// generated (about 0.1 ms of CPU), which is of use only with peers that
	// learn its fingerprint some other way: generate it with
	// GenerateCertificate before the offer instead.
	Certificate tls.Certificate

	// DTLSRole is this side's DTLS role (dtls and hybrid keying, required).
	// There is no default.
	DTLSRole DTLSRole

	// RemoteFingerprints are the peer's "a=fingerprint" values (dtls and
	// hybrid keying, required): the peer's certificate must match one of
	// them. There is no default.
	RemoteFingerprints []sdp.Fingerprint

	// KeySource supplies call keys (kms and hybrid keying, required). If it
	// implements KeyWatcher, new versions are installed automatically. There
	// is no default.
	KeySource KeySource

	// KeyURI names the call key at KeySource (kms and hybrid keying,
	// required). There is no default.
	KeyURI string

	// LocalID and RemoteID identify the sending endpoints in the key
	// schedule (kms and hybrid keying, required, must differ): this side
	// sends with keys derived for LocalID and receives with keys derived
	// for RemoteID. There is no default.
	LocalID, RemoteID string

	// SDES holds the keys of sdes keying (required there, ignored
	// otherwise). There is no default.
	SDES SDES

	// RotationGrace is how long a replaced key version stays installed for
	// receiving late and reordered packets, counted from the first packet
	// the peer sends under a newer version. If zero, defaults to
	// DefaultRotationGrace (5 s).
	RotationGrace time.Duration

	// KeyLifetime is how long a key version may be used for sending before
	// a rotation is requested. If zero, defaults to no time limit; packet
	// limits always apply.
	KeyLifetime time.Duration

	// Clock is the time the key schedule goes by: when an installed
	// version activates for sending, when a version expires, when
	// KeyLifetime runs out, when the versions a peer has moved on from are
	// removed after RotationGrace, and when a failed fetch of a version met
	// in an MKI may be tried again. Nothing in the schedule runs on a
	// timer: the session compares on the packet path, reading the clock
	// only while something is due. The DTLS handshake, RTCP reports, read
	// deadlines and I/O timeouts stay on real time. Tests set it to the
	// same fake clock as the KMS's. If nil, defaults to time.Now.
	Clock func() time.Time

	// ReplayWindow is the SRTP and SRTCP replay window in packets, from
	// HeldPacketLimit+1 to 32768. If zero, defaults to DefaultReplayWindow
	// (128).
	ReplayWindow uint

	// MaxPackets is the number of SRTP (or SRTCP) packets a key version may
	// protect before a rotation is requested; the session keeps sending
	// with it until a newer version activates, but never beyond the SRTP
	// limits (2^48 SRTP, 2^31 SRTCP packets), where WriteRTP and WriteRTCP
	// return ErrKeyExhausted. If zero, defaults to DefaultMaxPackets (2^30).
	MaxPackets uint64

	// OnRotationNeeded, if set, is called once per key version when the key
	// reaches MaxPackets or KeyLifetime. In kms and hybrid keying, when the
	// KeySource implements KeyRotator, the session first asks it for a new
	// version itself. It runs on a goroutine of the session's own, never
	// concurrently with itself, and Close waits for it to return. If zero
	// (nil), requests are only logged (and passed to a KeyRotator).
	OnRotationNeeded func(RotationRequest)

	// OnPeerAttestation, if set, is called with each new attestation the
	// peer sends of its own end of the media path (kms and hybrid keying;
	// see Session.Attest). Attestations are taken out of the SRTCP stream
	// and never reach ReadRTCP. It runs on the goroutine that reads the
	// packet (in ReadRTP or ReadRTCP, or in NewSession for packets that
	// arrived early); with OnRTP set, on the goroutine that delivers the
	// datagram (see OnRTP). It is never called concurrently with itself,
	// and must not block or call the session's Read methods. Close waits
	// for a call in progress to return, and it is not called once Close
	// has returned, so it must not call Close (start a goroutine to do
	// that). If nil, attestations are dropped.
	OnPeerAttestation func(Attestation)

	// OnRTP, if set, receives every authenticated RTP packet in place of
	// ReadRTP, which then returns an error wrapping ErrRTPHandled: push
	// delivery, for a process that carries many calls. It is never called
	// concurrently with itself, and packets come in the order they were
	// read, a packet held while its key version was fetched before any
	// packet read after its key was installed. It runs on the goroutine
	// that delivers the datagram:
	//
	//   - On a conn of an ice.Endpoint that is, for media from the
	//     network, the Endpoint's one reader, which decrypts the packet in
	//     its own buffer: the session then has no goroutine, no queue and
	//     no copy of its own on the receive path. Every call on the
	//     Endpoint waits while OnRTP runs, so it must be quick and must
	//     not block. Media from another call on the same Endpoint comes on
	//     the Endpoint's hand-over goroutine, in a pooled copy. A datagram
	//     that arrives while another goroutine runs OnRTP for this session
	//     is delivered by that goroutine next.
	//   - On any other conn the session runs one goroutine that reads it.
	//   - A packet held while its key version was fetched comes on the
	//     fetch's goroutine, the key watch's, a goroutine the session
	//     starts when InstallKey installs the version, or the goroutine
	//     delivering the next packet, whichever takes it first.
	//   - Media that arrived while the keys were set up comes on the
	//     goroutine calling NewSession, before NewSession returns. An
	//     owner that publishes the session only once NewSession returned
	//     (securecall's Call) has no session yet to write to then: a
	//     Call's WriteRTP from OnRTP for such packets fails with
	//     ErrNotConnected.
	//
	// h's CSRC and Extension and payload are valid only until OnRTP
	// returns. It may call WriteRTP and WriteRTCP (of this session or
	// others) and InstallKey, but not Close (start a goroutine to do
	// that): Close waits for a call in progress to return, and OnRTP is
	// not called once Close has returned. RTCP still goes to ReadRTCP, and
	// SetReadDeadline then bounds ReadRTCP only. The goroutine running
	// OnRTP is the one that queues RTCP for ReadRTCP, so ReadRTCP called
	// from OnRTP gets only what is queued already, or waits for its
	// deadline or Close while nothing is delivered (see
	// Session.ReadRTCP). If nil,
	// packets are read with ReadRTP.
	OnRTP func(h RTPHeader, payload []byte)

	// HandshakeTimeout bounds NewSession's DTLS handshake and key fetch, on
	// top of its ctx. If zero, defaults to DefaultHandshakeTimeout (15 s).
	HandshakeTimeout time.Duration

	// HandshakeRTT is the round-trip time of the path under the session,
	// as measured before it starts (ICE's connectivity checks: the
	// securecall Call passes ice.Path.RTT). A DTLS handshake flight that
	// gets no answer is sent again after twice this, bounded to
	// MinRetransmitInterval (100 ms) and DefaultRetransmitInterval (1 s).
	// pion/dtls v2 does not back off: every retransmission waits the same
	// interval, until HandshakeTimeout. If zero (not known), defaults to
	// retransmitting after DefaultRetransmitInterval (1 s).
	HandshakeRTT time.Duration

	// RTCP configures the reports the session sends and reads itself and
	// its receive statistics. If zero, see [RTCPConfig] for its defaults:
	// reports on at the RFC 3550 interval.
	RTCP RTCPConfig

	// Logger receives the session's diagnostics; never key material. If
	// nil, the session logs nothing.
	Logger *slog.Logger
}

// retransmitInterval is the DTLS flight retransmission interval that
// HandshakeRTT asks for.
func (c Config) retransmitInterval() time.Duration {
	if c.HandshakeRTT == 0 {
		return DefaultRetransmitInterval
	}
	return min(max(2*c.HandshakeRTT, MinRetransmitInterval), DefaultRetransmitInterval)
}

// usesDTLS reports whether k runs a DTLS handshake.
func usesDTLS(k sdp.Keying) bool { return k == sdp.KeyingDTLS || k == sdp.KeyingHybrid }

// usesKMS reports whether k takes keys from a KeySource.
func usesKMS(k sdp.Keying) bool { return k == sdp.KeyingKMS || k == sdp.KeyingHybrid }

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// resolve checks c and returns a copy with the defaults applied. It starts
// nothing, except generating a certificate when one is needed and missing.
func (c Config) resolve() (Config, error) {
	if c.Keying == "" {
		if c.KeySource != nil {
			c.Keying = sdp.KeyingHybrid
		} else {
			c.Keying = sdp.KeyingDTLS
		}
	}
	switch c.Keying {
	case sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid, sdp.KeyingSDES:
	default:
		return c, configError("unknown keying %q", c.Keying)
	}
	if len(c.Profiles) == 0 {
		c.Profiles = DefaultProfiles
	}
	c.Profiles = append([]Profile(nil), c.Profiles...)
	for _, p := range c.Profiles {
		if !p.valid() {
			return c, configError("unsupported protection profile %s", p)
		}
	}
	if c.RotationGrace == 0 {
		c.RotationGrace = DefaultRotationGrace
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.MaxPackets == 0 {
		c.MaxPackets = DefaultMaxPackets
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = DefaultReplayWindow
	}
	if c.ReplayWindow <= HeldPacketLimit || c.ReplayWindow > maxReplayWindow {
		return c, configError("ReplayWindow %d outside %d to %d", c.ReplayWindow, HeldPacketLimit+1, maxReplayWindow)
	}
	switch {
	case c.RotationGrace < 0:
		return c, configError("negative RotationGrace")
	case c.KeyLifetime < 0:
		return c, configError("negative KeyLifetime")
	case c.HandshakeTimeout < 0:
		return c, configError("negative HandshakeTimeout")
	case c.HandshakeRTT < 0:
		return c, configError("negative HandshakeRTT")
	}
	if err := c.RTCP.check(); err != nil {
		return c, err
	}
	if usesDTLS(c.Keying) {
		if c.DTLSRole != DTLSClient && c.DTLSRole != DTLSServer {
			return c, configError("%s keying needs DTLSRole (client or server)", c.Keying)
		}
		if len(c.RemoteFingerprints) == 0 {
			return c, configError("%s keying needs RemoteFingerprints", c.Keying)
		}
		for _, fp := range c.RemoteFingerprints {
			h, ok := fingerprintHash(fp.Algorithm)
			if !ok {
				return c, configError("unsupported fingerprint algorithm %q", fp.Algorithm)
			}
			if len(fp.Value) != h.Size() {
				return c, configError("%s fingerprint has %d bytes, want %d", fp.Algorithm, len(fp.Value), h.Size())
			}
		}
		c.RemoteFingerprints = append([]sdp.Fingerprint(nil), c.RemoteFingerprints...)
		if len(c.Certificate.Certificate) == 0 {
			cert, err := GenerateCertificate()
			if err != nil {
				return c, err
			}
			c.Certificate = cert
		}
	}
	if usesKMS(c.Keying) {
		switch {
		case c.KeySource == nil:
			return c, configError("%s keying needs a KeySource", c.Keying)
		case c.KeyURI == "":
			return c, configError("%s keying needs a KeyURI", c.Keying)
		case c.LocalID == "" || c.RemoteID == "":
			return c, configError("%s keying needs LocalID and RemoteID", c.Keying)
		case c.LocalID == c.RemoteID:
			return c, configError("LocalID and RemoteID must differ, both are %q", c.LocalID)
		case len(c.LocalID) > 0xffff || len(c.RemoteID) > 0xffff:
			return c, configError("LocalID and RemoteID must be shorter than 64 KiB")
		}
	}
	if c.Keying == sdp.KeyingSDES {
		s := c.SDES
		if !s.Profile.valid() {
			return c, configError("sdes keying needs a supported SDES.Profile, have %s", s.Profile)
		}
		want := s.Profile.keyLen() + s.Profile.saltLen()
		if len(s.LocalKey) != want || len(s.RemoteKey) != want {
			return c, configError("SDES keys for %s must have %d bytes (key and salt), have %d and %d",
				s.Profile, want, len(s.LocalKey), len(s.RemoteKey))
		}
		if len(s.LocalMKI) > 128 || len(s.RemoteMKI) > 128 {
			return c, configError("SDES MKI longer than 128 bytes")
		}
		c.SDES = SDES{
			Profile:   s.Profile,
			LocalKey:  append([]byte(nil), s.LocalKey...),
			RemoteKey: append([]byte(nil), s.RemoteKey...),
			LocalMKI:  append([]byte(nil), s.LocalMKI...),
			RemoteMKI: append([]byte(nil), s.RemoteMKI...),
		}
	}
	return c, nil
}
