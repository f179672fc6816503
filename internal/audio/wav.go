package audio

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
)

// WAVWriter writes 16-bit mono PCM at SampleRate to a WAV file. The header's
// sizes are filled in by Close.
type WAVWriter struct {
	f       *os.File
	samples int
	buf     []byte
}

const wavHeaderSize = 44

// CreateWAV creates (or truncates) the file at path and writes a header.
func CreateWAV(path string) (*WAVWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &WAVWriter{f: f}
	if _, err := f.Write(w.header()); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

func (w *WAVWriter) header() []byte {
	data := uint32(2 * w.samples)
	h := make([]byte, wavHeaderSize)
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+data)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)           // fmt chunk size
	binary.LittleEndian.PutUint16(h[20:], 1)            // PCM
	binary.LittleEndian.PutUint16(h[22:], 1)            // mono
	binary.LittleEndian.PutUint32(h[24:], SampleRate)   // sample rate
	binary.LittleEndian.PutUint32(h[28:], SampleRate*2) // byte rate
	binary.LittleEndian.PutUint16(h[32:], 2)            // block align
	binary.LittleEndian.PutUint16(h[34:], 16)           // bits per sample
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], data)
	return h
}

// WriteULaw decodes µ-law samples and appends them to the file.
func (w *WAVWriter) WriteULaw(ulaw []byte) error {
	w.buf = w.buf[:0]
	for _, u := range ulaw {
		w.buf = binary.LittleEndian.AppendUint16(w.buf, uint16(DecodeULaw(u)))
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return err
	}
	w.samples += len(ulaw)
	return nil
}

// Samples returns how many samples have been written.
func (w *WAVWriter) Samples() int { return w.samples }

// Close writes the final sizes into the header and closes the file.
func (w *WAVWriter) Close() error {
	_, err := w.f.WriteAt(w.header(), 0)
	return errors.Join(err, w.f.Close())
}

// ReadWAV reads a file written by WAVWriter (16-bit mono PCM) and returns
// its samples.
func ReadWAV(r io.Reader) ([]int16, error) {
	h := make([]byte, wavHeaderSize)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	if string(h[0:4]) != "RIFF" || string(h[8:16]) != "WAVEfmt " || string(h[36:40]) != "data" ||
		binary.LittleEndian.Uint16(h[20:]) != 1 || binary.LittleEndian.Uint16(h[34:]) != 16 {
		return nil, errors.New("audio: not a 16-bit PCM WAV file")
	}
	size := binary.LittleEndian.Uint32(h[40:])
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err
	}
	out := make([]int16, size/2)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
	}
	return out, nil
}
