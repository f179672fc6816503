package sdp

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Capabilities is what the local endpoint can do: the input of [NewOffer]
// and [NewAnswer]. The zero value is not enough on its own: ICE
// credentials are always needed, and each keying mode needs its own
// material (see the fields). The functions never modify the Capabilities
// or the slices it holds.
type Capabilities struct {
	// Keying is the keying mode. If zero, defaults to [KeyingDTLS].
	Keying Keying
	// Codecs are the payload formats this endpoint can send and receive,
	// in preference order. If empty, defaults to [DefaultCodecs]: Opus
	// 111/48000/2 with "minptime=10;useinbandfec=1", PCMU 0/8000 and
	// PCMA 8/8000.
	Codecs []Format
	// ICE holds the local ICE credentials (required), the candidates
	// gathered so far, Options ("trickle" when candidates are trickled)
	// and EndOfCandidates.
	ICE ICE
	// ICELite marks this endpoint as an ICE-Lite agent. If zero, it is a
	// full agent.
	ICELite bool
	// Fingerprints are the local DTLS certificate's fingerprints; required
	// for KeyingDTLS and KeyingHybrid.
	Fingerprints []Fingerprint
	// KeyRef is the call key's reference at the KMS; required in an offer
	// for KeyingKMS and KeyingHybrid. An answer echoes the offer's
	// reference; if KeyRef is set in an answer, its URI must match the
	// offer's.
	KeyRef *KeyRef
	// Crypto are the SDES lines; required for KeyingSDES. In an offer all
	// of them are offered (Tag zero numbers them from 1); in an answer,
	// the first offered suite that one of them has is accepted, with that
	// line's key.
	Crypto []Crypto
	// SSRC is the local synchronization source. If zero, a random one is
	// chosen.
	SSRC uint32
	// CNAME is the local RTCP canonical name. If empty, a random one is
	// chosen.
	CNAME string
	// SessionID is the origin's session id. If zero, a random one below
	// 2^62 is chosen (RFC 8829 section 5.2.1).
	SessionID uint64
	// NoICE leaves ICE out of the description, for peers that speak none
	// (plain SIP, RFC 3264 alone): no credentials, options, candidates or
	// ice-lite;
	// the "m=" and "c=" lines carry the address of the first component-1
	// UDP candidate of ICE.Candidates, and "a=rtcp" that of the first
	// component-2 one. ICE credentials are then not required. An answer to
	// an offer without ICE leaves ICE out whatever NoICE says. If zero,
	// descriptions carry ICE.
	NoICE bool
	// PTime is the packet duration in milliseconds that this endpoint
	// wants to receive, written as "a=ptime". If zero, none is written.
	PTime uint32
}

// Default values that Capabilities and the descriptions use.
const (
	// DefaultMID is the media identifier of the audio section of an offer.
	DefaultMID = "0"
	// DefaultPort is the "m=" port of an offer or answer without a usable
	// candidate: the discard port, as in RFC 8829 section 5.2.1.
	DefaultPort = 9
	// defaultSessionVersion is the origin version of a new description.
	defaultSessionVersion = 1
)

// DefaultCodecs returns the codecs used when Capabilities.Codecs is empty:
// Opus 111/48000/2 (minptime=10;useinbandfec=1), PCMU 0/8000 and PCMA
// 8/8000. Each call returns a new slice.
func DefaultCodecs() []Format {
	return []Format{
		{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2, Params: "minptime=10;useinbandfec=1"},
		{PayloadType: 0, Name: "PCMU", ClockRate: 8000},
		{PayloadType: 8, Name: "PCMA", ClockRate: 8000},
	}
}

// withDefaults returns a copy of c with the documented defaults applied.
func (c Capabilities) withDefaults() (Capabilities, error) {
	if c.Keying == "" {
		c.Keying = KeyingDTLS
	}
	if !c.Keying.valid() {
		return c, fmt.Errorf("sdp: capabilities: unknown keying %q", c.Keying)
	}
	if len(c.Codecs) == 0 {
		c.Codecs = DefaultCodecs()
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return c, fmt.Errorf("sdp: capabilities: random: %w", err)
	}
	if c.SSRC == 0 {
		c.SSRC = binary.BigEndian.Uint32(rnd[0:4]) | 1
	}
	if c.CNAME == "" {
		c.CNAME = base64.RawStdEncoding.EncodeToString(rnd[4:16])
	}
	if c.SessionID == 0 {
		var id [8]byte
		if _, err := rand.Read(id[:]); err != nil {
			return c, fmt.Errorf("sdp: capabilities: random: %w", err)
		}
		c.SessionID = binary.BigEndian.Uint64(id[:])>>2 | 1
	}
	return c, nil
}

