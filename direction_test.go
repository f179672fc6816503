package securecall_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// directionModes are the two ways SIP gear meets a Call: sdes without ICE
// (a phone or trunk) and dtls with ICE.
func directionModes() []struct {
	name string
	cfg  securecall.Config
} {
	sip := sdesConfig()
	sip.NoICE = true
	return []struct {
		name string
		cfg  securecall.Config
	}{{"sdes without ICE", sip}, {"dtls with ICE", securecall.Config{ICE: loopbackICE()}}}
}

// reoffer returns offer as its sender's later offer: version up by bump,
// the audio section's direction dir, and its codecs, if any given.
func reoffer(t *testing.T, offer string, bump uint64, dir sdp.Direction, codecs ...sdp.Format) string {
	t.Helper()
	return rewrite(t, offer, func(d *sdp.Description) {
		d.Origin.SessionVersion += bump
		d.Media[0].Direction = dir
		if len(codecs) > 0 {
			d.Media[0].Formats = codecs
		}
	})
}

// audioOf returns the audio section of desc.
func audioOf(t *testing.T, desc string) sdp.Media {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	return d.Media[0]
}

// capturePair connects two calls and keeps the descriptions exchanged.
func capturePair(t *testing.T, ca, cb securecall.Config, edit func(desc string, toCallee bool) string) (a, b *securecall.Call, offer, answer *string) {
	t.Helper()
	offer, answer = new(string), new(string)
	carry := func(desc string, toCallee bool) string {
		if edit != nil {
			desc = edit(desc, toCallee)
		}
		if toCallee {
			*offer = desc
		} else {
			*answer = desc
		}
		return desc
	}
	a, b = connectPairVia(t, ca, cb, carry, nil)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, offer, answer
}

// writeHeld writes n packets from c, each of which must be withheld: no
// error, nothing sent, each counted.
func writeHeld(t *testing.T, c *securecall.Call, n int) {
	t.Helper()
	before := c.Stats()
	payload := make([]byte, 160)
	payload[0] = 0xee // sendRecv would see it as an altered packet
	for i := range n {
		h := media.RTPHeader{PayloadType: c.Codec().PayloadType, SequenceNumber: uint16(50 + i), SSRC: c.SSRC()}
		if err := c.WriteRTP(h, payload); err != nil {
			t.Fatalf("WriteRTP while this end must not send: %v", err)
		}
	}
	after := c.Stats()
	if after.RTPPacketsSent != before.RTPPacketsSent {
		t.Errorf("RTP packets sent while this end must not send: %d", after.RTPPacketsSent-before.RTPPacketsSent)
	}
	if got := after.RTPWithheld - before.RTPWithheld; got != uint64(n) {
		t.Errorf("Stats.RTPWithheld counted %d of %d packets withheld", got, n)
	}
}

// TestReofferHoldStopsSending: a SIP peer's re-offer that puts the call on
// hold (sendonly, then inactive) is answered recvonly (inactive) and
// applied: this end sends no RTP, says so in Direction and counts what
// WriteRTP withheld, RTCP flows on, the re-offer sent again gets the same
// answer, and a re-offer of sendrecv resumes sending at once.
func TestReofferHoldStopsSending(t *testing.T) {
	for _, mode := range directionModes() {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, b, offer, _ := capturePair(t, mode.cfg, mode.cfg, nil)
			sendRecv(t, b, a, 3)
			if d := b.Direction(); d != sdp.SendRecv {
				t.Fatalf("Direction after the first exchange: %q, want sendrecv", d)
			}
			for i, tc := range []struct{ offered, want sdp.Direction }{
				{sdp.SendOnly, sdp.RecvOnly},
				{sdp.Inactive, sdp.Inactive},
			} {
				hold := reoffer(t, *offer, uint64(i+1), tc.offered)
				ans, err := b.Answer(ctx, hold)
				if err != nil {
					t.Fatalf("hold re-offer (%s): %v", tc.offered, err)
				}
				if d := audioOf(t, ans).Direction; d != tc.want {
					t.Fatalf("answer to a %s re-offer says %s, want %s", tc.offered, d, tc.want)
				}
				if d := b.Direction(); d != tc.want {
					t.Fatalf("Direction after a %s re-offer: %s, want %s", tc.offered, d, tc.want)
				}
				writeHeld(t, b, 5)
				again, err := b.Answer(ctx, hold)
				if err != nil || again != ans {
					t.Fatalf("the hold re-offer sent again: %v, same answer %t", err, again == ans)
				}
				if d := b.Direction(); d != tc.want {
					t.Fatalf("Direction after the retransmission: %s, want %s", d, tc.want)
				}
			}
			rtcpBothWays(t, a, b)
			sendRecv(t, a, b, 3) // b on hold still receives what arrives
			resume := reoffer(t, *offer, 3, sdp.SendRecv)
			ans, err := b.Answer(ctx, resume)
			if err != nil {
				t.Fatalf("resume re-offer: %v", err)
			}
			if d := audioOf(t, ans).Direction; d != sdp.SendRecv || b.Direction() != sdp.SendRecv {
				t.Fatalf("after resume: answer %s, Direction %s, want sendrecv", d, b.Direction())
			}
			// Had the withheld packets gone out, a would read them first.
			sendRecv(t, b, a, 3)
		})
	}
}

