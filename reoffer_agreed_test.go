package securecall_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/sdp"
)

// checkCarriesOnlyAgreed checks that re, a later offer of this end, carries
// no more than the last exchange agreed (RFC 3264 section 8, RFC 8843
// section 7.3.1, RFC 5888 section 9.2): last is this end's last
// description and peer the peer's. re keeps last's media sections (their
// number, order, kinds, protos and mids), names a mid only where the peer
// knows mids, a BUNDLE group only if both descriptions have it, a=rtcp
// only where RTCP is not multiplexed, and no ICE attribute at all toward a
// peer without ICE.
func checkCarriesOnlyAgreed(t *testing.T, op, last, peer, re string) {
	t.Helper()
	l, p, r := parse(t, last), parse(t, peer), parse(t, re)
	if len(r.Media) != len(l.Media) {
		t.Fatalf("%s: %d media sections, the last description %d (RFC 3264 section 8: the same sections, in order)", op, len(r.Media), len(l.Media))
	}
	for i := range r.Media {
		rm, lm := r.Media[i], l.Media[i]
		mid := lm.MID
		if i >= len(p.Media) || p.Media[i].MID == "" {
			mid = "" // the peer knows no mid (RFC 5888 section 9.2)
		}
		if rm.Kind != lm.Kind || rm.Proto != lm.Proto || rm.MID != mid || (rm.Port == 0) != (lm.Port == 0) {
			t.Errorf("%s: section %d is %s %s mid %q port %d; want the last description's %s %s, mid %q, port %d",
				op, i, rm.Kind, rm.Proto, rm.MID, rm.Port, lm.Kind, lm.Proto, mid, lm.Port)
		}
	}
	ra, pa := firstAudioOf(r), firstAudioOf(p)
	if len(r.Bundle) > 0 && (len(l.Bundle) == 0 || len(p.Bundle) == 0) {
		t.Errorf("%s: a=group:BUNDLE %v, which the last exchange did not agree (ours %v, the peer's %v)", op, r.Bundle, l.Bundle, p.Bundle)
	}
	if ra.RTCPMux && pa.RTCPMux && ra.RTCP.Port != 0 {
		t.Errorf("%s: a=rtcp:%d although rtcp-mux is agreed", op, ra.RTCP.Port)
	}
	if !pa.HasICE() {
		for _, attr := range []string{"a=ice-", "a=candidate", "a=end-of-candidates"} {
			if strings.Contains(re, attr) {
				t.Errorf("%s toward a peer without ICE carries %s...", op, attr)
			}
		}
	}
}

func firstAudioOf(d *sdp.Description) sdp.Media {
	for _, m := range d.Media {
		if m.Kind == "audio" && m.Port != 0 {
			return m
		}
	}
	return sdp.Media{}
}

// plainSIPOffer is a SIP phone's offer without ICE, mid or BUNDLE, on
// RTP/SAVPF, with a video section the Call rejects.
func plainSIPOffer(version int, rtp *net.UDPConn, key []byte, dir string) string {
	port := strconv.Itoa(rtp.LocalAddr().(*net.UDPAddr).Port)
	return "v=0\r\no=- 5151 " + strconv.Itoa(version) + " IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio " + port + " RTP/SAVPF 0\r\n" +
		"a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=" + dir + "\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(key) + "\r\n" +
		"m=video 0 RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n"
}

