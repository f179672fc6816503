package sdp

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCandidate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Candidate
	}{
		{"candidate:1467250027 1 udp 2122260223 192.0.2.1 46154 typ host generation 0",
			Candidate{Foundation: "1467250027", Component: 1, Transport: "udp", Priority: 2122260223, Address: "192.0.2.1", Port: 46154, Type: CandidateHost,
				Extensions: []Extension{{"generation", "0"}}}},
		{"a=candidate:842163049 1 UDP 1677729535 203.0.113.5 3478 typ srflx raddr 10.0.0.2 rport 51000",
			Candidate{Foundation: "842163049", Component: 1, Transport: "udp", Priority: 1677729535, Address: "203.0.113.5", Port: 3478, Type: CandidateServerReflexive,
				RelatedAddress: "10.0.0.2", RelatedPort: 51000}},
		{"candidate:3 1 tcp 1518280447 abcd-ef.local 9 typ host tcptype active",
			Candidate{Foundation: "3", Component: 1, Transport: "tcp", Priority: 1518280447, Address: "abcd-ef.local", Port: 9, Type: CandidateHost, TCPType: "active"}},
		{"candidate:r/+1 2 udp 16777215 2001:db8::1 50000 typ relay raddr 2001:db8::2 rport 40000 network-cost 999",
			Candidate{Foundation: "r/+1", Component: 2, Transport: "udp", Priority: 16777215, Address: "2001:db8::1", Port: 50000, Type: CandidateRelay,
				RelatedAddress: "2001:db8::2", RelatedPort: 40000, Extensions: []Extension{{"network-cost", "999"}}}},
		{"4 1 udp 1 192.0.2.9 1 typ prflx",
			Candidate{Foundation: "4", Component: 1, Transport: "udp", Priority: 1, Address: "192.0.2.9", Port: 1, Type: CandidatePeerReflexive}},
	} {
		got, err := ParseCandidate(tc.in)
		if err != nil {
			t.Errorf("ParseCandidate(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCandidate(%q)\n got %#v\nwant %#v", tc.in, got, tc.want)
		}
		back, err := ParseCandidate(got.String())
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("String %q does not parse back: %v", got.String(), err)
		}
	}
}

func TestParseCandidateErrors(t *testing.T) {
	for _, tc := range []struct{ in, reason string }{
		{"a=1 1 udp 1 192.0.2.1 1 typ", "needs foundation"},
		{"candidate:candidate:1 1 udp 1 192.0.2.1 1 typ host", "foundation"},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ", "needs foundation"},
		{"candidate:" + strings.Repeat("a", 33) + " 1 udp 1 192.0.2.1 1 typ host", "foundation"},
		{"candidate:a-b 1 udp 1 192.0.2.1 1 typ host", "foundation"},
		{"candidate:1 0 udp 1 192.0.2.1 1 typ host", "component"},
		{"candidate:1 257 udp 1 192.0.2.1 1 typ host", "component"},
		{"candidate:1 1 sctp 1 192.0.2.1 1 typ host", "transport"},
		{"candidate:1 1 udp 0 192.0.2.1 1 typ host", "priority"},
		{"candidate:1 1 udp 4294967296 192.0.2.1 1 typ host", "priority"},
		{"candidate:1 1 udp 1 192.0.2.1_x 1 typ host", "address"},
		{"candidate:1 1 udp 1 a..local 1 typ host", "address"},
		{"candidate:1 1 udp 1 -a.local 1 typ host", "address"},
		{"candidate:1 1 udp 1 " + strings.Repeat("a", 64) + ".local 1 typ host", "address"},
		{"candidate:1 1 udp 1 192.0.2.1 65536 typ host", "port"},
		{"candidate:1 1 udp 1 192.0.2.1 1 type host", `"typ"`},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ local", "type"},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ host generation", "pairs"},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ srflx raddr 10.0.0.1", "together"},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ srflx raddr 10.0.0.1 rport 1 rport 2", "rport"},
		{"candidate:1 1 udp 1 192.0.2.1 1 typ host tcptype active", "tcp transport"},
		{"candidate:1 1 tcp 1 192.0.2.1 1 typ host tcptype both", "tcptype"},
	} {
		_, err := ParseCandidate(tc.in)
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(pe.Reason, tc.reason) || pe.Line != 0 {
			t.Errorf("ParseCandidate(%q) error = %v; want a *ParseError about %q", tc.in, err, tc.reason)
		}
	}
}

