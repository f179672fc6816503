package securecall

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// This file holds what a Call does for SIP gear: sdes keying, and peers
// without ICE, reached through an ice.Direct transport. call.go calls in
// here at a few hooks.

// DefaultSDESProfiles are the crypto suites a Call in sdes keying offers,
// in this order, when Config.Profiles is empty: the AEAD suites of RFC
// 7714 first (an answerer takes the first suite it knows), then
// AES_CM_128_HMAC_SHA1_80 and _32 of RFC 4568, which every SDES peer
// speaks.
var DefaultSDESProfiles = []media.Profile{
	media.ProfileAEADAES128GCM, media.ProfileAEADAES256GCM,
	media.ProfileAES128CMHMACSHA1_80, media.ProfileAES128CMHMACSHA1_32,
}

// ErrNoICEAnswer is wrapped by the error SetAnswer returns when the peer
// answered this call's ICE offer without ICE: a Call reaches a peer without
// ICE only from its own socket, which an ICE offer did not advertise. Set
// Config.NoICE to call such peers.
var ErrNoICEAnswer = errors.New("securecall: the answer has no ICE; set Config.NoICE to call peers that speak none")

// sipState is the part of a Call that serves peers without ICE.
type sipState struct {
	direct *ice.Direct // the transport for a peer without ICE; nil with ICE
	dest   directDest  // where direct sends, as the signaling last said (reinvite.go)

	// agreed holds the payload types of the agreed codecs, set by every
	// exchange (applyAgreementLocked) and read per packet; New makes it.
	agreed    *payloadTypes
	outsidePT atomic.Uint64 // RTP packets read with another payload type
}

// payloadTypes is a set of RTP payload types (0-127) that a later
// exchange may change while packets are read. It lives apart from the
// Call, so that the push path, whose closure holds a pointer to it,
// checks each packet's type without touching the Call. Its two words are
// stored one after the other: a packet read while the set changes is
// counted by either the old or the new set, which for a count is fine.
type payloadTypes [2]atomic.Uint64

func (p *payloadTypes) has(pt uint8) bool { return pt < 128 && p[pt>>6].Load()&(1<<(pt&63)) != 0 }

// count adds a packet of type pt to outside unless pt is in the set.
func (p *payloadTypes) count(pt uint8, outside *atomic.Uint64) {
	if !p.has(pt) {
		outside.Add(1)
	}
}

// agree records the agreed codecs' payload types.
func (s *sipState) agree(codecs []sdp.Format) {
	var set [2]uint64
	for _, f := range codecs {
		if f.PayloadType < 128 {
			set[f.PayloadType>>6] |= 1 << (f.PayloadType & 63)
		}
	}
	s.agreed[0].Store(set[0])
	s.agreed[1].Store(set[1])
}

// notePayloadType counts an authenticated RTP packet whose payload type the
// descriptions did not agree on. Such packets are delivered, not dropped:
// they are authentic (only the peer can have sent them), peers commonly
// send comfort noise (13) or the codec of their offer without agreeing on
// it, and the header names the type, so an application that decodes by
// the agreed codec checks it; the count makes the peer's behaviour
// visible.
func (s *sipState) notePayloadType(pt uint8) { s.agreed.count(pt, &s.outsidePT) }

// checkSIPConfig reports a Config that cannot work for SIP gear.
func checkSIPConfig(cfg *Config) error {
	if cfg.NoICE && cfg.ICE.Policy == ice.RelayOnly {
		return fmt.Errorf("securecall: NoICE with RelayOnly: %w", ice.ErrNoICEPolicy)
	}
	return nil
}

// offerKeying returns the keying mode in which this call answers offer: the
// first mode the offer allows that this call accepts (answerKeyings),
// otherwise the offer's preferred one, which Answer then refuses (as a
// downgrade when it is weaker). An offer that allows dtls and sdes is
// answered in sdes only when the application asked for sdes.
func (c *Call) offerKeying(offer *sdp.Description) (sdp.Keying, error) {
	ks, err := offer.Keyings()
	if err != nil {
		return "", err
	}
	accepted := c.answerKeyings()
	for _, k := range ks {
		for _, a := range accepted {
			if k == a {
				return k, nil
			}
		}
	}
	return ks[0], nil
}