// check reports a capability that the keying mode needs and lacks. An
// offer needs KeyRef for kms and hybrid; an answer takes it from the offer.
func (c *Capabilities) check(offer bool) error {
	if !c.NoICE && (!validUfrag(c.ICE.Ufrag) || !validPwd(c.ICE.Pwd)) {
		return errors.New("sdp: capabilities: ICE ufrag (4 to 256 ice-chars) and pwd (22 to 256) are required")
	}
	if c.Keying.usesDTLS() && len(c.Fingerprints) == 0 {
		return fmt.Errorf("sdp: capabilities: %s keying needs the local certificate's fingerprints", c.Keying)
	}
	if c.Keying.usesKMS() && offer && (c.KeyRef == nil || c.KeyRef.URI == "") {
		return fmt.Errorf("sdp: capabilities: %s keying needs a KeyRef in an offer", c.Keying)
	}
	if c.Keying == KeyingSDES && len(c.Crypto) == 0 {
		return errors.New("sdp: capabilities: sdes keying needs Crypto lines")
	}
	for i, cr := range c.Crypto {
		if reason := cr.check(); reason != "" {
			return fmt.Errorf("sdp: capabilities: crypto line %d: %s", i, reason)
		}
	}
	for i, f := range c.Codecs {
		if f.Name == "" || f.ClockRate == 0 || f.PayloadType > 127 {
			return fmt.Errorf("sdp: capabilities: codec %d needs a name, a clock rate and a payload type from 0 to 127", i)
		}
	}
	return nil
}

// proto returns the transport protocol an offer uses for a keying mode.
func (k Keying) proto() string {
	switch k {
	case KeyingKMS:
		return "RTP/SAVPF"
	case KeyingSDES:
		return "RTP/SAVP"
	}
	return "UDP/TLS/RTP/SAVPF"
}

// NewOffer returns an offer with one audio media section (mid "0", in a
// BUNDLE group, with rtcp-mux) built from the local capabilities: the
// codecs in order, ICE credentials and candidates, and the keying
// material of the mode: fingerprints with setup actpass (dtls, hybrid),
// the key-mgmt reference (kms, hybrid), the crypto lines (sdes).
func NewOffer(c Capabilities) (*Description, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := c.check(true); err != nil {
		return nil, err
	}
	m := c.localMedia(DefaultMID, c.Keying.proto(), !c.NoICE)
	c.offerKeying(&m)
	d := &Description{
		Origin:      Origin{Username: "-", SessionID: c.SessionID, SessionVersion: defaultSessionVersion, Address: "0.0.0.0"},
		SessionName: "-",
		ICELite:     c.ICELite && !c.NoICE, // ice-lite is an ICE attribute
		Bundle:      []string{DefaultMID},
		Media:       []Media{m},
	}
	// Catch what the capabilities hold that cannot be written.
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("sdp: capabilities: %w", err)
	}
	return d, nil
}

// offerKeying puts the codecs and the keying material of an offer into
// m: fingerprints with setup actpass (dtls, hybrid), the key-mgmt
// reference (kms, hybrid), every crypto line (sdes).
func (c *Capabilities) offerKeying(m *Media) {
	m.Formats = cloneFormats(c.Codecs)
	if c.Keying.usesDTLS() {
		m.Setup = SetupActpass
	}
	if c.Keying.usesKMS() {
		ref := *c.KeyRef
		m.KeyRef = &ref
	}
	if c.Keying == KeyingSDES {
		for i, cr := range c.Crypto {
			cr = cr.clone()
			if cr.Tag == 0 {
				cr.Tag = i + 1
			}
			m.Crypto = append(m.Crypto, cr)
		}
	}
}