func TestCandidateAddrPort(t *testing.T) {
	c := Candidate{Address: "192.0.2.1", Port: 5}
	if ap, ok := c.AddrPort(); !ok || ap != netip.MustParseAddrPort("192.0.2.1:5") {
		t.Errorf("AddrPort = %v, %t", ap, ok)
	}
	if _, ok := (Candidate{Address: "x.local"}).AddrPort(); ok {
		t.Error("AddrPort of an mDNS name must report false")
	}
}

func TestParseFingerprint(t *testing.T) {
	fp, err := ParseFingerprint("SHA-256 " + strings.ToLower(fp32))
	if err != nil || fp.Algorithm != "sha-256" || len(fp.Value) != 32 || fp.Value[10] != 0xaa {
		t.Fatalf("ParseFingerprint = %v, %v", fp, err)
	}
	if fp.String() != "sha-256 "+fp32 {
		t.Errorf("String = %q", fp.String())
	}
	for _, tc := range []struct{ in, reason string }{
		{"sha-256", "hash name, a space"},
		{"md5 00:11", "hash must be"},
		{"sha-1 00:11", "wrong length"},
		{"sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:3G", "hex pairs"},
		{"sha-1 00-11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33", "hex pairs"},
	} {
		_, err := ParseFingerprint(tc.in)
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(pe.Reason, tc.reason) {
			t.Errorf("ParseFingerprint(%q) error = %v; want one about %q", tc.in, err, tc.reason)
		}
	}
}

func TestParseCrypto(t *testing.T) {
	c, reason := parseCrypto("1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4 UNENCRYPTED_SRTCP KDR=0")
	if reason != "" {
		t.Fatal(reason)
	}
	if c.Tag != 1 || c.Lifetime != 1<<20 || c.MKI != 1 || c.MKILength != 4 || len(c.Key) != 30 ||
		!reflect.DeepEqual(c.Params, []string{"UNENCRYPTED_SRTCP", "KDR=0"}) {
		t.Fatalf("parseCrypto = %#v (key length %d)", c, len(c.Key))
	}
	if got := c.value(); got != "1 AES_CM_128_HMAC_SHA1_80 inline:"+key30+"|2^20|1:4 UNENCRYPTED_SRTCP KDR=0" {
		t.Errorf("value = %q", got)
	}
	for suite, n := range map[string]int{"AES_CM_128_HMAC_SHA1_32": 30, "AES_256_CM_HMAC_SHA1_80": 46, "AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44} {
		if got, ok := SuiteKeyLength(suite); !ok || got != n {
			t.Errorf("SuiteKeyLength(%s) = %d, %t; want %d", suite, got, ok, n)
		}
	}
	if _, ok := SuiteKeyLength("F8_128_HMAC_SHA1_80"); ok {
		t.Error("unknown suite reported as known")
	}
	// Unpadded base64 (some stacks drop the padding of a 28-byte GCM key).
	c, reason = parseCrypto("2 AEAD_AES_128_GCM inline:" + strings.TrimRight(b64(string(testKey28)), "="))
	if reason != "" || len(c.Key) != 28 {
		t.Errorf("unpadded key: %q", reason)
	}
	for _, bad := range []string{
		"1 AES_CM_128_HMAC_SHA1_80",
		"x AES_CM_128_HMAC_SHA1_80 inline:" + key30,
		"1000000000 AES_CM_128_HMAC_SHA1_80 inline:" + key30,
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + ";inline:" + key30,
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:0",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|256:1",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4|x",
		"1 AES/CM inline:" + key30,
	} {
		if _, reason := parseCrypto(bad); reason == "" {
			t.Errorf("parseCrypto(%q) accepted", bad)
		}
	}
}