// prepareNoICE opens the Direct transport when the offer's audio section
// has no ICE, with its local address chosen to reach the offer's address.
func (c *Call) prepareNoICE(offer *sdp.Description) error {
	m := firstAudio(offer)
	if m == nil || m.HasICE() {
		return nil
	}
	peer, _ := netip.ParseAddr(m.Address)
	d, err := ice.ListenDirect(c.directConfig(), peer)
	if err != nil {
		return fmt.Errorf("securecall: Answer: a peer without ICE: %w", err)
	}
	c.mu.Lock()
	// A transport left open for this end's own offer, rolled back (by
	// Rollback or a lost glare), was chosen for no peer: this one
	// replaces it.
	old := c.sip.direct
	c.sip.direct = d
	c.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// prepareRTCP runs ICE component 2 for an ICE offer without rtcp-mux, so
// that the answer carries RTCP candidates and "a=rtcp" and SRTCP has its
// own path (RFC 5761 section 5.1.3: the answerer must not multiplex what
// the offer did not).
func (c *Call) prepareRTCP(offer *sdp.Description) error {
	m := firstAudio(offer)
	if m == nil || !m.HasICE() || m.RTCPMux {
		return nil
	}
	if err := c.ice.EnableRTCPComponent(); err != nil {
		return fmt.Errorf("securecall: Answer: %w", err)
	}
	return nil
}

// prepareOfferRTCP gathers ICE component 2 for an offer when
// Config.OfferRTCPComponent asks for it.
func (c *Call) prepareOfferRTCP() error {
	if !c.cfg.OfferRTCPComponent || c.cfg.NoICE {
		return nil
	}
	if err := c.ice.EnableRTCPComponent(); err != nil {
		return fmt.Errorf("securecall: Offer: %w", err)
	}
	return nil
}

// directConfig is the ice.Config of the Direct transport: the call's, with
// OnPathChange reaching the application as it does with ICE.
func (c *Call) directConfig() ice.Config {
	cfg := c.cfg.ICE
	user := c.cfg.ICE.OnPathChange
	cfg.OnPathChange = func(p ice.Path) {
		c.log.Debug("securecall: path without ICE", "remote", p.Remote.Address, "latched", p.Latched)
		if user != nil {
			user(p)
		}
		if c.cfg.OnPathChange != nil {
			c.cfg.OnPathChange(p)
		}
	}
	return cfg
}

// gatherDirect returns the Direct transport's addresses as candidates, for
// a call without ICE; ok is false for a call with ICE. An offerer with
// Config.NoICE opens the transport here.
func (c *Call) gatherDirect() ([]sdp.Candidate, bool, error) {
	c.mu.Lock()
	d := c.sip.direct
	c.mu.Unlock()
	if d == nil && c.cfg.NoICE {
		var err error
		if d, err = ice.ListenDirect(c.directConfig(), netip.Addr{}); err != nil {
			return nil, true, fmt.Errorf("securecall: without ICE: %w", err)
		}
		c.mu.Lock()
		c.sip.direct = d
		c.mu.Unlock()
	}
	if d == nil {
		return nil, false, nil
	}
	return d.Candidates(), true, nil
}

// undoNoICE closes a Direct transport opened for a description that was
// never sent, so that a failed Offer or Answer leaves the call as it was.
func (c *Call) undoNoICE() {
	c.mu.Lock()
	d := c.sip.direct
	started := c.started
	if started {
		d = nil
	} else {
		c.sip.direct = nil
	}
	c.mu.Unlock()
	if d != nil {
		_ = d.Close()
	}
	if !started {
		_ = c.ice.DisableRTCPComponent()
	}
}

// sipCapabilities adds what sdes keying and peers without ICE need to the
// capabilities of a description.
func (c *Call) sipCapabilities(caps *sdp.Capabilities) error {
	c.mu.Lock()
	caps.NoICE = c.sip.direct != nil
	started, agreed := c.started, c.agreement.LocalCrypto
	c.mu.Unlock()
	if caps.Keying != sdp.KeyingSDES {
		return nil
	}
	if started && agreed != nil {
		// A later description states the line this side sends with: the
		// media session keeps its keys for the whole call, so a fresh
		// key here would be one this side never uses.
		caps.Crypto = []sdp.Crypto{cloneCrypto(agreed)}
		return nil
	}
	profiles := c.cfg.Profiles
	if len(profiles) == 0 {
		profiles = DefaultSDESProfiles
	}
	for _, p := range profiles {
		n, ok := sdp.SuiteKeyLength(p.String())
		if !ok {
			return fmt.Errorf("securecall: profile %s has no SDES suite", p)
		}
		// A fresh master key and salt per line and per call: this side's
		// sending key, never the peer's (RFC 4568 section 6.1).
		key := make([]byte, n)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("securecall: SDES key: %w", err)
		}
		caps.Crypto = append(caps.Crypto, sdp.Crypto{Suite: p.String(), Key: key})
	}
	return nil
}