// TestReofferRecvonlyKeepsReceiving: a peer whose re-offer says recvonly
// (it only listens, as a recording leg does) gets a sendonly answer; this
// end goes on sending, and RTP the peer sends anyway is delivered.
func TestReofferRecvonlyKeepsReceiving(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, offer, _ := capturePair(t, directionModes()[0].cfg, directionModes()[0].cfg, nil)
	if _, err := b.Answer(ctx, reoffer(t, *offer, 1, sdp.RecvOnly)); err != nil {
		t.Fatal(err)
	}
	if d := b.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction after a recvonly re-offer: %s, want sendonly", d)
	}
	sendRecv(t, b, a, 3)
	sendRecv(t, a, b, 3)
	if n := b.Stats().RTPWithheld; n != 0 {
		t.Errorf("RTPWithheld %d on a sendonly call", n)
	}
}

// TestFirstOfferDirection: an offer that is already sendonly or inactive
// starts a call in which the answerer sends nothing, and the offerer
// takes the direction of the answer.
func TestFirstOfferDirection(t *testing.T) {
	for _, tc := range []struct {
		offered          sdp.Direction
		answerer, caller sdp.Direction
	}{
		{sdp.SendOnly, sdp.RecvOnly, sdp.SendOnly},
		{sdp.Inactive, sdp.Inactive, sdp.Inactive},
	} {
		t.Run(string(tc.offered), func(t *testing.T) {
			a, b, _, _ := capturePair(t, directionModes()[0].cfg, directionModes()[0].cfg, func(desc string, toCallee bool) string {
				if !toCallee {
					return desc
				}
				return reoffer(t, desc, 0, tc.offered)
			})
			if d := b.Direction(); d != tc.answerer {
				t.Fatalf("answerer's Direction: %s, want %s", d, tc.answerer)
			}
			if d := a.Direction(); d != tc.caller {
				t.Fatalf("caller's Direction: %s, want %s", d, tc.caller)
			}
			writeHeld(t, b, 3)
			if tc.caller.Sends() {
				sendRecv(t, a, b, 3)
			} else {
				writeHeld(t, a, 3)
			}
		})
	}
}

// TestSetAnswerDirection: the peer's answer to this end's offer decides
// whether this end sends: sendonly or inactive stops it, recvonly does not.
func TestSetAnswerDirection(t *testing.T) {
	for _, tc := range []struct{ answered, caller sdp.Direction }{
		{sdp.SendOnly, sdp.RecvOnly},
		{sdp.Inactive, sdp.Inactive},
		{sdp.RecvOnly, sdp.SendOnly},
	} {
		t.Run(string(tc.answered), func(t *testing.T) {
			a, b, _, _ := capturePair(t, directionModes()[1].cfg, directionModes()[1].cfg, func(desc string, toCallee bool) string {
				if toCallee {
					return desc
				}
				return reoffer(t, desc, 0, tc.answered)
			})
			if d := a.Direction(); d != tc.caller {
				t.Fatalf("caller's Direction after a %s answer: %s, want %s", tc.answered, d, tc.caller)
			}
			if tc.caller.Sends() {
				sendRecv(t, a, b, 3)
			} else {
				writeHeld(t, a, 3)
			}
		})
	}
}

