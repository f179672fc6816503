// Command call runs a complete secure call in one process on embedded
// defaults: a reference KMS in a temporary directory, an in-process STUN and
// TURN server, and two endpoints that exchange session descriptions, connect
// over the shortest path, and send each other a G.711 tone under keys from
// the KMS that rotate during the call. It prints the path, the keying, each
// key version change and the packet counts, writes the audio one side
// received to a WAV file, and exits 0 only if nothing was lost.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/stunturn"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

func main() {
	var opts options
	flag.BoolVar(&opts.relay, "relay", false, "force the media through the TURN relay")
	flag.StringVar(&opts.keying, "keying", "hybrid", "keying mode: dtls, kms or hybrid")
	flag.DurationVar(&opts.duration, "duration", 4*time.Second, "how long to send audio")
	flag.DurationVar(&opts.rtcp, "rtcp-interval", 0, "minimum RTCP report interval (default: RFC 3550's 5s)")
	flag.DurationVar(&opts.rotate, "rotate", 0, "rotate the call key this often (default: duration/3)")
	flag.StringVar(&opts.out, "out", "", "where to write the audio the callee received (default: a file in the temporary directory)")
	flag.Parse()
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "call:", err)
		os.Exit(1)
	}
}

type options struct {
	relay    bool
	keying   string
	duration time.Duration
	rotate   time.Duration
	rtcp     time.Duration
	out      string
}

func run(opts options) error {
	keying := sdp.Keying(opts.keying)
	switch keying {
	case sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid:
	default:
		return fmt.Errorf("-keying must be dtls, kms or hybrid, not %q", opts.keying)
	}
	if opts.duration <= 0 {
		return errors.New("-duration must be positive")
	}
	// A rotated version activates the KMS's activation delay after it is
	// made, so the first rotation takes effect at rotate plus that delay;
	// both fit in the call's first two thirds by default, whatever its
	// duration.
	activation := min(kmsserver.DefaultActivationDelay, opts.duration/3)
	if opts.rotate <= 0 {
		opts.rotate = max(opts.duration/3, 10*time.Millisecond).Round(10 * time.Millisecond)
	}
	if keying != sdp.KeyingDTLS && opts.rotate+activation >= opts.duration {
		return fmt.Errorf("-rotate %s plus the KMS's activation delay %s leaves no time in -duration %s for the key to rotate",
			opts.rotate, activation, opts.duration)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.duration+30*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "securecall-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if opts.out == "" {
		opts.out = filepath.Join(os.TempDir(), "securecall-received.wav")
	}

	// The STUN/TURN server, on loopback, like a coturn would be.
	relay, err := stunturn.Start(ctx, stunturn.Config{})
	if err != nil {
		return fmt.Errorf("start STUN/TURN server: %w", err)
	}
	defer relay.Close()

	iceCfg := ice.Config{
		Servers:         relay.Servers(),
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
	if opts.relay {
		iceCfg.Policy = ice.RelayOnly
	}
	caller := securecall.Config{ICE: iceCfg, Keying: keying, Codecs: []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
		RTCP: media.RTCPConfig{Interval: opts.rtcp}}
	callee := caller

	// The KMS and the two devices' clients, when keys come from it.
	if keying != sdp.KeyingDTLS {
		env, err := devkms.StartWith(ctx, dir, devkms.Options{Server: kmsserver.Config{ActivationDelay: activation, MinRotateEvery: min(opts.rotate, kmsserver.DefaultMinRotateEvery)}}, "alice", "bob")
		if err != nil {
			return fmt.Errorf("start KMS: %w", err)
		}
		defer env.Close()
		alice, err := env.Client("alice")
		if err != nil {
			return err
		}
		bob, err := env.Client("bob")
		if err != nil {
			return err
		}
		uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: opts.rotate})
		if err != nil {
			return fmt.Errorf("create the call's key: %w", err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			alice.EndCall(ctx, uri) // the KMS stops rotating it and destroys its keys later
		}()
		fmt.Printf("kms:      %s (call key %s, rotating every %s, each version active %s after it is made)\n", env.URL, uri, opts.rotate, activation)
		caller.KeySource, caller.KeyURI = alice, uri
		callee.KeySource = bob
	}

	a, err := securecall.New(caller)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := securecall.New(callee)
	if err != nil {
		return err
	}
	defer b.Close()

	start := time.Now()
	offer, err := a.Offer(ctx)
	if err != nil {
		return err
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		return err
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		return err
	}
	if err := a.Connect(ctx); err != nil {
		return fmt.Errorf("caller: %w", err)
	}
	if err := b.Connect(ctx); err != nil {
		return fmt.Errorf("callee: %w", err)
	}
	setup := time.Since(start)

	st := a.Stats()
	p := st.Path
	fmt.Printf("path:     %s %s -> %s %s over %s", p.Local.Type, p.Local.Address, p.Remote.Type, p.Remote.Address, p.Local.Protocol)
	if p.Relay != "" {
		fmt.Printf(" via relay %s", p.Relay)
	}
	fmt.Printf(" (connected in %s)\n", setup.Round(100*time.Microsecond))
	fmt.Printf("keying:   %s, profile %s, codec %s/%d\n", a.Keying(), st.Profile, a.Codec().Name, a.Codec().ClockRate)

	wav, err := audio.CreateWAV(opts.out)
	if err != nil {
		return err
	}
	res, err := exchange(ctx, a, b, wav, opts.duration)
	if cerr := wav.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}

	sa, sb := a.Stats(), b.Stats()
	fmt.Printf("caller:   sent %d, received %d, decrypted %d, auth failures %d, replays %d, unknown key %d\n",
		sa.RTPPacketsSent, sa.RTPPacketsReceived, res.receivedByA, sa.AuthFailures, sa.ReplaysDropped, sa.UnknownMKIDrops)
	fmt.Printf("callee:   sent %d, received %d, decrypted %d, auth failures %d, replays %d, unknown key %d\n",
		sb.RTPPacketsSent, sb.RTPPacketsReceived, res.receivedByB, sb.AuthFailures, sb.ReplaysDropped, sb.UnknownMKIDrops)
	lost := (res.sent - res.receivedByB) + (res.sent - res.receivedByA)
	fmt.Printf("losses:   %d\n", lost)
	for _, side := range []struct {
		name string
		q    media.Quality
	}{{"caller", sa.Quality}, {"callee", sb.Quality}} {
		fmt.Printf("quality:  %s receives with loss %.2f%%, jitter %s, RTT %s, MOS %.2f (R %.1f); %d RTCP reports sent, %d received\n",
			side.name, 100*side.q.Receive.FractionLost, side.q.Receive.Jitter.Round(10*time.Microsecond),
			rttText(side.q.RTT), side.q.MOS, side.q.RFactor, side.q.ReportsSent, side.q.ReportsReceived)
	}
	fmt.Printf("audio:    %s (%.1f s, 440 Hz tone level %.2f)\n", opts.out, float64(wav.Samples())/audio.SampleRate, res.toneLevel)
	switch {
	case lost != 0:
		return fmt.Errorf("%d packets lost", lost)
	case sa.AuthFailures+sb.AuthFailures+sa.UnknownMKIDrops+sb.UnknownMKIDrops != 0:
		return errors.New("packets failed to decrypt")
	case keying != sdp.KeyingDTLS && res.versions < 2:
		return errors.New("the call key did not rotate; run for longer")
	case res.toneLevel < 0.5:
		return errors.New("the received audio does not carry the tone that was sent")
	}
	return nil
}