// sdesKeys turns the agreed crypto lines into the media session's keys:
// this side sends with its own line's key and receives with the peer's,
// each with its MKI when the line has one.
func sdesKeys(a sdp.Agreement) (media.SDES, error) {
	if a.LocalCrypto == nil || a.RemoteCrypto == nil {
		return media.SDES{}, errors.New("securecall: sdes keying without agreed crypto lines")
	}
	p, ok := media.ProfileFromSuite(a.LocalCrypto.Suite)
	if !ok {
		return media.SDES{}, fmt.Errorf("securecall: SDES suite %s is not supported", a.LocalCrypto.Suite)
	}
	if subtle.ConstantTimeCompare(a.LocalCrypto.Key, a.RemoteCrypto.Key) == 1 {
		// Both directions under one key and salt would reuse keystream.
		return media.SDES{}, fmt.Errorf("securecall: the peer's SDES key is this side's own: %w", sdp.ErrNegotiation)
	}
	return media.SDES{
		Profile:   p,
		LocalKey:  a.LocalCrypto.Key,
		RemoteKey: a.RemoteCrypto.Key,
		LocalMKI:  mkiBytes(a.LocalCrypto),
		RemoteMKI: mkiBytes(a.RemoteCrypto),
	}, nil
}

// checkSDESKept refuses (c.mu held) a later exchange of a started sdes
// call that changes either direction's crypto line: the media session
// holds the keys it started with and takes no new ones, so such an
// exchange would leave the peer sending or expecting keys this side does
// not use.
func (c *Call) checkSDESKept(op string, a sdp.Agreement) error {
	if !c.started || a.Keying != sdp.KeyingSDES {
		return nil
	}
	was := c.agreement
	if !sameCrypto(a.LocalCrypto, was.LocalCrypto) || !sameCrypto(a.RemoteCrypto, was.RemoteCrypto) {
		return fmt.Errorf("securecall: %s: the description changes the call's SDES keys, which a started call keeps (a new key needs a new call): %w",
			op, sdp.ErrNegotiation)
	}
	return nil
}

// checkDTLSKept refuses (c.mu held) a later exchange of a started call in
// dtls or hybrid keying whose fingerprints name none of the peer's that the
// call started with: a new fingerprint asks for a new DTLS association (RFC
// 8842 section 5.5), and the media session keeps the one it made for the
// whole call, so the peer would expect keys this side never derives.
func (c *Call) checkDTLSKept(op string, a sdp.Agreement) error {
	if !c.started || !usesDTLS(a.Keying) {
		return nil
	}
	for _, f := range a.RemoteFingerprints {
		for _, was := range c.agreement.RemoteFingerprints {
			if f.Algorithm == was.Algorithm && bytes.Equal(f.Value, was.Value) {
				return nil
			}
		}
	}
	return fmt.Errorf("securecall: %s: the description changes the peer's DTLS fingerprint, and the call keeps its DTLS association (a new certificate needs a new call): %w",
		op, sdp.ErrNegotiation)
}

