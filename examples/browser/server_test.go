package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopbackICE keeps both ends of the unit tests on 127.0.0.1.
var loopbackICE = ice.Config{
	InterfaceFilter: func(name string) bool { return name == "lo" },
	IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
	Networks:        []ice.Network{ice.UDP4},
}

// syncBuffer is the terminal of a Server under test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testServer struct {
	*Server
	url      string
	terminal *syncBuffer
}

// newTestServer starts a Server on loopback; its cleanup closes the
// Server first (ending any event stream), then the HTTP server.
func newTestServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	term := &syncBuffer{}
	opts.Call.ICE = loopbackICE
	opts.Log = log.New(term, "", 0)
	srv := NewServer(opts)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		if t.Failed() {
			t.Logf("terminal:\n%s", term)
		}
	})
	return &testServer{Server: srv, url: hs.URL, terminal: term}
}

// waitIdle waits until the server has cleaned up its call.
func (ts *testServer) waitIdle(t *testing.T) {
	t.Helper()
	for range 500 {
		if ts.Idle() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the server still holds a call; terminal:\n%s", ts.terminal)
}

// post sends body to path and returns the status and the decoded JSON.
func post(t *testing.T, url, body string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Post(url, "application/sdp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatalf("POST %s: %d, undecodable reply: %v", url, resp.StatusCode, err)
	}
	return resp.StatusCode, reply
}

// newPeer is the browser's stand-in: a Call that offers PCMU in dtls
// keying on loopback.
func newPeer(t *testing.T) *securecall.Call {
	t.Helper()
	c, err := securecall.New(securecall.Config{ICE: loopbackICE, Codecs: []sdp.Format{pcmu}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dial makes peer's offer, has the server answer it and waits until both
// are connected; it returns the call's id.
func (ts *testServer) dial(t *testing.T, ctx context.Context, peer *securecall.Call) string {
	t.Helper()
	offer, err := peer.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status, reply := post(t, ts.url+"/offer", offer)
	if status != http.StatusOK {
		t.Fatalf("POST /offer: %d %v", status, reply)
	}
	if err := peer.SetAnswer(ctx, reply["answer"]); err != nil {
		t.Fatal(err)
	}
	if err := peer.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return reply["call"]
}

// eventStream is the page's /events connection.
type eventStream struct {
	cancel context.CancelFunc
	body   io.Closer
	r      *bufio.Reader
}

func (ts *testServer) events(t *testing.T, id string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+"/events?call="+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /events: %d %s", resp.StatusCode, body)
	}
	es := &eventStream{cancel: cancel, body: resp.Body, r: bufio.NewReader(resp.Body)}
	t.Cleanup(es.close)
	return es
}

func (es *eventStream) close() {
	es.cancel()
	es.body.Close()
}

// next returns the next event's name and data.
func (es *eventStream) next(t *testing.T) (string, []byte) {
	t.Helper()
	var event string
	for {
		line, err := es.r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			return event, []byte(strings.TrimPrefix(line, "data: "))
		}
	}
}

// stats reads events until a stats event satisfies ok.
func (es *eventStream) stats(t *testing.T, ok func(statsView) bool) statsView {
	t.Helper()
	for range 100 {
		event, data := es.next(t)
		if event != "stats" {
			t.Fatalf("event %q (%s), want stats", event, data)
		}
		var v statsView
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
		if ok(v) {
			return v
		}
	}
	t.Fatal("no stats event met the condition")
	return statsView{}
}

// TestServerBadOffers: an offer that is not SDP, one the Call cannot
// answer and one too large are refused with a message, leave no call
// behind, and a good offer then connects.
func TestServerBadOffers(t *testing.T) {
	ts := newTestServer(t, Options{})
	kmsOffer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=key-mgmt:securecall x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:0 PCMU/8000\r\n"
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"not SDP", "hello, Go", http.StatusBadRequest, "the offer was refused: securecall: Answer"},
		{"empty", "", http.StatusBadRequest, "the offer was refused"},
		{"unanswerable", kmsOffer, http.StatusBadRequest, "the offer was refused"},
		{"too large", strings.Repeat("a", maxOffer+1), http.StatusRequestEntityTooLarge, "could not be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, reply := post(t, ts.url+"/offer", tc.body)
			if status != tc.status || !strings.Contains(reply["error"], tc.want) {
				t.Fatalf("POST /offer: %d %q, want %d and %q", status, reply["error"], tc.status, tc.want)
			}
			if !ts.Idle() {
				t.Fatal("a refused offer left a call behind")
			}
		})
	}
	if got := strings.Count(ts.terminal.String(), "refused an offer"); got != 4 {
		t.Errorf("terminal has %d refusals, want 4:\n%s", got, ts.terminal)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := ts.dial(t, ctx, newPeer(t))
	if status, reply := post(t, ts.url+"/hangup?call="+id, ""); status != http.StatusOK || reply["ended"] != errHungUp.Error() {
		t.Fatalf("POST /hangup: %d %v", status, reply)
	}
	if !ts.Idle() {
		t.Fatal("hang-up returned before the call was cleaned up")
	}
}