// rttText prints an RTCP round trip, which needs a report exchange: the
// first report goes out 1 to 3 s into a call.
func rttText(d time.Duration) string {
	if d == 0 {
		return "n/a (no report exchange yet)"
	}
	return d.Round(10 * time.Microsecond).String()
}

type result struct {
	sent                     int
	receivedByA, receivedByB int
	versions                 int // distinct send key versions the caller used
	toneLevel                float64
}

// exchange sends a 440 Hz tone from a to b and a 660 Hz tone from b to a in
// 20 ms frames for d, writes what b receives to wav, and counts packets.
func exchange(ctx context.Context, a, b *securecall.Call, wav *audio.WAVWriter, d time.Duration) (result, error) {
	var res result
	frames := int(d / (20 * time.Millisecond))

	var wg sync.WaitGroup
	var errA, errB error
	var samples []int16
	wg.Add(2)
	go func() { // b receives the 440 Hz tone
		defer wg.Done()
		buf := make([]byte, 1500)
		for res.receivedByB < frames {
			_, n, err := b.ReadRTP(buf)
			if err != nil {
				errB = fmt.Errorf("callee read: %w", err)
				return
			}
			res.receivedByB++
			if err := wav.WriteULaw(buf[:n]); err != nil {
				errB = err
				return
			}
			for _, u := range buf[:n] {
				samples = append(samples, audio.DecodeULaw(u))
			}
		}
	}()
	go func() { // a receives the 660 Hz tone
		defer wg.Done()
		buf := make([]byte, 1500)
		for res.receivedByA < frames {
			if _, _, err := a.ReadRTP(buf); err != nil {
				errA = fmt.Errorf("caller read: %w", err)
				return
			}
			res.receivedByA++
		}
	}()

	toneA := audio.Tone{Frequency: 440, Amplitude: 0.5}
	toneB := audio.Tone{Frequency: 660, Amplitude: 0.5}
	fa, fb := make([]byte, audio.FrameSamples), make([]byte, audio.FrameSamples)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	lastVersion := uint32(0)
	var sendErr error
	began := time.Now()
	for i := 0; i < frames; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			sendErr = ctx.Err()
		}
		if sendErr != nil {
			break
		}
		// WriteSample numbers, times and marks the packets: one call per
		// 20 ms frame.
		if err := a.WriteSample(toneA.NextFrame(fa), 20*time.Millisecond); err != nil {
			sendErr = fmt.Errorf("caller write: %w", err)
			break
		}
		if err := b.WriteSample(toneB.NextFrame(fb), 20*time.Millisecond); err != nil {
			sendErr = fmt.Errorf("callee write: %w", err)
			break
		}
		res.sent++
		if v := a.Stats().SendKeyVersion; v != lastVersion {
			if lastVersion != 0 {
				fmt.Printf("rotation: caller now sends under key version %d (%.2f s into the call)\n", v, time.Since(began).Seconds())
			} else if v != 0 {
				fmt.Printf("key:      caller sends under key version %d\n", v)
			}
			lastVersion = v
			res.versions++
		}
	}
	// Give the last packets time to arrive, then unblock the readers.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		a.Close()
		b.Close()
		<-done
	}
	res.toneLevel = audio.ToneLevel(samples, 440)
	return res, errors.Join(sendErr, errA, errB)
}