// TestWriteSampleHeld: WriteSample on hold sends nothing and counts it,
// and keeps the stream's clock running, so that the first packet after
// the resume carries the time that passed and starts a talkspurt.
func TestWriteSampleHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, offer, _ := capturePair(t, directionModes()[0].cfg, directionModes()[0].cfg, nil)
	frame := make([]byte, 160)
	const d = 20 * time.Millisecond
	ticks := uint32(b.Codec().ClockRate / 50)
	buf := make([]byte, 1500)
	if err := b.WriteSample(frame, d); err != nil {
		t.Fatal(err)
	}
	first, _, err := a.ReadRTP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Answer(ctx, reoffer(t, *offer, 1, sdp.SendOnly)); err != nil {
		t.Fatal(err)
	}
	sent := b.Stats().RTPPacketsSent
	for range 3 {
		if err := b.WriteSample(frame, d); err != nil {
			t.Fatalf("WriteSample on hold: %v", err)
		}
	}
	if err := b.WriteSample(frame, -d); err == nil {
		t.Fatal("WriteSample on hold with a negative duration: <nil>, want the error it gives off hold")
	}
	if st := b.Stats(); st.RTPPacketsSent != sent || st.RTPWithheld != 3 {
		t.Fatalf("WriteSample on hold: %d sent, %d withheld; want 0 and 3", st.RTPPacketsSent-sent, st.RTPWithheld)
	}
	if _, err := b.Answer(ctx, reoffer(t, *offer, 2, sdp.SendRecv)); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteSample(frame, d); err != nil {
		t.Fatal(err)
	}
	next, _, err := a.ReadRTP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if next.Timestamp-first.Timestamp != 4*ticks || next.SequenceNumber != first.SequenceNumber+1 || !next.Marker {
		t.Errorf("first packet after the resume: timestamp +%d (want +%d), sequence +%d (want +1), marker %t (want true)",
			next.Timestamp-first.Timestamp, 4*ticks, next.SequenceNumber-first.SequenceNumber, next.Marker)
	}
}

var (
	pcmu = sdp.Format{PayloadType: 0, Name: "PCMU", ClockRate: 8000}
	pcma = sdp.Format{PayloadType: 8, Name: "PCMA", ClockRate: 8000}
	opus = sdp.Format{PayloadType: 111, Name: "opus", ClockRate: 48000, Channels: 2}
)

// readPT reads one RTP packet on c and returns its payload type.
func readPT(t *testing.T, c *securecall.Call) uint8 {
	t.Helper()
	buf := make([]byte, 1500)
	h, _, err := c.ReadRTP(buf)
	if err != nil {
		t.Fatal(err)
	}
	return h.PayloadType
}

