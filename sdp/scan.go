package sdp

import (
	"strconv"
	"strings"
)

// textLine is one line of the input with its 1-based number.
type textLine struct {
	num int
	off int // byte offset of the line's start in the input
	typ byte
	val string
}

func (l textLine) text() string { return string(l.typ) + "=" + l.val }

// fail returns a ParseError for the line, with any secret in its text
// redacted.
func (l textLine) fail(reason string) *ParseError {
	return &ParseError{Line: l.num, Text: quoteText(redactText(l.text())), Reason: reason}
}

// redactText returns a line of input with the secrets it may carry
// replaced, because errors get logged and keys and passwords must not be:
// the value of a "k=" line, what follows "ice-pwd", and each SDES key
// after "inline:".
func redactText(s string) string {
	if strings.HasPrefix(s, "k=") {
		return "k=" + redacted
	}
	if before, _, found := strings.Cut(s, "ice-pwd"); found {
		return before + "ice-pwd:" + redacted
	}
	if !strings.Contains(s, "inline:") {
		return s
	}
	var b strings.Builder
	for {
		before, after, found := strings.Cut(s, "inline:")
		b.WriteString(before)
		if !found {
			return b.String()
		}
		b.WriteString("inline:" + redacted)
		end := strings.IndexAny(after, " ;")
		if end < 0 {
			return b.String()
		}
		s = after[end:]
	}
}

// layout is the line structure of a description: its lines, and for each
// level (session, then each media section) the lines of its attributes in
// order, matching the attribute lists of the wire-format parser.
type layout struct {
	lines   []textLine
	session []textLine   // session-level a= lines
	mlines  []textLine   // the m= lines
	media   [][]textLine // media-level a= lines, per section
	// conn holds the c= line of the session (index 0) and of each media
	// section (index i+1); typ is 0 where there is none.
	conn []textLine
}

// line ranks give the order RFC 8866 section 5 requires within the session
// part and within a media section.
var sessionRank = map[byte]int{'v': 1, 'o': 2, 's': 3, 'i': 4, 'u': 5, 'e': 6, 'p': 7, 'c': 8, 'b': 9, 't': 10, 'r': 11, 'z': 12, 'k': 13, 'a': 14}
var mediaRank = map[byte]int{'i': 1, 'c': 2, 'b': 3, 'k': 4, 'a': 5}

// scan splits data into lines and checks what the wire-format parser
// leaves unchecked or reports without a line number: size, line endings,
// line syntax, the order of line types, and the values of the v=, o=, s=,
// c= and m= lines.
func scan(data []byte) (*layout, *ParseError) {
	if len(data) > MaxSize {
		return nil, &ParseError{Reason: "description is " + strconv.Itoa(len(data)) + " bytes, more than the " + strconv.Itoa(MaxSize) + " allowed"}
	}
	if len(data) == 0 {
		return nil, &ParseError{Reason: "description is empty"}
	}
	text := string(data)
	lay := &layout{conn: []textLine{{}}}
	num := 0
	emptyAt, off := 0, 0
	for text != "" {
		num++
		start := off
		raw, rest, found := strings.Cut(text, "\n")
		off += len(raw) + 1
		text = rest
		raw = strings.TrimSuffix(raw, "\r")
		if !found {
			return nil, &ParseError{Line: num, Text: quoteText(redactText(raw)), Reason: "text ends in the middle of a line: the description is truncated"}
		}
		if raw == "" {
			if emptyAt == 0 {
				emptyAt = num
			}
			continue
		}
		if emptyAt != 0 {
			return nil, &ParseError{Line: emptyAt, Reason: "empty line inside the description"}
		}
		if len(raw) < 2 || raw[1] != '=' || raw[0] < 'a' || raw[0] > 'z' {
			return nil, &ParseError{Line: num, Text: quoteText(redactText(raw)), Reason: `line must be a lower-case letter, "=" and a value`}
		}
		l := textLine{num: num, off: start, typ: raw[0], val: raw[2:]}
		if !isText(l.val) {
			return nil, l.fail("line contains a carriage return or NUL inside it")
		}
		lay.lines = append(lay.lines, l)
	}
	if len(lay.lines) == 0 {
		return nil, &ParseError{Line: 1, Reason: "description has only empty lines"}
	}
	if err := lay.checkOrder(); err != nil {
		return nil, err
	}
	return lay, nil
}

