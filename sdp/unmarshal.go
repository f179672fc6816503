package sdp

import (
	"errors"
	"strconv"
	"strings"

	pionsdp "github.com/pion/sdp/v3"
)

// Unmarshal parses a session description. It accepts lines ending in CRLF
// or LF, at most [MaxSize] bytes, and ICE, DTLS (fingerprint, setup) and
// key-mgmt attributes at session or media level, a media-level attribute
// overriding the session-level one. Attributes this package does not model
// (extmap, rtcp-fb, msid and the like) are skipped. The Description shares
// no memory with data or the parsers' buffers: its strings are packed in
// one allocation of their size, so that keeping it keeps nothing more.
//
// Every error is a *[ParseError] that names the line and the reason.
func Unmarshal(data []byte) (*Description, error) {
	lay, perr := scan(data)
	if perr != nil {
		return nil, perr
	}
	var wire pionsdp.SessionDescription
	if err := wire.UnmarshalString(string(data)); err != nil {
		return nil, lay.wireError(err)
	}
	if len(wire.MediaDescriptions) != len(lay.mlines) {
		return nil, &ParseError{Reason: "media sections could not be matched to lines"}
	}
	d, perr := lay.build(&wire)
	if perr != nil {
		return nil, perr
	}
	d.pack()
	return d, nil
}

// wireError turns an error of the wire-format parser into a ParseError,
// naming the line whose text the error quotes when there is one.
func (lay *layout) wireError(err error) *ParseError {
	msg := strings.TrimPrefix(err.Error(), "sdp: ")
	if _, quoted, ok := strings.Cut(msg, "`"); ok {
		quoted, _, _ = strings.Cut(quoted, "`")
		if quoted != "" {
			// Attribute lines reach the wire parser as opaque text, so the
			// quoted value is on another line.
			for _, l := range lay.lines {
				if l.typ != 'a' && strings.Contains(l.text(), quoted) {
					return l.fail(msg)
				}
			}
		}
	}
	if _, after, ok := strings.Cut(msg, "at pos "); ok {
		digits, _, _ := strings.Cut(after, ":")
		if pos, perr := strconv.Atoi(digits); perr == nil {
			for i := len(lay.lines) - 1; i >= 0; i-- {
				if lay.lines[i].off <= pos {
					return lay.lines[i].fail(msg)
				}
			}
		}
	}
	return &ParseError{Reason: msg}
}

// levelAttrs are the attributes that may appear at session or media level.
type levelAttrs struct {
	ufrag, pwd   *textLine
	options      []string
	haveOptions  bool
	endOfCands   bool
	fingerprints []Fingerprint
	setup        *textLine
	keyMgmt      *textLine
	keyRef       *KeyRef
	direction    *textLine
}

// common parses an attribute that may appear at either level. It reports
// whether it knew the attribute.
func (la *levelAttrs) common(l textLine, key, val string) (bool, *ParseError) {
	unique := func(slot **textLine, name string) *ParseError {
		if *slot != nil {
			return l.fail(name + " appears twice at this level (first on line " + strconv.Itoa((*slot).num) + ")")
		}
		ll := l
		*slot = &ll
		return nil
	}
	switch key {
	case "ice-ufrag":
		if !validUfrag(val) {
			return true, l.fail("ice-ufrag must be 4 to 256 ice-chars")
		}
		return true, unique(&la.ufrag, "ice-ufrag")
	case "ice-pwd":
		if !validPwd(val) {
			return true, l.fail("ice-pwd must be 22 to 256 ice-chars")
		}
		return true, unique(&la.pwd, "ice-pwd")
	case "ice-options":
		opts := strings.Fields(val)
		if len(opts) == 0 {
			return true, l.fail("ice-options needs at least one option")
		}
		for _, o := range opts {
			if !isToken(o) {
				return true, l.fail("ice-options must be tokens")
			}
		}
		la.options = append(la.options, opts...)
		la.haveOptions = true
	case "end-of-candidates":
		la.endOfCands = true
	case "fingerprint":
		fp, err := ParseFingerprint(val)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				return true, l.fail(pe.Reason)
			}
			return true, l.fail(err.Error())
		}
		la.fingerprints = append(la.fingerprints, fp)
	case "setup":
		if !Setup(val).valid() {
			return true, l.fail("setup must be actpass, active or passive")
		}
		return true, unique(&la.setup, "setup")
	case "key-mgmt":
		ref, reason := parseKeyMgmt(val)
		if reason != "" {
			return true, l.fail(reason)
		}
		la.keyRef = ref
		return true, unique(&la.keyMgmt, "key-mgmt")
	case string(SendRecv), string(SendOnly), string(RecvOnly), string(Inactive):
		if val != "" || strings.ContainsRune(l.val, ':') {
			return true, l.fail("direction attribute takes no value")
		}
		return true, unique(&la.direction, "direction attribute")
	default:
		return false, nil
	}
	return true, nil
}

