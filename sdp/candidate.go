package sdp

import (
	"net/netip"
	"strconv"
	"strings"
)

// CandidateType is the type of an ICE candidate (RFC 8445 section 5.1.1).
type CandidateType string

// The candidate types, in the order this SDK prefers them for media.
const (
	CandidateHost            CandidateType = "host"
	CandidateServerReflexive CandidateType = "srflx"
	CandidatePeerReflexive   CandidateType = "prflx"
	CandidateRelay           CandidateType = "relay"
)

func (t CandidateType) valid() bool {
	switch t {
	case CandidateHost, CandidateServerReflexive, CandidatePeerReflexive, CandidateRelay:
		return true
	}
	return false
}

// Extension is one name/value pair that follows the mandatory fields of a
// candidate line, such as "generation 0" or "network-cost 10". Pairs this
// package does not model as fields are kept in order so that a candidate
// re-marshals as it arrived.
type Extension struct {
	Name  string
	Value string
}

// Candidate is one ICE candidate as carried in an "a=candidate" attribute
// (RFC 8839 section 5.1) or in a trickled candidate.
type Candidate struct {
	// Foundation groups candidates of the same type from the same base.
	Foundation string
	// Component is 1 for RTP and 2 for RTCP; with rtcp-mux only 1 is used.
	Component uint16
	// Transport is "udp" or "tcp", in lower case.
	Transport string
	// Priority is the candidate's priority (RFC 8445 section 5.1.2).
	Priority uint32
	// Address is an IP address, or a host name such as an mDNS ".local"
	// name that browsers use to hide their local addresses.
	Address string
	// Port is the transport port.
	Port uint16
	// Type is host, srflx, prflx or relay.
	Type CandidateType
	// RelatedAddress and RelatedPort are the base of a reflexive or relayed
	// candidate (raddr and rport); empty and zero when absent.
	RelatedAddress string
	RelatedPort    uint16
	// TCPType is "active", "passive" or "so" for TCP candidates (RFC 6544).
	TCPType string
	// Extensions holds the remaining name/value pairs in order.
	Extensions []Extension
}

// AddrPort returns the candidate's address and port when the address is an
// IP address; ok is false for host names.
func (c Candidate) AddrPort() (ap netip.AddrPort, ok bool) {
	a, err := netip.ParseAddr(c.Address)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, c.Port), true
}

// String returns the candidate in the "candidate:..." form of RFC 8839,
// without a leading "a=", as it appears in an SDP attribute or in a
// trickled candidate.
func (c Candidate) String() string {
	var b strings.Builder
	b.Grow(96)
	b.WriteString("candidate:")
	b.WriteString(c.Foundation)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(uint64(c.Component), 10))
	b.WriteByte(' ')
	b.WriteString(c.Transport)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(uint64(c.Priority), 10))
	b.WriteByte(' ')
	b.WriteString(c.Address)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(uint64(c.Port), 10))
	b.WriteString(" typ ")
	b.WriteString(string(c.Type))
	if c.RelatedAddress != "" {
		b.WriteString(" raddr ")
		b.WriteString(c.RelatedAddress)
		b.WriteString(" rport ")
		b.WriteString(strconv.FormatUint(uint64(c.RelatedPort), 10))
	}
	if c.TCPType != "" {
		b.WriteString(" tcptype ")
		b.WriteString(c.TCPType)
	}
	for _, e := range c.Extensions {
		b.WriteByte(' ')
		b.WriteString(e.Name)
		b.WriteByte(' ')
		b.WriteString(e.Value)
	}
	return b.String()
}

// ParseCandidate parses one candidate in the form of RFC 8839 section 5.1.
// It accepts "a=candidate:...", "candidate:..." (the form of a trickled
// candidate) and the bare value after "candidate:".
func ParseCandidate(s string) (Candidate, error) {
	c, reason := parseCandidate(s)
	if reason != "" {
		return Candidate{}, &ParseError{Text: quoteText(s), Reason: reason}
	}
	return c, nil
}

// parseCandidate returns the candidate, or a reason why s is not one.
func parseCandidate(s string) (Candidate, string) {
	s = strings.TrimPrefix(s, "a=")
	v := strings.TrimPrefix(s, "candidate:")
	f := strings.Fields(v)
	if len(f) < 8 {
		return Candidate{}, "candidate needs foundation, component, transport, priority, address, port and typ"
	}
	var c Candidate
	if !isFoundation(f[0]) {
		return Candidate{}, "candidate foundation must be 1 to 32 ice-chars"
	}
	c.Foundation = f[0]
	comp, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil || comp < 1 || comp > 256 {
		return Candidate{}, "candidate component must be a number from 1 to 256"
	}
	c.Component = uint16(comp)
	c.Transport = strings.ToLower(f[2])
	if c.Transport != "udp" && c.Transport != "tcp" {
		return Candidate{}, "candidate transport must be udp or tcp"
	}
	prio, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil || prio == 0 {
		return Candidate{}, "candidate priority must be a number from 1 to 2^32-1"
	}
	c.Priority = uint32(prio)
	if !isAddress(f[4]) {
		return Candidate{}, "candidate address must be an IP address or a host name"
	}
	c.Address = f[4]
	port, err := strconv.ParseUint(f[5], 10, 16)
	if err != nil {
		return Candidate{}, "candidate port must be a number from 0 to 65535"
	}
	c.Port = uint16(port)
	if f[6] != "typ" {
		return Candidate{}, `candidate port must be followed by "typ"`
	}
	c.Type = CandidateType(f[7])
	if !c.Type.valid() {
		return Candidate{}, "candidate type must be host, srflx, prflx or relay"
	}
	rest := f[8:]
	if len(rest)%2 != 0 {
		return Candidate{}, "candidate extensions must come in name/value pairs"
	}
	var haveRaddr, haveRport bool
	for i := 0; i < len(rest); i += 2 {
		name, val := rest[i], rest[i+1]
		switch name {
		case "raddr":
			if haveRaddr || !isAddress(val) {
				return Candidate{}, "candidate raddr must appear once, with an address"
			}
			haveRaddr = true
			c.RelatedAddress = val
		case "rport":
			p, err := strconv.ParseUint(val, 10, 16)
			if haveRport || err != nil {
				return Candidate{}, "candidate rport must appear once, with a port"
			}
			haveRport = true
			c.RelatedPort = uint16(p)
		case "tcptype":
			if c.TCPType != "" || (val != "active" && val != "passive" && val != "so") {
				return Candidate{}, "candidate tcptype must appear once, as active, passive or so"
			}
			c.TCPType = val
		default:
			c.Extensions = append(c.Extensions, Extension{Name: name, Value: val})
		}
	}
	if haveRaddr != haveRport {
		return Candidate{}, "candidate raddr and rport must appear together"
	}
	if c.TCPType != "" && c.Transport != "tcp" {
		return Candidate{}, "candidate tcptype is only valid with tcp transport"
	}
	return c, ""
}

// isFoundation reports whether s is 1*32ice-char (ALPHA / DIGIT / "+" / "/").
func isFoundation(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isICEChar(s[i]) {
			return false
		}
	}
	return true
}

func isICEChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '+' || b == '/'
}

// isAddress accepts an IP address or an RFC 1123 host name (labels of 1 to
// 63 letters, digits and inner hyphens), which covers the mDNS names
// browsers put in candidates.
func isAddress(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}
