package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"math"
	"sync"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/media"
)

// frameInterval is the packet time of the audio both ways.
const frameInterval = 20 * time.Millisecond

// The beep the Go side plays: 440 Hz for beepFrames of every cycleFrames
// 20 ms frames (0.3 s every 2 s), quiet enough to talk over.
const (
	beepHz        = 440
	beepAmplitude = 0.2
	beepFrames    = 15
	cycleFrames   = 100
)

// echoLine is the delay line of the echo test: frames the page sent come
// back once delay's worth of them has gathered. It holds at most twice the
// delay, dropping the oldest frame beyond that, so a sender faster than
// the clock here cannot grow it.
type echoLine struct {
	mu     sync.Mutex
	frames [][audio.FrameSamples]byte // ring
	head   int                        // index of the oldest frame
	n      int                        // frames held
	delay  int                        // frames to gather before playing
	primed bool                       // playing out
}

func newEchoLine(delay time.Duration) *echoLine {
	d := max(1, int(delay/frameInterval))
	return &echoLine{frames: make([][audio.FrameSamples]byte, 2*d), delay: d}
}

// push appends one frame of µ-law audio; frames of another size are not
// 20 ms of PCMU and are ignored.
func (e *echoLine) push(frame []byte) {
	if len(frame) != audio.FrameSamples {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == len(e.frames) {
		e.head = (e.head + 1) % len(e.frames)
		e.n--
	}
	copy(e.frames[(e.head+e.n)%len(e.frames)][:], frame)
	e.n++
}

// pop copies the oldest frame into dst and reports whether there was one
// to play: none until delay frames have gathered, and none again once the
// line runs dry, until it has gathered delay frames anew.
func (e *echoLine) pop(dst []byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.primed && e.n >= e.delay {
		e.primed = true
	}
	if !e.primed || e.n == 0 {
		e.primed = false
		return false
	}
	copy(dst, e.frames[e.head][:])
	e.head = (e.head + 1) % len(e.frames)
	e.n--
	return true
}

// receive reads the page's audio until the call is closed or fails,
// feeding the echo line.
func (sess *session) receive() {
	buf := make([]byte, 1500)
	for {
		h, n, err := sess.call.ReadRTP(buf)
		if err != nil {
			// Closed, or failed: the session drops bad packets itself
			// (counting them in Stats), so an error ends the call.
			return
		}
		sess.read.Add(1)
		if h.PayloadType == pcmu.PayloadType {
			sess.echo.push(buf[:n])
		}
	}
}

// receiveRTCP reads the page's RTCP (its receiver reports) until the call
// is closed, so that Stats count it; the example has no use for it yet.
func (sess *session) receiveRTCP() {
	buf := make([]byte, 1500)
	for {
		if _, err := sess.call.ReadRTCP(buf); err != nil {
			return
		}
	}
}

// send plays the beep mixed with the delayed echo, one PCMU packet every
// 20 ms, until the call is to end.
func (sess *session) send(logger *log.Logger) {
	var start [8]byte
	_, _ = rand.Read(start[:])
	h := media.RTPHeader{
		Marker:         true,
		PayloadType:    pcmu.PayloadType,
		SequenceNumber: binary.BigEndian.Uint16(start[:2]),
		Timestamp:      binary.BigEndian.Uint32(start[2:6]),
		SSRC:           sess.call.SSRC(),
	}
	tone := &audio.Tone{Frequency: beepHz, Amplitude: beepAmplitude}
	beep := make([]byte, audio.FrameSamples)
	echo := make([]byte, audio.FrameSamples)
	frame := make([]byte, audio.FrameSamples)
	tick := time.NewTicker(frameInterval)
	defer tick.Stop()
	reported := false
	for i := 0; ; i++ {
		select {
		case <-sess.ctx.Done():
			return
		case <-tick.C:
		}
		haveBeep := i%cycleFrames < beepFrames
		if haveBeep {
			tone.NextFrame(beep)
		}
		haveEcho := sess.echo.pop(echo)
		if haveEcho {
			sess.echoed.Add(1)
		}
		mix(frame, beep, haveBeep, echo, haveEcho)
		err := sess.call.WriteRTP(h, frame)
		switch {
		case errors.Is(err, securecall.ErrClosed):
			return
		case err != nil && !reported:
			// Reported once: a path that is down (before a restart)
			// fails every packet until it is back.
			logger.Printf("call %s: sending: %v", sess.id, err)
			reported = true
		case err == nil:
			reported = false
		}
		h.Marker = false
		h.SequenceNumber++
		h.Timestamp += audio.FrameSamples
	}
}

// mix writes into dst the sum of the µ-law frames a and b that are present,
// or silence.
func mix(dst, a []byte, haveA bool, b []byte, haveB bool) {
	for i := range dst {
		var v int32
		if haveA {
			v += int32(audio.DecodeULaw(a[i]))
		}
		if haveB {
			v += int32(audio.DecodeULaw(b[i]))
		}
		dst[i] = audio.EncodeULaw(int16(max(math.MinInt16, min(math.MaxInt16, v))))
	}
}

// statsView is what the page shows of the Go side, from Call.Stats and
// the session's own counters, with the receive quality the Call measures
// from its own RTCP reports once media has arrived.
type statsView struct {
	Call    string    `json:"call"`
	State   string    `json:"state"`
	Keying  string    `json:"keying"`
	Profile string    `json:"profile,omitempty"`
	Path    *pathView `json:"path,omitempty"`

	RTPSent         uint64 `json:"rtpSent"`
	RTPReceived     uint64 `json:"rtpReceived"` // authenticated and decrypted
	RTCPSent        uint64 `json:"rtcpSent"`
	RTCPReceived    uint64 `json:"rtcpReceived"`
	AuthFailures    uint64 `json:"authFailures"`
	ReplaysDropped  uint64 `json:"replaysDropped"`
	UnknownMKIDrops uint64 `json:"unknownMKIDrops"`
	Malformed       uint64 `json:"malformed"`

	FramesRead    uint64 `json:"framesRead"`
	FramesEchoed  uint64 `json:"framesEchoed"`
	EchoDelayMS   int64  `json:"echoDelayMs"`
	ICERTT        string `json:"iceRtt,omitempty"` // of the latest RTCP report exchange, or ICE check before one
	LocalSSRC     uint32 `json:"ssrc"`
	PayloadFormat string `json:"codec"`

	Quality *qualityView `json:"quality,omitempty"`
}

// qualityView is what the Call measured of the browser's stream and what
// the browser reported of the Go side's, as the page shows them.
type qualityView struct {
	Loss   string `json:"loss"`
	Jitter string `json:"jitter"`
	RTT    string `json:"rtt"`
	MOS    string `json:"mos"`
	// Remote is the browser's view of the Go side's stream, from its
	// receiver reports.
	Remote string `json:"remote,omitempty"`
}

// newQualityView formats q, or returns nil before any media arrived.
func newQualityView(q media.Quality) *qualityView {
	r := q.Receive
	if r.Expected == 0 {
		return nil
	}
	v := &qualityView{
		Loss:   fmt.Sprintf("%.2f%% (%d of %d lost, %d reordered, %d duplicates)", 100*r.FractionLost, r.Lost, r.Expected, r.Reordered, r.Duplicates),
		Jitter: r.Jitter.Round(10 * time.Microsecond).String(),
		RTT:    "waiting for a report exchange",
		MOS:    fmt.Sprintf("%.2f (R %.1f)", q.MOS, q.RFactor),
	}
	if q.RTT > 0 {
		v.RTT = q.RTT.Round(10 * time.Microsecond).String()
	}
	if rem := q.Remote; !rem.At.IsZero() {
		v.Remote = fmt.Sprintf("loss %.2f%%, jitter %s, MOS %.2f", 100*rem.FractionLost, rem.Jitter.Round(10*time.Microsecond), rem.MOS)
	}
	return v
}

type pathView struct {
	Local  candidateView `json:"local"`
	Remote candidateView `json:"remote"`
	Relay  string        `json:"relay,omitempty"`
	Direct bool          `json:"direct"`
}

type candidateView struct {
	Type     string `json:"type"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

func (sess *session) view() statsView {
	st := sess.call.Stats()
	v := statsView{
		Call:            sess.id,
		State:           st.State.String(),
		Keying:          string(st.Keying),
		RTPSent:         st.RTPPacketsSent,
		RTPReceived:     st.RTPPacketsReceived,
		RTCPSent:        st.RTCPPacketsSent,
		RTCPReceived:    st.RTCPPacketsReceived,
		AuthFailures:    st.AuthFailures,
		ReplaysDropped:  st.ReplaysDropped,
		UnknownMKIDrops: st.UnknownMKIDrops,
		Malformed:       st.Malformed,
		FramesRead:      sess.read.Load(),
		FramesEchoed:    sess.echoed.Load(),
		EchoDelayMS:     int64(sess.echo.delay) * frameInterval.Milliseconds(),
		LocalSSRC:       sess.call.SSRC(),
		PayloadFormat:   sess.call.Codec().String(),
	}
	if v.Keying == "" {
		v.Keying = string(sess.call.Keying())
	}
	if st.Profile != 0 {
		v.Profile = st.Profile.String()
	}
	if p := st.Path; p.Local.Address.IsValid() {
		v.Path = &pathView{
			Local:  candidateView{string(p.Local.Type), p.Local.Address.String(), p.Local.Protocol},
			Remote: candidateView{string(p.Remote.Type), p.Remote.Address.String(), p.Remote.Protocol},
			Relay:  p.Relay,
			Direct: p.Direct(),
		}
		if p.RTT > 0 {
			v.ICERTT = p.RTT.Round(100 * time.Microsecond).String()
		}
	}
	v.Quality = newQualityView(st.Quality)
	return v
}
