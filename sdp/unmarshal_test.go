package sdp

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// minimal is a small valid description; validation cases edit it.
const minimal = "v=0\r\n" +
	"o=- 1 1 IN IP4 0.0.0.0\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=mid:0\r\n" +
	"a=ice-ufrag:abcd\r\n" +
	"a=ice-pwd:abcdefghijklmnopqrstuv\r\n" +
	"a=fingerprint:sha-256 " + fp32 + "\r\n" +
	"a=setup:actpass\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n"

const fp32 = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"

const key30 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR" // RFC 4568 section 8.1

func TestUnmarshalMinimal(t *testing.T) {
	d, err := Unmarshal([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := &Description{
		Origin:      Origin{Username: "-", SessionID: 1, SessionVersion: 1, Address: "0.0.0.0"},
		SessionName: "-",
		Bundle:      []string{"0"},
		Media: []Media{{
			Kind: "audio", Port: 9, Proto: "UDP/TLS/RTP/SAVPF", Address: "0.0.0.0",
			Formats: []Format{
				{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2},
				{PayloadType: 0, Name: "PCMU", ClockRate: 8000},
			},
			Direction: SendRecv, MID: "0", RTCPMux: true,
			ICE: ICE{Ufrag: "abcd", Pwd: "abcdefghijklmnopqrstuv", Candidates: []Candidate{
				{Foundation: "1", Component: 1, Transport: "udp", Priority: 2130706431, Address: "192.0.2.1", Port: 5000, Type: CandidateHost},
			}},
			Fingerprints: []Fingerprint{{Algorithm: "sha-256", Value: []byte{
				0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
				0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}}},
			Setup: SetupActpass,
		}},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("got  %#v\nwant %#v", d, want)
	}
	lf, err := Unmarshal([]byte(strings.ReplaceAll(minimal, "\r\n", "\n")))
	if err != nil || !reflect.DeepEqual(lf, want) {
		t.Fatalf("LF line endings: %v, %#v", err, lf)
	}
}

// edit returns minimal with the line that starts with prefix replaced by
// repl (which may hold several lines or none).
func edit(prefix, repl string) string {
	var out []string
	done := false
	for _, l := range strings.SplitAfter(minimal, "\r\n") {
		if !done && strings.HasPrefix(l, prefix) {
			out = append(out, repl)
			done = true
			continue
		}
		out = append(out, l)
	}
	if !done {
		panic("no line starts with " + prefix)
	}
	return strings.Join(out, "")
}

// add returns minimal with extra lines appended at the end (media level).
func add(lines string) string { return minimal + lines }

func TestUnmarshalValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		line   int
		reason string
	}{
		{"empty", "", 0, "empty"},
		{"oversized", minimal + strings.Repeat("a=x-pad:"+strings.Repeat("x", 90)+"\r\n", 700), 0, "more than the 65536 allowed"},
		{"truncated mid-line", minimal[:len(minimal)-10], 15, "truncated"},
		{"truncated before t=", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n", 3, "no t= line"},
		{"truncated after v=", "v=0\r\n", 1, "before its o= line"},
		{"not a line", edit("s=", "hello\r\n"), 3, "lower-case letter"},
		{"empty line inside", edit("s=", "s=-\r\n\r\n"), 4, "empty line"},
		{"stray carriage return", edit("s=", "s=a\rb\r\n"), 3, "carriage return"},
		{"unknown line type", edit("s=", "s=-\r\nx=1\r\n"), 4, "unknown line type"},
		{"bad timing", edit("t=", "t=0 x\r\n"), 4, "syntax error"},
		{"bad bandwidth", edit("c=", "c=IN IP4 0.0.0.0\r\nb=AS\r\n"), 8, "invalid"},
		{"bad version", edit("v=", "v=1\r\n"), 1, "version must be 0"},
		{"origin fields", edit("o=", "o=- 1 1 IN IP4\r\n"), 2, "six fields"},
		{"origin id overflow", edit("o=", "o=- 99999999999999999999 1 IN IP4 0.0.0.0\r\n"), 2, "session id"},
		{"origin version", edit("o=", "o=- 1 x IN IP4 0.0.0.0\r\n"), 2, "session version"},
		{"origin network", edit("o=", "o=- 1 1 IN IP5 0.0.0.0\r\n"), 2, "IN IP4 or IN IP6"},
		{"origin tab", edit("o=", "o=-\t1 1 IN IP4 0.0.0.0\r\n"), 2, "single spaces"},
		{"origin address", edit("o=", "o=- 1 1 IN IP4 a_b\r\n"), 2, "host name"},
		{"connection network", edit("c=", "c=IN IP5 0.0.0.0\r\n"), 7, "IN IP4 or IN IP6"},
		{"repeat without timing", edit("s=", "s=-\r\nr=1 2 3\r\n"), 4, "must follow a t= line"},
		{"session line in media", add("s=x\r\n"), 16, "not allowed in a media section"},
		{"fmtp twice", add("a=fmtp:111 a=1\r\na=fmtp:111 a=2\r\n"), 17, "fmtp for payload type 111 appears twice"},
		{"rtpmap zero channels", edit("a=rtpmap", "a=rtpmap:111 opus/48000/0\r\n"), 14, "channels"},
		{"ice-options empty", add("a=ice-options:\r\n"), 16, "at least one option"},
		{"mid not a token", edit("a=mid", "a=mid:a/b\r\n"), 8, "mid must be a token"},
		{"two BUNDLE groups", edit("a=group", "a=group:BUNDLE 0\r\na=group:BUNDLE 0\r\n"), 6, "more than one BUNDLE"},
		{"line out of order", edit("t=", "t=0 0\r\nc=IN IP4 0.0.0.0\r\n"), 5, "out of order"},
		{"media before t=", strings.Replace(minimal, "t=0 0\r\n", "", 1), 4, "before the t= line"},
		{"unknown proto", edit("m=", "m=audio 9 RTP/XYZ 0\r\n"), 6, "unknown media proto"},
		{"unknown media kind", edit("m=", "m=text 9 RTP/AVP 98\r\n"), 6, "media kind"},
		{"unknown application proto", edit("m=", "m=application 9 RTP/AVP webrtc-datachannel\r\n"), 6, "application proto"},
		{"RTP proto with a token format", edit("m=", "m=audio 9 RTP/AVP opus\r\n"), 6, "payload type"},
		{"port out of range", edit("m=", "m=audio 65536 UDP/TLS/RTP/SAVPF 111 0\r\n"), 6, "port"},
		{"payload type out of range", edit("m=", "m=audio 9 UDP/TLS/RTP/SAVPF 128\r\n"), 6, "payload type"},
		{"payload type twice", edit("m=", "m=audio 9 UDP/TLS/RTP/SAVPF 0 0\r\n"), 6, "listed twice"},
		{"rtpmap payload type out of range", add("a=rtpmap:300 x/8000\r\n"), 16, "rtpmap payload type"},
		{"rtpmap without clock rate", edit("a=rtpmap", "a=rtpmap:111 opus\r\n"), 14, "rtpmap must be"},
		{"rtpmap twice", add("a=rtpmap:111 opus/48000/2\r\n"), 16, "rtpmap for payload type 111 appears twice"},
		{"bad connection", edit("c=", "c=IN IP4 224.2.1.1/127\r\n"), 7, "connection address"},
		{"no connection", edit("c=", ""), 6, "no c= line"},
		{"missing ufrag", edit("a=ice-ufrag", ""), 6, "ice-ufrag and ice-pwd without the other"},
		{"missing pwd", edit("a=ice-pwd", ""), 6, "ice-pwd"},
		{"short ufrag", edit("a=ice-ufrag", "a=ice-ufrag:abc\r\n"), 9, "ice-ufrag must be"},
		{"short pwd", edit("a=ice-pwd", "a=ice-pwd:short\r\n"), 10, "ice-pwd must be"},
		{"duplicate ufrag", edit("a=ice-ufrag", "a=ice-ufrag:abcd\r\na=ice-ufrag:efgh\r\n"), 10, "ice-ufrag appears twice"},
		{"duplicate pwd", add("a=ice-pwd:abcdefghijklmnopqrstuv\r\n"), 16, "ice-pwd appears twice"},
		{"duplicate setup", add("a=setup:active\r\n"), 16, "setup appears twice"},
		{"duplicate mid", add("a=mid:1\r\n"), 16, "mid appears twice"},
		{"duplicate key-mgmt", add("a=key-mgmt:securecall " + b64(`{"uri":"kms:a"}`) + "\r\na=key-mgmt:securecall " + b64(`{"uri":"kms:a"}`) + "\r\n"), 17, "key-mgmt appears twice"},
		{"duplicate session setup", edit("t=", "t=0 0\r\na=setup:actpass\r\na=setup:active\r\n"), 6, "setup appears twice"},
		{"duplicate direction", add("a=sendonly\r\na=recvonly\r\n"), 17, "direction attribute appears twice"},
		{"bad setup", edit("a=setup", "a=setup:holdconn\r\n"), 12, "setup must be"},
		{"malformed candidate", edit("a=candidate", "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 host\r\n"), 15, "typ"},
		{"candidate at session level", edit("t=", "t=0 0\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n"), 5, "media-level"},
		{"bad fingerprint hash", edit("a=fingerprint", "a=fingerprint:md5 00:11\r\n"), 11, "fingerprint hash"},
		{"bad fingerprint digest", edit("a=fingerprint", "a=fingerprint:sha-256 00:11\r\n"), 11, "wrong length"},
		{"crypto key too short", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30[:32] + "\r\n"), 16, "needs 30"},
		{"crypto key not base64", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!!\r\n"), 16, "base64"},
		{"crypto GCM key with CM length", add("a=crypto:1 AEAD_AES_128_GCM inline:" + key30 + "\r\n"), 16, "needs 28"},
		{"crypto without inline", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 key:" + key30 + "\r\n"), 16, "inline"},
		{"crypto MKI too long", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:5\r\n"), 16, "MKI"},
		{"crypto bad lifetime", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^64\r\n"), 16, "lifetime"},
		{"crypto tag twice", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "\r\n"), 17, "appears twice"},
		{"crypto at session level", edit("t=", "t=0 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30+"\r\n"), 5, "media-level"},
		{"unknown keying protocol", add("a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAyO\r\n"), 16, "not supported"},
		{"key-mgmt with a key", add("a=key-mgmt:securecall " + b64(`{"uri":"kms:a","key":"c2VjcmV0"}`) + "\r\n"), 16, `only "uri" and "version"`},
		{"key-mgmt relative URI", add("a=key-mgmt:securecall " + b64(`{"uri":"calls/1"}`) + "\r\n"), 16, "absolute URI"},
		{"key-mgmt not base64", add("a=key-mgmt:securecall %%%\r\n"), 16, "base64"},
		{"BUNDLE names unknown mid", edit("a=group", "a=group:BUNDLE 0 7\r\n"), 5, "no media section"},
		{"two media with one mid", add("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"), 16, "already used"},
		{"ssrc not a number", add("a=ssrc:x cname:y\r\n"), 16, "ssrc"},
		{"direction with a value", add("a=sendrecv:yes\r\n"), 16, "takes no value"},
		{"direction with an empty value", add("a=sendrecv:\r\n"), 16, "takes no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Unmarshal([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Unmarshal = %+v, %v; want a *ParseError", d, err)
			}
			if pe.Line != tc.line || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("error %v: line %d reason %q; want line %d and a reason with %q", err, pe.Line, pe.Reason, tc.line, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "sdp: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestUnmarshalLevels(t *testing.T) {
	// Session-level ICE, DTLS and key-mgmt apply to media that does not
	// set its own; media-level ones win.
	in := "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n" +
		"a=ice-ufrag:sess\r\na=ice-pwd:sessionpasswordsession\r\na=ice-options:trickle\r\n" +
		"a=fingerprint:sha-256 " + fp32 + "\r\na=setup:actpass\r\na=recvonly\r\n" +
		"a=key-mgmt:securecall " + b64(`{"uri":"https://kms.example/a","version":7}`) + "\r\n" +
		"m=audio 1000 UDP/TLS/RTP/SAVPF 0\r\n" +
		"m=audio 2000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 192.0.2.1\r\n" +
		"a=ice-ufrag:medi\r\na=ice-pwd:mediapasswordmediapass\r\na=ice-options:renomination\r\n" +
		"a=fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\r\na=setup:passive\r\na=inactive\r\n" +
		"a=key-mgmt:securecall " + b64(`{"uri":"https://kms.example/b"}`) + "\r\n"
	d, err := Unmarshal([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	s, m := d.Media[0], d.Media[1]
	if s.ICE.Ufrag != "sess" || s.ICE.Pwd != "sessionpasswordsession" || !reflect.DeepEqual(s.ICE.Options, []string{"trickle"}) ||
		s.Fingerprints[0].Algorithm != "sha-256" || s.Setup != SetupActpass || s.Direction != RecvOnly ||
		*s.KeyRef != (KeyRef{URI: "https://kms.example/a", Version: 7}) || s.Address != "2001:db8::1" {
		t.Errorf("session-level attributes not inherited: %+v", s)
	}
	if m.ICE.Ufrag != "medi" || !reflect.DeepEqual(m.ICE.Options, []string{"renomination"}) || m.Fingerprints[0].Algorithm != "sha-1" ||
		m.Setup != SetupPassive || m.Direction != Inactive || *m.KeyRef != (KeyRef{URI: "https://kms.example/b"}) || m.Address != "192.0.2.1" {
		t.Errorf("media-level attributes do not override: %+v", m)
	}
	if k, err := d.Keying(); err != nil || k != KeyingHybrid {
		t.Errorf("Keying() = %v, %v; want hybrid", k, err)
	}
	text, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(text, []byte("o=- 1 1 IN IP6 ::1\r\n")) || !bytes.Contains(text, []byte("c=IN IP6 2001:db8::1\r\n")) {
		t.Errorf("IP6 not inferred:\n%s", text)
	}
	again, err := Unmarshal(text)
	if err != nil || !reflect.DeepEqual(d, again) {
		t.Fatalf("round trip: %v\n%#v\n%#v", err, d, again)
	}
}

func TestUnmarshalRejectedSectionNeedsNoICE(t *testing.T) {
	in := minimal + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
	d, err := Unmarshal([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Media) != 2 || d.Media[1].Port != 0 || d.Media[1].Formats[0].Name != "" {
		t.Fatalf("media = %+v", d.Media)
	}
	if k, err := d.Keying(); err != nil || k != KeyingDTLS {
		t.Errorf("Keying() = %v, %v; a rejected section must not count", k, err)
	}
}

func TestParseErrorsRedactSecrets(t *testing.T) {
	const secretKey = "c2VjcmV0c2VjcmV0c2VjcmV0"
	for _, tc := range []struct{ name, in, secret string }{
		{"crypto key of the wrong length", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + secretKey + "|2^20\r\n"), secretKey},
		{"crypto with two keys", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + ";inline:" + secretKey + "\r\n"), secretKey},
		{"truncated crypto line", add("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + secretKey), secretKey},
		{"short ice-pwd", edit("a=ice-pwd", "a=ice-pwd:shortsecret\r\n"), "shortsecret"},
		{"duplicate ice-pwd", add("a=ice-pwd:anothersecretpassword12\r\n"), "anothersecretpassword12"},
		{"k= line out of order", edit("s=", "s=-\r\nk=clear:topsecret\r\n"), "topsecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if strings.Contains(err.Error(), tc.secret) || !strings.Contains(pe.Text, redacted) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}

func TestUnmarshalEmptySessionName(t *testing.T) {
	d, err := Unmarshal([]byte(strings.Replace(minimal, "s=-\r\n", "s=\r\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d.SessionName != "-" {
		t.Errorf("empty s= read as %q, want \"-\" (RFC 3264's examples send it empty)", d.SessionName)
	}
}