// checkOrder enforces v o s i? u? e? p? c? b* (t r*)+ z? k? a* and, per
// media section, m i? c? b* k? a*, and checks the lines whose values the
// model reads.
func (lay *layout) checkOrder() *ParseError {
	lines := lay.lines
	want := []byte{'v', 'o', 's'}
	for i, typ := range want {
		if i >= len(lines) {
			last := lines[len(lines)-1]
			return &ParseError{Line: last.num, Reason: "description ends before its " + string(typ) + "= line: it is truncated"}
		}
		if lines[i].typ != typ {
			return lines[i].fail("expected the " + string(typ) + "= line here")
		}
	}
	if lines[0].val != "0" {
		return lines[0].fail("protocol version must be 0")
	}
	if err := checkOrigin(lines[1]); err != nil {
		return err
	}
	// RFC 8866 wants a non-empty s= ("-" when there is no name), but RFC
	// 3264's own examples and some SIP stacks send an empty one: it is read
	// as "-".
	last, seenT, inMedia := sessionRank['s'], false, false
	for _, l := range lines[3:] {
		if l.typ == 'm' {
			if !seenT {
				return l.fail("media section before the t= line")
			}
			if err := checkMediaLine(l); err != nil {
				return err
			}
			inMedia, last = true, 0
			lay.mlines = append(lay.mlines, l)
			lay.media = append(lay.media, nil)
			lay.conn = append(lay.conn, textLine{})
			continue
		}
		ranks := sessionRank
		if inMedia {
			ranks = mediaRank
		}
		r, known := ranks[l.typ]
		if !known {
			if _, ok := sessionRank[l.typ]; ok && inMedia {
				return l.fail(string(l.typ) + "= line is not allowed in a media section")
			}
			return l.fail("unknown line type " + strconv.Quote(string(l.typ)))
		}
		repeatable := l.typ == 'b' || l.typ == 'a' || l.typ == 'r' || l.typ == 't'
		switch {
		case l.typ == 't' && !inMedia && last == sessionRank['r']:
		case r < last, r == last && !repeatable:
			return l.fail(string(l.typ) + "= line out of order or repeated")
		case l.typ == 'r' && last != sessionRank['t'] && last != sessionRank['r']:
			return l.fail("r= line must follow a t= line")
		case !inMedia && r > sessionRank['t'] && !seenT:
			return l.fail(string(l.typ) + "= line before the t= line")
		}
		last = r
		switch l.typ {
		case 't':
			seenT = true
		case 'c':
			if err := checkConnection(l); err != nil {
				return err
			}
			lay.conn[len(lay.conn)-1] = l
		case 'a':
			if inMedia {
				lay.media[len(lay.media)-1] = append(lay.media[len(lay.media)-1], l)
			} else {
				lay.session = append(lay.session, l)
			}
		}
	}
	if !seenT {
		return &ParseError{Line: lines[len(lines)-1].num, Reason: "description has no t= line: it is truncated"}
	}
	return nil
}

func checkOrigin(l textLine) *ParseError {
	f := strings.Split(l.val, " ")
	if strings.ContainsRune(l.val, '\t') {
		return l.fail("origin fields must be separated by single spaces")
	}
	if len(f) != 6 {
		return l.fail("origin must be six fields separated by single spaces: username, session id, version, IN, IP4 or IP6, address")
	}
	if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
		return l.fail("origin session id must be a number below 2^64")
	}
	if _, err := strconv.ParseUint(f[2], 10, 64); err != nil {
		return l.fail("origin session version must be a number below 2^64")
	}
	if f[3] != "IN" || (f[4] != "IP4" && f[4] != "IP6") {
		return l.fail("origin network must be IN IP4 or IN IP6")
	}
	if f[0] == "" || !isAddress(f[5]) {
		return l.fail("origin needs a username and an IP address or host name")
	}
	return nil
}

func checkConnection(l textLine) *ParseError {
	f := strings.Split(l.val, " ")
	if len(f) != 3 || strings.ContainsRune(l.val, '\t') || f[0] != "IN" || (f[1] != "IP4" && f[1] != "IP6") {
		return l.fail("connection must be IN IP4 or IN IP6 and an address")
	}
	if !isAddress(f[2]) {
		return l.fail("connection address must be a unicast IP address or host name")
	}
	return nil
}

func checkMediaLine(l textLine) *ParseError {
	f := strings.Split(l.val, " ")
	if len(f) < 4 || strings.ContainsRune(l.val, '\t') {
		return l.fail("media line needs a kind, a port, a proto and at least one format")
	}
	if f[0] != "audio" && f[0] != "video" && f[0] != "application" {
		return l.fail("media kind " + strconv.Quote(quoteText(f[0])) + " is not supported (audio, video or application)")
	}
	if _, err := strconv.ParseUint(f[1], 10, 16); err != nil {
		return l.fail("media port must be a number from 0 to 65535")
	}
	if !isRTPKind(f[0]) {
		if !dataProtos[f[2]] {
			return l.fail("unknown application proto " + strconv.Quote(quoteText(f[2])))
		}
		for _, tok := range f[3:] {
			if !isToken(tok) {
				return l.fail("application format must be a token")
			}
		}
		return nil
	}
	if !protos[f[2]] {
		return l.fail("unknown media proto " + strconv.Quote(quoteText(f[2])))
	}
	seen := make(map[uint64]bool, len(f)-3)
	for _, pt := range f[3:] {
		n, err := strconv.ParseUint(pt, 10, 8)
		if err != nil || n > 127 {
			return l.fail("payload type " + strconv.Quote(quoteText(pt)) + " must be a number from 0 to 127")
		}
		if seen[n] {
			return l.fail("payload type " + pt + " listed twice")
		}
		seen[n] = true
	}
	return nil
}
