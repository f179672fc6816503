package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/sdp"
)

//go:embed static
var static embed.FS

// The defaults of Options.
const (
	defaultEchoDelay      = time.Second
	defaultConnectTimeout = 20 * time.Second
	defaultAttachTimeout  = 10 * time.Second
	defaultStatsInterval  = time.Second
	defaultAnswerTimeout  = 15 * time.Second

	// maxOffer bounds the body of POST /offer: a browser's offer is a few
	// kilobytes.
	maxOffer = 64 << 10
)

// pcmu is the only codec the Go side accepts: it generates and echoes
// G.711 µ-law, which every browser speaks.
var pcmu = sdp.Format{PayloadType: 0, Name: "PCMU", ClockRate: 8000}

// Options configures a Server. The zero value is valid.
type Options struct {
	// Call is the template for each call's Config: ICE servers, policy and
	// interface filters. Keying is always dtls (a browser cannot fetch KMS
	// keys) and Codecs always PCMU.
	Call securecall.Config
	// EchoDelay is how long the page's microphone takes to come back.
	// If zero, defaults to one second.
	EchoDelay time.Duration
	// ConnectTimeout bounds ICE and DTLS after the answer. If zero,
	// defaults to 20 s.
	ConnectTimeout time.Duration
	// AttachTimeout is how long the page has, after the answer, to open
	// its event stream; a call whose page never does is hung up. If zero,
	// defaults to 10 s.
	AttachTimeout time.Duration
	// StatsInterval is how often the event stream carries the call's
	// Stats. If zero, defaults to one second.
	StatsInterval time.Duration
	// Log receives one line per event for the terminal: calls, refusals,
	// restarts, hang-ups. If nil, nothing is printed.
	Log *log.Logger
}

// The reasons a call ends, as the page and the terminal show them.
var (
	errHungUp       = errors.New("hung up by the page")
	errTabGone      = errors.New("the page went away mid-call (tab closed or reloaded)")
	errNoStream     = errors.New("the page never opened its event stream")
	errServerClosed = errors.New("the server is shutting down")
)

// Server is the example's HTTP handler: it serves the embedded page and
// the signaling endpoints, and runs at most one call at a time against a
// browser tab. Its endpoints:
//
//   - GET /: the page.
//   - POST /offer: the body is the browser's offer; the reply is JSON
//     {"call": id, "answer": sdp}. With ?call=id it is a new offer within
//     that call (an ICE restart).
//   - GET /events?call=id: server-sent events, "stats" every
//     StatsInterval and "ended" once. The stream is the page's presence:
//     when it closes mid-call, the call is hung up.
//   - POST /hangup?call=id: ends the call and waits until it is cleaned up.
//
// Errors are JSON {"error": message} with a 4xx or 5xx status.
type Server struct {
	opts  Options
	mux   *http.ServeMux
	base  context.Context
	abort context.CancelCauseFunc

	mu     sync.Mutex
	active *session // the running call, or the one being answered
	closed bool
	calls  int
	wg     sync.WaitGroup // offer handlers that make a call, and run
}

// session is one call with one browser tab.
type session struct {
	id     string
	call   *securecall.Call // nil while the first Answer runs
	ctx    context.Context  // done when the call is to end; its cause says why
	end    context.CancelCauseFunc
	done   chan struct{} // closed once the call is closed and its goroutines joined
	stream atomic.Bool   // an event stream is attached
	attach chan struct{} // closed when the first event stream attaches
	echo   *echoLine
	echoed atomic.Uint64 // frames sent with the page's own audio in them
	read   atomic.Uint64 // frames read from the page
}

// NewServer returns a Server with opts' defaults applied. Close it to end
// its call.
func NewServer(opts Options) *Server {
	if opts.EchoDelay <= 0 {
		opts.EchoDelay = defaultEchoDelay
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = defaultConnectTimeout
	}
	if opts.AttachTimeout <= 0 {
		opts.AttachTimeout = defaultAttachTimeout
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = defaultStatsInterval
	}
	if opts.Log == nil {
		opts.Log = log.New(io.Discard, "", 0)
	}
	s := &Server{opts: opts, mux: http.NewServeMux()}
	s.base, s.abort = context.WithCancelCause(context.Background())
	page, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	s.mux.Handle("GET /", http.FileServerFS(page))
	s.mux.HandleFunc("POST /offer", s.handleOffer)
	s.mux.HandleFunc("GET /events", s.handleEvents)
	s.mux.HandleFunc("POST /hangup", s.handleHangup)
	return s
}