// TestReofferCodec: a re-offer that still lists the call's codec keeps it
// (first in the answer, whatever the offer's order); one that lists only
// another codec at the same clock rate switches the call to it: Codec,
// WriteSample's payload type, and the count of packets outside the
// agreement follow.
func TestReofferCodec(t *testing.T) {
	for _, mode := range directionModes() {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := mode.cfg
			cfg.Codecs = []sdp.Format{pcmu, pcma}
			a, b, offer, _ := capturePair(t, cfg, cfg, nil)
			if err := b.WriteSample(make([]byte, 160), 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if pt := readPT(t, a); pt != 0 {
				t.Fatalf("first packet's payload type %d, want 0", pt)
			}
			ans, err := b.Answer(ctx, reoffer(t, *offer, 1, sdp.SendRecv, pcma, pcmu))
			if err != nil {
				t.Fatal(err)
			}
			if f := audioOf(t, ans).Formats; len(f) == 0 || f[0].Name != "PCMU" {
				t.Fatalf("answer to a re-offer of PCMA, PCMU lists %v first, want PCMU (the call's codec) kept", f)
			}
			if c := b.Codec(); c.Name != "PCMU" {
				t.Fatalf("Codec after a re-offer that keeps PCMU: %s", c)
			}
			ans, err = b.Answer(ctx, reoffer(t, *offer, 2, sdp.SendRecv, pcma))
			if err != nil {
				t.Fatalf("re-offer of PCMA only: %v", err)
			}
			if f := audioOf(t, ans).Formats; len(f) != 1 || f[0].Name != "PCMA" {
				t.Fatalf("answer to a re-offer of PCMA only: %v", f)
			}
			if c := b.Codec(); c.Name != "PCMA" || c.PayloadType != 8 {
				t.Fatalf("Codec after a re-offer of PCMA only: %s/%d, want PCMA/8", c, c.PayloadType)
			}
			if err := b.WriteSample(make([]byte, 160), 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if pt := readPT(t, a); pt != 8 {
				t.Fatalf("WriteSample after the switch to PCMA sent payload type %d, want 8", pt)
			}
			h := media.RTPHeader{PayloadType: 8, SequenceNumber: 500, SSRC: a.SSRC()}
			if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			if pt := readPT(t, b); pt != 8 {
				t.Fatalf("read payload type %d", pt)
			}
			if n := b.Stats().OutsideAgreement; n != 0 {
				t.Errorf("OutsideAgreement %d after PCMA was agreed", n)
			}
		})
	}
}

// TestReofferClockRateRefused: a re-offer whose codecs all run at another
// RTP clock rate than the call's is refused with an error wrapping
// sdp.ErrNegotiation (a SIP stack answers 488) and changes nothing: not
// the codec, not the direction it also asked for; the refusal repeats for
// the same offer, and the call goes on.
func TestReofferClockRateRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, offer, _ := capturePair(t, directionModes()[0].cfg, directionModes()[0].cfg, nil)
	if c := b.Codec(); c.Name != "opus" {
		t.Fatalf("first codec %s, want opus", c)
	}
	bad := reoffer(t, *offer, 1, sdp.SendOnly, pcmu)
	for range 2 {
		if _, err := b.Answer(ctx, bad); !errors.Is(err, sdp.ErrNegotiation) {
			t.Fatalf("re-offer from opus to PCMU only: %v, want ErrNegotiation", err)
		}
	}
	if c, d := b.Codec(), b.Direction(); c.Name != "opus" || d != sdp.SendRecv {
		t.Fatalf("after the refused re-offer: codec %s, direction %s; want opus, sendrecv", c, d)
	}
	if s := b.SignalingState(); s != securecall.SignalingStable {
		t.Fatalf("signaling %s after the refusal", s)
	}
	sendRecv(t, b, a, 3)
	if _, err := b.Answer(ctx, reoffer(t, *offer, 2, sdp.SendRecv, pcmu, opus)); err != nil {
		t.Fatalf("a re-offer that keeps opus after the refused one: %v", err)
	}
	if c := b.Codec(); c.Name != "opus" {
		t.Fatalf("codec %s, want opus kept", c)
	}
}

// TestRestartAnswerCodec: the answer to this end's own later offer (a
// restart) keeps the call's codec when it lists it and switches when it
// lists only another of the same clock rate.
func TestRestartAnswerCodec(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := securecall.Config{ICE: loopbackICE(), Codecs: []sdp.Format{pcmu, pcma}}
	a, b, _, _ := capturePair(t, cfg, cfg, nil)
	for _, tc := range []struct {
		answered []sdp.Format
		want     string
	}{
		{[]sdp.Format{pcma, pcmu}, "PCMU"},
		{[]sdp.Format{pcma}, "PCMA"},
	} {
		offer, err := a.Restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		answer, err := b.Answer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		answer = rewrite(t, answer, func(d *sdp.Description) { d.Media[0].Formats = tc.answered })
		if err := a.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		if c := a.Codec(); c.Name != tc.want {
			t.Fatalf("Codec after an answer of %v: %s, want %s", tc.answered, c, tc.want)
		}
	}
}

