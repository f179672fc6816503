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

// restartPair connects two calls on loopback, a offering.
func restartPair(ctx context.Context, t *testing.T) (a, b *Call, offer string) {
	t.Helper()
	lo := ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
	var err error
	if a, err = New(Config{ICE: lo}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = New(Config{ICE: lo}); err != nil {
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
