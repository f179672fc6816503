package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/securecall/securecall/internal/audio"
)

// endpoint is one end of a call in these tests: a securecall Call or a
// pion/webrtc PeerConnection, driven the same way.
type endpoint interface {
	Offer(ctx context.Context) (string, error)
	Answer(ctx context.Context, offer string) (string, error)
	SetAnswer(ctx context.Context, answer string) error
	Connect(ctx context.Context) error
	// Codec returns the negotiated audio codec's lower-case name ("opus",
	// "pcmu", ...) and payload type.
	Codec() (string, uint8)
	// WriteAudio sends one 20 ms frame of the negotiated codec.
	WriteAudio(payload []byte) error
	// ReadAudio returns the payload type and size of the next decrypted
	// audio packet.
	ReadAudio(ctx context.Context, buf []byte) (pt uint8, n int, err error)
	Close() error
}

// opusSilence is one 20 ms Opus frame (CELT, fullband, mono) that decodes
// to silence: a real Opus packet, so that a browser decodes it as such.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

// audioFrame returns a 20 ms frame of codec name: for PCMU the next frame
// of tone, or silence if tone is nil.
func audioFrame(name string, tone *audio.Tone) []byte {
	switch name {
	case "opus":
		return opusSilence
	case "pcmu":
		if tone == nil {
			return bytes.Repeat([]byte{0xff}, audio.FrameSamples)
		}
		return tone.NextFrame(make([]byte, audio.FrameSamples))
	default: // pcma: A-law silence
		f := make([]byte, audio.FrameSamples)
		for i := range f {
			f[i] = 0xd5
		}
		return f
	}
}

// receiver counts the audio packets an endpoint receives, on a goroutine
// of its own that ends when the endpoint is closed.
type receiver struct {
	mu      sync.Mutex
	packets int
	pts     map[uint8]int
	first   chan struct{}
	err     error
	done    chan struct{}
	changed chan struct{} // closed and replaced on every packet
}

func startReceiver(ctx context.Context, e endpoint) *receiver {
	r := &receiver{pts: map[uint8]int{}, first: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 1500)
		for {
			pt, _, err := e.ReadAudio(ctx, buf)
			if err != nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				return
			}
			r.mu.Lock()
			r.packets++
			r.pts[pt]++
			if r.packets == 1 {
				close(r.first)
			}
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r
}

// wait waits until n packets have arrived.
func (r *receiver) wait(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		got, err, changed := r.packets, r.err, r.changed
		r.mu.Unlock()
		if got >= n {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after %d of %d packets: %w", got, n, err)
		}
		select {
		case <-changed:
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d packets arrived: %w", got, n, ctx.Err())
		}
	}
}

func (r *receiver) count() (int, map[uint8]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pts := make(map[uint8]int, len(r.pts))
	for k, v := range r.pts {
		pts[k] = v
	}
	return r.packets, pts
}

// sender sends a 20 ms frame every 20 ms until stopped.
type sender struct {
	once sync.Once
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	sent int
	err  error
}

func startSender(e endpoint) *sender {
	s := &sender{stop: make(chan struct{}), done: make(chan struct{})}
	name, _ := e.Codec()
	tone := &audio.Tone{Frequency: 440, Amplitude: 0.5}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			err := e.WriteAudio(audioFrame(name, tone))
			s.mu.Lock()
			if err != nil {
				s.err = err
			} else {
				s.sent++
			}
			s.mu.Unlock()
			if err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	return s
}

// close stops the sender and returns how many frames it sent and its last
// write error. It may be called more than once.
func (s *sender) close() (int, error) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, s.err
}

// connectPair runs the offer/answer exchange from offerer to answerer and
// waits until both are connected.
func connectPair(ctx context.Context, offerer, answerer endpoint) error {
	offer, err := offerer.Offer(ctx)
	if err != nil {
		return fmt.Errorf("offer: %w", err)
	}
	answer, err := answerer.Answer(ctx, offer)
	if err != nil {
		return fmt.Errorf("answer: %w\noffer:\n%s", err, offer)
	}
	if err := offerer.SetAnswer(ctx, answer); err != nil {
		return fmt.Errorf("set answer: %w\nanswer:\n%s", err, answer)
	}
	errs := make(chan error, 2)
	for _, e := range []endpoint{offerer, answerer} {
		go func() { errs <- e.Connect(ctx) }()
	}
	var all []error
	for range 2 {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return fmt.Errorf("connect: %w", errors.Join(all...))
	}
	return nil
}
