package media

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// SampleWriter sends media one frame at a time: it numbers the packets
// (from a random sequence number), advances the timestamp by each frame's
// duration at the codec's clock rate (from a random start), sets the SSRC
// and marks the first packet of each talkspurt, so that the application
// hands it payloads and durations only. Make one with
// [Session.NewSampleWriter]; its methods are safe for concurrent use. A
// session's WriteRTP stays available for applications that build headers
// themselves; they should not also use a SampleWriter with the same SSRC.
type SampleWriter struct {
	s         *Session
	clockRate uint32

	mu     sync.Mutex
	hdr    RTPHeader
	marker bool          // the next packet starts a talkspurt
	carry  time.Duration // duration not yet turned into timestamp units
}

// NewSampleWriter returns a SampleWriter for payload type pt at clockRate
// Hz from ssrc.
func (s *Session) NewSampleWriter(pt uint8, clockRate uint32, ssrc uint32) (*SampleWriter, error) {
	switch {
	case pt > 127:
		return nil, fmt.Errorf("media: sample writer: payload type %d out of range 0..127", pt)
	case clockRate == 0:
		return nil, errors.New("media: sample writer: zero clock rate")
	}
	w := &SampleWriter{s: s, clockRate: clockRate, marker: true}
	w.hdr = RTPHeader{
		PayloadType:    pt,
		SSRC:           ssrc,
		SequenceNumber: uint16(mrand.Uint32()),
		Timestamp:      mrand.Uint32(),
	}
	return w, nil
}

// WriteSample sends payload, one frame lasting duration, as the next RTP
// packet. The timestamp of the packet after it is duration later.
func (w *SampleWriter) WriteSample(payload []byte, duration time.Duration) error {
	if duration < 0 {
		return errors.New("media: write sample: negative duration")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	h := w.hdr
	h.Marker = w.marker
	if err := w.s.WriteRTP(h, payload); err != nil {
		return err
	}
	w.marker = false
	w.hdr.SequenceNumber++
	w.advanceLocked(duration)
	return nil
}

// Skip advances the timestamp by duration without sending, for silence
// that is not transmitted (discontinuous transmission); the next packet
// carries the marker bit as the start of a talkspurt.
func (w *SampleWriter) Skip(duration time.Duration) {
	if duration <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advanceLocked(duration)
	w.marker = true
}

// advanceLocked moves the timestamp on by d, keeping the remainder that
// does not make a whole clock tick for the next frame, so that frames of
// 2.5 ms at 8 kHz (20 ticks) or odd durations do not drift.
func (w *SampleWriter) advanceLocked(d time.Duration) {
	total := w.carry + d
	ticks := int64(total) * int64(w.clockRate) / int64(time.Second)
	w.carry = total - time.Duration(ticks*int64(time.Second)/int64(w.clockRate))
	w.hdr.Timestamp += uint32(ticks)
}

// SetPayloadType makes pt the payload type of the packets that follow, for
// a call that moved to another codec at the same clock rate: sequence
// numbers and timestamps go on as they were.
func (w *SampleWriter) SetPayloadType(pt uint8) error {
	if pt > 127 {
		return fmt.Errorf("media: sample writer: payload type %d out of range 0..127", pt)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hdr.PayloadType = pt
	return nil
}

// SSRC returns the writer's synchronization source.
func (w *SampleWriter) SSRC() uint32 { return w.hdr.SSRC }