// localMedia returns an audio section with this endpoint's transport,
// ICE (unless withICE is false), fingerprints and SSRC.
func (c *Capabilities) localMedia(mid, proto string, withICE bool) Media {
	m := Media{
		Kind:      "audio",
		Port:      DefaultPort,
		Proto:     proto,
		Address:   "0.0.0.0",
		Direction: SendRecv,
		MID:       mid,
		RTCPMux:   true,
		SSRCs:     []SSRC{{ID: c.SSRC, CNAME: c.CNAME}},
		ICE: ICE{
			Ufrag:           c.ICE.Ufrag,
			Pwd:             c.ICE.Pwd,
			Options:         append([]string(nil), c.ICE.Options...),
			Candidates:      cloneCandidates(c.ICE.Candidates),
			EndOfCandidates: c.ICE.EndOfCandidates,
		},
	}
	if len(m.ICE.Options) == 0 {
		m.ICE.Options = nil
	}
	m.PTime = c.PTime
	// The m= and c= lines carry the default candidate (RFC 8839 section
	// 4.2.1.1): the first UDP RTP candidate with an IP address; a=rtcp the
	// first UDP RTCP one (RFC 8839 section 5.1.2, RFC 3605).
	rtp, rtcp := false, false
	for _, cand := range m.ICE.Candidates {
		if _, ok := cand.AddrPort(); !ok || cand.Transport != "udp" || cand.Port == 0 {
			continue
		}
		switch {
		case cand.Component == 1 && !rtp:
			m.Port, m.Address, rtp = cand.Port, cand.Address, true
		case cand.Component == 2 && !rtcp:
			m.RTCP, rtcp = RTCPAddr{Port: cand.Port, Address: cand.Address}, true
		}
	}
	if rtp && rtcp && m.RTCP.Address == m.Address {
		m.RTCP.Address = ""
	}
	if !withICE {
		m.ICE = ICE{}
	}
	if c.Keying.usesDTLS() {
		m.Fingerprints = cloneFingerprints(c.Fingerprints)
	}
	return m
}

func cloneFormats(fs []Format) []Format {
	return append([]Format(nil), fs...)
}

// Agreement is the outcome of an offer/answer exchange: what both sides
// will use. [NewAnswer] returns it to the answerer and [AcceptAnswer] to
// the offerer, each from its own point of view.
type Agreement struct {
	// Keying is the keying mode both sides use.
	Keying Keying
	// Codecs are the common codecs in the offer's order, with the offer's
	// payload types; the first is the one to send.
	Codecs []Format
	// LocalSetup is this side's DTLS role, SetupActive (DTLS client) or
	// SetupPassive (DTLS server); empty when the keying uses no DTLS.
	LocalSetup Setup
	// Remote holds the peer's ICE credentials, options and candidates.
	Remote ICE
	// RemoteLite reports that the peer is an ICE-Lite agent.
	RemoteLite bool
	// ICEControlling reports whether this side takes the controlling ICE
	// role (RFC 8445 section 6.1.1): a full agent facing a Lite one
	// controls; between two full or two Lite agents the offerer controls.
	ICEControlling bool
	// RemoteFingerprints are the peer's certificate fingerprints (dtls,
	// hybrid).
	RemoteFingerprints []Fingerprint
	// KeyRef is the call key's reference (kms, hybrid).
	KeyRef *KeyRef
	// LocalCrypto is the SDES line this side sends with, RemoteCrypto the
	// one the peer sends with (sdes).
	LocalCrypto, RemoteCrypto *Crypto
	// MID is the media identifier of the agreed audio section.
	MID string
	// RemoteSSRC is the peer's first announced SSRC, 0 when it announced
	// none.
	RemoteSSRC uint32
	// Direction is this side's media direction: for the answerer the
	// reverse of the offer's, for the offerer what its offer and the
	// answer both allow (an answer of sendonly or inactive means the
	// offerer must not send, RFC 3264 section 6.1).
	Direction Direction
	// NoICE reports that the call runs without ICE: the peer's description
	// has no ICE credentials (or this side left ICE out), so media goes to
	// RemoteRTP and RemoteRTCP as the peer's "c=", "m=" and "a=rtcp" lines
	// say, without connectivity checks.
	NoICE bool
	// RTCPMux reports that both sides multiplex RTCP with RTP on one port
	// (RFC 5761); when false, RTCP has its own port (ICE component 2, or
	// RemoteRTCP without ICE).
	RTCPMux bool
	// RemoteRTP is the peer's RTP address from its "c=" and "m=" lines;
	// invalid when the connection address is a host name.
	RemoteRTP netip.AddrPort
	// RemoteRTCP is the peer's RTCP address when RTCP is not multiplexed:
	// its "a=rtcp" attribute (RFC 3605), or else RemoteRTP's port plus one
	// (RFC 3550 section 11); invalid when RTCPMux is true or the address is
	// unknown.
	RemoteRTCP netip.AddrPort
	// RemotePTime is the peer's "a=ptime" in milliseconds, 0 when absent.
	RemotePTime uint32
}

