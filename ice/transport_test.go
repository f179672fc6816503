package ice_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/goleak"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

func TestMain(m *testing.M) {
	if os.Getenv(agentEnv) == "1" {
		natMatrixAgent(agentLog{})
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestDirectLoopback(t *testing.T) {
	a, b := newSide(t, loopback()), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	for _, s := range []*side{a, b} {
		p := s.t.Path()
		if p.Local.Type != sdp.CandidateHost || p.Remote.Type != sdp.CandidateHost || p.Relay != "" {
			t.Errorf("path = %+v, want host to host", p)
		}
	}
}

// With a TURN server configured and direct paths working, the direct pair
// wins.
func TestDirectWinsOverRelay(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	var relays int
	for _, c := range a.cands {
		if c.Type == sdp.CandidateRelay {
			relays++
		}
	}
	if relays == 0 {
		t.Fatalf("no relay candidate gathered: %v", a.cands)
	}
	if p := a.t.Path(); !p.Direct() {
		t.Errorf("path = %+v, want direct", p)
	}
}

// When the host candidates cannot reach each other (they are not
// exchanged), the relay carries the call.
func TestRelayWhenDirectBlocked(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, func(c sdp.Candidate) bool { return c.Type != sdp.CandidateRelay })
	exchange(t, a.conn, b.conn)
	p := a.t.Path()
	if p.Local.Type != sdp.CandidateRelay || p.Relay != srv.TURNURL("udp") {
		t.Errorf("path = %+v, want a relay through %s", p, srv.TURNURL("udp"))
	}
	if p.RTT <= 0 {
		t.Errorf("RTT = %v, want a measurement", p.RTT)
	}
}

func TestDirectOnlyNeverRelays(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	cfg.Policy = ice.DirectOnly
	a := newSide(t, cfg)
	a.gather(t)
	for _, c := range a.cands {
		if c.Type == sdp.CandidateRelay {
			t.Errorf("DirectOnly gathered a relay candidate: %v", c)
		}
	}
	if n := srv.AuthRequests(); n != 0 {
		t.Errorf("DirectOnly sent %d authenticated requests to the TURN server", n)
	}
	relay := sdp.Candidate{Foundation: "1", Component: 1, Transport: "udp", Priority: 1, Address: "127.0.0.2", Port: 4000, Type: sdp.CandidateRelay}
	if err := a.t.AddRemoteCandidate(relay); !errors.Is(err, ice.ErrPolicy) {
		t.Errorf("AddRemoteCandidate(relay) = %v, want a policy refusal", err)
	}
	// A relay inside the site is refused by its type as well.
	relay.Address = "127.0.0.1"
	if err := a.t.AddRemoteCandidate(relay); !errors.Is(err, ice.ErrPolicy) {
		t.Errorf("AddRemoteCandidate(relay on the site) = %v, want a policy refusal", err)
	}
}

func TestRelayOnlyRevealsNoLocalAddress(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	cfg.Policy = ice.RelayOnly
	a := newSide(t, cfg)
	b := newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	if len(a.cands) == 0 {
		t.Fatal("no candidates")
	}
	for _, c := range a.cands {
		if c.Type != sdp.CandidateRelay || c.Address != "127.0.0.2" || c.RelatedAddress != "0.0.0.0" || c.RelatedPort != 0 {
			t.Errorf("RelayOnly sent candidate %v; want only relay candidates on 127.0.0.2 with a hidden base", c)
		}
	}
	// The peer saw nothing but the relay: had any check left a local
	// socket directly, it would have learned a peer-reflexive 127.0.0.1.
	// (It may learn the relay's address as peer-reflexive when a check
	// overtakes the signaled candidate.)
	p := b.t.Path()
	if p.Remote.Address.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("peer's path = %+v, want the remote side on the relay", p)
	}
	if p := a.t.Path(); p.Local.Type != sdp.CandidateRelay || p.Relay == "" {
		t.Errorf("path = %+v, want relay", p)
	}
}

