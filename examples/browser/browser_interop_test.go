package main

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/stunturn"
)

// Chromium's flags for a headless run as root with a fake microphone and
// no traffic of its own (INTEROP.md), driven over the DevTools pipe.
var chromiumFlags = []string{
	"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
	"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
	"--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
	"--remote-debugging-pipe", "--window-size=980,760", "--hide-scrollbars",
}

// envArtifacts names a directory where the test leaves its screenshot; if
// unset, it goes to the test's temporary directory.
const envArtifacts = "SECURECALL_ARTIFACTS"

// browserPackets is how many packets each side must have received: a
// second of 20 ms frames.
const browserPackets = 50

// pageState is window.demo, the state the page shows.
type pageState struct {
	Status   string     `json:"status"`
	Call     string     `json:"call"`
	Message  string     `json:"message"`
	Restarts int        `json:"restarts"`
	Go       *statsView `json:"go"`
	Browser  *struct {
		Connection      string `json:"connection"`
		PacketsReceived int    `json:"packetsReceived"`
		PacketsSent     int    `json:"packetsSent"`
		Local           string `json:"local"`
		Remote          string `json:"remote"`
		SRTPCipher      string `json:"srtpCipher"`
		Codec           string `json:"codec"`
	} `json:"browser"`
}

// TestBrowserInterop runs the example's handler and drives headless
// Chromium against it, inside a network namespace with a veth pair (the
// test re-executes itself there).
//
// direct: the page calls, reaches "connected", the Go side decrypts the
// browser's fake-microphone audio and echoes it, the browser receives the
// Go side's audio and the stats panel shows the path; then restart ICE
// from the page (a screenshot is saved after it), a second tab refused,
// hang-up, and a tab closed mid-call, each cleaned up on the Go side.
//
// relay-only: the Go side configured as -policy relay-only -turn ... (an
// in-process TURN server on the veth) connects through the relay, and
// the panel says so.
func TestBrowserInterop(t *testing.T) {
	inNetns := os.Getenv(envInNetns) != ""
	var ns *netns
	if !inNetns {
		needTool(t, "chromium", "chromium")
		ns = newNetns(t)
	}
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"direct", browserDirect},
		{"relay-only", browserRelayOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !inNetns {
				ns.runTestInNetns(t, "^TestBrowserInterop$/^"+tc.name+"$", 120*time.Second)
				return
			}
			tc.run(t)
		})
	}
}

// vethICE keeps the Go side's candidates on the namespace's first veth.
func vethICE(cfg ice.Config) ice.Config {
	cfg.InterfaceFilter = func(name string) bool { return name == netnsVethA }
	cfg.IPFilter = func(a netip.Addr) bool { return a == netip.MustParseAddr(netnsAddrA) }
	cfg.Networks = []ice.Network{ice.UDP4}
	return cfg
}

// harness is a Server, Chromium on its page and the DevTools client.
type harness struct {
	t        *testing.T
	ctx      context.Context
	srv      *Server
	term     *syncBuffer
	devtools *cdp
	pageURL  string
	page     *tab
}

// newHarness serves the example's handler on loopback (a secure context,
// so getUserMedia works over plain HTTP) and starts Chromium on its page.
func newHarness(t *testing.T, iceCfg ice.Config) *harness {
	chromium := needTool(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, term: &syncBuffer{}}
	h.srv = NewServer(Options{Call: securecall.Config{ICE: iceCfg}, Log: log.New(h.term, "browser: ", 0)})
	hs := httptest.NewServer(h.srv)
	h.pageURL = hs.URL + "/"

	files, devtools, started, err := newCDPPipes()
	if err != nil {
		t.Fatal(err)
	}
	h.devtools = devtools
	cmd := exec.Command(chromium, append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir(), h.pageURL)...)
	cmd.ExtraFiles = files // fd 3 and fd 4
	startProcess(t, cmd)   // its cleanup, registered first, runs last
	started()
	t.Cleanup(func() {
		devtools.close()
		h.srv.Close() // ends the page's event stream, then the HTTP server can close
		hs.Close()
		if t.Failed() {
			t.Logf("terminal:\n%s", h.term)
		}
	})
	if h.page, err = devtools.pageTab(ctx, h.pageURL); err != nil {
		t.Fatal(err)
	}
	h.waitPage(h.page, "the page to load", func(s pageState) bool { return s.Status == "idle" })
	return h
}