// TestServerSecondTab: while a call runs, another tab's offer is refused
// with a message and the running call goes on; unknown call ids are
// refused too.
func TestServerSecondTab(t *testing.T) {
	ts := newTestServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := ts.dial(t, ctx, newPeer(t))
	es := ts.events(t, id)
	es.stats(t, func(v statsView) bool { return v.State == "connected" })

	second := newPeer(t)
	offer, err := second.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status, reply := post(t, ts.url+"/offer", offer)
	if status != http.StatusConflict || !strings.Contains(reply["error"], "already running") {
		t.Fatalf("second tab's offer: %d %v, want 409 and a message", status, reply)
	}
	if !strings.Contains(ts.terminal.String(), "refused a second call: call "+id+" is running") {
		t.Errorf("terminal:\n%s", ts.terminal)
	}
	for _, path := range []string{"/offer?call=nope", "/hangup?call=nope"} {
		if status, reply := post(t, ts.url+path, offer); status != http.StatusNotFound || !strings.Contains(reply["error"], "not running") {
			t.Errorf("POST %s: %d %v, want 404", path, status, reply)
		}
	}
	resp, err := http.Get(ts.url + "/events?call=" + id)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("a second event stream for the call: %d, want 409", resp.StatusCode)
	}
	// The first call is untouched.
	es.stats(t, func(v statsView) bool { return v.State == "connected" && v.Call == id })
}

// TestServerTabClosedMidCall: when the page's event stream goes away, the
// call is hung up, said so in the terminal, and nothing is left running
// (TestMain checks for goroutines).
func TestServerTabClosedMidCall(t *testing.T) {
	ts := newTestServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer := newPeer(t)
	id := ts.dial(t, ctx, peer)
	es := ts.events(t, id)
	v := es.stats(t, func(v statsView) bool { return v.State == "connected" })
	if v.Keying != "dtls" || v.Profile == "" || v.Path == nil || v.Path.Local.Type == "" || v.Path.Remote.Address == "" || !v.Path.Direct {
		t.Fatalf("stats without keying, profile or path: %+v", v)
	}
	es.close()
	ts.waitIdle(t)
	if !strings.Contains(ts.terminal.String(), "call "+id+" ended: "+errTabGone.Error()) {
		t.Errorf("terminal:\n%s", ts.terminal)
	}
	if status, _ := post(t, ts.url+"/hangup?call="+id, ""); status != http.StatusNotFound {
		t.Errorf("hang-up after the tab left: %d, want 404", status)
	}
}