// transport fills the transport fields of a from the peer's section rm;
// noICE says whether either side left ICE out, mux whether both sides
// multiplex RTCP.
func (a *Agreement) transport(rm *Media, noICE, mux bool) {
	a.NoICE, a.RTCPMux, a.RemotePTime = noICE, mux, rm.PTime
	addr, err := netip.ParseAddr(rm.Address)
	if err != nil {
		return
	}
	addr = addr.Unmap()
	a.RemoteRTP = netip.AddrPortFrom(addr, rm.Port)
	if mux {
		return
	}
	switch {
	case rm.RTCP.Port != 0 && rm.RTCP.Address != "":
		if raddr, err := netip.ParseAddr(rm.RTCP.Address); err == nil {
			a.RemoteRTCP = netip.AddrPortFrom(raddr.Unmap(), rm.RTCP.Port)
		}
	case rm.RTCP.Port != 0:
		a.RemoteRTCP = netip.AddrPortFrom(addr, rm.RTCP.Port)
	case rm.Port < 65535:
		a.RemoteRTCP = netip.AddrPortFrom(addr, rm.Port+1)
	}
}

// audioSection returns the index of the first audio section with a port,
// or -1.
func audioSection(d *Description) int {
	for i := range d.Media {
		if d.Media[i].Kind == "audio" && d.Media[i].Port != 0 {
			return i
		}
	}
	return -1
}

