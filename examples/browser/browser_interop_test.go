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
// test re-executes itself there): the page calls, reaches "connected",
// the Go side decrypts the browser's fake-microphone audio and echoes it,
// the browser receives the Go side's audio, the stats panel shows the
// path; a screenshot is saved; then restart ICE from the page, a second
// tab refused, hang-up, and a tab closed mid-call, each cleaned up on the
// Go side.
func TestBrowserInterop(t *testing.T) {
	if os.Getenv(envInNetns) == "" {
		needTool(t, "chromium", "chromium")
		newNetns(t).runTestInNetns(t, "^TestBrowserInterop$", 150*time.Second)
		return
	}
	chromium := needTool(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	term := &syncBuffer{}
	srv := NewServer(Options{
		Call: securecall.Config{ICE: ice.Config{
			InterfaceFilter: func(name string) bool { return name == netnsVethA },
			IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr(netnsAddrA) },
			Networks:        []ice.Network{ice.UDP4},
		}},
		Log: log.New(term, "browser: ", 0),
	})
	// The page is on loopback, a secure context, so getUserMedia works
	// over plain HTTP.
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	defer func() {
		if t.Failed() {
			t.Logf("terminal:\n%s", term)
		}
	}()
	pageURL := hs.URL + "/"

	files, devtools, started, err := newCDPPipes()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromium, append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir(), pageURL)...)
	cmd.ExtraFiles = files // fd 3 and fd 4
	startProcess(t, cmd)
	started()
	defer devtools.close()

	page, err := devtools.pageTab(ctx, pageURL)
	if err != nil {
		t.Fatal(err)
	}
	state := func(tb *tab) pageState {
		t.Helper()
		var s pageState
		if err := tb.eval(ctx, "JSON.parse(JSON.stringify(window.demo || {}))", &s); err != nil {
			t.Fatalf("read the page's state: %v", err)
		}
		return s
	}
	// waitPage polls the page every 200 ms until cond holds or ctx ends.
	waitPage := func(tb *tab, what string, cond func(pageState) bool) pageState {
		t.Helper()
		for {
			s := state(tb)
			if cond(s) {
				return s
			}
			if err := sleep(ctx, 200); err != nil {
				t.Fatalf("waiting for %s: %v; page: %+v", what, err, s)
			}
		}
	}
	waitIdle := func(what string) {
		t.Helper()
		for !srv.Idle() {
			if err := sleep(ctx, 50); err != nil {
				t.Fatalf("%s: the Go side still holds a call", what)
			}
		}
	}
	click := func(tb *tab, button string) {
		t.Helper()
		if err := tb.eval(ctx, "document.getElementById('"+button+"').click()", nil); err != nil {
			t.Fatal(err)
		}
	}
	waitPage(page, "the page to load", func(s pageState) bool { return s.Status == "idle" })

	// The call: connected both ways, audio both ways, the path on show.
	click(page, "call")
	flowing := func(min int) func(pageState) bool {
		return func(s pageState) bool {
			if strings.HasPrefix(s.Status, "ended") {
				t.Fatalf("the call ended: %s", s.Message)
			}
			return s.Status == "connected" && s.Go != nil && s.Browser != nil &&
				s.Go.RTPReceived >= uint64(min) && s.Go.FramesEchoed > 0 && s.Browser.PacketsReceived >= min
		}
	}
	s := waitPage(page, "audio both ways", flowing(browserPackets))
	if s.Go.AuthFailures != 0 || s.Go.Keying != "dtls" || s.Go.Profile == "" || s.Go.Path == nil {
		t.Fatalf("the Go side's stats: %+v", *s.Go)
	}
	if s.Go.Path.Local.Address != "" && !strings.HasPrefix(s.Go.Path.Local.Address, netnsAddrA+":") {
		t.Errorf("the Go side's local candidate %s is not on %s", s.Go.Path.Local.Address, netnsAddrA)
	}
	var panel string
	if err := page.eval(ctx, "document.getElementById('go').innerText", &panel); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"direct", s.Go.Path.Local.Type + " " + s.Go.Path.Local.Address, s.Go.Path.Remote.Address, "dtls", s.Go.Profile} {
		if !strings.Contains(panel, want) {
			t.Errorf("the Go side's panel lacks %q:\n%s", want, panel)
		}
	}
	if s.Browser.Remote == "" || !strings.Contains(s.Browser.Codec, "PCMU") || s.Browser.SRTPCipher == "" {
		t.Errorf("the browser's own stats: %+v", *s.Browser)
	}
	t.Logf("connected: Go %s %s -> %s %s, %s; Go received %d (decrypted), echoed %d; browser received %d, sent %d, %s, %s",
		s.Go.Path.Local.Type, s.Go.Path.Local.Address, s.Go.Path.Remote.Type, s.Go.Path.Remote.Address, s.Go.Profile,
		s.Go.RTPReceived, s.Go.FramesEchoed, s.Browser.PacketsReceived, s.Browser.PacketsSent, s.Browser.SRTPCipher, s.Browser.Codec)

	// Restart ICE from the page: new offer, the Go side answers it as a
	// restart, and audio keeps arriving.
	before := s.Browser.PacketsReceived
	click(page, "restart")
	s = waitPage(page, "the restart", func(s pageState) bool { return s.Restarts == 1 || strings.HasPrefix(s.Message, "The restart failed") })
	if s.Restarts != 1 {
		t.Fatalf("restart: %s", s.Message)
	}
	s = waitPage(page, "audio after the restart", func(s pageState) bool {
		return flowing(0)(s) && s.Browser.PacketsReceived >= before+browserPackets
	})
	t.Logf("after the restart: Go %s %s -> %s %s; Go received %d RTP, %d RTCP; browser received %d",
		s.Go.Path.Local.Type, s.Go.Path.Local.Address, s.Go.Path.Remote.Type, s.Go.Path.Remote.Address,
		s.Go.RTPReceived, s.Go.RTCPReceived, s.Browser.PacketsReceived)
	saveScreenshot(t, ctx, page)
	if !strings.Contains(term.String(), "answered a new offer from the browser (ICE restart)") {
		t.Errorf("the Go side did not answer a restart")
	}

	// A second tab is refused with a message; the first call goes on.
	second, err := devtools.newTab(ctx, pageURL)
	if err != nil {
		t.Fatal(err)
	}
	waitPage(second, "the second tab to load", func(s pageState) bool { return s.Status == "idle" })
	click(second, "call")
	s = waitPage(second, "the second tab's refusal", func(s pageState) bool { return strings.HasPrefix(s.Status, "ended") })
	if !strings.Contains(s.Message, "already running") {
		t.Errorf("the second tab says %q", s.Message)
	}
	if err := second.close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := state(page); s.Status != "connected" {
		t.Fatalf("the first tab after the second's refusal: %+v", s)
	}

	// Hang up from the page.
	click(page, "hangup")
	s = waitPage(page, "the hang-up", func(s pageState) bool { return s.Call == "" })
	if !strings.Contains(s.Message, errHungUp.Error()) {
		t.Errorf("after hang-up the page says %q", s.Message)
	}
	waitIdle("after hang-up")

	// Call again and close the tab mid-call.
	click(page, "call")
	waitPage(page, "the second call", flowing(browserPackets/5))
	if err := page.close(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle("after the tab closed")
	if !strings.Contains(term.String(), "ended: "+errTabGone.Error()) {
		t.Errorf("the terminal does not say the tab went away")
	}
	t.Logf("terminal:\n%s", term)
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