func sameCrypto(a, b *sdp.Crypto) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Suite == b.Suite && a.MKI == b.MKI && a.MKILength == b.MKILength &&
		subtle.ConstantTimeCompare(a.Key, b.Key) == 1
}

func cloneCrypto(c *sdp.Crypto) sdp.Crypto {
	out := *c
	out.Key = append([]byte(nil), c.Key...)
	out.MoreKeys = nil
	out.Params = append([]string(nil), c.Params...)
	return out
}

// mkiBytes encodes a crypto line's MKI in its length, big endian (RFC 4568
// section 6.1, RFC 3711 section 3.1).
func mkiBytes(c *sdp.Crypto) []byte {
	if c.MKILength == 0 {
		return nil
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], c.MKI)
	return b[4-c.MKILength:]
}

// connectTransport brings up the media transport of agreement a: ICE, or
// the Direct transport for a peer without ICE. Its errors are the ice
// package's; connect adds the call's prefix.
func (c *Call) connectTransport(a sdp.Agreement) (net.Conn, error) {
	c.mu.Lock()
	d := c.sip.direct
	c.mu.Unlock()
	if !a.NoICE {
		return c.ice.Connect(c.ctx, ice.Peer{Ufrag: a.Remote.Ufrag, Pwd: a.Remote.Pwd, Lite: a.RemoteLite}, a.ICEControlling)
	}
	if d == nil {
		// SetAnswer refuses such an answer first (checkAnswerTransport).
		return nil, ErrNoICEAnswer
	}
	return c.connectDirect(d, a)
}

// checkAnswerTransport refuses an answer without ICE to an ICE offer, and
// one that declines rtcp-mux: a Call's ICE offers multiplex RTCP and
// gather no component 2.
func (c *Call) checkAnswerTransport(a sdp.Agreement) error {
	switch {
	case a.NoICE && c.sip.direct == nil:
		return fmt.Errorf("securecall: SetAnswer: %w", ErrNoICEAnswer)
	case !a.NoICE && !a.RTCPMux && !c.ice.RTCPComponent():
		return fmt.Errorf("securecall: SetAnswer: the answer declines rtcp-mux, which this call's offer requires (set Config.OfferRTCPComponent to offer RTCP apart as well): %w", sdp.ErrNegotiation)
	case !a.NoICE && a.RTCPMux && c.ice.RTCPComponent():
		// The peer multiplexes: the component-2 agent is not needed.
		if err := c.ice.DisableRTCPComponent(); err != nil {
			c.log.Debug("securecall: closing the unused RTCP component", "err", err)
		}
	}
	return nil
}

// refuseRestartNoICE reports that a call without ICE has no ICE to
// restart; c.mu is held.
func (c *Call) refuseRestartNoICE(op string) error {
	if c.sip.direct != nil {
		return &StateError{Op: op, State: c.state, Why: "the call runs without ICE, so there is no ICE to restart"}
	}
	return nil
}

// transportPath returns the media path: ICE's, or the Direct transport's.
func (c *Call) transportPath() ice.Path {
	c.mu.Lock()
	d := c.sip.direct
	c.mu.Unlock()
	if d != nil {
		return d.Path()
	}
	return c.ice.Path()
}

// closeNoICE closes the Direct transport, if any.
func (c *Call) closeNoICE() error {
	c.mu.Lock()
	d := c.sip.direct
	c.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.Close()
}

// firstAudio returns the first audio section with a port, or nil.
func firstAudio(d *sdp.Description) *sdp.Media {
	for i := range d.Media {
		if d.Media[i].Kind == "audio" && d.Media[i].Port != 0 {
			return &d.Media[i]
		}
	}
	return nil
}