// ServeHTTP serves requests addressed to this server by IP address or
// localhost and coming from its own page. Another site open in the same
// browser can send requests to 127.0.0.1 (a form post, or a name of its
// own that it rebinds to 127.0.0.1): those are refused.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if why := foreign(r); why != "" {
		s.opts.Log.Printf("refused %s %s: %s", r.Method, r.URL.Path, why)
		writeError(w, http.StatusForbidden, why)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// foreign says why r does not come from the page this server serves, or
// returns "".
func foreign(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && host != "localhost" {
		return fmt.Sprintf("host %q is not an IP address or localhost", r.Host)
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "http://"+r.Host {
		return fmt.Sprintf("cross-origin request from %q", origin)
	}
	return ""
}

// Close hangs up the running call, if any, and waits until every call's
// goroutines have finished. Event streams still open then end with an
// "ended" event. A second Close waits likewise and returns an error
// wrapping net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	again := s.closed
	s.closed = true
	s.mu.Unlock()
	s.abort(errServerClosed)
	s.wg.Wait()
	if again {
		return fmt.Errorf("browser: server closed: %w", net.ErrClosed)
	}
	return nil
}

// Idle reports whether no call is running or being set up.
func (s *Server) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active == nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// lookup returns the session id names, or nil.
func (s *Server) lookup(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil || s.active.id != id || s.active.call == nil {
		return nil
	}
	return s.active
}

func (s *Server) handleOffer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOffer))
	if err != nil {
		s.opts.Log.Printf("refused an offer: unreadable body: %v", err)
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the offer could not be read (at most %d bytes): %v", maxOffer, err))
		return
	}
	if id := r.URL.Query().Get("call"); id != "" {
		s.restart(w, r, id, string(body))
		return
	}

	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, errServerClosed.Error())
		return
	case s.active != nil:
		running := s.active.id
		s.mu.Unlock()
		s.opts.Log.Printf("refused a second call: call %s is running in another tab", running)
		writeError(w, http.StatusConflict, "a call is already running, probably in another tab: hang up there first")
		return
	}
	s.calls++
	sess := &session{
		id:     fmt.Sprintf("%d-%s", s.calls, randomID()),
		done:   make(chan struct{}),
		attach: make(chan struct{}),
		echo:   newEchoLine(s.opts.EchoDelay),
	}
	sess.ctx, sess.end = context.WithCancelCause(s.base)
	s.active = sess
	s.wg.Add(1) // passed on to run, or released below
	s.mu.Unlock()

	answer, err := s.answer(r.Context(), sess, string(body))
	if err != nil {
		s.mu.Lock()
		s.active = nil
		s.mu.Unlock()
		sess.end(err)
		close(sess.done)
		s.wg.Done()
		s.opts.Log.Printf("refused an offer: %v", err)
		writeError(w, http.StatusBadRequest, "the offer was refused: "+err.Error())
		return
	}
	s.opts.Log.Printf("call %s: answered the browser's offer (dtls keying, PCMU)", sess.id)
	go s.run(sess)
	writeJSON(w, http.StatusOK, map[string]string{"call": sess.id, "answer": answer})
}

// answer makes sess's Call and answers offer with it; on failure nothing
// of the call is left.
func (s *Server) answer(reqCtx context.Context, sess *session, offer string) (string, error) {
	cfg := s.opts.Call
	cfg.Keying = sdp.KeyingDTLS
	cfg.KeySource = nil
	cfg.Codecs = []sdp.Format{pcmu}
	call, err := securecall.New(cfg)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(sess.ctx, defaultAnswerTimeout)
	defer cancel()
	stop := context.AfterFunc(reqCtx, cancel)
	defer stop()
	answer, err := call.Answer(ctx, offer)
	if err != nil {
		call.Close()
		return "", err
	}
	s.mu.Lock()
	sess.call = call
	s.mu.Unlock()
	return answer, nil
}

