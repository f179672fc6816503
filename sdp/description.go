package sdp

import (
	"net/netip"
	"strconv"
)

// MaxSize is the largest session description, in bytes, that [Unmarshal]
// accepts. Real offers are a few kilobytes; the cap bounds the work and the
// memory that hostile input can cost.
const MaxSize = 64 << 10

// Description is a session description: one offer or answer (RFC 3264) as
// this SDK exchanges it. [Unmarshal] fills it from text and
// [Description.Marshal] writes it back; a Description that came from
// Unmarshal marshals to text that unmarshals to an equal Description.
type Description struct {
	// Origin is the "o=" line.
	Origin Origin
	// SessionName is the "s=" line. Marshal writes "-" when it is empty.
	SessionName string
	// ICELite is true when the description carries the session-level
	// "a=ice-lite" attribute: its sender is an ICE-Lite agent (RFC 8445),
	// such as a border element with a public address.
	ICELite bool
	// Bundle lists the media identifiers of the "a=group:BUNDLE" group
	// (RFC 8843), in order; nil when there is no such group.
	Bundle []string
	// Media holds the media sections ("m=" lines) in order.
	Media []Media
}

// Origin is the "o=" line of a description (RFC 8866 section 5.2). The
// network type is always IN; the address type, IP4 or IP6, follows from
// Address.
type Origin struct {
	// Username is the originator's user name; Marshal writes "-" when it
	// is empty.
	Username string
	// SessionID identifies the session; it stays the same for every
	// description of one call.
	SessionID uint64
	// SessionVersion grows with each new description of the session.
	SessionVersion uint64
	// Address is the originator's address, an IP address or a host name;
	// Marshal writes 0.0.0.0 when it is empty.
	Address string
}

// Media is one media section: an "m=" line and the attributes that follow
// it, with session-level ICE, DTLS and key-mgmt attributes folded in when
// the section does not override them.
type Media struct {
	// Kind is "audio", "video" or "application". This SDK sends audio;
	// the others are parsed so that browser offers with video or a data
	// channel can be answered, rejecting those sections.
	Kind string
	// Port is the transport port of the "m=" line; 0 means the section is
	// rejected (in an answer) or disabled.
	Port uint16
	// Proto is the transport protocol: for audio and video
	// "UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/SAVPF", "RTP/SAVP",
	// "RTP/AVPF" or "RTP/AVP"; for application "UDP/DTLS/SCTP",
	// "TCP/DTLS/SCTP" or "DTLS/SCTP".
	Proto string
	// Address is the connection address of the "c=" line (media level, or
	// else session level). Marshal writes 0.0.0.0 when it is empty, as
	// WebRTC stacks do when ICE carries the real addresses.
	Address string
	// Formats are the payload formats in the order of the "m=" line, with
	// their rtpmap and fmtp attributes; nil for an application section.
	Formats []Format
	// Tokens are the format tokens of an application section's "m=" line,
	// such as "webrtc-datachannel"; nil for audio and video.
	Tokens []string
	// Direction is the media direction; Unmarshal sets SendRecv when the
	// description names none, and Marshal writes SendRecv for zero.
	Direction Direction
	// MID is the media identifier ("a=mid", RFC 8843); empty when absent.
	MID string
	// RTCPMux reports "a=rtcp-mux": RTP and RTCP share one port.
	RTCPMux bool
	// RTCP is the "a=rtcp" attribute (RFC 3605): where the sender receives
	// RTCP when it is not multiplexed with RTP; zero when absent, in which
	// case RTCP goes to the RTP port plus one (RFC 3550 section 11).
	RTCP RTCPAddr
	// PTime is the "a=ptime" attribute: the packet duration in
	// milliseconds the sender wants to receive; 0 when absent.
	PTime uint32
	// SSRCs are the synchronization sources announced with an "a=ssrc"
	// cname attribute (RFC 5576), in order of appearance.
	SSRCs []SSRC
	// ICE holds the ICE credentials, options and candidates.
	ICE ICE
	// Fingerprints are the DTLS certificate fingerprints (RFC 8122).
	Fingerprints []Fingerprint
	// Setup is the DTLS role attribute (RFC 4145, RFC 5763); empty when
	// absent.
	Setup Setup
	// Crypto holds the SDES "a=crypto" lines (RFC 4568).
	Crypto []Crypto
	// KeyRef is the KMS key reference from this SDK's "a=key-mgmt"
	// attribute; nil when absent.
	KeyRef *KeyRef
}

// RTCPAddr is the value of an "a=rtcp" attribute (RFC 3605): a port and,
// optionally, an address that differs from the section's connection
// address.
type RTCPAddr struct {
	// Port is the RTCP port, 1 to 65535; 0 means no attribute.
	Port uint16
	// Address is the RTCP address, an IP address or host name; empty
	// means the section's connection address.
	Address string
}

// HasICE reports whether the section carries ICE credentials. A section
// without them comes from a peer that speaks no ICE (a SIP phone or trunk,
// RFC 3264 alone): media goes to the address and port of its "c=" and
// "m=" lines.
func (m *Media) HasICE() bool { return m.ICE.Ufrag != "" && m.ICE.Pwd != "" }