// state reads window.demo from tb.
func (h *harness) state(tb *tab) pageState {
	h.t.Helper()
	var s pageState
	if err := tb.eval(h.ctx, "JSON.parse(JSON.stringify(window.demo || {}))", &s); err != nil {
		h.t.Fatalf("read the page's state: %v", err)
	}
	return s
}

// waitPage polls tb every 200 ms until cond holds or the test's time is up.
func (h *harness) waitPage(tb *tab, what string, cond func(pageState) bool) pageState {
	h.t.Helper()
	for {
		s := h.state(tb)
		if cond(s) {
			return s
		}
		if err := sleep(h.ctx, 200); err != nil {
			h.t.Fatalf("waiting for %s: %v; page: %+v", what, err, s)
		}
	}
}

// waitIdle waits until the Go side has cleaned up its call.
func (h *harness) waitIdle(what string) {
	h.t.Helper()
	for !h.srv.Idle() {
		if err := sleep(h.ctx, 50); err != nil {
			h.t.Fatalf("%s: the Go side still holds a call", what)
		}
	}
}

func (h *harness) click(tb *tab, button string) {
	h.t.Helper()
	if err := tb.eval(h.ctx, "document.getElementById('"+button+"').click()", nil); err != nil {
		h.t.Fatal(err)
	}
}

// flowing holds once both sides say connected and each has received at
// least min packets, and the Go side has echoed some; it fails the test
// if the call ended.
func (h *harness) flowing(min int) func(pageState) bool {
	return func(s pageState) bool {
		if strings.HasPrefix(s.Status, "ended") {
			h.t.Fatalf("the call ended: %s", s.Message)
		}
		// The Go side's figures must be this call's (they come on its
		// event stream), not the last call's.
		return s.Status == "connected" && s.Go != nil && s.Go.Call == s.Call && s.Browser != nil &&
			s.Go.RTPReceived >= uint64(min) && s.Go.FramesEchoed > 0 && s.Browser.PacketsReceived >= min
	}
}

// checkPanel checks the Go side's stats and that its panel shows them.
// The stats and the panel are read in one evaluation: the page renders the
// panel in the same task that stores new stats (every second), so two
// reads could straddle an update and compare a MOS with the next one.
func (h *harness) checkPanel(path string) {
	h.t.Helper()
	var both struct {
		State pageState `json:"state"`
		Panel string    `json:"panel"`
	}
	const read = "JSON.parse(JSON.stringify({state: window.demo || {}, panel: document.getElementById('go').innerText}))"
	if err := h.page.eval(h.ctx, read, &both); err != nil {
		h.t.Fatal(err)
	}
	s, panel := both.State, both.Panel
	g := s.Go
	if g == nil || s.Browser == nil || g.AuthFailures != 0 || g.Keying != "dtls" || g.Profile == "" || g.Path == nil {
		h.t.Fatalf("the stats: Go %+v, browser %+v", g, s.Browser)
	}
	for _, want := range []string{path, g.Path.Local.Type + " " + g.Path.Local.Address, g.Path.Remote.Address, "dtls", g.Profile} {
		if !strings.Contains(panel, want) {
			h.t.Errorf("the Go side's panel lacks %q:\n%s", want, panel)
		}
	}
	// The quality panel appears once the browser's audio has arrived.
	if g.Quality == nil || g.Quality.MOS == "" {
		h.t.Errorf("the Go side's stats carry no quality: %+v", *g)
	} else if !strings.Contains(panel, "MOS") || !strings.Contains(panel, g.Quality.MOS) {
		h.t.Errorf("the Go side's panel lacks the MOS %q:\n%s", g.Quality.MOS, panel)
	}
	if s.Browser.Remote == "" || !strings.Contains(s.Browser.Codec, "PCMU") || s.Browser.SRTPCipher == "" {
		h.t.Errorf("the browser's own stats: %+v", *s.Browser)
	}
	h.t.Logf("Go %s %s -> %s %s (%s), %s; Go received %d RTP (decrypted), %d RTCP, echoed %d; browser received %d, sent %d, %s, %s",
		g.Path.Local.Type, g.Path.Local.Address, g.Path.Remote.Type, g.Path.Remote.Address, path, g.Profile,
		g.RTPReceived, g.RTCPReceived, g.FramesEchoed, s.Browser.PacketsReceived, s.Browser.PacketsSent, s.Browser.SRTPCipher, s.Browser.Codec)
}

