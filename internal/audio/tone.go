package audio

import "math"

// SampleRate is the G.711 sample rate in Hz.
const SampleRate = 8000

// FrameSamples is the number of samples in one 20 ms frame at SampleRate,
// which is also the RTP timestamp step between frames.
const FrameSamples = SampleRate / 50

// Tone generates a sine tone as consecutive µ-law frames.
type Tone struct {
	// Frequency in Hz.
	Frequency float64
	// Amplitude as a fraction of full scale, from 0 to 1.
	Amplitude float64

	n int // samples produced so far, so that frames join without a click
}

// NextFrame fills frame with the next len(frame) µ-law samples of the tone
// and returns it.
func (t *Tone) NextFrame(frame []byte) []byte {
	step := 2 * math.Pi * t.Frequency / SampleRate
	for i := range frame {
		v := t.Amplitude * math.Sin(step*float64(t.n))
		frame[i] = EncodeULaw(int16(v * math.MaxInt16))
		t.n++
	}
	return frame
}

// ToneLevel measures the relative power of frequency f in samples with the
// Goertzel algorithm: the result is near 1 for a pure tone at f and near 0
// when f is absent.
func ToneLevel(samples []int16, f float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	coeff := 2 * math.Cos(2*math.Pi*f/SampleRate)
	var s1, s2, energy float64
	for _, x := range samples {
		v := float64(x)
		energy += v * v
		s0 := v + coeff*s1 - s2
		s2, s1 = s1, s0
	}
	if energy == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - coeff*s1*s2
	// A pure tone over N samples has Goertzel power N²A²/4 and energy
	// NA²/2, so this ratio is 1 for a pure tone at f.
	return 2 * power / (float64(len(samples)) * energy)
}
