package sdp

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/securecall/securecall/internal/cfgcheck"
)

var (
	testFingerprint = Fingerprint{Algorithm: "sha-256", Value: bytes.Repeat([]byte{0xab}, 32)}
	testKey30       = bytes.Repeat([]byte{0x11}, 30)
	testKey28       = bytes.Repeat([]byte{0x22}, 28)
)

// caps returns capabilities for keying with the material it needs.
func caps(k Keying) Capabilities {
	c := Capabilities{
		Keying: k,
		ICE: ICE{
			Ufrag: "LoCa", Pwd: "localpasswordlocalpass",
			Candidates: []Candidate{{Foundation: "1", Component: 1, Transport: "udp", Priority: 2130706431, Address: "198.51.100.1", Port: 40000, Type: CandidateHost}},
		},
		SSRC: 1234, CNAME: "local", SessionID: 42,
	}
	switch k {
	case KeyingDTLS:
		c.Fingerprints = []Fingerprint{testFingerprint}
	case KeyingKMS:
		c.KeyRef = &KeyRef{URI: "https://kms.example.com/calls/1", Version: 3}
	case KeyingHybrid:
		c.Fingerprints = []Fingerprint{testFingerprint}
		c.KeyRef = &KeyRef{URI: "https://kms.example.com/calls/1", Version: 3}
	case KeyingSDES:
		c.Crypto = []Crypto{{Suite: "AEAD_AES_128_GCM", Key: testKey28}, {Suite: "AES_CM_128_HMAC_SHA1_80", Key: testKey30}}
	}
	return c
}

// wire marshals and unmarshals d, as the peer would see it.
func wire(t *testing.T, d *Description) *Description {
	t.Helper()
	text, err := d.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	out, err := Unmarshal(text)
	if err != nil {
		t.Fatalf("Unmarshal of Marshal output: %v\n%s", err, text)
	}
	return out
}

func TestOfferAnswerEachKeying(t *testing.T) {
	for _, k := range []Keying{KeyingDTLS, KeyingKMS, KeyingHybrid, KeyingSDES} {
		t.Run(string(k), func(t *testing.T) {
			offer, err := NewOffer(caps(k))
			if err != nil {
				t.Fatal(err)
			}
			remoteOffer := wire(t, offer)
			if got, err := remoteOffer.Keying(); err != nil || got != k {
				t.Fatalf("offer Keying() = %v, %v; want %s", got, err, k)
			}
			local := caps(k)
			local.ICE = ICE{Ufrag: "ReMo", Pwd: "remotepasswordremotepw"}
			local.SSRC, local.CNAME = 5678, "remote"
			local.KeyRef = nil
			if k == KeyingSDES {
				local.Crypto = []Crypto{{Suite: "AES_CM_128_HMAC_SHA1_80", Key: bytes.Repeat([]byte{0x33}, 30)}}
			}
			answer, ans, err := NewAnswer(remoteOffer, local)
			if err != nil {
				t.Fatal(err)
			}
			off, err := AcceptAnswer(offer, wire(t, answer))
			if err != nil {
				t.Fatal(err)
			}
			if ans.Keying != k || off.Keying != k {
				t.Errorf("keying: answerer %s, offerer %s; want %s", ans.Keying, off.Keying, k)
			}
			if !reflect.DeepEqual(ans.Codecs, off.Codecs) || ans.Codecs[0].Name != "opus" {
				t.Errorf("codecs: answerer %v, offerer %v", ans.Codecs, off.Codecs)
			}
			if ans.Remote.Ufrag != "LoCa" || off.Remote.Ufrag != "ReMo" || off.Remote.Pwd != "remotepasswordremotepw" {
				t.Errorf("remote ICE: answerer sees %q, offerer sees %q", ans.Remote.Ufrag, off.Remote.Ufrag)
			}
			if ans.RemoteSSRC != 1234 || off.RemoteSSRC != 5678 {
				t.Errorf("remote SSRC: answerer %d, offerer %d", ans.RemoteSSRC, off.RemoteSSRC)
			}
			if !ans.ICEControlling == !off.ICEControlling || !off.ICEControlling {
				t.Errorf("ICE roles: answerer controlling %t, offerer %t; want offerer only", ans.ICEControlling, off.ICEControlling)
			}
			if k.usesDTLS() {
				if ans.LocalSetup != SetupActive || off.LocalSetup != SetupPassive {
					t.Errorf("setup: answerer %s, offerer %s; want active, passive", ans.LocalSetup, off.LocalSetup)
				}
				if len(off.RemoteFingerprints) != 1 || len(ans.RemoteFingerprints) != 1 {
					t.Errorf("fingerprints not exchanged")
				}
			} else if ans.LocalSetup != "" || off.LocalSetup != "" {
				t.Errorf("setup without DTLS: %q %q", ans.LocalSetup, off.LocalSetup)
			}
			if k.usesKMS() {
				want := KeyRef{URI: "https://kms.example.com/calls/1", Version: 3}
				if ans.KeyRef == nil || *ans.KeyRef != want || off.KeyRef == nil || *off.KeyRef != want {
					t.Errorf("key refs %v %v, want %v", ans.KeyRef, off.KeyRef, want)
				}
			}
			if k == KeyingSDES {
				if ans.LocalCrypto == nil || off.RemoteCrypto == nil || !bytes.Equal(ans.LocalCrypto.Key, off.RemoteCrypto.Key) ||
					!bytes.Equal(off.LocalCrypto.Key, ans.RemoteCrypto.Key) || off.LocalCrypto.Suite != "AES_CM_128_HMAC_SHA1_80" ||
					off.LocalCrypto.Tag != 2 {
					t.Errorf("SDES: answerer %v/%v, offerer %v/%v", ans.LocalCrypto, ans.RemoteCrypto, off.LocalCrypto, off.RemoteCrypto)
				}
			}
		})
	}
}