// TestReofferDroppingRTCPMuxRefused: a call with ICE multiplexes RTCP on
// component 1 for its whole life; a later offer without a=rtcp-mux (and
// so without candidates for component 2) is refused with ErrNegotiation
// and changes nothing, where it was answered without rtcp-mux while the
// call kept multiplexing. Without ICE the transport follows the change.
func TestReofferDroppingRTCPMuxRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := directionModes()[1].cfg
	a, b, offer, _ := capturePair(t, cfg, cfg, nil)
	if !audioOf(t, *offer).RTCPMux {
		t.Fatal("the first offer does not multiplex RTCP")
	}
	noMux := rewrite(t, *offer, func(d *sdp.Description) {
		d.Origin.SessionVersion++
		d.Media[0].RTCPMux = false
	})
	answer, err := b.Answer(ctx, noMux)
	if !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("re-offer dropping rtcp-mux on a call with ICE: %v (answer multiplexes: %t), want ErrNegotiation",
			err, answer != "" && audioOf(t, answer).RTCPMux)
	}
	if s := b.SignalingState(); s != securecall.SignalingStable {
		t.Fatalf("signaling %s after the refusal", s)
	}
	sendRecv(t, b, a, 3)
	sendRecv(t, a, b, 3)
}

// TestHoldAnswerDroppingRTCPMuxRefused: the same rule for the answer to
// this end's own later offer: an answer to a Hold offer that stops
// multiplexing RTCP on a call with ICE is refused with ErrNegotiation and
// leaves the offer awaiting its answer. (It held before the rule above: the
// hold offer of a call that multiplexes is rtcp-mux only, which the answer
// may not decline; the test pins it.)
func TestHoldAnswerDroppingRTCPMuxRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := directionModes()[1].cfg
	a, b, _, _ := capturePair(t, cfg, cfg, nil)
	offer, err := a.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	noMux := rewrite(t, answer, func(d *sdp.Description) { d.Media[0].RTCPMux = false })
	if err := a.SetAnswer(ctx, noMux); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("answer to a hold dropping rtcp-mux: %v, want ErrNegotiation", err)
	}
	if s, d := a.SignalingState(), a.Direction(); s != securecall.SignalingHaveLocalOffer || d != sdp.SendRecv {
		t.Fatalf("after the refused answer: signaling %s, direction %s; want have-local-offer, sendrecv", s, d)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatalf("the genuine answer after the refused one: %v", err)
	}
	if d := a.Direction(); d != sdp.SendOnly {
		t.Fatalf("direction %s after the hold's answer, want sendonly", d)
	}
}

// TestReofferCodecQuality: after a re-offer switches the call to another
// codec at the same clock rate, the quality estimate rates the new codec:
// G.729's equipment impairment (11) takes about 11 off the R-factor that
// G.711 gets on the same clean path.
func TestReofferCodecQuality(t *testing.T) {
	g729 := sdp.Format{PayloadType: 18, Name: "G729", ClockRate: 8000}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := sdesConfig()
	cfg.NoICE = true
	cfg.Codecs = []sdp.Format{pcmu, g729}
	a, b, offer, _ := capturePair(t, cfg, cfg, nil)
	seq := uint16(100)
	rFactor := func(pt uint8) float64 {
		t.Helper()
		seq++
		h := media.RTPHeader{PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: a.SSRC()}
		if err := a.WriteRTP(h, make([]byte, 20)); err != nil {
			t.Fatal(err)
		}
		if got := readPT(t, b); got != pt {
			t.Fatalf("read payload type %d, want %d", got, pt)
		}
		return b.Stats().Quality.RFactor
	}
	before := rFactor(0)
	if _, err := b.Answer(ctx, reoffer(t, *offer, 1, sdp.SendRecv, g729)); err != nil {
		t.Fatalf("re-offer of G729 only: %v", err)
	}
	if c := b.Codec(); c.Name != "G729" {
		t.Fatalf("Codec after a re-offer of G729 only: %s", c)
	}
	after := rFactor(18)
	if before-after < 8 {
		t.Fatalf("R-factor %.1f with PCMU, %.1f after the switch to G729: the estimate still rates PCMU", before, after)
	}
}