// TestReofferCarriesOnlyAgreed: the later offers of a Call (Hold, Resume,
// Restart) carry no more than the call's last exchange agreed: toward a
// SIP phone without ICE, whose descriptions have no mid, BUNDLE or ICE,
// and toward an ICE peer that answered without mid and BUNDLE (baresip),
// a re-offer has neither (RFC 8843: BUNDLE only when both agreed it), the
// same media sections, protos and mids as the call's last description,
// no a=rtcp beside an agreed rtcp-mux and no ICE attribute toward a peer
// without ICE; the exchanges complete and media flows.
func TestReofferCarriesOnlyAgreed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Run("answerer to a phone without ICE", func(t *testing.T) {
		key := bytes.Repeat([]byte{0x5b}, 30)
		rtp := listenLoopback(t)
		cfg := sdesConfig()
		cfg.ICE.Lite = true // a gateway: still no ICE toward a peer without it
		call, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer call.Close()
		offer := plainSIPOffer(1, rtp, key, "sendrecv")
		answer, callKey := answerNoICE(ctx, t, call, offer)
		checkCarriesOnlyAgreed(t, "the answer", answer, offer, answer)
		if err := call.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		recv, err := srtp.CreateContext(callKey[:16], callKey[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		last, peer := answer, offer
		for i, op := range []func(context.Context) (string, error){call.Hold, call.Resume} {
			re, err := op(ctx)
			if err != nil {
				t.Fatal(err)
			}
			name := [...]string{"Hold", "Resume"}[i]
			checkCarriesOnlyAgreed(t, name, last, peer, re)
			dir := [...]string{"recvonly", "sendrecv"}[i]
			reply := strings.Replace(plainSIPOffer(2+i, rtp, key, dir), "m=video 0 RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n", "m=video 0 RTP/SAVPF 96\r\n", 1)
			if err := call.SetAnswer(ctx, reply); err != nil {
				t.Fatalf("SetAnswer to %s: %v", name, err)
			}
			last, peer = re, reply
		}
		expectRTP(t, call, 1, recv, rtp, nil)
	})
	t.Run("offerer without ICE", func(t *testing.T) {
		key := bytes.Repeat([]byte{0x5c}, 30)
		rtp := listenLoopback(t)
		cfg := sdesConfig()
		cfg.NoICE = true
		call, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer call.Close()
		offer, err := call.Offer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The phone answers the first crypto line it knows, without mid or
		// BUNDLE.
		o := parse(t, offer)
		var cr sdp.Crypto
		for _, c := range o.Media[0].Crypto {
			if c.Suite == "AES_CM_128_HMAC_SHA1_80" {
				cr = c
			}
		}
		port := strconv.Itoa(rtp.LocalAddr().(*net.UDPAddr).Port)
		answerAt := func(version int, dir string) string {
			return "v=0\r\no=- 6161 " + strconv.Itoa(version) + " IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
				"m=audio " + port + " RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=" + dir + "\r\n" +
				"a=crypto:" + strconv.Itoa(cr.Tag) + " AES_CM_128_HMAC_SHA1_80 inline:" + b64(key) + "\r\n"
		}
		answer := answerAt(1, "sendrecv")
		if err := call.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		if err := call.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		last, peer := offer, answer
		for i, op := range []func(context.Context) (string, error){call.Hold, call.Resume} {
			re, err := op(ctx)
			if err != nil {
				t.Fatal(err)
			}
			name := [...]string{"Hold", "Resume"}[i]
			checkCarriesOnlyAgreed(t, name, last, peer, re)
			reply := answerAt(2+i, [...]string{"recvonly", "sendrecv"}[i])
			if err := call.SetAnswer(ctx, reply); err != nil {
				t.Fatalf("SetAnswer to %s: %v", name, err)
			}
			last, peer = re, reply
		}
		recv, err := srtp.CreateContext(cr.Key[:16], cr.Key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		expectRTP(t, call, 1, recv, rtp, nil)
	})
	t.Run("ICE peer that answers without mid and BUNDLE", func(t *testing.T) {
		noMID := func(desc string, toCallee bool) string {
			if toCallee {
				return desc
			}
			return rewrite(t, desc, func(d *sdp.Description) {
				d.Bundle = nil
				for i := range d.Media {
					d.Media[i].MID = ""
				}
			})
		}
		a, b, offer, answer := capturePair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()}, noMID)
		sendRecv(t, a, b, 3)
		last, peer := *offer, *answer
		ops := []struct {
			name string
			f    func(context.Context) (string, error)
		}{{"Hold", a.Hold}, {"Resume", a.Resume}, {"Restart", a.Restart}}
		for _, op := range ops {
			re, err := op.f(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkCarriesOnlyAgreed(t, op.name, last, peer, re)
			reply, err := b.Answer(ctx, re)
			if err != nil {
				t.Fatalf("Answer to %s: %v", op.name, err)
			}
			reply = noMID(reply, false)
			if err := a.SetAnswer(ctx, reply); err != nil {
				t.Fatalf("SetAnswer to %s: %v", op.name, err)
			}
			last, peer = re, reply
		}
		waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
		sendRecv(t, a, b, 3)
		sendRecv(t, b, a, 3)
	})
}
