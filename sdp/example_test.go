package sdp_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/securecall/securecall/sdp"
)

func ExampleNewOffer() {
	offer, err := sdp.NewOffer(sdp.Capabilities{
		Keying: sdp.KeyingHybrid,
		Codecs: []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
		ICE: sdp.ICE{
			Ufrag:   "a1b2",
			Pwd:     "c3d4e5f6g7h8i9j0k1l2m3",
			Options: []string{"trickle"},
			Candidates: []sdp.Candidate{{
				Foundation: "1", Component: 1, Transport: "udp", Priority: 2130706431,
				Address: "192.0.2.10", Port: 50000, Type: sdp.CandidateHost,
			}},
		},
		Fingerprints: []sdp.Fingerprint{{Algorithm: "sha-256", Value: make([]byte, 32)}},
		KeyRef:       &sdp.KeyRef{URI: "https://kms.example.com/calls/42", Version: 1},
		SSRC:         1111,
		CNAME:        "alice",
		SessionID:    7,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	text, err := offer.Marshal()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(strings.ReplaceAll(string(text), "\r\n", "\n"))
	// Output:
	// v=0
	// o=- 7 1 IN IP4 0.0.0.0
	// s=-
	// t=0 0
	// a=group:BUNDLE 0
	// m=audio 50000 UDP/TLS/RTP/SAVPF 0
	// c=IN IP4 192.0.2.10
	// a=mid:0
	// a=ice-ufrag:a1b2
	// a=ice-pwd:c3d4e5f6g7h8i9j0k1l2m3
	// a=ice-options:trickle
	// a=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00
	// a=setup:actpass
	// a=key-mgmt:securecall eyJ1cmkiOiJodHRwczovL2ttcy5leGFtcGxlLmNvbS9jYWxscy80MiIsInZlcnNpb24iOjF9
	// a=sendrecv
	// a=rtcp-mux
	// a=rtpmap:0 PCMU/8000
	// a=ssrc:1111 cname:alice
	// a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host
}

func ExampleUnmarshal() {
	const offer = "v=0\r\n" +
		"o=sbc 1 1 IN IP4 203.0.113.50\r\n" +
		"s=-\r\n" +
		"c=IN IP4 203.0.113.50\r\n" +
		"t=0 0\r\n" +
		"a=ice-lite\r\n" +
		"m=audio 20000 RTP/SAVP 0 8\r\n" +
		"a=ice-ufrag:Sbc1\r\n" +
		"a=ice-pwd:q8W2e4R6t8Y0u2I4o6P8a0S2\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\r\n" +
		"a=candidate:1 1 udp 2130706431 203.0.113.50 20000 typ host\r\n"
	d, err := sdp.Unmarshal([]byte(offer))
	if err != nil {
		fmt.Println(err)
		return
	}
	keying, err := d.Keying()
	if err != nil {
		fmt.Println(err)
		return
	}
	m := d.Media[0]
	fmt.Println("keying:", keying, "lite:", d.ICELite)
	fmt.Println("formats:", m.Formats)
	fmt.Println("crypto:", m.Crypto[0])
	fmt.Println("ice:", m.ICE)

	_, err = sdp.Unmarshal([]byte(strings.Replace(offer, "typ host", "typ local", 1)))
	var perr *sdp.ParseError
	if errors.As(err, &perr) {
		fmt.Println("line", perr.Line, "rejected:", perr.Reason)
	}
	// Output:
	// keying: sdes lite: true
	// formats: [PCMU/8000 (0) PCMA/8000 (8)]
	// crypto: {Tag:1 Suite:AES_CM_128_HMAC_SHA1_80 Key:[REDACTED] Lifetime:1048576 MKI:1 MKILength:4 Params:[]}
	// ice: {Ufrag:Sbc1 Pwd:[REDACTED] Options:[] Candidates:1 EndOfCandidates:false}
	// line 11 rejected: candidate type must be host, srflx, prflx or relay
}

func ExampleNewAnswer() {
	offer, err := sdp.Unmarshal([]byte("v=0\r\n" +
		"o=- 1 2 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"t=0 0\r\n" +
		"a=group:BUNDLE 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n" +
		"c=IN IP4 0.0.0.0\r\n" +
		"a=mid:0\r\n" +
		"a=ice-ufrag:EsAw\r\n" +
		"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n" +
		"a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n" +
		"a=setup:actpass\r\n" +
		"a=rtcp-mux\r\n" +
		"a=rtpmap:111 opus/48000/2\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	local := sdp.Capabilities{
		ICE:          sdp.ICE{Ufrag: "x9y8", Pwd: "z7w6v5u4t3s2r1q0p9o8n7"},
		Fingerprints: []sdp.Fingerprint{{Algorithm: "sha-256", Value: make([]byte, 32)}},
		Codecs:       []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
	}
	_, agreement, err := sdp.NewAnswer(offer, local)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("keying:", agreement.Keying)
	fmt.Println("codec:", agreement.Codecs[0])
	fmt.Println("our DTLS role:", agreement.LocalSetup)
	fmt.Println("controlling:", agreement.ICEControlling)

	local.Codecs = []sdp.Format{{PayloadType: 18, Name: "G729", ClockRate: 8000}}
	_, _, err = sdp.NewAnswer(offer, local)
	fmt.Println(errors.Is(err, sdp.ErrNegotiation), err)
	// Output:
	// keying: dtls
	// codec: PCMU/8000 (0)
	// our DTLS role: active
	// controlling: false
	// true sdp: negotiation failed: no common codec: the offer has opus/48000/2 (111), PCMU/8000 (0), this endpoint supports G729/8000 (18)
}

// ExampleAcceptAnswer runs a whole exchange in kms keying: the offerer
// names the call key, the answerer echoes the reference, and both end up
// with the same agreement from their own side.
func ExampleAcceptAnswer() {
	ref := &sdp.KeyRef{URI: "https://kms.example.com/calls/42", Version: 2}
	offer, err := sdp.NewOffer(sdp.Capabilities{
		Keying: sdp.KeyingKMS,
		ICE:    sdp.ICE{Ufrag: "offr", Pwd: "offererpasswordoffere1"},
		KeyRef: ref,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	offerText, _ := offer.Marshal() // sent over the signaling

	received, err := sdp.Unmarshal(offerText)
	if err != nil {
		fmt.Println(err)
		return
	}
	answer, answerer, err := sdp.NewAnswer(received, sdp.Capabilities{
		Keying: sdp.KeyingKMS,
		ICE:    sdp.ICE{Ufrag: "answ", Pwd: "answererpasswordanswer"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	answerText, _ := answer.Marshal() // sent back

	remote, err := sdp.Unmarshal(answerText)
	if err != nil {
		fmt.Println(err)
		return
	}
	offerer, err := sdp.AcceptAnswer(offer, remote)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("offerer:", offerer.Keying, *offerer.KeyRef, offerer.Codecs[0], "controlling:", offerer.ICEControlling, "peer:", offerer.Remote.Ufrag)
	fmt.Println("answerer:", answerer.Keying, *answerer.KeyRef, answerer.Codecs[0], "controlling:", answerer.ICEControlling, "peer:", answerer.Remote.Ufrag)
	fmt.Println("secret-free:", !strings.Contains(string(offerText), "inline:") && !strings.Contains(string(answerText), "inline:"))
	// Output:
	// offerer: kms {https://kms.example.com/calls/42 2} opus/48000/2 (111) controlling: true peer: answ
	// answerer: kms {https://kms.example.com/calls/42 2} opus/48000/2 (111) controlling: false peer: offr
	// secret-free: true
}