// build converts the wire-format description into the model, checking
// every attribute it reads.
func (lay *layout) build(wire *pionsdp.SessionDescription) (*Description, *ParseError) {
	if len(wire.Attributes) != len(lay.session) {
		return nil, &ParseError{Reason: "session attributes could not be matched to lines"}
	}
	d := &Description{
		Origin: Origin{
			Username:       wire.Origin.Username,
			SessionID:      wire.Origin.SessionID,
			SessionVersion: wire.Origin.SessionVersion,
			Address:        wire.Origin.UnicastAddress,
		},
		SessionName: string(wire.SessionName),
	}
	if d.SessionName == "" {
		d.SessionName = "-"
	}
	var sess levelAttrs
	var group *textLine
	for i, a := range wire.Attributes {
		l := lay.session[i]
		known, err := sess.common(l, a.Key, a.Value)
		if err != nil {
			return nil, err
		}
		if known {
			continue
		}
		switch a.Key {
		case "ice-lite":
			d.ICELite = true
		case "group":
			sem, mids, _ := strings.Cut(a.Value, " ")
			if sem != "BUNDLE" {
				continue
			}
			if group != nil {
				return nil, l.fail("more than one BUNDLE group is not supported")
			}
			ll := l
			group = &ll
			d.Bundle = strings.Fields(mids)
			if len(d.Bundle) == 0 {
				d.Bundle = nil
			}
		case "candidate", "crypto", "mid", "rtpmap", "fmtp", "ssrc", "rtcp-mux", "rtcp":
			return nil, l.fail(a.Key + " is a media-level attribute")
		}
	}
	mids := make(map[string]int)
	for i, md := range wire.MediaDescriptions {
		m, err := lay.buildMedia(d, i, md, &sess)
		if err != nil {
			return nil, err
		}
		if m.MID != "" {
			if first, dup := mids[m.MID]; dup {
				return nil, lay.mlines[i].fail("mid " + strconv.Quote(m.MID) + " is already used by media section " + strconv.Itoa(first+1))
			}
			mids[m.MID] = i
		}
		d.Media = append(d.Media, m)
	}
	for _, mid := range d.Bundle {
		if _, ok := mids[mid]; !ok || !isToken(mid) {
			return nil, group.fail("BUNDLE group names mid " + strconv.Quote(quoteText(mid)) + ", which no media section has")
		}
	}
	return d, nil
}