func TestAnswerToChromeOffer(t *testing.T) {
	offer, err := Unmarshal(readTestdata(t, "chrome_offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	c := caps(KeyingDTLS)
	c.ICE.Options = []string{"trickle"}
	answer, a, err := NewAnswer(offer, c)
	if err != nil {
		t.Fatal(err)
	}
	text, err := answer.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s := string(text)
	if !strings.HasPrefix(s, "v=0\r\no=- 42 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n") || strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Errorf("answer does not start like a browser's or mixes line endings:\n%s", s)
	}
	audio, video, _ := strings.Cut(s, "m=video")
	for _, want := range []string{
		"a=group:BUNDLE 0\r\n",
		"m=audio 40000 UDP/TLS/RTP/SAVPF 111 0 8\r\n",
		"c=IN IP4 198.51.100.1\r\n",
		"a=mid:0\r\n", "a=rtcp-mux\r\n", "a=ice-ufrag:LoCa\r\n", "a=ice-pwd:localpasswordlocalpass\r\n",
		"a=ice-options:trickle\r\n",
		"a=fingerprint:sha-256 AB:AB:", "a=setup:active\r\n", "a=sendrecv\r\n",
		"a=rtpmap:111 opus/48000/2\r\n", "a=fmtp:111 minptime=10;useinbandfec=1\r\n", "a=rtpmap:0 PCMU/8000\r\n",
		"a=ssrc:1234 cname:local\r\n",
		"a=candidate:1 1 udp 2130706431 198.51.100.1 40000 typ host\r\n",
	} {
		if !strings.Contains(audio, want) {
			t.Errorf("audio section lacks %q:\n%s", want, audio)
		}
	}
	if !strings.HasPrefix(video, " 0 UDP/TLS/RTP/SAVPF 96 97 102 103\r\n") || !strings.Contains(video, "a=mid:1\r\n") {
		t.Errorf("video section is not rejected with port 0 and its mid:\nm=video%s", video)
	}
	if !strings.Contains(s, "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n") {
		t.Errorf("data channel section is not rejected with port 0 and its mid:\n%s", s)
	}
	if strings.Contains(s, "BUNDLE 0 1") {
		t.Error("rejected sections are still in the BUNDLE group")
	}
	// G722 is not in the local codecs; the answer keeps the offer's order.
	c.Codecs = []Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}, {PayloadType: 120, Name: "OPUS", ClockRate: 48000, Channels: 2}}
	_, a, err = NewAnswer(offer, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Codecs) != 2 || a.Codecs[0].PayloadType != 111 || a.Codecs[1].PayloadType != 0 {
		t.Errorf("codecs = %v, want offer order with offer payload types: opus 111, PCMU 0", a.Codecs)
	}
	if a.MID != "0" || a.RemoteLite || a.ICEControlling || a.Remote.Ufrag != "EsAw" || len(a.Remote.Candidates) != 3 || a.RemoteSSRC != 1001 {
		t.Errorf("agreement = %+v", a)
	}
}

