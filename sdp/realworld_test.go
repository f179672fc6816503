package sdp

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readTestdata returns a description from testdata with CRLF line endings,
// as it travels on the wire.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(b), "\n", "\r\n"))
}

func TestRealWorldParse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keying Keying
		check  func(t *testing.T, d *Description)
	}{
		{"chrome_offer.txt", KeyingDTLS, func(t *testing.T, d *Description) {
			if len(d.Media) != 3 || d.Media[0].Kind != "audio" || d.Media[1].Kind != "video" || d.Media[2].Kind != "application" {
				t.Fatalf("media = %v", d.Media)
			}
			if !reflect.DeepEqual(d.Bundle, []string{"0", "1", "2"}) {
				t.Errorf("bundle = %v", d.Bundle)
			}
			a := d.Media[0]
			if len(a.ICE.Candidates) != 3 || !strings.HasSuffix(a.ICE.Candidates[0].Address, ".local") ||
				a.ICE.Candidates[2].TCPType != "active" || a.ICE.Candidates[1].Type != CandidateServerReflexive {
				t.Errorf("candidates = %#v", a.ICE.Candidates)
			}
			if !reflect.DeepEqual(a.ICE.Options, []string{"trickle"}) || a.Setup != SetupActpass || !a.RTCPMux || a.MID != "0" {
				t.Errorf("audio = %+v", a)
			}
			if a.Formats[0] != (Format{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2, Params: "minptime=10;useinbandfec=1"}) {
				t.Errorf("first format = %#v", a.Formats[0])
			}
			if !reflect.DeepEqual(a.SSRCs, []SSRC{{ID: 1001, CNAME: "Ux9pXWJ1FgdZ4lYe"}}) {
				t.Errorf("ssrcs = %v", a.SSRCs)
			}
			if v := d.Media[1]; len(v.SSRCs) != 2 || v.Formats[2].Params != "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f" {
				t.Errorf("video = %+v", v)
			}
			if dc := d.Media[2]; !reflect.DeepEqual(dc.Tokens, []string{"webrtc-datachannel"}) || dc.Formats != nil {
				t.Errorf("data channel = %+v", dc)
			}
		}},
		{"firefox_offer.txt", KeyingDTLS, func(t *testing.T, d *Description) {
			a := d.Media[0]
			if len(a.Fingerprints) != 1 || a.ICE.Ufrag != "3c9e1f7a" || a.Formats[0].Params != "maxplaybackrate=48000;stereo=1;useinbandfec=1" {
				t.Errorf("session-level fingerprint or media attributes lost: %+v", a)
			}
			if a.SSRCs[0].CNAME != "{9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f}" || a.Formats[1].Channels != 1 {
				t.Errorf("audio = %+v", a)
			}
		}},
		{"sip_sdes_offer.txt", KeyingSDES, func(t *testing.T, d *Description) {
			a := d.Media[0]
			if a.Proto != "RTP/SAVP" || a.Address != "198.51.100.7" || a.MID != "" || a.RTCPMux || d.Bundle != nil {
				t.Errorf("audio = %+v", a)
			}
			if len(a.Crypto) != 2 || a.Crypto[0].Lifetime != 1<<20 || a.Crypto[0].MKI != 1 || a.Crypto[0].MKILength != 4 ||
				len(a.Crypto[0].Key) != 30 || a.Crypto[1].Suite != "AES_CM_128_HMAC_SHA1_32" {
				t.Errorf("crypto = %v", a.Crypto)
			}
			if a.ICE.Candidates[0].Transport != "udp" || a.ICE.Candidates[1].RelatedAddress != "198.51.100.7" {
				t.Errorf("candidates = %v", a.ICE.Candidates)
			}
		}},
		{"lite_border_offer.txt", KeyingDTLS, func(t *testing.T, d *Description) {
			a := d.Media[0]
			if !d.ICELite || !a.ICE.EndOfCandidates || a.Proto != "RTP/SAVPF" || a.Address != "203.0.113.50" || a.Port != 20000 {
				t.Errorf("description = %+v", d)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, eol := range []string{"\r\n", "\n"} {
				d, err := Unmarshal([]byte(strings.ReplaceAll(string(readTestdata(t, tc.name)), "\r\n", eol)))
				if err != nil {
					t.Fatal(err)
				}
				if k, err := d.Keying(); err != nil || k != tc.keying {
					t.Errorf("Keying() = %v, %v; want %s", k, err, tc.keying)
				}
				tc.check(t, d)
			}
		})
	}
}

func isNegotiation(err error) bool { return errors.Is(err, ErrNegotiation) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