// buildMedia converts media section i.
func (lay *layout) buildMedia(d *Description, i int, md *pionsdp.MediaDescription, sess *levelAttrs) (Media, *ParseError) {
	mline := lay.mlines[i]
	attrLines := lay.media[i]
	if len(md.Attributes) != len(attrLines) {
		return Media{}, mline.fail("media attributes could not be matched to lines")
	}
	m := Media{
		Kind:  md.MediaName.Media,
		Port:  uint16(md.MediaName.Port.Value),
		Proto: strings.Join(md.MediaName.Protos, "/"),
	}
	switch {
	case md.ConnectionInformation != nil && md.ConnectionInformation.Address != nil:
		m.Address = md.ConnectionInformation.Address.Address
	case lay.conn[0].typ == 'c':
		m.Address = strings.Split(lay.conn[0].val, " ")[2]
	default:
		return Media{}, mline.fail("media section has no c= line and the session has none")
	}
	byPT := make(map[uint8]int, len(md.MediaName.Formats))
	if !isRTPKind(m.Kind) {
		m.Tokens = append([]string(nil), md.MediaName.Formats...)
	}
	for _, f := range md.MediaName.Formats {
		if !isRTPKind(m.Kind) {
			break
		}
		n, _ := strconv.ParseUint(f, 10, 8) // checked by scan
		pt := uint8(n)
		byPT[pt] = len(m.Formats)
		format, static := staticFormats[pt]
		if !static {
			format = Format{PayloadType: pt}
		}
		m.Formats = append(m.Formats, format)
	}
	var la levelAttrs
	var mid, rtcpLine, ptimeLine *textLine
	rtpmapSeen := make(map[uint8]bool)
	fmtpSeen := make(map[uint8]bool)
	ssrcAt := make(map[uint32]int)
	for j, a := range md.Attributes {
		l := attrLines[j]
		known, err := la.common(l, a.Key, a.Value)
		if err != nil {
			return Media{}, err
		}
		if known {
			continue
		}
		switch a.Key {
		case "mid":
			if !isToken(a.Value) {
				return Media{}, l.fail("mid must be a token")
			}
			if mid != nil {
				return Media{}, l.fail("mid appears twice in the media section (first on line " + strconv.Itoa(mid.num) + ")")
			}
			ll := l
			mid = &ll
			m.MID = a.Value
		case "rtcp-mux":
			m.RTCPMux = true
		case "rtcp":
			if rtcpLine != nil {
				return Media{}, l.fail("rtcp appears twice in the media section")
			}
			ll := l
			rtcpLine = &ll
			r, reason := parseRTCP(a.Value)
			if reason != "" {
				return Media{}, l.fail(reason)
			}
			m.RTCP = r
		case "ptime":
			if ptimeLine != nil {
				return Media{}, l.fail("ptime appears twice in the media section")
			}
			ll := l
			ptimeLine = &ll
			n, err := strconv.ParseUint(a.Value, 10, 32)
			if err != nil || n == 0 || n > maxPTime {
				return Media{}, l.fail("ptime must be a number of milliseconds from 1 to " + strconv.Itoa(maxPTime))
			}
			m.PTime = uint32(n)
		case "ice-lite":
			// RFC 8839 puts ice-lite at session level; a peer that puts it
			// here is still telling us it is Lite.
			d.ICELite = true
		case "rtpmap":
			if err := parseRTPMap(l, a.Value, m.Formats, byPT, rtpmapSeen); err != nil {
				return Media{}, err
			}
		case "fmtp":
			if err := parseFMTP(l, a.Value, m.Formats, byPT, fmtpSeen); err != nil {
				return Media{}, err
			}
		case "ssrc":
			if err := parseSSRC(l, a.Value, &m, ssrcAt); err != nil {
				return Media{}, err
			}
		case "candidate":
			c, reason := parseCandidate("candidate:" + a.Value)
			if reason != "" {
				return Media{}, l.fail(reason)
			}
			m.ICE.Candidates = append(m.ICE.Candidates, c)
		case "crypto":
			c, reason := parseCrypto(a.Value)
			if reason != "" {
				return Media{}, l.fail(reason)
			}
			for _, prev := range m.Crypto {
				if prev.Tag == c.Tag {
					return Media{}, l.fail("crypto tag " + strconv.Itoa(c.Tag) + " appears twice")
				}
			}
			m.Crypto = append(m.Crypto, c)
		}
	}
	// Media-level attributes override session-level ones.
	pick := func(media, session *textLine) *textLine {
		if media != nil {
			return media
		}
		return session
	}
	if l := pick(la.ufrag, sess.ufrag); l != nil {
		m.ICE.Ufrag = valueAfterColon(l.val)
	}
	if l := pick(la.pwd, sess.pwd); l != nil {
		m.ICE.Pwd = valueAfterColon(l.val)
	}
	// A section without ICE credentials is from a peer without ICE (RFC
	// 3264 alone); one credential without the other, or candidates without
	// credentials, is a broken description.
	if m.Port != 0 && (m.ICE.Ufrag == "") != (m.ICE.Pwd == "") {
		return Media{}, mline.fail("media section has one of ice-ufrag and ice-pwd without the other")
	}
	if m.Port != 0 && m.ICE.Ufrag == "" && len(m.ICE.Candidates) > 0 {
		return Media{}, mline.fail("media section has candidates but no ice-ufrag and ice-pwd")
	}
	m.ICE.Options = sess.options
	if la.haveOptions {
		m.ICE.Options = la.options
	}
	m.ICE.Options = append([]string(nil), m.ICE.Options...)
	if len(m.ICE.Options) == 0 {
		m.ICE.Options = nil
	}
	m.ICE.EndOfCandidates = la.endOfCands || sess.endOfCands
	m.Fingerprints = sess.fingerprints
	if la.fingerprints != nil {
		m.Fingerprints = la.fingerprints
	}
	m.Fingerprints = cloneFingerprints(m.Fingerprints)
	if l := pick(la.setup, sess.setup); l != nil {
		m.Setup = Setup(valueAfterColon(l.val))
	}
	m.KeyRef = sess.keyRef
	if la.keyRef != nil {
		m.KeyRef = la.keyRef
	}
	if m.KeyRef != nil {
		ref := *m.KeyRef
		m.KeyRef = &ref
	}
	m.Direction = SendRecv
	if l := pick(la.direction, sess.direction); l != nil {
		m.Direction = Direction(l.val)
	}
	return m, nil
}

