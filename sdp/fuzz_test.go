package sdp

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// seedDescriptions are the real-world inputs, used as fuzz seeds.
var seedDescriptions = []string{"chrome_offer.txt", "firefox_offer.txt", "sip_sdes_offer.txt", "lite_border_offer.txt",
	"rfc3264_offer.txt", "rfc4568_offer.txt", "sip_noice_offer.txt"}

func FuzzUnmarshal(f *testing.F) {
	for _, name := range seedDescriptions {
		crlf := readTestdata(f, name)
		f.Add(crlf)
		f.Add(bytes.ReplaceAll(crlf, []byte("\r\n"), []byte("\n")))
	}
	// Offers and answers of every keying mode, so that the fuzzer starts
	// from key-mgmt, crypto and setup lines as this package writes them.
	for _, k := range []Keying{KeyingDTLS, KeyingKMS, KeyingHybrid, KeyingSDES} {
		offer, err := NewOffer(caps(k))
		if err != nil {
			f.Fatal(err)
		}
		text, err := offer.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(text)
		answer, _, err := NewAnswer(offer, caps(k))
		if err != nil {
			f.Fatal(err)
		}
		if text, err = answer.Marshal(); err != nil {
			f.Fatal(err)
		}
		f.Add(text)
	}
	// SIP shapes without ICE: an offer and its answer as this package
	// writes them (c=/m= address, a=rtcp, a=ptime, no rtcp-mux).
	sip := sipCaps()
	sip.NoICE, sip.PTime = true, 20
	if offer, err := NewOffer(sip); err != nil {
		f.Fatal(err)
	} else if text, err := offer.Marshal(); err != nil {
		f.Fatal(err)
	} else {
		f.Add(text)
	}
	f.Add([]byte(noICE))
	f.Add([]byte(minimal))
	for _, in := range trickyInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkRoundTrip)
}

// FuzzAttribute fuzzes one attribute line placed in a valid
// description, at session or media level, so that the fuzzer spends its
// time in the attribute parsers rather than in the line structure.
func FuzzAttribute(f *testing.F) {
	for _, line := range []string{
		"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4 UNENCRYPTED_SRTCP",
		"crypto:2 AEAD_AES_128_GCM inline:" + b64(string(testKey28)),
		"key-mgmt:securecall " + b64(`{"uri":"https://kms.example.com/calls/1","version":3}`),
		"candidate:1 1 udp 2130706431 192.0.2.1 5000 typ srflx raddr 10.0.0.1 rport 4000 generation 0",
		"fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33",
		"rtpmap:96 VP8/90000", "fmtp:111 stereo=1", "ssrc:7 cname:x", "setup:active", "ice-options:trickle",
		"group:BUNDLE 0", "ice-lite", "end-of-candidates", "inactive", "mid:1", "ice-ufrag:wxyz",
		"rtcp:53020", "rtcp:53020 IN IP4 126.16.64.4", "rtcp:53020 IN IP6 2001:db8::1", "ptime:20", "sendonly", "recvonly",
		"crypto:2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP",
		"crypto:3 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|1000|255:1",
	} {
		f.Add(line, false)
		f.Add(line, true)
	}
	f.Fuzz(func(t *testing.T, line string, session bool) {
		in := minimal + "a=" + line + "\r\n"
		if session {
			in = strings.Replace(minimal, "t=0 0\r\n", "t=0 0\r\na="+line+"\r\n", 1)
		}
		checkRoundTrip(t, []byte(in))
	})
}

// checkRoundTrip is the property both description fuzzers check: no
// panic, errors are *ParseError, and what unmarshals re-marshals to text
// that unmarshals to an equal Description.
func checkRoundTrip(t *testing.T, data []byte) {
	d, err := Unmarshal(data)
	if err != nil {
		if _, ok := err.(*ParseError); !ok {
			t.Fatalf("error %v is a %T, not a *ParseError", err, err)
		}
		return
	}
	text, err := d.Marshal()
	if err != nil {
		t.Fatalf("Marshal of an unmarshalled description: %v\ninput:\n%q", err, data)
	}
	again, err := Unmarshal(text)
	if err != nil {
		t.Fatalf("Unmarshal of marshalled text: %v\ninput:\n%q\nmarshalled:\n%q", err, data, text)
	}
	if !reflect.DeepEqual(d, again) {
		t.Fatalf("round trip changed the description\ninput:\n%q\nfirst:  %#v\nsecond: %#v", data, d, again)
	}
	if _, err := d.Keying(); err != nil && !isNegotiation(err) {
		t.Fatalf("Keying error %v does not wrap ErrNegotiation", err)
	}
}

func FuzzParseCandidate(f *testing.F) {
	for _, s := range []string{
		"candidate:1467250027 1 udp 2122260223 192.0.2.1 46154 typ host generation 0",
		"a=candidate:2169522962 1 udp 1686052607 192.0.2.10 58779 typ srflx raddr 10.0.0.2 rport 58779 generation 0 network-id 1",
		"candidate:3354783371 1 tcp 1518280447 4d3f2a6c-6c0a-4b5e-9b1f-2a3c4d5e6f70.local 9 typ host tcptype active",
		"candidate:4 1 UDP 16777215 2001:db8::1 3478 typ relay raddr 2001:db8::2 rport 50000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCandidate(s)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		again, err := ParseCandidate(c.String())
		if err != nil {
			t.Fatalf("ParseCandidate(%q) of String of %q: %v", c.String(), s, err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip of %q changed the candidate:\n%#v\n%#v", s, c, again)
		}
	})
}
