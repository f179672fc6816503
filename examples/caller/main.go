// Command caller places one secure call to examples/callee over a tiny
// HTTP signaling exchange on loopback and sends it a G.711 tone.
//
// In kms and hybrid keying it first creates the call's key resource at the
// KMS (examples/kms-server) with itself and the callee as participants; the
// offer carries only the key's URI, and the callee fetches the key with its
// own credentials.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/examples/internal/demo"
	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

func main() {
	callee := flag.String("callee", "http://127.0.0.1:8090", "the callee's signaling URL")
	kmsDir := flag.String("kms-dir", "", "directory of examples/kms-server (needed for kms and hybrid keying)")
	kmsURL := flag.String("kms-url", "", "KMS URL (default: read from the kms-dir)")
	identity := flag.String("identity", "alice", "this device's identity at the KMS")
	peer := flag.String("peer", "bob", "the callee's identity at the KMS")
	keying := flag.String("keying", "hybrid", "dtls, kms or hybrid")
	duration := flag.Duration("duration", 3*time.Second, "how long to send audio")
	rotate := flag.Duration("rotate", time.Second, "how often the KMS rotates the call key")
	flag.Parse()
	if err := run(*callee, *kmsDir, *kmsURL, *identity, *peer, sdp.Keying(*keying), *duration, *rotate); err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
}

func run(callee, kmsDir, kmsURL, identity, peer string, keying sdp.Keying, duration, rotate time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, duration+time.Minute)
	defer cancel()

	// The tone is G.711 µ-law, so that is the one codec offered.
	cfg := securecall.Config{ICE: demo.LoopbackICE(), Keying: keying, Codecs: []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}}}
	switch keying {
	case sdp.KeyingDTLS:
	case sdp.KeyingKMS, sdp.KeyingHybrid:
		if kmsDir == "" {
			return fmt.Errorf("%s keying needs -kms-dir", keying)
		}
		kc, err := demo.KMSClient(ctx, kmsDir, kmsURL, identity)
		if err != nil {
			return err
		}
		defer kc.Close()
		uri, err := kc.CreateCall(ctx, kms.CallOptions{Participants: []string{identity, peer}, RotateEvery: rotate})
		if err != nil {
			return fmt.Errorf("create the call's key: %w", err)
		}
		// End the call's key resource when the call is over: the KMS stops
		// rotating it and destroys its keys after its retention.
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := kc.EndCall(ctx, uri); err != nil {
				fmt.Fprintln(os.Stderr, "caller: end the call's key:", err)
			}
		}()
		fmt.Printf("call key %s (participants %s and %s)\n", uri, identity, peer)
		cfg.KeySource, cfg.KeyURI = kc, uri
	default:
		return fmt.Errorf("-keying must be dtls, kms or hybrid, not %q", keying)
	}
	call, err := securecall.New(cfg)
	if err != nil {
		return err
	}
	defer call.Close()

	offer, err := call.Offer(ctx)
	if err != nil {
		return err
	}
	answer, err := post(ctx, callee+"/call", offer)
	if err != nil {
		return fmt.Errorf("the callee did not answer: %w", err)
	}
	if err := call.SetAnswer(ctx, answer); err != nil {
		return err
	}
	if err := call.Connect(ctx); err != nil {
		return err
	}
	st := call.Stats()
	fmt.Printf("connected: path %s %s -> %s %s, keying %s, profile %s, codec %s\n",
		st.Path.Local.Type, st.Path.Local.Address, st.Path.Remote.Type, st.Path.Remote.Address,
		call.Keying(), st.Profile, call.Codec().Name)

	tone := audio.Tone{Frequency: 440, Amplitude: 0.5}
	frame := make([]byte, audio.FrameSamples)
	h := media.RTPHeader{PayloadType: call.Codec().PayloadType, SSRC: call.SSRC()}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	version := uint32(0)
	for range int(duration / (20 * time.Millisecond)) {
		<-tick.C
		if err := call.WriteRTP(h, tone.NextFrame(frame)); err != nil {
			return err
		}
		h.SequenceNumber++
		h.Timestamp += audio.FrameSamples
		if v := call.Stats().SendKeyVersion; v != version {
			fmt.Printf("sending under key version %d\n", v)
			version = v
		}
	}
	if _, err := post(ctx, callee+"/hangup", ""); err != nil {
		return err
	}
	st = call.Stats()
	fmt.Printf("sent %d packets\n", st.RTPPacketsSent)
	return nil
}

func post(ctx context.Context, url, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status + ": " + string(bytes.TrimSpace(b)))
	}
	return string(b), nil
}
