// Command callee answers one secure call. It serves a tiny HTTP signaling
// exchange on loopback: POST /call with the caller's offer returns the
// answer, POST /hangup ends the call. It receives the caller's audio,
// writes it to a WAV file, prints what it received, and exits 0 if every
// packet decrypted.
//
// In kms and hybrid keying it fetches the call key named in the offer from
// the KMS with its own device credentials, from the directory that
// examples/kms-server writes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/examples/internal/demo"
	"github.com/securecall/securecall/internal/audio"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "signaling address (loopback)")
	kmsDir := flag.String("kms-dir", "", "directory of examples/kms-server (needed unless the caller uses dtls keying)")
	kmsURL := flag.String("kms-url", "", "KMS URL (default: read from the kms-dir)")
	identity := flag.String("identity", "bob", "this device's identity at the KMS")
	out := flag.String("out", filepath.Join(os.TempDir(), "securecall-callee.wav"), "where to write the received audio")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up if no call has ended by then")
	flag.Parse()
	if err := run(*listen, *kmsDir, *kmsURL, *identity, *out, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "callee:", err)
		os.Exit(1)
	}
}

func run(listen, kmsDir, kmsURL, identity, out string, timeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cfg := securecall.Config{ICE: demo.LoopbackICE()}
	if kmsDir != "" {
		kc, err := demo.KMSClient(ctx, kmsDir, kmsURL, identity)
		if err != nil {
			return err
		}
		defer kc.Close()
		cfg.KeySource = kc
	}
	call, err := securecall.New(cfg)
	if err != nil {
		return err
	}
	defer call.Close()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	answered := make(chan struct{})
	hangup := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /call", func(w http.ResponseWriter, r *http.Request) {
		offer, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		answer, err := call.Answer(r.Context(), string(offer))
		if err != nil {
			// The caller sees why, for example that this device is not a
			// participant of the call's key.
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprint(w, answer)
		close(answered)
	})
	mux.HandleFunc("POST /hangup", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hangup:
		default:
			close(hangup)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Printf("callee %s waiting for a call on http://%s/call\n", identity, ln.Addr())

	select {
	case <-answered:
	case <-ctx.Done():
		return fmt.Errorf("no call: %w", ctx.Err())
	}
	if err := call.Connect(ctx); err != nil {
		return err
	}
	st := call.Stats()
	fmt.Printf("connected: path %s -> %s, keying %s, profile %s, codec %s\n",
		st.Path.Local.Type, st.Path.Remote.Type, call.Keying(), st.Profile, call.Codec().Name)

	wav, err := audio.CreateWAV(out)
	if err != nil {
		return err
	}
	received := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 1500)
		for {
			_, m, err := call.ReadRTP(buf)
			if err != nil {
				break
			}
			n++
			wav.WriteULaw(buf[:m])
		}
		received <- n
	}()
	select {
	case <-hangup:
		// Let the last packets in, then end the call.
		time.Sleep(200 * time.Millisecond)
	case <-ctx.Done():
	}
	st = call.Stats()
	call.Close()
	n := <-received
	if err := wav.Close(); err != nil {
		return err
	}
	fmt.Printf("received %d packets (%d decrypted), auth failures %d, replays %d, unknown key %d\n",
		st.RTPPacketsReceived, n, st.AuthFailures, st.ReplaysDropped, st.UnknownMKIDrops)
	fmt.Printf("audio written to %s\n", out)
	if st.AuthFailures+st.UnknownMKIDrops != 0 {
		return errors.New("some packets failed to decrypt")
	}
	if n == 0 {
		return errors.New("no audio arrived")
	}
	return nil
}