func TestAnswerToFirefoxOffer(t *testing.T) {
	offer, err := Unmarshal(readTestdata(t, "firefox_offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	answer, a, err := NewAnswer(offer, caps(KeyingDTLS))
	if err != nil {
		t.Fatal(err)
	}
	if a.Codecs[0].PayloadType != 109 || a.LocalSetup != SetupActive || len(a.RemoteFingerprints) != 1 {
		t.Errorf("agreement = %+v", a)
	}
	if !reflect.DeepEqual(answer.Bundle, []string{"0"}) {
		t.Errorf("bundle = %v", answer.Bundle)
	}
}

func TestAnswerToSIPSDESOffer(t *testing.T) {
	offer, err := Unmarshal(readTestdata(t, "sip_sdes_offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	c := caps(KeyingSDES)
	c.Codecs = []Format{{PayloadType: 8, Name: "PCMA", ClockRate: 8000}}
	answer, a, err := NewAnswer(offer, c)
	if err != nil {
		t.Fatal(err)
	}
	if a.RemoteCrypto.Tag != 1 || a.LocalCrypto.Tag != 1 || a.LocalCrypto.Suite != "AES_CM_128_HMAC_SHA1_80" ||
		!bytes.Equal(a.LocalCrypto.Key, testKey30) || a.RemoteCrypto.MKILength != 4 {
		t.Errorf("SDES agreement: local %v remote %v", a.LocalCrypto, a.RemoteCrypto)
	}
	m := answer.Media[0]
	if m.Proto != "RTP/SAVP" || len(m.Crypto) != 1 || m.MID != "" || answer.Bundle != nil || m.RTCPMux {
		t.Errorf("answer section = %+v", m)
	}
}

func TestAnswerToLiteBorderElement(t *testing.T) {
	offer, err := Unmarshal(readTestdata(t, "lite_border_offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !offer.ICELite {
		t.Fatal("session-level ice-lite not detected")
	}
	if k, err := offer.Keying(); err != nil || k != KeyingDTLS {
		t.Fatalf("Keying() = %v, %v; want dtls for RTP/SAVPF with a fingerprint", k, err)
	}
	_, a, err := NewAnswer(offer, caps(KeyingDTLS))
	if err != nil {
		t.Fatal(err)
	}
	if !a.RemoteLite || !a.ICEControlling || a.LocalSetup != SetupActive || !a.Remote.EndOfCandidates {
		t.Errorf("a full agent answering a Lite one must control ICE: %+v", a)
	}
	// A Lite answerer facing a Lite offerer leaves control to the offerer.
	lite := caps(KeyingDTLS)
	lite.ICELite = true
	answer, a, err := NewAnswer(offer, lite)
	if err != nil {
		t.Fatal(err)
	}
	if a.ICEControlling || !answer.ICELite {
		t.Errorf("Lite answerer: controlling %t, ice-lite in answer %t", a.ICEControlling, answer.ICELite)
	}
}

func TestOffererRoleWithLiteAnswer(t *testing.T) {
	for _, tc := range []struct {
		offerLite, answerLite, want bool
	}{{false, false, true}, {false, true, true}, {true, false, false}, {true, true, true}} {
		oc := caps(KeyingDTLS)
		oc.ICELite = tc.offerLite
		offer, err := NewOffer(oc)
		if err != nil {
			t.Fatal(err)
		}
		ac := caps(KeyingDTLS)
		ac.ICELite = tc.answerLite
		answer, ans, err := NewAnswer(wire(t, offer), ac)
		if err != nil {
			t.Fatal(err)
		}
		a, err := AcceptAnswer(offer, wire(t, answer))
		if err != nil {
			t.Fatal(err)
		}
		if a.ICEControlling != tc.want || ans.ICEControlling == a.ICEControlling {
			t.Errorf("offer lite %t, answer lite %t: offerer controlling %t, answerer %t; want offerer %t",
				tc.offerLite, tc.answerLite, a.ICEControlling, ans.ICEControlling, tc.want)
		}
	}
}

func TestNegotiationErrors(t *testing.T) {
	dtlsOffer := func(t *testing.T) *Description {
		d, err := NewOffer(caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		return wire(t, d)
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) error
		want string
	}{
		{"no common codec", func(t *testing.T) error {
			c := caps(KeyingDTLS)
			c.Codecs = []Format{{PayloadType: 18, Name: "G729", ClockRate: 8000}}
			_, _, err := NewAnswer(dtlsOffer(t), c)
			return err
		}, "no common codec"},
		{"keying mismatch sdes offer, kms required", func(t *testing.T) error {
			offer, err := Unmarshal(readTestdata(t, "sip_sdes_offer.txt"))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = NewAnswer(offer, caps(KeyingKMS))
			return err
		}, "keying mismatch: the offer supports sdes; this endpoint requires kms"},
		{"missing fingerprint for dtls", func(t *testing.T) error {
			offer := dtlsOffer(t)
			offer.Media[0].Fingerprints = nil
			_, _, err := NewAnswer(offer, caps(KeyingDTLS))
			return err
		}, "missing fingerprint"},
		{"answer without fingerprint", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingDTLS))
			answer, _, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
			if err != nil {
				t.Fatal(err)
			}
			answer.Media[0].Fingerprints = nil
			answer.Media[0].Proto = "RTP/SAVPF"
			answer.Media[0].Crypto = []Crypto{{Tag: 1, Suite: "AES_CM_128_HMAC_SHA1_80", Key: testKey30}}
			_, err = AcceptAnswer(offer, answer)
			return err
		}, "missing fingerprint"},
		{"bad setup in answer", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingDTLS))
			answer, _, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
			if err != nil {
				t.Fatal(err)
			}
			answer.Media[0].Setup = SetupActpass
			_, err = AcceptAnswer(offer, answer)
			return err
		}, "bad setup"},
		{"no common SDES suite", func(t *testing.T) error {
			offer, err := Unmarshal(readTestdata(t, "sip_sdes_offer.txt"))
			if err != nil {
				t.Fatal(err)
			}
			c := caps(KeyingSDES)
			c.Codecs = []Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}}
			c.Crypto = []Crypto{{Suite: "AEAD_AES_256_GCM", Key: bytes.Repeat([]byte{1}, 44)}}
			_, _, err = NewAnswer(offer, c)
			return err
		}, "no common SDES suite"},
		{"answer with unoffered crypto tag", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingSDES))
			answer, _, err := NewAnswer(wire(t, offer), caps(KeyingSDES))
			if err != nil {
				t.Fatal(err)
			}
			answer.Media[0].Crypto[0].Tag = 9
			_, err = AcceptAnswer(offer, answer)
			return err
		}, "no common SDES suite"},
		{"key reference mismatch", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingKMS))
			c := caps(KeyingKMS)
			c.KeyRef = &KeyRef{URI: "https://other.example.com/k"}
			_, _, err := NewAnswer(wire(t, offer), c)
			return err
		}, "key reference mismatch"},
		{"answer rejects audio", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingDTLS))
			answer, _, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
			if err != nil {
				t.Fatal(err)
			}
			answer.Media[0].Port = 0
			_, err = AcceptAnswer(offer, answer)
			return err
		}, "rejected the audio section"},
		{"answer with other section count", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingDTLS))
			_, err := AcceptAnswer(offer, &Description{})
			return err
		}, "media sections"},
		{"answer keying differs", func(t *testing.T) error {
			offer, _ := NewOffer(caps(KeyingHybrid))
			answer, _, err := NewAnswer(wire(t, offer), caps(KeyingHybrid))
			if err != nil {
				t.Fatal(err)
			}
			answer.Media[0].KeyRef = nil
			_, err = AcceptAnswer(offer, answer)
			return err
		}, "keying mismatch: the offer uses hybrid, the answer dtls"},
		{"offer without keying", func(t *testing.T) error {
			offer := dtlsOffer(t)
			offer.Media[0].Proto = "RTP/AVP"
			offer.Media[0].Fingerprints = nil
			_, _, err := NewAnswer(offer, caps(KeyingDTLS))
			return err
		}, "no keying"},
		{"offer without audio", func(t *testing.T) error {
			offer := dtlsOffer(t)
			offer.Media[0].Kind = "video"
			_, _, err := NewAnswer(offer, caps(KeyingDTLS))
			return err
		}, "no audio section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if !errors.Is(err, ErrNegotiation) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want one wrapping ErrNegotiation that says %q", err, tc.want)
			}
		})
	}
}

func TestCapabilityErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Capabilities)
		want string
	}{
		{"no ICE credentials", func(c *Capabilities) { c.ICE = ICE{} }, "ufrag"},
		{"dtls without fingerprint", func(c *Capabilities) { c.Fingerprints = nil }, "fingerprints"},
		{"kms without key ref", func(c *Capabilities) { c.Keying, c.Fingerprints = KeyingKMS, nil }, "KeyRef"},
		{"sdes without crypto", func(c *Capabilities) { c.Keying = KeyingSDES }, "Crypto"},
		{"unknown keying", func(c *Capabilities) { c.Keying = "mikey" }, "unknown keying"},
		{"bad codec", func(c *Capabilities) { c.Codecs = []Format{{PayloadType: 96}} }, "codec 0"},
		{"bad crypto key", func(c *Capabilities) {
			c.Keying = KeyingSDES
			c.Crypto = []Crypto{{Suite: "AES_CM_128_HMAC_SHA1_80", Key: []byte{1, 2}}}
		}, "needs 30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := caps(KeyingDTLS)
			tc.edit(&c)
			_, err := NewOffer(c)
			if err == nil || errors.Is(err, ErrNegotiation) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewOffer error = %v; want a capability error saying %q", err, tc.want)
			}
		})
	}
}

