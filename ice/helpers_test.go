package ice_test

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/stunturn"
	"github.com/securecall/securecall/sdp"
)

// loopback keeps gathering on 127.0.0.1.
func loopback() ice.Config {
	return ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") },
		Networks:        []ice.Network{ice.UDP4},
	}
}

// startTURN starts an in-process STUN/TURN server whose relayed addresses
// are on 127.0.0.2, so that relayed and host addresses differ.
func startTURN(t testing.TB) *stunturn.Server {
	t.Helper()
	srv, err := stunturn.Start(context.Background(), stunturn.Config{RelayAddress: netip.MustParseAddr("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// side is one end of a test call.
type side struct {
	t     *ice.Transport
	cands []sdp.Candidate
	conn  net.Conn
	err   error
}

func newSide(t testing.TB, cfg ice.Config) *side {
	t.Helper()
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &side{t: tr}
}

func (s *side) gather(t testing.TB) {
	t.Helper()
	s.cands = nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.t.Gather(ctx, func(c sdp.Candidate) { s.cands = append(s.cands, c) }); err != nil {
		t.Fatal(err)
	}
}

func (s *side) peer(lite bool) ice.Peer {
	c := s.t.LocalCredentials()
	return ice.Peer{Ufrag: c.Ufrag, Pwd: c.Pwd, Lite: lite}
}

// connect gathers on both sides, exchanges candidates (skipping those that
// skip reports true for), and connects a (controlling) with b.
func connect(t testing.TB, a, b *side, aLite, bLite bool, skip func(sdp.Candidate) bool) {
	t.Helper()
	a.gather(t)
	b.gather(t)
	give := func(to, from *side) {
		for _, c := range from.cands {
			if skip != nil && skip(c) {
				continue
			}
			if err := to.t.AddRemoteCandidate(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	give(a, b)
	give(b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.conn, a.err = a.t.Connect(ctx, b.peer(bLite), true) }()
	go func() { defer wg.Done(); b.conn, b.err = b.t.Connect(ctx, a.peer(aLite), false) }()
	wg.Wait()
	if a.err != nil || b.err != nil {
		t.Fatalf("connect: %v / %v", a.err, b.err)
	}
}

// exchange sends a packet each way and checks that it arrives.
func exchange(t testing.TB, a, b net.Conn) {
	t.Helper()
	for _, d := range []struct {
		from, to net.Conn
		msg      string
	}{{a, b, "ping"}, {b, a, "pong"}} {
		buf := make([]byte, 1500)
		var got string
		// Packets may be lost: resend until one arrives, within bounds.
		for i := 0; i < 50 && got != d.msg; i++ {
			if _, err := d.from.Write([]byte(d.msg)); err != nil {
				t.Fatal(err)
			}
			d.to.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := d.to.Read(buf)
			if err == nil {
				got = string(buf[:n])
			}
		}
		d.to.SetReadDeadline(time.Time{})
		if got != d.msg {
			t.Fatalf("sent %q, received %q", d.msg, got)
		}
	}
}
