package sdp

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	full := &Description{
		Origin:      Origin{Username: "alice", SessionID: 1 << 62, SessionVersion: 3, Address: "2001:db8::7"},
		SessionName: "call",
		ICELite:     true,
		Bundle:      []string{"a", "v"},
		Media: []Media{
			{
				Kind: "audio", Port: 5004, Proto: "UDP/TLS/RTP/SAVPF", Address: "192.0.2.7",
				Formats: []Format{
					{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2, Params: "minptime=10;useinbandfec=1"},
					{PayloadType: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
					{PayloadType: 101, Name: "telephone-event", ClockRate: 8000, Params: "0-16"},
				},
				Direction: SendOnly, MID: "a", RTCPMux: true,
				SSRCs: []SSRC{{ID: 1, CNAME: "x"}, {ID: 4294967295, CNAME: "{abc-def}"}},
				ICE: ICE{Ufrag: "uFrG", Pwd: "0123456789012345678901", Options: []string{"trickle", "ice2"}, EndOfCandidates: true,
					Candidates: []Candidate{
						{Foundation: "a+/", Component: 1, Transport: "udp", Priority: 1, Address: "x.local", Port: 1, Type: CandidateHost},
						{Foundation: "2", Component: 1, Transport: "tcp", Priority: 4294967295, Address: "2001:db8::9", Port: 9, Type: CandidateRelay,
							RelatedAddress: "192.0.2.1", RelatedPort: 0, TCPType: "passive", Extensions: []Extension{{"generation", "0"}, {"network-cost", "50"}}},
					}},
				Fingerprints: []Fingerprint{{Algorithm: "sha-256", Value: bytes.Repeat([]byte{1}, 32)}, {Algorithm: "sha-512", Value: bytes.Repeat([]byte{2}, 64)}},
				Setup:        SetupActive,
				KeyRef:       &KeyRef{URI: "https://kms.example.com/calls/7?x=<&>", Version: 4294967295},
			},
			{
				Kind: "video", Port: 0, Proto: "RTP/AVPF", Address: "0.0.0.0",
				Formats:   []Format{{PayloadType: 96}},
				Direction: Inactive, MID: "v",
			},
			{
				Kind: "audio", Port: 7000, Proto: "RTP/SAVP", Address: "host.example",
				Formats:   []Format{{PayloadType: 8, Name: "PCMA", ClockRate: 8000}},
				Direction: RecvOnly,
				ICE:       ICE{Ufrag: "abcd", Pwd: "abcdefghijklmnopqrstuv"},
				Crypto: []Crypto{
					{Tag: 1, Suite: "AES_CM_128_HMAC_SHA1_80", Key: bytes.Repeat([]byte{3}, 30), Lifetime: 1 << 31, MKI: 258, MKILength: 2, Params: []string{"UNENCRYPTED_SRTCP"}},
					{Tag: 999999999, Suite: "AEAD_AES_256_GCM", Key: bytes.Repeat([]byte{4}, 44), Lifetime: 1000},
					{Tag: 0, Suite: "FUTURE_SUITE", Key: []byte{5}},
				},
			},
		},
	}
	minimalDesc, err := Unmarshal([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*Description{"full": full, "minimal": minimalDesc, "no media": {Origin: Origin{Username: "-", Address: "0.0.0.0"}, SessionName: "-"}} {
		t.Run(name, func(t *testing.T) {
			text, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(text, []byte("\r\n")) || bytes.Count(text, []byte("\n")) != bytes.Count(text, []byte("\r\n")) {
				t.Errorf("lines must end in CRLF:\n%q", text)
			}
			got, err := Unmarshal(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if !reflect.DeepEqual(got, d) {
				t.Fatalf("round trip changed the description\ntext:\n%s\ngot  %#v\nwant %#v", text, got, d)
			}
		})
	}
}

func TestRealWorldRoundTrip(t *testing.T) {
	for _, name := range seedDescriptions {
		for _, eol := range []string{"\r\n", "\n"} {
			in := strings.ReplaceAll(string(readTestdata(t, name)), "\r\n", eol)
			d, err := Unmarshal([]byte(in))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			text, err := d.Marshal()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			again, err := Unmarshal(text)
			if err != nil || !reflect.DeepEqual(d, again) {
				t.Fatalf("%s: round trip: %v", name, err)
			}
		}
	}
}

func TestMarshalRejectsWhatCannotBeParsed(t *testing.T) {
	good := func() *Description {
		d, err := Unmarshal([]byte(minimal))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		edit func(d *Description)
		want string
	}{
		{"no ICE with a port", func(d *Description) { d.Media[0].ICE.Pwd = "" }, "ICE ufrag and pwd"},
		{"bad kind", func(d *Description) { d.Media[0].Kind = "text" }, "kind"},
		{"bad proto", func(d *Description) { d.Media[0].Proto = "TCP/MSRP" }, "proto"},
		{"no formats", func(d *Description) { d.Media[0].Formats = nil }, "no formats"},
		{"payload type above 127", func(d *Description) { d.Media[0].Formats[0].PayloadType = 200 }, "above 127"},
		{"line break in params", func(d *Description) { d.Media[0].Formats[0].Params = "a\r\nb=1" }, "parameters"},
		{"bad candidate", func(d *Description) { d.Media[0].ICE.Candidates[0].Type = "bogus" }, "candidate"},
		{"bad fingerprint", func(d *Description) { d.Media[0].Fingerprints[0].Value = []byte{1} }, "fingerprint"},
		{"short crypto key", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: []byte{1}}}
		}, "needs 28"},
		{"MKI without length", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: testKey28, MKI: 1}}
		}, "MKI"},
		{"crypto tag out of range", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Tag: 1000000000, Suite: "AEAD_AES_128_GCM", Key: testKey28}}
		}, "tag"},
		{"MKI does not fit", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: testKey28, MKI: 256, MKILength: 1}}
		}, "fit"},
		{"crypto param with space", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: testKey28, Params: []string{"A B"}}}
		}, "session parameter"},
		{"crypto tag twice", func(d *Description) {
			d.Media[0].Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: testKey28}, {Suite: "AEAD_AES_128_GCM", Key: testKey28}}
		}, "appears twice"},
		{"ssrc twice", func(d *Description) { d.Media[0].SSRCs = []SSRC{{ID: 1}, {ID: 1}} }, "ssrc 1"},
		{"application with RTP formats", func(d *Description) { d.Media[0].Kind = "application" }, "application section"},
		{"audio with tokens", func(d *Description) { d.Media[0].Tokens = []string{"x"} }, "not tokens"},
		{"static payload type without name", func(d *Description) { d.Media[0].Formats[1].Name = "" }, "static payload type"},
		{"duplicate mid", func(d *Description) { d.Media = append(d.Media, d.Media[0]) }, "used twice"},
		{"relative key URI", func(d *Description) { d.Media[0].KeyRef = &KeyRef{URI: "calls/1"} }, "absolute URI"},
		{"BUNDLE unknown mid", func(d *Description) { d.Bundle = []string{"9"} }, "BUNDLE"},
		{"bad direction", func(d *Description) { d.Media[0].Direction = "both" }, "direction"},
		{"bad setup", func(d *Description) { d.Media[0].Setup = "holdconn" }, "setup"},
		{"origin address", func(d *Description) { d.Origin.Address = "a b" }, "origin address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good()
			tc.edit(d)
			if _, err := d.Marshal(); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "sdp: marshal: ") {
				t.Fatalf("Marshal error = %v; want one about %q", err, tc.want)
			}
		})
	}
}