// A full agent against a Lite one: the full side controls whatever the
// caller passes, and the call connects.
func TestLiteAgainstFull(t *testing.T) {
	liteCfg := loopback()
	liteCfg.Lite = true
	lite, full := newSide(t, liteCfg), newSide(t, loopback())
	// lite is passed controlling=true and full false: the roles follow
	// RFC 8445 instead.
	connect(t, lite, full, true, false, nil)
	exchange(t, lite.conn, full.conn)
	for _, c := range lite.cands {
		if c.Type != sdp.CandidateHost {
			t.Errorf("Lite gathered %v", c)
		}
	}
	if lite.t.Path().Local.Type == "" || full.t.Path().Local.Type == "" {
		t.Error("no path reported")
	}
}

// A Lite gateway with a known public address advertises it instead of
// its interface address. (Only gathered: nothing is sent to it.)
func TestLitePublicAddress(t *testing.T) {
	cfg := loopback()
	cfg.Lite = true
	cfg.PublicAddresses = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	s := newSide(t, cfg)
	s.gather(t)
	if len(s.cands) != 1 || s.cands[0].Address != "192.0.2.10" || s.cands[0].Type != sdp.CandidateHost {
		t.Fatalf("candidates = %v, want one host candidate on 192.0.2.10", s.cands)
	}
}

