package ice_test

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/ice"
)

// verifyNoLeak checks for leaked goroutines after every cleanup
// registered later (Transports, Endpoints) has run, also on failure.
func verifyNoLeak(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// pionGoroutines counts the goroutines running pion/ice code.
func pionGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var count int
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("github.com/pion/ice/")) {
			count++
		}
	}
	return count
}

// waitFor polls cond for up to d (no timing assertion: a bound).
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

type connectivity struct {
	up     chan bool
	failed chan error
}

func withReports(cfg ice.Config) (ice.Config, *connectivity) {
	c := &connectivity{up: make(chan bool, 16), failed: make(chan error, 4)}
	// Checks every 50 ms; silence is reported only after 1.5 s, so that
	// a loaded machine running -race does not count as a lost peer.
	cfg.KeepaliveInterval = 50 * time.Millisecond
	cfg.DisconnectedTimeout = 1500 * time.Millisecond
	cfg.FailedTimeout = 500 * time.Millisecond
	cfg.OnConnectivity = func(up bool) { c.up <- up }
	cfg.OnFailed = func(err error) { c.failed <- err }
	return cfg, c
}

func (c *connectivity) none(t *testing.T, who string) {
	t.Helper()
	select {
	case up := <-c.up:
		t.Errorf("%s: OnConnectivity(%v) while the peer answers", who, up)
	case err := <-c.failed:
		t.Errorf("%s: OnFailed(%v) while the peer answers", who, err)
	default:
	}
}

// Once connected, a Transport on an Endpoint owns no goroutine: pion's
// agent is closed and the Endpoint keeps the path's consent (RFC 7675),
// answering the peer's checks and sending its own. Both ends on
// Endpoints: nothing of pion's runs at all; consent holds for several
// DisconnectedTimeouts, and media flows.
func TestEndpointParkedOwnsNoGoroutine(t *testing.T) {
	verifyNoLeak(t)
	epA, epB := listenEndpoint(t), listenEndpoint(t)
	cfgA, repA := withReports(onEndpoint(epA))
	cfgB, repB := withReports(onEndpoint(epB))
	a, b := newSide(t, cfgA), newSide(t, cfgB)
	connect(t, a, b, false, false, nil)
	if !waitFor(5*time.Second, func() bool { return pionGoroutines() == 0 }) {
		t.Fatalf("%d goroutines run pion/ice code on two connected Transports on Endpoints, want 0", pionGoroutines())
	}
	stunA := epA.Stats().STUN
	// Two DisconnectedTimeouts: the path must stay up on consent alone.
	for range 30 {
		exchange(t, a.conn, b.conn)
		time.Sleep(100 * time.Millisecond)
	}
	repA.none(t, "a")
	repB.none(t, "b")
	if got := epA.Stats().STUN - stunA; got < 4 {
		t.Errorf("%d consent messages in 3 s at a 50 ms interval, want several", got)
	}
	// The peer goes away: consent lapses, reported as pion would.
	if err := b.t.Close(); err != nil {
		t.Fatal(err)
	}
	repA.wantDownThenFailed(t)
	a.t.Close()
	epA.Close()
	epB.Close()
}

// A gateway on an Endpoint with a phone on its own socket (a pion agent
// that keeps checking): the parked gateway answers the phone's checks, so
// neither side reports a loss while both run; when the phone goes, the
// gateway reports Disconnected then Failed; when the gateway goes, the
// phone's agent notices as it always did.
func TestEndpointParkedConsentWithPion(t *testing.T) {
	verifyNoLeak(t)
	ep := listenEndpoint(t)
	for _, closeGateway := range []bool{false, true} {
		cfgG, repG := withReports(onEndpoint(ep))
		cfgP, repP := withReports(loopback())
		gw, phone := newSide(t, cfgG), newSide(t, cfgP)
		connect(t, phone, gw, false, false, nil)
		for range 30 {
			exchange(t, gw.conn, phone.conn)
			time.Sleep(100 * time.Millisecond)
		}
		repG.none(t, "gateway")
		repP.none(t, "phone")
		if closeGateway {
			gw.t.Close()
			repP.wantDownThenFailed(t)
			phone.t.Close()
		} else {
			phone.t.Close()
			repG.wantDownThenFailed(t)
			gw.t.Close()
		}
	}
	ep.Close()
}

func (c *connectivity) wantDownThenFailed(t *testing.T) {
	t.Helper()
	select {
	case up := <-c.up:
		if up {
			t.Fatal("OnConnectivity(true) after the peer went away")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnConnectivity(false) within 10 s of the peer going away")
	}
	select {
	case err := <-c.failed:
		if err == nil {
			t.Fatal("OnFailed(nil)")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnFailed within 10 s of the peer going away")
	}
}

// An ICE restart of parked Transports makes a new agent, runs the checks
// and parks again; the net.Conn from Connect carries media on the new path.
func TestEndpointRestartAfterPark(t *testing.T) {
	verifyNoLeak(t)
	ep := listenEndpoint(t)
	cfgA, repA := withReports(onEndpoint(ep))
	cfgB, repB := withReports(loopback())
	a, b := newSide(t, cfgA), newSide(t, cfgB)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	ctx := context.Background()
	ca, err := a.t.Restart(ctx)
	if err != nil {
		t.Fatal(err)
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
	// Parked again: the new agent's goroutines end, consent holds.
	before := pionGoroutines()
	b.t.Close()
	if !waitFor(5*time.Second, func() bool { return pionGoroutines() == 0 }) {
		t.Errorf("%d goroutines run pion/ice code after the restarted Endpoint Transport connected (%d with the peer's), want 0", pionGoroutines(), before)
	}
	repA.wantDownThenFailed(t)
	_ = repB
	a.t.Close()
	ep.Close()
}

// A parked Transport may be restarted from inside its own OnConnectivity
// (an application that restarts ICE when the path goes quiet, from the
// Call's OnStateChange): Restart ends the consent session without waiting
// for the report it runs in, and then Close waits for nothing left.
func TestEndpointRestartFromOnConnectivity(t *testing.T) {
	verifyNoLeak(t)
	ep := listenEndpoint(t)
	cfgA, _ := withReports(onEndpoint(ep))
	var a *side
	restarted := make(chan error, 1)
	cfgA.OnConnectivity = func(up bool) {
		if up {
			return
		}
		_, err := a.t.Restart(context.Background())
		restarted <- err
	}
	cfgB, _ := withReports(loopback())
	a = newSide(t, cfgA)
	b := newSide(t, cfgB)
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	b.t.Close() // a's path goes quiet
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("Restart from OnConnectivity: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Restart from OnConnectivity did not return within 10 s of the path going quiet")
	}
	if err := a.t.Close(); err != nil {
		t.Fatal(err)
	}
	ep.Close()
}
