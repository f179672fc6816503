// Package audio holds the small pieces of audio the examples and tests need
// to send a real signal and check it arrived: G.711 µ-law coding, a tone
// generator that yields 20 ms frames, a Goertzel tone detector, and a WAV
// writer.
//
// # Concurrency
//
// A [Tone] and a [WAVWriter] are for one goroutine at a time; the G.711
// functions are safe for concurrent use.
package audio
