package securecall

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// restartPair connects two calls on loopback, a offering; edit, if set,
// changes the Config of each ("a" or "b") before New.
func restartPair(ctx context.Context, t *testing.T, edit ...func(side string, cfg *Config)) (a, b *Call, offer string) {
	t.Helper()
	lo := ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
	cfg := func(side string) Config {
		c := Config{ICE: lo}
		for _, e := range edit {
			e(side, &c)
		}
		return c
	}
	var err error
	if a, err = New(cfg("a")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = New(cfg("b")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if offer, err = a.Offer(ctx); err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Call{a, b} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, offer
}

// flows sends RTP from x until y reads one packet, within 10 s.
func flows(t *testing.T, x, y *Call) {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		y.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := y.ReadRTP(buf)
		got <- err
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1000); ; seq++ {
		if err := x.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: seq, SSRC: x.SSRC()}, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("no media on the path: %v", err)
			}
			return
		case <-tick.C:
		}
	}
}

// failRestart makes c.Restart fail after it has restarted ICE: its ctx
// ends while it gathers.
func failRestart(t *testing.T, c *Call) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testHookICERestarted = func(r *Call) {
		if r == c {
			cancel()
		}
	}
	defer func() { testHookICERestarted = nil }()
	if _, err := c.Restart(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Restart whose ctx ends while gathering: %v, want context.Canceled", err)
	}
}

// TestRestartFailedAfterICERestart: a Restart that fails once ICE has
// restarted (its ctx ends while it gathers the new candidates) leaves the
// call as a rolled-back restart does: no offer pending, keys and media
// session kept, the old path gone (its credentials are thrown away), and
// an offer of the peer that keeps the ICE session refused with a
// *StateError that changes nothing, since this end has no such session to
// keep (answering it reused the old candidates under the new
// credentials). A restart from either end then carries media again.
func TestRestartFailedAfterICERestart(t *testing.T) {
	for _, again := range []string{"this end", "the peer"} {
		t.Run(again+" restarts", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, b, firstOffer := restartPair(ctx, t)
			flows(t, a, b)
			failRestart(t, b)
			if s := b.SignalingState(); s != SignalingStable {
				t.Fatalf("signaling %s after the failed Restart", s)
			}
			var se *StateError
			if err := b.Rollback(); !errors.As(err, &se) {
				t.Fatalf("Rollback after the failed Restart: %v, want a StateError (no offer pending)", err)
			}
			if p := b.Path(); p.Local.Address.IsValid() || p.Remote.Address.IsValid() {
				t.Fatalf("the old path is reported after ICE restarted: %+v", p)
			}

			// The peer's re-offer that keeps the ICE session.
			d, err := sdp.Unmarshal([]byte(firstOffer))
			if err != nil {
				t.Fatal(err)
			}
			d.Origin.SessionVersion++
			reoffer, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if ans, err := b.Answer(ctx, string(reoffer)); !errors.As(err, &se) {
				t.Fatalf("Answer to a re-offer keeping the ICE session after a failed restart: %v, want a StateError; it answered with ufrag %q and the old candidates %q",
					err, answerUfrag(t, ans), b.localCands)
			}
			if s := b.SignalingState(); s != SignalingStable {
				t.Fatalf("signaling %s after the refused re-offer", s)
			}

			offerer, answerer := b, a
			if again == "the peer" {
				offerer, answerer = a, b
			}
			offer, err := offerer.Restart(ctx)
			if err != nil {
				t.Fatalf("Restart after the failed one: %v", err)
			}
			answer, err := answerer.Answer(ctx, offer)
			if err != nil {
				t.Fatal(err)
			}
			if err := offerer.SetAnswer(ctx, answer); err != nil {
				t.Fatal(err)
			}
			flows(t, a, b)
			flows(t, b, a)
		})
	}
}

func answerUfrag(t *testing.T, desc string) string {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil || len(d.Media) == 0 {
		return ""
	}
	return d.Media[0].ICE.Ufrag
}

// TestRestartLostPathStaysDisconnected: after a Restart that failed once
// ICE had restarted, and after one rolled back, the call has no path
// (Path zero, no media until another restart succeeds) and says
// StateDisconnected; a late report of the old path's session that it
// answers again does not make it connected. A restart that succeeds, from
// either end, does.
func TestRestartLostPathStaysDisconnected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lose  func(t *testing.T, c *Call)
		again string
	}{
		{"failed", failRestart, "this end"},
		{"rolled back", rollBackRestart, "the peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			reports := make(chan State, 64)
			a, b, _ := restartPair(ctx, t, func(side string, cfg *Config) {
				if side == "b" {
					cfg.OnStateChange = func(s State) { reports <- s }
				}
			})
			awaitState(t, reports, StateConnected)
			flows(t, a, b)
			tc.lose(t, b)
			if s := b.State(); s != StateDisconnected {
				t.Fatalf("State after a %s restart: %s, want disconnected (Path zero, no media until another restart succeeds)", tc.name, s)
			}
			awaitState(t, reports, StateDisconnected)
			b.pathAnswering(true) // late, from the old path's session
			if s := b.State(); s != StateDisconnected {
				t.Fatalf("State after the old path's late report that it answers: %s, want disconnected", s)
			}

			offerer, answerer := b, a
			if tc.again == "the peer" {
				offerer, answerer = a, b
			}
			offer, err := offerer.Restart(ctx)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := answerer.Answer(ctx, offer)
			if err != nil {
				t.Fatal(err)
			}
			if err := offerer.SetAnswer(ctx, answer); err != nil {
				t.Fatal(err)
			}
			awaitState(t, reports, StateConnected)
			flows(t, a, b)
			flows(t, b, a)
		})
	}
}

// rollBackRestart makes c.Restart and rolls its offer back.
func rollBackRestart(t *testing.T, c *Call) {
	t.Helper()
	if _, err := c.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Rollback(); err != nil {
		t.Fatal(err)
	}
}

// awaitState reads reports until want, within 10 s.
func awaitState(t *testing.T, reports <-chan State, want State) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-reports:
			if s == want {
				return
			}
		case <-timeout:
			t.Fatalf("%s not reported within 10 s", want)
		}
	}
}