// Format is one RTP payload format of a media section: its payload type
// from the "m=" line, the encoding from "a=rtpmap" and the parameters from
// "a=fmtp".
type Format struct {
	// PayloadType is the RTP payload type, 0 to 127.
	PayloadType uint8
	// Name is the encoding name, such as "opus" or "PCMU"; empty for a
	// dynamic payload type that has no rtpmap.
	Name string
	// ClockRate is the RTP clock rate in Hz.
	ClockRate uint32
	// Channels is the number of audio channels; 0 when the rtpmap names
	// none.
	Channels uint16
	// Params is the format's "a=fmtp" parameter string, such as
	// "minptime=10;useinbandfec=1"; empty when absent.
	Params string
}

// String returns the format as "name/clock[/channels]" with its payload
// type, such as "opus/48000/2 (111)".
func (f Format) String() string {
	s := f.Name + "/" + strconv.FormatUint(uint64(f.ClockRate), 10)
	if f.Channels != 0 {
		s += "/" + strconv.FormatUint(uint64(f.Channels), 10)
	}
	return s + " (" + strconv.Itoa(int(f.PayloadType)) + ")"
}

// staticFormats are the static payload types of RFC 3551 that audio peers
// still send without an rtpmap.
var staticFormats = map[uint8]Format{
	0:  {PayloadType: 0, Name: "PCMU", ClockRate: 8000},
	3:  {PayloadType: 3, Name: "GSM", ClockRate: 8000},
	4:  {PayloadType: 4, Name: "G723", ClockRate: 8000},
	8:  {PayloadType: 8, Name: "PCMA", ClockRate: 8000},
	9:  {PayloadType: 9, Name: "G722", ClockRate: 8000},
	13: {PayloadType: 13, Name: "CN", ClockRate: 8000},
	18: {PayloadType: 18, Name: "G729", ClockRate: 8000},
}

// SSRC is a synchronization source announced in the description with its
// RTCP canonical name.
type SSRC struct {
	// ID is the SSRC value.
	ID uint32
	// CNAME is the "cname" source attribute; it names the endpoint, the
	// same for all of its sources.
	CNAME string
}

// Setup is the DTLS connection role attribute "a=setup" (RFC 4145, with
// its use for DTLS in RFC 5763 and RFC 8842).
type Setup string

// The DTLS roles. An offer says actpass; the answer picks active (the
// answerer is the DTLS client) or passive.
const (
	SetupActpass Setup = "actpass"
	SetupActive  Setup = "active"
	SetupPassive Setup = "passive"
)

func (s Setup) valid() bool {
	return s == SetupActpass || s == SetupActive || s == SetupPassive
}

// Direction is the media direction attribute (RFC 8866 section 6.7).
type Direction string

// The media directions. SendRecv is the default.
const (
	SendRecv Direction = "sendrecv"
	SendOnly Direction = "sendonly"
	RecvOnly Direction = "recvonly"
	Inactive Direction = "inactive"
)

func (d Direction) valid() bool {
	return d == SendRecv || d == SendOnly || d == RecvOnly || d == Inactive
}

// reverse returns the direction the answerer takes for an offered one.
func (d Direction) reverse() Direction {
	switch d {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	case Inactive:
		return Inactive
	}
	return SendRecv
}

// Sends reports whether a side with direction d may send media: sendrecv
// and sendonly, and the empty direction, which means sendrecv (RFC 8866
// section 6.7).
func (d Direction) Sends() bool { return d != RecvOnly && d != Inactive }

// Receives reports whether a side with direction d receives media:
// sendrecv and recvonly, and the empty direction, which means sendrecv.
func (d Direction) Receives() bool { return d != SendOnly && d != Inactive }

// DirectionOf returns the direction that sends and receives as said.
func DirectionOf(send, receive bool) Direction {
	switch {
	case send && receive:
		return SendRecv
	case send:
		return SendOnly
	case receive:
		return RecvOnly
	}
	return Inactive
}

// dataProtos are the transport protocols of application sections.
var dataProtos = map[string]bool{"UDP/DTLS/SCTP": true, "TCP/DTLS/SCTP": true, "DTLS/SCTP": true}

// isRTPKind reports whether sections of this kind carry RTP.
func isRTPKind(kind string) bool { return kind == "audio" || kind == "video" }

// protos are the RTP transport protocols this package accepts in "m=" lines.
var protos = map[string]bool{
	"UDP/TLS/RTP/SAVPF": true,
	"UDP/TLS/RTP/SAVP":  true,
	"RTP/SAVPF":         true,
	"RTP/SAVP":          true,
	"RTP/AVPF":          true,
	"RTP/AVP":           true,
}

// addressType returns "IP6" for an IPv6 address and "IP4" for anything
// else, host names included.
func addressType(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() && !a.Is4In6() {
		return "IP6"
	}
	return "IP4"
}

// isToken reports whether s is a non-empty token of RFC 8866 section 9:
// visible ASCII without space, quotes, parentheses, comma, slash, the
// characters from ':' to '@', and square brackets with backslash.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(b byte) bool {
	switch {
	case b == 0x21, b >= 0x23 && b <= 0x27, b == 0x2a, b == 0x2b, b == 0x2d, b == 0x2e,
		b >= 0x30 && b <= 0x39, b >= 0x41 && b <= 0x5a, b >= 0x5e && b <= 0x7e:
		return true
	}
	return false
}

// isText reports whether s can be the value of a line: no line breaks and
// no NUL.
func isText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' || s[i] == 0 {
			return false
		}
	}
	return true
}