func browserDirect(t *testing.T) {
	h := newHarness(t, vethICE(ice.Config{}))

	// The call: connected both ways, audio both ways, the path on show.
	h.click(h.page, "call")
	s := h.waitPage(h.page, "audio both ways", h.flowing(browserPackets))
	h.checkPanel("direct")
	if !strings.HasPrefix(s.Go.Path.Local.Address, netnsAddrA+":") {
		t.Errorf("the Go side's local candidate %s is not on %s", s.Go.Path.Local.Address, netnsAddrA)
	}

	// Restart ICE from the page: new offer, the Go side answers it as a
	// restart, and audio keeps arriving.
	before := s.Browser.PacketsReceived
	h.click(h.page, "restart")
	s = h.waitPage(h.page, "the restart", func(s pageState) bool { return s.Restarts == 1 || strings.HasPrefix(s.Message, "The restart failed") })
	if s.Restarts != 1 {
		t.Fatalf("restart: %s", s.Message)
	}
	s = h.waitPage(h.page, "audio after the restart", func(s pageState) bool {
		return h.flowing(0)(s) && s.Browser.PacketsReceived >= before+browserPackets
	})
	if !strings.Contains(h.term.String(), "answered a new offer from the browser (ICE restart)") {
		t.Errorf("the Go side did not answer a restart")
	}
	h.checkPanel("direct")
	saveScreenshot(t, h.ctx, h.page)

	// A second tab is refused with a message; the first call goes on.
	second, err := h.devtools.newTab(h.ctx, h.pageURL)
	if err != nil {
		t.Fatal(err)
	}
	h.waitPage(second, "the second tab to load", func(s pageState) bool { return s.Status == "idle" })
	h.click(second, "call")
	s = h.waitPage(second, "the second tab's refusal", func(s pageState) bool { return strings.HasPrefix(s.Status, "ended") })
	if !strings.Contains(s.Message, "already running") {
		t.Errorf("the second tab says %q", s.Message)
	}
	if err := second.close(h.ctx); err != nil {
		t.Fatal(err)
	}
	if s := h.state(h.page); s.Status != "connected" {
		t.Fatalf("the first tab after the second's refusal: %+v", s)
	}

	// Hang up from the page.
	h.click(h.page, "hangup")
	s = h.waitPage(h.page, "the hang-up", func(s pageState) bool { return s.Call == "" })
	if !strings.Contains(s.Message, errHungUp.Error()) {
		t.Errorf("after hang-up the page says %q", s.Message)
	}
	h.waitIdle("after hang-up")

	// Call again and close the tab mid-call.
	h.click(h.page, "call")
	h.waitPage(h.page, "the second call", h.flowing(browserPackets/5))
	if err := h.page.close(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.waitIdle("after the tab closed")
	if !strings.Contains(h.term.String(), "ended: "+errTabGone.Error()) {
		t.Errorf("the terminal does not say the tab went away")
	}
	t.Logf("terminal:\n%s", h.term)
}

func browserRelayOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := stunturn.Start(ctx, stunturn.Config{
		Address:   netip.MustParseAddr(netnsAddrA),
		AllowPeer: func(a netip.Addr) bool { return a.Is4() && a.As4()[0] == 198 && a.As4()[1] == 51 && a.As4()[2] == 100 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	user, pass := relay.Credentials()
	// The flags a user would give.
	iceCfg, err := flags{policy: "relay-only", turn: relay.TURNURL("udp"), turnUser: user, turnPass: pass}.iceConfig()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, vethICE(iceCfg))
	h.click(h.page, "call")
	s := h.waitPage(h.page, "audio both ways", h.flowing(browserPackets))
	h.checkPanel("relayed via " + relay.TURNURL("udp"))
	if s.Go.Path.Local.Type != "relay" || s.Go.Path.Direct || relay.Allocations() == 0 {
		t.Fatalf("the Go side's path %+v is not through the relay (%d allocations)", *s.Go.Path, relay.Allocations())
	}
	h.click(h.page, "hangup")
	h.waitPage(h.page, "the hang-up", func(s pageState) bool { return s.Call == "" })
	h.waitIdle("after hang-up")
}

// saveScreenshot saves a PNG of the page to $SECURECALL_ARTIFACTS or the
// test's temporary directory.
func saveScreenshot(t *testing.T, ctx context.Context, page *tab) {
	t.Helper()
	png, err := page.screenshot(ctx)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "browser-call.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot (%d bytes): %s", len(png), path)
}

// sleep waits ms milliseconds or until ctx is done.
func sleep(ctx context.Context, ms int) error {
	timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w", ctx.Err())
	}
}
