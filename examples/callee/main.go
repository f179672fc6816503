// Command callee answers one secure call. It serves a tiny HTTP signaling
// exchange on loopback: POST /call with the caller's offer returns the
// answer, POST /hangup ends the call. It receives the caller's audio,
// writes it to a WAV file, prints what it received, and exits 0 if every
// packet decrypted. It exits 1 when the call fails (the caller vanished:
// no answer on the path for -failed-after) and prints why it refuses an
// offer.
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
	"sync"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/examples/internal/demo"
	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/sdp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "signaling address (loopback)")
	kmsDir := flag.String("kms-dir", "", "directory of examples/kms-server (needed unless the caller uses dtls keying)")
	kmsURL := flag.String("kms-url", "", "KMS URL (default: read from the kms-dir)")
	identity := flag.String("identity", "bob", "this device's identity at the KMS")
	out := flag.String("out", filepath.Join(os.TempDir(), "securecall-callee.wav"), "where to write the received audio")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up if no call has ended by then")
	failedAfter := flag.Duration("failed-after", 10*time.Second, "end the call when the path has not answered for this long")
	flag.Parse()
	if err := run(*listen, *kmsDir, *kmsURL, *identity, *out, *timeout, *failedAfter); err != nil {
		fmt.Fprintln(os.Stderr, "callee:", err)
		os.Exit(1)
	}
}

func run(listen, kmsDir, kmsURL, identity, out string, timeout, failedAfter time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cfg := securecall.Config{ICE: demo.LoopbackICE()}
	// Disconnected after a third of failedAfter without an answer, failed
	// after all of it.
	cfg.ICE.DisconnectedTimeout = max(failedAfter/3, time.Second)
	cfg.ICE.FailedTimeout = max(failedAfter-cfg.ICE.DisconnectedTimeout, time.Second)
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
	var answeredOnce sync.Once
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
			// Both ends see why, for example that this device is not a
			// participant of the call's key.
			code := refusalStatus(err)
			fmt.Fprintf(os.Stderr, "callee: refused a call (%d %s): %v\n", code, http.StatusText(code), err)
			http.Error(w, err.Error(), code)
			return
		}
		fmt.Fprint(w, answer)
		answeredOnce.Do(func() { close(answered) })
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
	var failed error
	select {
	case <-hangup:
		// Let the last packets in, then end the call.
		time.Sleep(200 * time.Millisecond)
	case <-call.Context().Done():
		failed = context.Cause(call.Context())
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
	if failed != nil {
		return fmt.Errorf("the call failed: %w", failed)
	}
	if st.AuthFailures+st.UnknownMKIDrops != 0 {
		return errors.New("some packets failed to decrypt")
	}
	if n == 0 {
		return errors.New("no audio arrived")
	}
	return nil
}

// refusalStatus maps why Answer refused an offer to an HTTP status.
func refusalStatus(err error) int {
	var se *securecall.StateError
	var pe *sdp.ParseError
	switch {
	case errors.Is(err, kms.ErrForbidden), errors.Is(err, kms.ErrUnauthorized), errors.Is(err, securecall.ErrDowngrade):
		return http.StatusForbidden
	case errors.As(err, &se), errors.Is(err, securecall.ErrGlare):
		return http.StatusConflict
	case errors.Is(err, sdp.ErrNegotiation), errors.As(err, &pe):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
