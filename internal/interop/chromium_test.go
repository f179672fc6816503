package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
)

// Chromium's flags for a headless run as root with a fake microphone and
// no traffic of its own (INTEROP.md).
var chromiumFlags = []string{
	"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
	"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
	"--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
}

// browserPackets is how many audio packets each side must receive: a
// second of 20 ms frames.
const browserPackets = 50

// TestInteropChromium makes a WebRTC audio call between headless Chromium
// and a securecall Call in dtls keying, once with the browser offering and
// once with it answering. Both run inside a network namespace with a veth
// pair (Chromium gathers no candidate on loopback alone): the test
// re-executes itself there. The browser's fake-microphone audio must reach
// the Call decrypted with the negotiated payload type, and the Call's audio
// must show in the browser's inbound-rtp packetsReceived.
func TestInteropChromium(t *testing.T) {
	inNetns := os.Getenv(envInNetns) != ""
	var ns *netns
	if !inNetns {
		needTool(t, "chromium", "chromium")
		ns = newNetns(t)
	}
	for _, role := range []string{"offer", "answer"} {
		t.Run("browser-"+role+"s", func(t *testing.T) {
			if !inNetns {
				ns.runTestInNetns(t, "^TestInteropChromium$/^browser-"+role+"s$", 90*time.Second)
				return
			}
			browserCall(t, role, newBrowserPeer)
		})
	}
}

// browserReport is what the page posts from getStats().
type browserReport struct {
	PacketsReceived int      `json:"packetsReceived"`
	PacketsSent     int      `json:"packetsSent"`
	Codecs          []string `json:"codecs"`
	Connection      string   `json:"connection"`
	ICE             string   `json:"ice"`
	DTLSCipher      string   `json:"dtlsCipher"`
	SRTPCipher      string   `json:"srtpCipher"`
	// RemoteInbound is getStats' remote-inbound-rtp: what the Go side's
	// RTCP receiver reports said of the browser's audio.
	RemoteInbound *struct {
		PacketsLost     int     `json:"packetsLost"`
		FractionLost    float64 `json:"fractionLost"`
		Jitter          float64 `json:"jitter"`
		RoundTripTime   float64 `json:"roundTripTime"`
		RTTMeasurements int     `json:"roundTripTimeMeasurements"`
		ReportsReceived int     `json:"reportsReceived"`
	} `json:"remoteInbound"`
}

// signaling is the test's HTTP server for the page: it serves the page,
// carries the descriptions and collects the page's reports.
type signaling struct {
	t         testing.TB
	peer      endpoint
	ctx       context.Context
	page      []byte
	exchanged chan struct{}
	pageErr   chan string

	mu     sync.Mutex
	report browserReport
	once   sync.Once
}

