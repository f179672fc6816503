package ice_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

func TestMain(m *testing.M) {
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
