package audio

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

// Entries of the G.711 µ-law decoding table (segment ends and steps), and
// encodings that follow from them.
func TestULawKnownValues(t *testing.T) {
	decodes := []struct {
		in   byte
		want int16
	}{
		{0x80, 32124}, {0x00, -32124}, {0xff, 0}, {0x7f, 0},
		{0xf0, 120}, {0xef, 132}, {0xe0, 372}, {0x70, -120},
	}
	for _, tt := range decodes {
		if got := DecodeULaw(tt.in); got != tt.want {
			t.Errorf("DecodeULaw(%#02x) = %d, want %d", tt.in, got, tt.want)
		}
	}
	encodes := []struct {
		in   int16
		want byte
	}{
		{0, 0xff}, {-1, 0x7f}, {32767, 0x80}, {-32768, 0x00},
		{120, 0xf0}, {372, 0xe0}, {32, 0xfb},
	}
	for _, tt := range encodes {
		if got := EncodeULaw(tt.in); got != tt.want {
			t.Errorf("EncodeULaw(%d) = %#02x, want %#02x", tt.in, got, tt.want)
		}
	}
}

// Every code decodes to a value that encodes back to the same code (0x7f,
// negative zero, is the one code that comes back as positive zero).
func TestULawRoundTrip(t *testing.T) {
	for u := 0; u < 256; u++ {
		s := DecodeULaw(byte(u))
		got := EncodeULaw(s)
		if got != byte(u) && !(u == 0x7f && got == 0xff) {
			t.Errorf("EncodeULaw(DecodeULaw(%#02x)=%d) = %#02x", u, s, got)
		}
	}
}

// Companding keeps the relative error of a sample small across the range.
func TestULawQuantizationError(t *testing.T) {
	for s := -32000; s <= 32000; s += 7 {
		d := int(DecodeULaw(EncodeULaw(int16(s))))
		if diff := math.Abs(float64(d - s)); diff > 16 && diff > math.Abs(float64(s))/16 {
			t.Fatalf("sample %d came back as %d", s, d)
		}
	}
}

func TestToneDetectedAfterCoding(t *testing.T) {
	tone := Tone{Frequency: 440, Amplitude: 0.5}
	var samples []int16
	frame := make([]byte, FrameSamples)
	for range 50 {
		for _, u := range tone.NextFrame(frame) {
			samples = append(samples, DecodeULaw(u))
		}
	}
	if got := ToneLevel(samples, 440); got < 0.9 {
		t.Errorf("level of 440 Hz in a 440 Hz tone = %.3f, want near 1", got)
	}
	if got := ToneLevel(samples, 1000); got > 0.05 {
		t.Errorf("level of 1000 Hz in a 440 Hz tone = %.3f, want near 0", got)
	}
	if got := ToneLevel(make([]int16, 800), 440); got != 0 {
		t.Errorf("level in silence = %v, want 0", got)
	}
}

func TestWAVRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.wav")
	w, err := CreateWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	tone := Tone{Frequency: 1000, Amplitude: 0.25}
	frame := make([]byte, FrameSamples)
	var want []int16
	for range 10 {
		tone.NextFrame(frame)
		for _, u := range frame {
			want = append(want, DecodeULaw(u))
		}
		if err := w.WriteULaw(frame); err != nil {
			t.Fatal(err)
		}
	}
	if w.Samples() != 10*FrameSamples {
		t.Errorf("Samples() = %d, want %d", w.Samples(), 10*FrameSamples)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadWAV(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d samples, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("sample %d = %d, want %d", i, got[i], want[i])
		}
	}
}
