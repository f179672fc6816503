package sdp

import (
	"fmt"
	"strconv"
	"strings"

	pionsdp "github.com/pion/sdp/v3"
)

// Marshal writes the description as text with CRLF line endings, laid out
// as browsers write theirs: v=, o=, s=, t=, the session-level ice-lite and
// BUNDLE group, then per media section m=, c= and the media-level
// attributes (mid, ICE credentials and options, fingerprint, setup,
// key-mgmt, direction, rtcp-mux, rtpmap and fmtp, crypto, ssrc, candidates,
// end-of-candidates). ICE, DTLS and key-mgmt attributes are always written
// at media level.
//
// Marshal fails when a field cannot be written as a valid description, for
// example an empty ICE ufrag in a media section whose port is not 0.
func (d *Description) Marshal() ([]byte, error) {
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("sdp: marshal: %w", err)
	}
	username := d.Origin.Username
	if username == "" {
		username = "-"
	}
	originAddr := d.Origin.Address
	if originAddr == "" {
		originAddr = "0.0.0.0"
	}
	name := d.SessionName
	if name == "" {
		name = "-"
	}
	wire := pionsdp.SessionDescription{
		Version: 0,
		Origin: pionsdp.Origin{
			Username:       username,
			SessionID:      d.Origin.SessionID,
			SessionVersion: d.Origin.SessionVersion,
			NetworkType:    "IN",
			AddressType:    addressType(originAddr),
			UnicastAddress: originAddr,
		},
		SessionName:      pionsdp.SessionName(name),
		TimeDescriptions: []pionsdp.TimeDescription{{}},
	}
	if d.ICELite {
		wire.Attributes = append(wire.Attributes, pionsdp.NewPropertyAttribute("ice-lite"))
	}
	if len(d.Bundle) > 0 {
		wire.Attributes = append(wire.Attributes, pionsdp.NewAttribute("group", "BUNDLE "+strings.Join(d.Bundle, " ")))
	}
	for i := range d.Media {
		wire.MediaDescriptions = append(wire.MediaDescriptions, d.Media[i].wire())
	}
	return wire.Marshal()
}

func (m *Media) wire() *pionsdp.MediaDescription {
	addr := m.Address
	if addr == "" {
		addr = "0.0.0.0"
	}
	md := &pionsdp.MediaDescription{
		MediaName: pionsdp.MediaName{
			Media:  m.Kind,
			Port:   pionsdp.RangedPort{Value: int(m.Port)},
			Protos: strings.Split(m.Proto, "/"),
		},
		ConnectionInformation: &pionsdp.ConnectionInformation{
			NetworkType: "IN",
			AddressType: addressType(addr),
			Address:     &pionsdp.Address{Address: addr},
		},
	}
	for _, f := range m.Formats {
		md.MediaName.Formats = append(md.MediaName.Formats, strconv.Itoa(int(f.PayloadType)))
	}
	md.MediaName.Formats = append(md.MediaName.Formats, m.Tokens...)
	attr := func(key, value string) {
		md.Attributes = append(md.Attributes, pionsdp.NewAttribute(key, value))
	}
	flag := func(key string) {
		md.Attributes = append(md.Attributes, pionsdp.NewPropertyAttribute(key))
	}
	if m.MID != "" {
		attr("mid", m.MID)
	}
	if m.ICE.Ufrag != "" {
		attr("ice-ufrag", m.ICE.Ufrag)
	}
	if m.ICE.Pwd != "" {
		attr("ice-pwd", m.ICE.Pwd)
	}
	if len(m.ICE.Options) > 0 {
		attr("ice-options", strings.Join(m.ICE.Options, " "))
	}
	for _, fp := range m.Fingerprints {
		attr("fingerprint", fp.String())
	}
	if m.Setup != "" {
		attr("setup", string(m.Setup))
	}
	if m.KeyRef != nil {
		attr("key-mgmt", m.KeyRef.value())
	}
	dir := m.Direction
	if dir == "" {
		dir = SendRecv
	}
	// A data channel has no direction; write one only if it was given.
	if isRTPKind(m.Kind) || dir != SendRecv {
		flag(string(dir))
	}
	if m.RTCPMux {
		flag("rtcp-mux")
	}
	if m.RTCP.Port != 0 {
		v := strconv.Itoa(int(m.RTCP.Port))
		if m.RTCP.Address != "" {
			v += " IN " + addressType(m.RTCP.Address) + " " + m.RTCP.Address
		}
		attr("rtcp", v)
	}
	if m.PTime != 0 {
		attr("ptime", strconv.FormatUint(uint64(m.PTime), 10))
	}
	for _, f := range m.Formats {
		if f.Name != "" {
			enc := f.Name + "/" + strconv.FormatUint(uint64(f.ClockRate), 10)
			if f.Channels != 0 {
				enc += "/" + strconv.FormatUint(uint64(f.Channels), 10)
			}
			attr("rtpmap", strconv.Itoa(int(f.PayloadType))+" "+enc)
		}
		if f.Params != "" {
			attr("fmtp", strconv.Itoa(int(f.PayloadType))+" "+f.Params)
		}
	}
	for _, c := range m.Crypto {
		attr("crypto", c.value())
	}
	for _, s := range m.SSRCs {
		attr("ssrc", strconv.FormatUint(uint64(s.ID), 10)+" cname:"+s.CNAME)
	}
	for _, c := range m.ICE.Candidates {
		attr("candidate", strings.TrimPrefix(c.String(), "candidate:"))
	}
	if m.ICE.EndOfCandidates {
		flag("end-of-candidates")
	}
	return md
}

