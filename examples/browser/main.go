// Command browser lets a browser tab call a Go endpoint: it serves a small
// page and its signaling on 127.0.0.1, answers the tab's offer with a
// securecall.Call in dtls keying, plays a beep and echoes the tab's own
// microphone back after a delay, and streams the Call's Stats to the page
// every second, beside the browser's own getStats.
//
//	go run ./examples/browser
//
// then open the printed URL. See README.md for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
)

func main() {
	var opts flags
	flag.StringVar(&opts.addr, "addr", "127.0.0.1:8080", "where to serve the page (keep it on loopback: browsers allow the microphone there without HTTPS)")
	flag.StringVar(&opts.stun, "stun", "", "a STUN server for the Go side, such as stun:stun.example.org:3478")
	flag.StringVar(&opts.turn, "turn", "", "a TURN server for the Go side, such as turn:turn.example.org:3478?transport=udp")
	flag.StringVar(&opts.turnUser, "turn-user", "", "the TURN user name")
	flag.StringVar(&opts.turnPass, "turn-pass", "", "the TURN password (or set SECURECALL_TURN_PASSWORD)")
	flag.StringVar(&opts.policy, "policy", "prefer-direct", "media path policy of the Go side: prefer-direct, direct-only or relay-only")
	flag.DurationVar(&opts.echo, "echo-delay", defaultEchoDelay, "how long the microphone takes to come back")
	flag.Parse()
	if opts.turnPass == "" {
		opts.turnPass = os.Getenv("SECURECALL_TURN_PASSWORD")
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		os.Exit(1)
	}
}

type flags struct {
	addr, stun, turn, turnUser, turnPass, policy string
	echo                                         time.Duration
}

// iceConfig turns the flags into the Go side's ICE configuration.
func (f flags) iceConfig() (ice.Config, error) {
	var cfg ice.Config
	switch f.policy {
	case "prefer-direct", "":
		cfg.Policy = ice.PreferDirect
	case "direct-only":
		cfg.Policy = ice.DirectOnly
	case "relay-only":
		cfg.Policy = ice.RelayOnly
	default:
		return cfg, fmt.Errorf("-policy must be prefer-direct, direct-only or relay-only, not %q", f.policy)
	}
	if f.stun != "" {
		if !strings.HasPrefix(f.stun, "stun:") {
			return cfg, fmt.Errorf("-stun must be a stun: URL, not %q", f.stun)
		}
		cfg.Servers = append(cfg.Servers, ice.Server{URL: f.stun})
	}
	if f.turn != "" {
		if !strings.HasPrefix(f.turn, "turn:") && !strings.HasPrefix(f.turn, "turns:") {
			return cfg, fmt.Errorf("-turn must be a turn: or turns: URL, not %q", f.turn)
		}
		if f.turnUser == "" || f.turnPass == "" {
			return cfg, errors.New("-turn needs -turn-user and -turn-pass (or SECURECALL_TURN_PASSWORD)")
		}
		cfg.Servers = append(cfg.Servers, ice.Server{URL: f.turn, Username: f.turnUser, Credential: f.turnPass})
	} else if cfg.Policy == ice.RelayOnly {
		return cfg, errors.New("-policy relay-only needs -turn")
	}
	return cfg, nil
}

func run(f flags) error {
	iceCfg, err := f.iceConfig()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "browser: ", log.Ltime)
	srv := NewServer(Options{Call: securecall.Config{ICE: iceCfg}, EchoDelay: f.echo, Log: logger})
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	fmt.Printf("browser: open http://%s/ in a browser (policy %s, %d ICE servers); Ctrl-C to stop\n",
		ln.Addr(), iceCfg.Policy, len(iceCfg.Servers))

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Print("stopping")
	}
	srv.Close() // hangs up the call, which ends its event stream
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := httpSrv.Shutdown(shutdownCtx); err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