// TestServerNoEventStream: a page that answers but never opens its event
// stream is hung up after AttachTimeout.
func TestServerNoEventStream(t *testing.T) {
	ts := newTestServer(t, Options{AttachTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := ts.dial(t, ctx, newPeer(t))
	ts.waitIdle(t)
	if !strings.Contains(ts.terminal.String(), "call "+id+" ended: "+errNoStream.Error()) {
		t.Errorf("terminal:\n%s", ts.terminal)
	}
}

// TestServerCloseEndsStream: closing the Server hangs up the call and the
// page's stream receives "ended" with the reason.
func TestServerCloseEndsStream(t *testing.T) {
	ts := newTestServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := ts.dial(t, ctx, newPeer(t))
	es := ts.events(t, id)
	es.stats(t, func(statsView) bool { return true })
	go ts.Close()
	for {
		event, data := es.next(t)
		if event == "stats" {
			continue
		}
		if event != "ended" || !strings.Contains(string(data), errServerClosed.Error()) {
			t.Fatalf("event %q %s, want ended with %q", event, data, errServerClosed)
		}
		break
	}
	ts.waitIdle(t)
}

// TestServerEchoAndRestart: audio the peer sends comes back after the
// echo delay, through an ICE restart made by a new offer within the call,
// and hang-up ends it.
func TestServerEchoAndRestart(t *testing.T) {
	ts := newTestServer(t, Options{EchoDelay: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peer := newPeer(t)
	id := ts.dial(t, ctx, peer)
	es := ts.events(t, id)

	// The peer talks: a 1 kHz tone, which the Go side's beep is not.
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		tone := &audio.Tone{Frequency: 1000, Amplitude: 0.5}
		h := media.RTPHeader{PayloadType: 0, SequenceNumber: 1, SSRC: peer.SSRC()}
		frame := make([]byte, audio.FrameSamples)
		tick := time.NewTicker(frameInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sent <- nil
				return
			case <-tick.C:
			}
			if err := peer.WriteRTP(h, tone.NextFrame(frame)); err != nil {
				sent <- err
				return
			}
			h.SequenceNumber++
			h.Timestamp += audio.FrameSamples
		}
	}()
	defer func() {
		close(stop)
		if err := <-sent; err != nil {
			t.Errorf("peer WriteRTP: %v", err)
		}
	}()

	echoed := func(what string) {
		t.Helper()
		var samples []int16
		buf := make([]byte, 1500)
		for len(samples) < 50*audio.FrameSamples {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, n, err := peer.ReadRTP(buf)
			if err != nil {
				t.Fatalf("%s: ReadRTP: %v", what, err)
			}
			for _, u := range buf[:n] {
				samples = append(samples, audio.DecodeULaw(u))
			}
			if level := audio.ToneLevel(samples[max(0, len(samples)-10*audio.FrameSamples):], 1000); level > 0.5 {
				return
			}
		}
		t.Fatalf("%s: the peer's 1 kHz tone did not come back within 50 frames", what)
	}
	echoed("before the restart")

	restartOffer, err := peer.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status, reply := post(t, ts.url+"/offer?call="+id, restartOffer)
	if status != http.StatusOK || reply["call"] != id {
		t.Fatalf("restart offer: %d %v", status, reply)
	}
	if err := peer.SetAnswer(ctx, reply["answer"]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ts.terminal.String(), "call "+id+": answered a new offer from the browser (ICE restart)") {
		t.Errorf("terminal:\n%s", ts.terminal)
	}
	// A malformed offer within the call is refused and changes nothing.
	if status, reply := post(t, ts.url+"/offer?call="+id, "v=0 and nothing else"); status != http.StatusBadRequest ||
		!strings.Contains(reply["error"], "the call goes on as it was") {
		t.Fatalf("malformed offer within the call: %d %v", status, reply)
	}
	echoed("after the restart")
	v := es.stats(t, func(v statsView) bool { return v.FramesEchoed > 0 })
	if v.AuthFailures != 0 || v.RTPReceived == 0 || v.EchoDelayMS != 200 || v.Quality == nil || v.Quality.MOS == "" {
		t.Fatalf("stats after the echo: %+v", v)
	}

	if status, reply := post(t, ts.url+"/hangup?call="+id, ""); status != http.StatusOK {
		t.Fatalf("POST /hangup: %d %v", status, reply)
	}
	event, data := es.next(t)
	for event == "stats" {
		event, data = es.next(t)
	}
	if event != "ended" || !strings.Contains(string(data), errHungUp.Error()) {
		t.Fatalf("event %q %s after hang-up", event, data)
	}
}

// TestEchoLine: the delay line plays nothing until its delay has
// gathered, plays in order, and drops the oldest frames past twice the
// delay instead of growing.
func TestEchoLine(t *testing.T) {
	e := newEchoLine(3 * frameInterval)
	frame := func(b byte) []byte { return bytes.Repeat([]byte{b}, audio.FrameSamples) }
	out := make([]byte, audio.FrameSamples)
	e.push(frame(1))
	e.push(frame(2))
	if e.pop(out) {
		t.Fatal("played before the delay gathered")
	}
	e.push([]byte{9}) // not a PCMU frame: ignored
	for i := byte(3); i <= 8; i++ {
		e.push(frame(i))
	}
	var got []byte
	for e.pop(out) {
		got = append(got, out[0])
	}
	if want := []byte{3, 4, 5, 6, 7, 8}; !bytes.Equal(got, want) {
		t.Fatalf("played %v, want %v (oldest dropped past 6 frames)", got, want)
	}
	e.push(frame(10))
	if e.pop(out) {
		t.Fatal("played again before the delay gathered anew")
	}
}

// TestServerForeignRequests: a request from another site's page, or to a
// host name that is not this server's (DNS rebinding), is refused and
// starts nothing.
func TestServerForeignRequests(t *testing.T) {
	ts := newTestServer(t, Options{})
	for _, tc := range []struct {
		name, host, origin string
	}{
		{"cross-origin post", "", "http://evil.example"},
		{"rebound name", "evil.example:8080", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, ts.url+"/offer", strings.NewReader("v=0"))
			if tc.host != "" {
				req.Host = tc.host
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !ts.Idle() {
				t.Fatalf("%d, want 403 and no call", resp.StatusCode)
			}
		})
	}
	// The page's own requests carry its origin.
	req, _ := http.NewRequest(http.MethodGet, ts.url+"/", nil)
	req.Header.Set("Origin", ts.url)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the page from its own origin: %d", resp.StatusCode)
	}
	if got := strings.Count(ts.terminal.String(), "refused POST /offer"); got != 2 {
		t.Errorf("terminal has %d refusals, want 2:\n%s", got, ts.terminal)
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		f    flags
		want string // error text, or "" for valid
	}{
		{flags{}, ""},
		{flags{policy: "direct-only", stun: "stun:127.0.0.1:3478"}, ""},
		{flags{policy: "relay-only", turn: "turn:127.0.0.1:3478", turnUser: "u", turnPass: "p"}, ""},
		{flags{policy: "sideways"}, "-policy must be"},
		{flags{policy: "relay-only"}, "needs -turn"},
		{flags{turn: "turn:127.0.0.1:3478"}, "needs -turn-user and -turn-pass"},
		{flags{stun: "127.0.0.1:3478"}, "-stun must be"},
		{flags{turn: "http://x", turnUser: "u", turnPass: "p"}, "-turn must be"},
	} {
		_, err := tc.f.iceConfig()
		if got := fmt.Sprint(err); (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(got, tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}