// maxPTime bounds "a=ptime": a minute of audio per packet is already
// absurd.
const maxPTime = 60000

// parseRTCP parses an "a=rtcp" value: port [IN IP4|IP6 address].
func parseRTCP(v string) (RTCPAddr, string) {
	f := strings.Split(v, " ")
	n, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil || n == 0 {
		return RTCPAddr{}, "rtcp port must be a number from 1 to 65535"
	}
	r := RTCPAddr{Port: uint16(n)}
	switch {
	case len(f) == 1:
	case len(f) == 4 && f[1] == "IN" && (f[2] == "IP4" || f[2] == "IP6") && isAddress(f[3]):
		r.Address = f[3]
	default:
		return RTCPAddr{}, "rtcp must be a port, optionally followed by IN, IP4 or IP6 and an address (RFC 3605)"
	}
	return r, ""
}

// valueAfterColon returns what follows the first colon of an attribute
// line's value ("ice-ufrag:abcd" gives "abcd").
func valueAfterColon(s string) string {
	_, v, _ := strings.Cut(s, ":")
	return v
}

func cloneFingerprints(fps []Fingerprint) []Fingerprint {
	if len(fps) == 0 {
		return nil
	}
	out := make([]Fingerprint, len(fps))
	for i, f := range fps {
		out[i] = Fingerprint{Algorithm: f.Algorithm, Value: append([]byte(nil), f.Value...)}
	}
	return out
}

// parsePT parses the payload type that starts an rtpmap or fmtp value and
// returns the rest.
func parsePT(l textLine, v, name string) (uint8, string, *ParseError) {
	ptText, rest, _ := strings.Cut(v, " ")
	n, err := strconv.ParseUint(ptText, 10, 8)
	if err != nil || n > 127 {
		return 0, "", l.fail(name + " payload type must be a number from 0 to 127")
	}
	return uint8(n), rest, nil
}

func parseRTPMap(l textLine, v string, formats []Format, byPT map[uint8]int, seen map[uint8]bool) *ParseError {
	pt, enc, err := parsePT(l, v, "rtpmap")
	if err != nil {
		return err
	}
	if seen[pt] {
		return l.fail("rtpmap for payload type " + strconv.Itoa(int(pt)) + " appears twice")
	}
	seen[pt] = true
	parts := strings.Split(enc, "/")
	if len(parts) < 2 || len(parts) > 3 || !isToken(parts[0]) {
		return l.fail("rtpmap must be a payload type, a space and name/clock-rate[/channels]")
	}
	rate, perr := strconv.ParseUint(parts[1], 10, 32)
	if perr != nil || rate == 0 {
		return l.fail("rtpmap clock rate must be a number from 1 to 2^32-1")
	}
	var channels uint64
	if len(parts) == 3 {
		channels, perr = strconv.ParseUint(parts[2], 10, 16)
		if perr != nil || channels == 0 {
			return l.fail("rtpmap channels must be a number from 1 to 65535")
		}
	}
	i, listed := byPT[pt]
	if !listed {
		return nil // a mapping for a format the m= line does not offer
	}
	formats[i].Name = parts[0]
	formats[i].ClockRate = uint32(rate)
	formats[i].Channels = uint16(channels)
	return nil
}

func parseFMTP(l textLine, v string, formats []Format, byPT map[uint8]int, seen map[uint8]bool) *ParseError {
	pt, params, err := parsePT(l, v, "fmtp")
	if err != nil {
		return err
	}
	if seen[pt] {
		return l.fail("fmtp for payload type " + strconv.Itoa(int(pt)) + " appears twice")
	}
	seen[pt] = true
	if i, listed := byPT[pt]; listed {
		formats[i].Params = strings.TrimSpace(params)
	}
	return nil
}

func parseSSRC(l textLine, v string, m *Media, at map[uint32]int) *ParseError {
	idText, attr, _ := strings.Cut(v, " ")
	id, err := strconv.ParseUint(idText, 10, 32)
	if err != nil {
		return l.fail("ssrc must be a number from 0 to 2^32-1")
	}
	cname, isCNAME := strings.CutPrefix(attr, "cname:")
	if !isCNAME {
		return nil // msid, label and the like
	}
	if _, dup := at[uint32(id)]; dup {
		return nil
	}
	at[uint32(id)] = len(m.SSRCs)
	m.SSRCs = append(m.SSRCs, SSRC{ID: uint32(id), CNAME: cname})
	return nil
}