// restart answers a new offer within the running call: the browser's
// restartIce. A refused offer leaves the call as it was.
func (s *Server) restart(w http.ResponseWriter, r *http.Request, id, offer string) {
	sess := s.lookup(id)
	if sess == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("call %s is not running", id))
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, defaultAnswerTimeout)
	defer cancel()
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	answer, err := sess.call.Answer(ctx, offer)
	if err != nil {
		s.opts.Log.Printf("call %s: refused a new offer (the call goes on as it was): %v", id, err)
		writeError(w, http.StatusBadRequest, "the new offer was refused (the call goes on as it was): "+err.Error())
		return
	}
	s.opts.Log.Printf("call %s: answered a new offer from the browser (ICE restart)", id)
	writeJSON(w, http.StatusOK, map[string]string{"call": id, "answer": answer})
}

func (s *Server) handleHangup(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("call")
	sess := s.lookup(id)
	if sess == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("call %s is not running", id))
		return
	}
	sess.end(errHungUp)
	select {
	case <-sess.done:
	case <-r.Context().Done():
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"ended": context.Cause(sess.ctx).Error()})
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("call")
	sess := s.lookup(id)
	if sess == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("call %s is not running", id))
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "the server cannot stream events")
		return
	}
	if !sess.stream.CompareAndSwap(false, true) {
		writeError(w, http.StatusConflict, fmt.Sprintf("call %s already has an event stream", id))
		return
	}
	close(sess.attach)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)

	send := func(event string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	tick := time.NewTicker(s.opts.StatsInterval)
	defer tick.Stop()
	for err := send("stats", sess.view()); err == nil; err = send("stats", sess.view()) {
		select {
		case <-r.Context().Done():
			// The page is gone: a closed tab, a reload, a crash. Hang
			// up unless the call has ended already.
			sess.end(errTabGone)
			return
		case <-sess.ctx.Done():
			<-sess.done
			_ = send("ended", map[string]string{"reason": context.Cause(sess.ctx).Error()})
			return
		case <-tick.C:
		}
	}
	sess.end(errTabGone)
}

// run carries one answered call until it ends, then closes it and joins
// its goroutines. It owns one count of s.wg.
func (s *Server) run(sess *session) {
	defer s.wg.Done()
	call := sess.call
	var media sync.WaitGroup
	defer func() {
		call.Close() // ends ReadRTP; the sender stops on sess.ctx
		media.Wait()
		s.mu.Lock()
		if s.active == sess {
			s.active = nil
		}
		s.mu.Unlock()
		close(sess.done)
		st := call.Stats()
		s.opts.Log.Printf("call %s ended: %v (sent %d packets, received %d, auth failures %d)",
			sess.id, context.Cause(sess.ctx), st.RTPPacketsSent, st.RTPPacketsReceived, st.AuthFailures)
	}()

	connectCtx, cancelConnect := context.WithTimeout(sess.ctx, s.opts.ConnectTimeout)
	defer cancelConnect()
	connected := make(chan error, 1)
	go func() { connected <- call.Connect(connectCtx) }()
	defer func() {
		if connected != nil {
			cancelConnect()
			<-connected
		}
	}()
	noStream := time.NewTimer(s.opts.AttachTimeout)
	defer noStream.Stop()
	attached := sess.attach
	for {
		select {
		case <-attached:
			attached = nil
			noStream.Stop()
		case <-noStream.C:
			sess.end(errNoStream)
		case err := <-connected:
			connected = nil
			if err != nil {
				sess.end(fmt.Errorf("the call did not connect: %w", err))
				continue
			}
			p := call.Path()
			s.opts.Log.Printf("call %s: connected over %s %s -> %s %s (%s), %s",
				sess.id, p.Local.Type, p.Local.Address, p.Remote.Type, p.Remote.Address, direct(p.Direct()), call.Stats().Profile)
			media.Add(3)
			go func() { defer media.Done(); sess.receive() }()
			go func() { defer media.Done(); sess.receiveRTCP() }()
			go func() { defer media.Done(); sess.send(s.opts.Log) }()
		case <-call.Context().Done():
			sess.end(fmt.Errorf("the call failed: %w", context.Cause(call.Context())))
		case <-sess.ctx.Done():
			return
		}
	}
}

func direct(d bool) string {
	if d {
		return "direct"
	}
	return "relayed"
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