func (s *signaling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fail := func(err error) {
		select {
		case s.pageErr <- err.Error():
		default:
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	switch {
	case r.URL.Path == "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(s.page)
	case r.URL.Path == "/offer" && r.Method == http.MethodGet: // the Go side offers
		offer, err := s.peer.Offer(s.ctx)
		if err != nil {
			fail(fmt.Errorf("Offer: %w", err))
			return
		}
		io.WriteString(w, offer)
	case r.URL.Path == "/offer": // the browser offers
		answer, err := s.peer.Answer(s.ctx, string(body))
		if err != nil {
			fail(fmt.Errorf("Answer: %w\nbrowser's offer:\n%s", err, body))
			return
		}
		s.logOnFailure("browser's offer:\n%s\nanswer:\n%s", body, answer)
		s.once.Do(func() { close(s.exchanged) })
		io.WriteString(w, answer)
	case r.URL.Path == "/answer":
		if err := s.peer.SetAnswer(s.ctx, string(body)); err != nil {
			fail(fmt.Errorf("SetAnswer: %w\nbrowser's answer:\n%s", err, body))
			return
		}
		s.logOnFailure("browser's answer:\n%s", body)
		s.once.Do(func() { close(s.exchanged) })
	case r.URL.Path == "/stats":
		var rep browserReport
		if err := json.Unmarshal(body, &rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.report = rep
		s.mu.Unlock()
	case r.URL.Path == "/log":
		msg := string(body)
		s.t.Logf("page: %s", msg)
		if strings.HasPrefix(msg, "error") {
			select {
			case s.pageErr <- msg:
			default:
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// logOnFailure logs a description only if the test fails, to keep the
// output of a passing run short.
func (s *signaling) logOnFailure(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Log(msg)
		}
	})
}

func (s *signaling) lastReport() browserReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report
}

// browserCall runs one call between Chromium, in the role given ("offer"
// or "answer"), and the endpoint newPeer makes, inside the current
// network namespace.
func browserCall(t *testing.T, role string, newPeer func() (endpoint, error)) {
	chromium := needTool(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	page, err := os.ReadFile("testdata/chromium.html")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := newPeer()
	if err != nil {
		t.Fatalf("new peer: %v", err)
	}
	defer peer.Close()
	sig := &signaling{t: t, peer: peer, ctx: ctx, page: page, exchanged: make(chan struct{}), pageErr: make(chan string, 4)}

	// The page is served from loopback, a secure context, so that
	// getUserMedia is available over plain HTTP.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sig, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	url := fmt.Sprintf("http://%s/?role=%s", ln.Addr(), role)
	browser := startProcess(t, chromium, append(append([]string{}, chromiumFlags...),
		"--user-data-dir="+t.TempDir(), url)...)

	select {
	case <-sig.exchanged:
	case msg := <-sig.pageErr:
		t.Fatalf("page: %s", msg)
	case <-browser.done:
		t.Fatalf("chromium exited: %v", browser.err)
	case <-ctx.Done():
		t.Fatalf("no offer/answer exchange with the browser: %v", ctx.Err())
	}
	if err := peer.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v; browser: %+v", err, sig.lastReport())
	}
	name, pt := peer.Codec()
	if name != "opus" && name != "pcmu" {
		t.Fatalf("negotiated codec %q (payload type %d), want opus or pcmu", name, pt)
	}

	recv := startReceiver(ctx, peer)
	send := startSender(peer)
	defer send.close()
	if err := recv.wait(ctx, browserPackets); err != nil {
		t.Fatalf("browser's audio at the Go side: %v; browser: %+v", err, sig.lastReport())
	}
	n, pts := recv.count()
	if len(pts) != 1 || pts[pt] != n {
		t.Fatalf("payload types received %v, want only %d (%s)", pts, pt, name)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for sig.lastReport().PacketsReceived < browserPackets {
		select {
		case msg := <-sig.pageErr:
			t.Fatalf("page: %s", msg)
		case <-ctx.Done():
			t.Fatalf("the browser reports %+v, want %d packets received", sig.lastReport(), browserPackets)
		case <-tick.C:
		}
	}
	if c, ok := peer.(*callEndpoint); ok {
		chromiumSeesOurReports(t, ctx, sig, c)
	}
	sent, err := send.close()
	if err != nil {
		t.Fatalf("WriteAudio: %v", err)
	}
	if c, ok := peer.(*callEndpoint); ok {
		if st := c.Stats(); st.AuthFailures != 0 || st.ReplaysDropped != 0 || st.UnknownMKIDrops != 0 {
			t.Fatalf("the Call dropped packets from the browser: %+v", st)
		}
	}
	rep := sig.lastReport()
	t.Logf("browser %ss: Go side received %d %s packets (payload type %d) and sent %d; browser received %d, sent %d; browser transport %s / %s",
		role, n, name, pt, sent, rep.PacketsReceived, rep.PacketsSent, rep.DTLSCipher, rep.SRTPCipher)
}

// newBrowserPeer is the Call the browser talks to: dtls keying (the zero
// Config), candidates on the namespace's first veth only.
func newBrowserPeer() (endpoint, error) {
	return newCallEndpoint(securecall.Config{ICE: ice.Config{
		InterfaceFilter: func(name string) bool { return name == netnsVethA },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr(netnsAddrA) },
		Networks:        []ice.Network{ice.UDP4},
	}})
}

// chromiumSeesOurReports waits, with media flowing both ways, until the
// browser's getStats shows the Call's RTCP receiver reports as
// remote-inbound-rtp with a round-trip measurement (the report block
// answering the browser's sender report), and the Call has read the
// browser's reports about its own stream and measured the round trip from
// them. The first report goes out 1 to 3 s into the call.
func chromiumSeesOurReports(t *testing.T, ctx context.Context, sig *signaling, c *callEndpoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rep := sig.lastReport()
		q := c.Stats().Quality
		if ri := rep.RemoteInbound; ri != nil && ri.RTTMeasurements > 0 && q.RTT > 0 && !q.Remote.At.IsZero() {
			t.Logf("browser's remote-inbound-rtp from our reports: %d lost (fraction %.3f), jitter %.4f s, RTT %.4f s (%d measurements, %d reports); "+
				"Go side: received %d lost %d jitter %v RTT %v MOS %.2f, browser reports %d lost of ours",
				ri.PacketsLost, ri.FractionLost, ri.Jitter, ri.RoundTripTime, ri.RTTMeasurements, ri.ReportsReceived,
				q.Receive.Received, q.Receive.Lost, q.Receive.Jitter, q.RTT, q.MOS, q.Remote.Lost)
			if ri.PacketsLost != 0 || ri.RoundTripTime <= 0 || ri.RoundTripTime > 0.1 {
				t.Errorf("remote-inbound-rtp %+v on a veth pair: want no loss and a small RTT", *ri)
			}
			if q.Receive.Lost != 0 || q.RTT > 100*time.Millisecond {
				t.Errorf("Go side quality %+v on a veth pair", q)
			}
			return
		}
		select {
		case msg := <-sig.pageErr:
			t.Fatalf("page: %s", msg)
		case <-ctx.Done():
			t.Fatalf("no report exchange: browser %+v remote-inbound %+v; Go side %+v", rep, rep.RemoteInbound, q)
		case <-tick.C:
		}
	}
}