// NewAnswer answers a remote offer from the local capabilities. It accepts
// the offer's first audio section and rejects every other section with port
// 0. The answer uses the offer's keying, which must be c.Keying; the
// codecs common to both in the offer's order; setup active when the offer
// says actpass (RFC 8842), otherwise the opposite of the offer's role; the
// offer's key reference; and for sdes the first offered suite that
// c.Crypto has, with the local key.
//
// Errors that come from the offer and the capabilities having nothing
// acceptable in common wrap [ErrNegotiation].
func NewAnswer(offer *Description, c Capabilities) (*Description, Agreement, error) {
	if offer == nil {
		return nil, Agreement{}, errors.New("sdp: NewAnswer: nil offer")
	}
	c, err := c.withDefaults()
	if err != nil {
		return nil, Agreement{}, err
	}
	if err := c.check(false); err != nil {
		return nil, Agreement{}, err
	}
	idx := audioSection(offer)
	if idx < 0 {
		return nil, Agreement{}, fmt.Errorf("%w: offer has no audio section", ErrNegotiation)
	}
	offered, err := offer.Keyings()
	if err != nil {
		return nil, Agreement{}, err
	}
	if !slices.Contains(offered, c.Keying) {
		return nil, Agreement{}, fmt.Errorf("%w: keying mismatch: the offer supports %s; this endpoint requires %s",
			ErrNegotiation, keyingList(offered), c.Keying)
	}
	keying := c.Keying
	om := &offer.Media[idx]
	a := Agreement{
		Keying:         keying,
		Remote:         cloneICE(om.ICE),
		RemoteLite:     offer.ICELite,
		ICEControlling: !c.ICELite && offer.ICELite,
		MID:            om.MID,
		Direction:      om.Direction.reverse(),
	}
	if len(om.SSRCs) > 0 {
		a.RemoteSSRC = om.SSRCs[0].ID
	}
	a.Codecs = commonCodecs(om.Formats, c.Codecs)
	if len(a.Codecs) == 0 {
		return nil, Agreement{}, fmt.Errorf("%w: no common codec: the offer has %s, this endpoint supports %s",
			ErrNegotiation, formatList(om.Formats), formatList(c.Codecs))
	}
	noICE := c.NoICE || !om.HasICE()
	a.transport(om, noICE, om.RTCPMux)
	if noICE {
		a.Remote, a.ICEControlling = ICE{}, false
	}
	m := c.localMedia(om.MID, om.Proto, !noICE)
	m.Direction = a.Direction
	m.RTCPMux = om.RTCPMux
	if m.RTCPMux {
		m.RTCP = RTCPAddr{} // RFC 5761 section 5.1.3: no a=rtcp port of its own
	}
	m.Formats = cloneFormats(a.Codecs)
	if keying.usesDTLS() {
		a.RemoteFingerprints = cloneFingerprints(om.Fingerprints)
		switch om.Setup {
		case SetupActpass, SetupPassive:
			a.LocalSetup = SetupActive
		case SetupActive, "": // RFC 4145: no setup attribute means active
			a.LocalSetup = SetupPassive
		}
		m.Setup = a.LocalSetup
	}
	if keying.usesKMS() {
		if c.KeyRef != nil && c.KeyRef.URI != "" && c.KeyRef.URI != om.KeyRef.URI {
			return nil, Agreement{}, fmt.Errorf("%w: key reference mismatch: the offer names %q, this endpoint %q", ErrNegotiation, om.KeyRef.URI, c.KeyRef.URI)
		}
		ref := *om.KeyRef
		a.KeyRef = &ref
		ref2 := ref
		m.KeyRef = &ref2
	}
	if keying == KeyingSDES {
		remote, local, ok := pickCrypto(om.Crypto, c.Crypto)
		if !ok {
			why := ""
			if slices.ContainsFunc(om.Crypto, func(oc Crypto) bool { return len(oc.MoreKeys) > 0 }) {
				why = " (lines with more than one master key are not accepted: a session holds one key per direction)"
			}
			return nil, Agreement{}, fmt.Errorf("%w: no common SDES suite: the offer has %s, this endpoint supports %s%s",
				ErrNegotiation, suiteList(om.Crypto), suiteList(c.Crypto), why)
		}
		a.RemoteCrypto, a.LocalCrypto = &remote, &local
		m.Crypto = []Crypto{local.clone()}
	}
	answer := &Description{
		Origin:      Origin{Username: "-", SessionID: c.SessionID, SessionVersion: defaultSessionVersion, Address: "0.0.0.0"},
		SessionName: "-",
		ICELite:     c.ICELite && !noICE, // ice-lite is an ICE attribute
	}
	for i := range offer.Media {
		if i == idx {
			answer.Media = append(answer.Media, m)
			continue
		}
		answer.Media = append(answer.Media, rejected(&offer.Media[i]))
	}
	if m.MID != "" && contains(offer.Bundle, m.MID) {
		answer.Bundle = []string{m.MID}
	}
	if err := answer.check(); err != nil {
		return nil, Agreement{}, fmt.Errorf("sdp: answer from these capabilities: %w", err)
	}
	return answer, a, nil
}

// rejected returns the answer's section for an offered section it
// declines: port 0, the offer's kind, proto, formats and mid (RFC 8829
// section 5.3.1).
func rejected(om *Media) Media {
	dir := Inactive
	if !isRTPKind(om.Kind) {
		dir = SendRecv // written as no direction attribute at all
	}
	return Media{
		Kind:      om.Kind,
		Port:      0,
		Proto:     om.Proto,
		Address:   "0.0.0.0",
		Formats:   cloneFormats(om.Formats),
		Tokens:    append([]string(nil), om.Tokens...),
		Direction: dir,
		MID:       om.MID,
	}
}

