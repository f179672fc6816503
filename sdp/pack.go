package sdp

import "strings"

// pack moves every string of d into one allocation of their total size.
// The parsers' strings are slices of their buffers (the scanned text,
// pion's copies of fields), each about as large as the whole description,
// which a kept Description would otherwise hold alive: a Call keeps its
// peer's for the call's life, and a gateway has thousands of calls.
func (d *Description) pack() {
	n := 0
	d.eachString(func(s *string) { n += len(*s) })
	var b strings.Builder
	b.Grow(n)
	d.eachString(func(s *string) { b.WriteString(*s) })
	all := b.String() // the one allocation
	d.eachString(func(s *string) {
		l := len(*s)
		if l == 0 {
			// An empty slice of a parser's string still points into it.
			*s = ""
			return
		}
		*s, all = all[:l], all[l:]
	})
}

// eachString calls fn with each string field of d, in a fixed order.
// TestUnmarshalPacksStrings finds, by reflection, any that it misses.
func (d *Description) eachString(fn func(*string)) {
	fn(&d.Origin.Username)
	fn(&d.Origin.Address)
	fn(&d.SessionName)
	for i := range d.Bundle {
		fn(&d.Bundle[i])
	}
	for i := range d.Media {
		d.Media[i].eachString(fn)
	}
}

func (m *Media) eachString(fn func(*string)) {
	fn(&m.Kind)
	fn(&m.Proto)
	fn(&m.Address)
	for i := range m.Formats {
		fn(&m.Formats[i].Name)
		fn(&m.Formats[i].Params)
	}
	for i := range m.Tokens {
		fn(&m.Tokens[i])
	}
	fn((*string)(&m.Direction))
	fn(&m.MID)
	fn(&m.RTCP.Address)
	for i := range m.SSRCs {
		fn(&m.SSRCs[i].CNAME)
	}
	fn(&m.ICE.Ufrag)
	fn(&m.ICE.Pwd)
	for i := range m.ICE.Options {
		fn(&m.ICE.Options[i])
	}
	for i := range m.ICE.Candidates {
		c := &m.ICE.Candidates[i]
		fn(&c.Foundation)
		fn(&c.Transport)
		fn(&c.Address)
		fn((*string)(&c.Type))
		fn(&c.RelatedAddress)
		fn(&c.TCPType)
		for j := range c.Extensions {
			fn(&c.Extensions[j].Name)
			fn(&c.Extensions[j].Value)
		}
	}
	for i := range m.Fingerprints {
		fn(&m.Fingerprints[i].Algorithm)
	}
	fn((*string)(&m.Setup))
	for i := range m.Crypto {
		fn(&m.Crypto[i].Suite)
		for j := range m.Crypto[i].Params {
			fn(&m.Crypto[i].Params[j])
		}
	}
	if m.KeyRef != nil {
		fn(&m.KeyRef.URI)
	}
}