// check reports what keeps d from being written as a description that
// Unmarshal accepts.
func (d *Description) check() error {
	bad := fmt.Errorf
	if d.Origin.Username != "" && (!isText(d.Origin.Username) || strings.ContainsAny(d.Origin.Username, " \t")) {
		return bad("origin username must be one word")
	}
	if d.Origin.Address != "" && !isAddress(d.Origin.Address) {
		return bad("origin address %q is not an IP address or host name", d.Origin.Address)
	}
	if !isText(d.SessionName) {
		return bad("session name contains a line break or NUL")
	}
	mids := make(map[string]bool)
	for i := range d.Media {
		if reason := d.Media[i].check(); reason != "" {
			return bad("media section %d: %s", i+1, reason)
		}
		if mid := d.Media[i].MID; mid != "" {
			if mids[mid] {
				return bad("mid %q is used twice", mid)
			}
			mids[mid] = true
		}
	}
	for _, mid := range d.Bundle {
		if !mids[mid] {
			return bad("BUNDLE names mid %q, which no media section has", mid)
		}
	}
	return nil
}

func (m *Media) check() string {
	switch {
	case m.Kind == "application":
		if !dataProtos[m.Proto] || len(m.Tokens) == 0 || len(m.Formats) != 0 {
			return "an application section needs a DTLS/SCTP proto and format tokens, and no RTP formats"
		}
		for _, tok := range m.Tokens {
			if !isToken(tok) {
				return fmt.Sprintf("application format %q is not a token", tok)
			}
		}
	case !isRTPKind(m.Kind):
		return fmt.Sprintf("kind %q is not audio, video or application", m.Kind)
	case !protos[m.Proto]:
		return fmt.Sprintf("unknown proto %q", m.Proto)
	case len(m.Tokens) != 0:
		return "audio and video sections have RTP formats, not tokens"
	case m.Address != "" && !isAddress(m.Address):
		return fmt.Sprintf("address %q is not an IP address or host name", m.Address)
	case len(m.Formats) == 0 && len(m.Tokens) == 0:
		return "no formats"
	case m.Direction != "" && !m.Direction.valid():
		return fmt.Sprintf("unknown direction %q", m.Direction)
	case m.MID != "" && !isToken(m.MID):
		return fmt.Sprintf("mid %q is not a token", m.MID)
	case m.Setup != "" && !m.Setup.valid():
		return fmt.Sprintf("unknown setup %q", m.Setup)
	case m.Port != 0 && (m.ICE.Ufrag == "") != (m.ICE.Pwd == ""):
		return "ICE ufrag and pwd go together: set both (ICE) or neither (no ICE)"
	case m.Port != 0 && m.ICE.Ufrag == "" && len(m.ICE.Candidates) > 0:
		return "candidates need ICE ufrag and pwd"
	case m.RTCP.Address != "" && (m.RTCP.Port == 0 || !isAddress(m.RTCP.Address)):
		return fmt.Sprintf("rtcp address %q needs a port and must be an IP address or host name", m.RTCP.Address)
	case m.PTime > maxPTime:
		return fmt.Sprintf("ptime %d is above %d ms", m.PTime, maxPTime)
	case m.ICE.Ufrag != "" && !validUfrag(m.ICE.Ufrag):
		return "ICE ufrag must be 4 to 256 ice-chars"
	case m.ICE.Pwd != "" && !validPwd(m.ICE.Pwd):
		return "ICE pwd must be 22 to 256 ice-chars"
	}
	seen := make(map[uint8]bool)
	for _, f := range m.Formats {
		switch {
		case f.PayloadType > 127:
			return fmt.Sprintf("payload type %d is above 127", f.PayloadType)
		case seen[f.PayloadType]:
			return fmt.Sprintf("payload type %d appears twice", f.PayloadType)
		case f.Name != "" && (!isToken(f.Name) || f.ClockRate == 0):
			return fmt.Sprintf("format %d needs a token name and a clock rate", f.PayloadType)
		case !isText(f.Params) || f.Params != strings.TrimSpace(f.Params):
			return fmt.Sprintf("format %d parameters must be one line without surrounding spaces", f.PayloadType)
		}
		if _, static := staticFormats[f.PayloadType]; static && f.Name == "" {
			return fmt.Sprintf("static payload type %d needs its name", f.PayloadType)
		}
		seen[f.PayloadType] = true
	}
	for _, o := range m.ICE.Options {
		if !isToken(o) {
			return fmt.Sprintf("ICE option %q is not a token", o)
		}
	}
	for _, c := range m.ICE.Candidates {
		if _, reason := parseCandidate(c.String()); reason != "" {
			return "candidate: " + reason
		}
	}
	for _, fp := range m.Fingerprints {
		if _, err := ParseFingerprint(fp.String()); err != nil {
			return "fingerprint: " + err.Error()
		}
	}
	tags := make(map[int]bool)
	for _, c := range m.Crypto {
		if reason := c.check(); reason != "" {
			return reason
		}
		if tags[c.Tag] {
			return fmt.Sprintf("crypto tag %d appears twice", c.Tag)
		}
		tags[c.Tag] = true
	}
	if m.KeyRef != nil {
		if reason := checkKeyURI(m.KeyRef.URI); reason != "" {
			return reason
		}
	}
	ssrcs := make(map[uint32]bool)
	for _, s := range m.SSRCs {
		if !isText(s.CNAME) || ssrcs[s.ID] {
			return fmt.Sprintf("ssrc %d appears twice or has a CNAME with a line break", s.ID)
		}
		ssrcs[s.ID] = true
	}
	return ""
}