// AcceptAnswer checks a remote answer against the local offer and returns
// the agreement from the offerer's side. Errors for an answer that does
// not fit the offer wrap [ErrNegotiation].
func AcceptAnswer(offer, answer *Description) (Agreement, error) {
	if offer == nil || answer == nil {
		return Agreement{}, errors.New("sdp: AcceptAnswer: nil description")
	}
	if len(answer.Media) != len(offer.Media) {
		return Agreement{}, fmt.Errorf("%w: the answer has %d media sections, the offer %d", ErrNegotiation, len(answer.Media), len(offer.Media))
	}
	idx := audioSection(offer)
	if idx < 0 {
		return Agreement{}, fmt.Errorf("%w: offer has no audio section", ErrNegotiation)
	}
	om, am := &offer.Media[idx], &answer.Media[idx]
	if am.Port == 0 {
		return Agreement{}, fmt.Errorf("%w: the answer rejected the audio section", ErrNegotiation)
	}
	// An answerer that does not know mid (RFC 5888 is optional; SIP phones
	// such as baresip leave it out) answers without one.
	if am.Kind != om.Kind || (am.MID != om.MID && am.MID != "") {
		return Agreement{}, fmt.Errorf("%w: the answer's section %d (%s, mid %q) does not match the offer's (%s, mid %q)",
			ErrNegotiation, idx+1, am.Kind, am.MID, om.Kind, om.MID)
	}
	offerKeying, err := offer.Keying()
	if err != nil {
		return Agreement{}, err
	}
	if offerKeying.usesDTLS() && len(am.Fingerprints) == 0 {
		return Agreement{}, fmt.Errorf("%w: missing fingerprint: the offer uses %s keying and the answer has no fingerprint", ErrNegotiation, offerKeying)
	}
	keying, err := answer.Keying()
	if err != nil {
		return Agreement{}, err
	}
	if keying != offerKeying {
		return Agreement{}, fmt.Errorf("%w: keying mismatch: the offer uses %s, the answer %s", ErrNegotiation, offerKeying, keying)
	}
	a := Agreement{
		Keying:         keying,
		Remote:         cloneICE(am.ICE),
		RemoteLite:     answer.ICELite,
		ICEControlling: !offer.ICELite || answer.ICELite,
		MID:            om.MID,
		// What the offer allows this side and the answer the peer (RFC
		// 3264 section 6.1): an answer of sendonly or inactive stops this
		// side sending. An answer that claims more than the offer allows
		// gets only what both allow.
		Direction: DirectionOf(om.Direction.Sends() && am.Direction.Receives(), om.Direction.Receives() && am.Direction.Sends()),
	}
	if len(am.SSRCs) > 0 {
		a.RemoteSSRC = am.SSRCs[0].ID
	}
	noICE := !om.HasICE() || !am.HasICE()
	a.transport(am, noICE, om.RTCPMux && am.RTCPMux)
	if noICE {
		a.Remote, a.ICEControlling = ICE{}, false
	}
	a.Codecs = answeredCodecs(om.Formats, am.Formats)
	if len(a.Codecs) == 0 {
		return Agreement{}, fmt.Errorf("%w: no common codec: the offer has %s, the answer %s",
			ErrNegotiation, formatList(om.Formats), formatList(am.Formats))
	}
	if keying.usesDTLS() {
		a.RemoteFingerprints = cloneFingerprints(am.Fingerprints)
		switch am.Setup {
		case SetupActive, "": // RFC 4145: no setup attribute means active
			a.LocalSetup = SetupPassive
		case SetupPassive:
			a.LocalSetup = SetupActive
		default:
			return Agreement{}, fmt.Errorf("%w: bad setup: the answer says %s, it must be active or passive", ErrNegotiation, am.Setup)
		}
		if om.Setup == SetupActive && a.LocalSetup != SetupActive || om.Setup == SetupPassive && a.LocalSetup != SetupPassive {
			return Agreement{}, fmt.Errorf("%w: bad setup: the offer says %s and the answer %s", ErrNegotiation, om.Setup, am.Setup)
		}
	}
	if keying.usesKMS() {
		if om.KeyRef == nil || am.KeyRef.URI != om.KeyRef.URI {
			return Agreement{}, fmt.Errorf("%w: key reference mismatch: the answer names %q", ErrNegotiation, am.KeyRef.URI)
		}
		ref := *am.KeyRef
		a.KeyRef = &ref
	}
	if keying == KeyingSDES {
		if len(am.Crypto) != 1 {
			return Agreement{}, fmt.Errorf("%w: the answer must accept exactly one crypto line, it has %d", ErrNegotiation, len(am.Crypto))
		}
		remote := am.Crypto[0].clone()
		var local *Crypto
		for _, oc := range om.Crypto {
			if oc.Tag == remote.Tag && oc.Suite == remote.Suite {
				l := oc.clone()
				local = &l
				break
			}
		}
		if local == nil {
			return Agreement{}, fmt.Errorf("%w: no common SDES suite: the answer's crypto tag %d %s matches no offered line",
				ErrNegotiation, remote.Tag, remote.Suite)
		}
		if _, known := suiteKeyLengths[remote.Suite]; !known {
			return Agreement{}, fmt.Errorf("%w: no common SDES suite: the answer chose unknown suite %s", ErrNegotiation, remote.Suite)
		}
		// The answer's line is held to what pickCrypto requires of an
		// offered one: one master key, full SRTP protection.
		if len(remote.MoreKeys) > 0 {
			return Agreement{}, fmt.Errorf("%w: the answer's crypto line has more than one master key: a session holds one key per direction", ErrNegotiation)
		}
		if weakens(remote.Params) {
			return Agreement{}, fmt.Errorf("%w: the answer's crypto line turns off part of SRTP's protection or changes its key derivation (%s)",
				ErrNegotiation, strings.Join(remote.Params, " "))
		}
		a.LocalCrypto, a.RemoteCrypto = local, &remote
	}
	return a, nil
}