// TestCapabilitiesDefaults checks each documented default of the zero
// Capabilities fields against the constants and functions the
// documentation names.
func TestCapabilitiesDefaults(t *testing.T) {
	c := Capabilities{
		ICE:          ICE{Ufrag: "LoCa", Pwd: "localpasswordlocalpass"},
		Fingerprints: []Fingerprint{testFingerprint},
	}
	before := cfgcheck.Snapshot(c)
	d, err := NewOffer(c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cfgcheck.Diff(before, c); diff != "" {
		t.Errorf("NewOffer modified the caller's Capabilities: %s", diff)
	}
	if k, err := d.Keying(); err != nil || k != KeyingDTLS {
		t.Errorf("Keying default: %v, %v; want %s", k, err, KeyingDTLS)
	}
	m := d.Media[0]
	want := []Format{
		{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2, Params: "minptime=10;useinbandfec=1"},
		{PayloadType: 0, Name: "PCMU", ClockRate: 8000},
		{PayloadType: 8, Name: "PCMA", ClockRate: 8000},
	}
	if !reflect.DeepEqual(m.Formats, want) || !reflect.DeepEqual(DefaultCodecs(), want) {
		t.Errorf("Codecs default = %v, want %v", m.Formats, want)
	}
	if len(m.SSRCs) != 1 || m.SSRCs[0].ID == 0 || m.SSRCs[0].CNAME == "" {
		t.Errorf("SSRC and CNAME defaults: %v, want random non-zero", m.SSRCs)
	}
	if d.Origin.SessionID == 0 || d.Origin.SessionID >= 1<<62 {
		t.Errorf("SessionID default %d, want random in [1, 2^62)", d.Origin.SessionID)
	}
	if d.ICELite {
		t.Error("ICELite default: want a full agent")
	}
	if m.MID != DefaultMID || m.Port != DefaultPort || !reflect.DeepEqual(d.Bundle, []string{DefaultMID}) {
		t.Errorf("mid %q port %d bundle %v; want %q, %d", m.MID, m.Port, d.Bundle, DefaultMID, DefaultPort)
	}
	d2, err := NewOffer(c)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Origin.SessionID == d.Origin.SessionID || d2.Media[0].SSRCs[0] == m.SSRCs[0] {
		t.Error("two offers drew the same random session id or SSRC")
	}
}

func TestOfferSharesNoMemory(t *testing.T) {
	c := caps(KeyingSDES)
	c.ICE.Candidates[0].Extensions = []Extension{{Name: "generation", Value: "0"}}
	d, err := NewOffer(c)
	if err != nil {
		t.Fatal(err)
	}
	d.Media[0].Crypto[0].Key[0] ^= 0xff
	d.Media[0].Formats[0].Name = "changed"
	d.Media[0].ICE.Candidates[0].Extensions[0].Value = "9"
	if c.Crypto[0].Key[0] != testKey28[0] || c.ICE.Candidates[0].Extensions[0].Value != "0" || DefaultCodecs()[0].Name != "opus" {
		t.Error("the offer shares memory with the capabilities")
	}
	if c.Crypto[0].Tag != 0 {
		t.Error("NewOffer numbered the caller's crypto lines")
	}
}

// TestConcurrentUse runs parsing and negotiation from several goroutines
// on shared inputs; with -race it checks that nothing is shared mutably.
func TestConcurrentUse(t *testing.T) {
	data := readTestdata(t, "chrome_offer.txt")
	offer, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	c := caps(KeyingDTLS)
	done := make(chan error, 8)
	for range 8 {
		go func() {
			for range 20 {
				if _, err := Unmarshal(data); err != nil {
					done <- err
					return
				}
				answer, _, err := NewAnswer(offer, c)
				if err != nil {
					done <- err
					return
				}
				if _, err := answer.Marshal(); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestSetupRoles(t *testing.T) {
	for _, tc := range []struct {
		offered, want Setup
	}{{SetupActpass, SetupActive}, {SetupPassive, SetupActive}, {SetupActive, SetupPassive}, {"", SetupPassive}} {
		offer, err := NewOffer(caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		offer.Media[0].Setup = tc.offered
		answer, a, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		if a.LocalSetup != tc.want || answer.Media[0].Setup != tc.want {
			t.Errorf("offer setup %q: answerer takes %q (answer says %q), want %q", tc.offered, a.LocalSetup, answer.Media[0].Setup, tc.want)
		}
		off, err := AcceptAnswer(offer, wire(t, answer))
		if err != nil {
			t.Fatalf("offer setup %q: %v", tc.offered, err)
		}
		if off.LocalSetup == a.LocalSetup {
			t.Errorf("offer setup %q: both sides took %q", tc.offered, a.LocalSetup)
		}
	}
	for _, tc := range []struct {
		offered, answered Setup
		ok                bool
		want              Setup
	}{
		{SetupActpass, SetupActive, true, SetupPassive},
		{SetupActpass, SetupPassive, true, SetupActive},
		{SetupActpass, "", true, SetupPassive},
		{SetupActpass, SetupActpass, false, ""},
		{SetupActive, SetupActive, false, ""},
		{SetupPassive, SetupPassive, false, ""},
	} {
		offer, err := NewOffer(caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		offer.Media[0].Setup = tc.offered
		answer, _, err := NewAnswer(wire(t, offer), caps(KeyingDTLS))
		if err != nil {
			t.Fatal(err)
		}
		answer.Media[0].Setup = tc.answered
		a, err := AcceptAnswer(offer, answer)
		switch {
		case tc.ok && (err != nil || a.LocalSetup != tc.want):
			t.Errorf("offer %q answer %q: %v, %q; want %q", tc.offered, tc.answered, err, a.LocalSetup, tc.want)
		case !tc.ok && (!errors.Is(err, ErrNegotiation) || !strings.Contains(err.Error(), "bad setup")):
			t.Errorf("offer %q answer %q: err = %v, want a bad setup error", tc.offered, tc.answered, err)
		}
	}
}