func TestSecretsRedacted(t *testing.T) {
	const pwd = "supersecretpassword123"
	key := []byte("0123456789abcdefghijklmnopqrst")
	m := Media{
		ICE:    ICE{Ufrag: "abcd", Pwd: pwd},
		Crypto: []Crypto{{Tag: 1, Suite: "AES_CM_128_HMAC_SHA1_80", Key: key}},
	}
	a := Agreement{Remote: m.ICE, LocalCrypto: &m.Crypto[0], RemoteCrypto: &m.Crypto[0]}
	c := Capabilities{ICE: m.ICE, Crypto: m.Crypto}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	log.Info("x", "ice", m.ICE, "crypto", m.Crypto[0])
	outputs := []string{logged.String()}
	for _, v := range []any{m, &m, a, c, m.ICE, m.Crypto[0], m.Crypto} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	for _, out := range outputs {
		if strings.Contains(out, pwd) || strings.Contains(out, string(key)) || strings.Contains(out, fmt.Sprint(key)) ||
			strings.Contains(out, fmt.Sprintf("%x", key)) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if !strings.Contains(m.ICE.String(), redacted) || !strings.Contains(m.Crypto[0].GoString(), redacted) {
		t.Error("redaction marker missing")
	}
}

func TestKeyMgmtFormat(t *testing.T) {
	ref := KeyRef{URI: "https://kms.example.com/v1/calls/42/key", Version: 3}
	want := "securecall " + b64(`{"uri":"https://kms.example.com/v1/calls/42/key","version":3}`)
	if got := ref.value(); got != want {
		t.Fatalf("key-mgmt value = %q, want %q (the documented format)", got, want)
	}
	got, reason := parseKeyMgmt(want)
	if reason != "" || *got != ref {
		t.Fatalf("parse = %v, %q", got, reason)
	}
	for _, bad := range []string{
		"securecall",
		"securecall " + b64(`{"uri":"https://k/a"} x`),
		"securecall " + b64(`{"uri":"https://k/a"}]`),
		"securecall " + b64(`{"uri":"https://k/a","version":-1}`),
		"securecall " + b64(`{"uri":"https://k/a","version":1.5}`),
		"securecall " + b64(`{"uri":""}`),
		"securecall " + b64(`null`),
		"securecall " + b64(`{"uri":"https://k/a b"}`),
	} {
		if ref, reason := parseKeyMgmt(bad); reason == "" {
			t.Errorf("parseKeyMgmt(%q) = %v, want an error", bad, ref)
		}
	}
}

// trickyInputs are valid descriptions at the edges of the grammar; each
// must parse and survive a round trip. They also seed FuzzUnmarshal.
var trickyInputs = []string{
	add("a=ice-lite\r\na=ice-options:google-ice\r\n"),
	add("a=fmtp:111  minptime=10 \r\n"),
	edit("t=", "t=0 0\r\nt=1 2\r\nr=7d 1h 0 25h\r\na=ice-options:trickle\r\n") + "a=ice-options:ice2 renomination\r\n",
	add("a=ssrc:5 cname:\r\na=ssrc:5 cname:other\r\na=ssrc:6 msid:x y\r\n"),
	add("a=crypto:01 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|0|0:1\r\n"),
	add("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1\r\n"),
	add("a=rtpmap:0 foo/1\r\na=rtpmap:99 notlisted/8000\r\na=fmtp:98 x=1\r\n"),
	edit("a=group", "a=group:BUNDLE  0 0\r\na=group:LS 0\r\n"),
	edit("o=", "o=a@b:c 0 0 IN IP6 host.example\r\n"),
	edit("c=", "c=IN IP4 ::1\r\n"),
	strings.Replace(edit("c=", ""), "t=0 0\r\n", "c=IN IP6 fe80::1%eth0\r\nb=AS:64\r\nt=0 0\r\n", 1),
	add("a=candidate:1 2 UDP 7 fe80::1%eth0 0 typ srflx raddr x.local rport 0 typ y\r\na=end-of-candidates\r\n"),
	add("a=rtcp-mux:junk\r\na=key-mgmt:securecall " + b64(`{"URI":"urn:x","version":0}`) + "\r\n"),
	minimal + "m=video 0 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n",
	edit("s=", "s= \r\ni=info\r\nu=http://x/\r\ne=a@b\r\np=+1\r\n"),
}

func TestRoundTripTricky(t *testing.T) {
	for i, in := range trickyInputs {
		d, err := Unmarshal([]byte(in))
		if err != nil {
			t.Errorf("input %d: %v\n%s", i, err, in)
			continue
		}
		text, err := d.Marshal()
		if err != nil {
			t.Errorf("input %d: Marshal: %v", i, err)
			continue
		}
		again, err := Unmarshal(text)
		if err != nil || !reflect.DeepEqual(d, again) {
			t.Errorf("input %d: round trip: %v\n%#v\n%#v", i, err, d, again)
		}
	}
}

func TestAnswerDirection(t *testing.T) {
	for offered, want := range map[Direction]Direction{SendRecv: SendRecv, SendOnly: RecvOnly, RecvOnly: SendOnly, Inactive: Inactive} {
		d, err := Unmarshal([]byte(add("a=" + string(offered) + "\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		answer, a, err := NewAnswer(d, caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		if a.Direction != want || answer.Media[0].Direction != want {
			t.Errorf("offer %s: answer %s, agreement %s; want %s", offered, answer.Media[0].Direction, a.Direction, want)
		}
	}
}