// commonCodecs returns the offered formats that the local codecs support,
// in the offer's order, with the offer's payload types and the local
// format parameters.
func commonCodecs(offered, local []Format) []Format {
	var out []Format
	for _, of := range offered {
		for _, lf := range local {
			if of.SameCodec(lf) {
				f := of
				f.Params = lf.Params
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// answeredCodecs returns the offered formats whose payload types the
// answer kept, in the offer's order.
func answeredCodecs(offered, answered []Format) []Format {
	var out []Format
	for _, of := range offered {
		for _, af := range answered {
			if af.PayloadType == of.PayloadType && of.SameCodec(af) {
				out = append(out, of)
				break
			}
		}
	}
	return out
}

// SameCodec reports whether f and g name the same codec: the same encoding
// name (without regard to case), clock rate and channels, an absent channel
// count meaning one (RFC 8866 section 6.6). Payload types and parameters
// are not compared. A format without a name matches nothing.
func (f Format) SameCodec(g Format) bool {
	ch := func(c uint16) uint16 {
		if c == 0 {
			return 1
		}
		return c
	}
	return f.Name != "" && strings.EqualFold(f.Name, g.Name) && f.ClockRate == g.ClockRate && ch(f.Channels) == ch(g.Channels)
}

// pickCrypto returns the first offered line whose suite this package
// knows and the local lines have, with the local line that answers it.
func pickCrypto(offered, local []Crypto) (remote, answer Crypto, ok bool) {
	for _, oc := range offered {
		if _, known := suiteKeyLengths[oc.Suite]; !known || len(oc.MoreKeys) > 0 || weakens(oc.Params) {
			continue
		}
		for _, lc := range local {
			if lc.Suite == oc.Suite {
				answer = lc.clone()
				answer.Tag = oc.Tag
				return oc.clone(), answer, true
			}
		}
	}
	return Crypto{}, Crypto{}, false
}

// weakens reports session parameters (RFC 4568 section 6.3) that turn off
// part of SRTP's protection or change its key derivation: a line with them
// is never accepted, so that encryption and authentication stay on for
// every packet.
func weakens(params []string) bool {
	for _, p := range params {
		switch {
		case p == "UNENCRYPTED_SRTP", p == "UNENCRYPTED_SRTCP", p == "UNAUTHENTICATED_SRTP":
			return true
		case strings.HasPrefix(p, "KDR=") && p != "KDR=0":
			return true
		}
	}
	return false
}

func cloneICE(i ICE) ICE {
	i.Options = append([]string(nil), i.Options...)
	i.Candidates = cloneCandidates(i.Candidates)
	if len(i.Options) == 0 {
		i.Options = nil
	}
	return i
}

func formatList(fs []Format) string {
	if len(fs) == 0 {
		return "none"
	}
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.String()
	}
	return strings.Join(names, ", ")
}

func keyingList(ks []Keying) string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

func suiteList(cs []Crypto) string {
	if len(cs) == 0 {
		return "none"
	}
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Suite
	}
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func cloneCandidates(cs []Candidate) []Candidate {
	if len(cs) == 0 {
		return nil
	}
	out := make([]Candidate, len(cs))
	for i, c := range cs {
		c.Extensions = append([]Extension(nil), c.Extensions...)
		out[i] = c
	}
	return out
}