// Candidates trickle while Connect runs.
func TestTrickle(t *testing.T) {
	a, b := newSide(t, loopback()), newSide(t, loopback())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.conn, a.err = a.t.Connect(ctx, b.peer(false), true) }()
	go func() { defer wg.Done(); b.conn, b.err = b.t.Connect(ctx, a.peer(false), false) }()
	var n int
	for _, d := range []struct{ from, to *side }{{a, b}, {b, a}} {
		if err := d.from.t.Gather(ctx, func(c sdp.Candidate) {
			n++
			if err := d.to.t.AddRemoteCandidate(c); err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if a.err != nil || b.err != nil {
		t.Fatalf("connect: %v / %v", a.err, b.err)
	}
	if n == 0 {
		t.Fatal("nothing trickled")
	}
	exchange(t, a.conn, b.conn)
}

// After an ICE restart on both sides the connection carries data again,
// and the new path is reported.
func TestRestartKeepsConn(t *testing.T) {
	cfg := loopback()
	paths := make(chan ice.Path, 10)
	cfg.OnPathChange = func(p ice.Path) { paths <- p }
	a, b := newSide(t, cfg), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	// pion reports the first path on its own goroutine, possibly after
	// Connect returned; a report that came after the Restart would be
	// the old path's, which is dropped.
	select {
	case <-paths:
	case <-time.After(5 * time.Second):
		t.Fatal("no OnPathChange for the first path")
	}
	old := a.t.LocalCredentials()
	ctx := context.Background()
	ca, err := a.t.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Ufrag == old.Ufrag || ca.Pwd == old.Pwd || a.t.LocalCredentials() != ca {
		t.Fatal("restart did not change the credentials")
	}
	cb, err := b.t.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.t.SetRemote(ice.Peer{Ufrag: cb.Ufrag, Pwd: cb.Pwd}); err != nil {
		t.Fatal(err)
	}
	if err := b.t.SetRemote(ice.Peer{Ufrag: ca.Ufrag, Pwd: ca.Pwd}); err != nil {
		t.Fatal(err)
	}
	a.gather(t)
	b.gather(t)
	for _, c := range b.cands {
		if err := a.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range a.cands {
		if err := b.t.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	exchange(t, a.conn, b.conn)
	// Data may flow before pion reports the new pair on its own
	// goroutine: the path is the Transport's once that report is made.
	select {
	case <-paths:
	case <-time.After(5 * time.Second):
		t.Fatal("OnPathChange not called for the path after the restart")
	}
	if a.t.Path().Local.Type == "" {
		t.Error("no path after restart, though OnPathChange reported one")
	}
}

// Two Lite agents: the offerer controls (RFC 8445 section 6.1.1).
func TestLiteAgainstLite(t *testing.T) {
	cfg := loopback()
	cfg.Lite = true
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, true, true, nil)
	exchange(t, a.conn, b.conn)
}

func TestCloseLeaksNothing(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	var paths atomic.Int32
	cfg.OnPathChange = func(ice.Path) { paths.Add(1) }
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	for _, s := range []*side{a, b} {
		if err := s.t.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.t.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		if _, err := s.conn.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v, want net.ErrClosed", err)
		}
	}
	if paths.Load() < 2 {
		t.Errorf("OnPathChange called %d times, want once per side", paths.Load())
	}
	srv.Close()
	goleak.VerifyNone(t)
}

func TestBadConfig(t *testing.T) {
	turn := ice.Server{URL: "turn:127.0.0.1:3478", Username: "u", Credential: "c"}
	for _, c := range []struct {
		name string
		cfg  ice.Config
		want string
	}{
		{"relay-only without TURN", ice.Config{Policy: ice.RelayOnly, Servers: []ice.Server{{URL: "stun:127.0.0.1"}}}, "RelayOnly needs"},
		{"lite relay-only", ice.Config{Lite: true, Policy: ice.RelayOnly}, "Lite"},
		{"lite with servers", ice.Config{Lite: true, Servers: []ice.Server{turn}}, "Lite"},
		{"bad URL", ice.Config{Servers: []ice.Server{{URL: "http://x"}}}, "server URL"},
		{"TURN without credential", ice.Config{Servers: []ice.Server{{URL: "turn:127.0.0.1"}}}, "needs a Username"},
		{"turns over udp", ice.Config{Servers: []ice.Server{{URL: "turns:127.0.0.1?transport=udp", Username: "u", Credential: "c"}}}, "TCP only"},
		{"negative wait", ice.Config{RelayWait: -1}, "RelayWait"},
		{"unknown policy", ice.Config{Policy: 7}, "policy"},
		{"unknown network", ice.Config{Networks: []ice.Network{9}}, "network"},
		{"invalid site network", ice.Config{Policy: ice.DirectOnly, SiteNetworks: []netip.Prefix{{}}}, "SiteNetworks"},
		{"public address with relay-only", ice.Config{Policy: ice.RelayOnly, Servers: []ice.Server{turn}, PublicAddresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}, "PublicAddresses"},
	} {
		_, err := ice.NewTransport(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "ice: ") {
			t.Errorf("%s: err = %v, want an ice: error mentioning %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), `"c"`) {
			t.Errorf("%s: error reveals the credential: %v", c.name, err)
		}
	}
}

// Connect fails with ErrNoPath when no pair can work, and with the
// context's error when it is cancelled.
func TestConnectFailsCleanly(t *testing.T) {
	cfg := loopback()
	cfg.ConnectTimeout = 300 * time.Millisecond
	a, b := newSide(t, cfg), newSide(t, cfg)
	a.gather(t)
	b.gather(t)
	// No candidates exchanged: nothing can work.
	_, err := a.t.Connect(context.Background(), b.peer(false), true)
	if !errors.Is(err, ice.ErrNoPath) {
		t.Errorf("Connect = %v, want ErrNoPath", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.t.Connect(ctx, a.peer(false), false); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect with a cancelled context = %v, want context.Canceled", err)
	}
	if _, err := a.t.Connect(context.Background(), ice.Peer{}, true); err == nil {
		t.Error("Connect without peer credentials succeeded")
	}
}

// Nothing secret reaches the log, even at the lowest level.
func TestLogsRedactSecrets(t *testing.T) {
	srv := startTURN(t)
	var buf syncBuffer
	cfg := loopback()
	cfg.Servers = srv.Servers()
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 8}))
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	log := buf.String()
	if !strings.Contains(log, "[redacted]") {
		t.Error("pion's start message with the remote password was not seen; the test no longer exercises redaction")
	}
	_, turnPass := srv.Credentials()
	for _, s := range []string{a.t.LocalCredentials().Pwd, b.t.LocalCredentials().Pwd, turnPass} {
		if strings.Contains(log, s) {
			t.Fatalf("log reveals a secret")
		}
	}
}

// A malformed STUN message sent to the TURN client's socket (whose port
// pion's relay candidates reveal as rport; this package hides it, so the
// test finds the socket from the TURN server's side) is dropped before
// pion's parser, which would panic on it, and the call goes on.
func TestMalformedSTUNDoesNotCrash(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	for _, c := range append(a.cands, b.cands...) {
		if c.RelatedAddress != "" && (c.RelatedAddress != "0.0.0.0" || c.RelatedPort != 0) {
			t.Errorf("candidate %v reveals its base", c)
		}
	}
	rport := ice.TURNClientPort(a.t)
	if rport == 0 {
		t.Fatal("no TURN client socket")
	}
	// A Data indication whose XOR-PEER-ADDRESS is empty and ends the
	// message.
	msg := stun.New()
	msg.Type = stun.NewType(stun.MethodData, stun.ClassIndication)
	msg.TransactionID = stun.NewTransactionID()
	msg.WriteHeader()
	msg.Add(stun.AttrData, []byte("x"))
	msg.Add(stun.AttrXORPeerAddress, nil)
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", rport))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 50 && ice.DroppedSTUN(a.t) == 0; i++ {
		if _, err := c.Write(msg.Raw); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ice.DroppedSTUN(a.t) == 0 {
		t.Fatal("the guard dropped nothing")
	}
	exchange(t, a.conn, b.conn)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Many transports share one UDP socket for their host candidates: a
// gateway with three calls to three peers that have sockets of their own.
// (Packets are demultiplexed by remote address, so each call needs a
// distinct peer address, as calls to different endpoints have.)
func TestUDPMux(t *testing.T) {
	mux, err := ice.ListenUDPMux(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	cfg := loopback()
	cfg.UDPMux = mux
	var gw, peers []*side
	for range 3 {
		a, b := newSide(t, cfg), newSide(t, loopback())
		connect(t, a, b, false, false, nil)
		gw, peers = append(gw, a), append(peers, b)
	}
	for i := range gw {
		exchange(t, gw[i].conn, peers[i].conn)
		p := gw[i].t.Path()
		if p.Local.Address != mux.Addr() || p.Local.Type != sdp.CandidateHost {
			t.Errorf("path %+v, want the shared socket %v", p, mux.Addr())
		}
		if p.RTT <= 0 {
			t.Errorf("no RTT measured over the shared socket")
		}
	}
	for _, s := range append(gw, peers...) {
		s.t.Close()
	}
	if err := mux.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mux.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	if _, err := ice.ListenUDPMux(netip.MustParseAddrPort("0.0.0.0:0"), nil); err == nil {
		t.Error("ListenUDPMux accepted an unspecified address")
	}
}

// ICE-TCP (RFC 6544): with only TCP4, the call runs over TCP.
func TestICETCP(t *testing.T) {
	cfg := loopback()
	cfg.Networks = []ice.Network{ice.TCP4}
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	if p := a.t.Path(); p.Local.Protocol != "tcp" || p.Remote.Protocol != "tcp" {
		t.Errorf("path = %+v, want TCP", p)
	}
	for _, c := range a.cands {
		if c.Transport != "tcp" || c.TCPType == "" {
			t.Errorf("candidate %v, want ICE-TCP", c)
		}
	}
}

// Close ends a Gather that waits on an unresponsive STUN server.
func TestCloseDuringGather(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg := loopback()
	cfg.Servers = []ice.Server{{URL: "stun:" + silent.LocalAddr().String()}}
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- tr.Gather(context.Background(), nil) }()
	time.Sleep(50 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) && err != nil {
		t.Errorf("Gather after Close = %v, want nil or net.ErrClosed", err)
	}
}

// Deadlines behave as on a net.Conn: the error is a timeout and is
// os.ErrDeadlineExceeded, so callers can tell it from a closed conn.
func TestConnDeadlines(t *testing.T) {
	a, b := newSide(t, loopback()), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	if err := a.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := a.conn.Read(make([]byte, 100))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v", err)
	}
	if err := a.conn.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.conn.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past its deadline: %v", err)
	}
}

// OnConnectivity reports a connected path that stops answering, and not
// the first connection, which is Connect's to report.
func TestOnConnectivity(t *testing.T) {
	cfg := loopback()
	cfg.KeepaliveInterval = 50 * time.Millisecond
	cfg.DisconnectedTimeout = 300 * time.Millisecond
	reports := make(chan bool, 10)
	cfg.OnConnectivity = func(up bool) { reports <- up }
	a, b := newSide(t, cfg), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	if err := b.t.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case up := <-reports:
		if up {
			t.Fatal("first report was true: the initial connection was reported")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report after the peer went silent")
	}
}
