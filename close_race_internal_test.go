package securecall

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
)

// Close while Answer has its description but has not yet started the
// call: Answer reports ErrClosed and starts nothing, so that no goroutine
// of the call runs once Close has returned. Before, Answer started the
// call's connect goroutine after Close had waited for its goroutines.
func TestAnswerClosedBeforeStartStartsNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lo := ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
	a, err := New(Config{ICE: lo})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{ICE: lo})
	if err != nil {
		t.Fatal(err)
	}
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	testHookDescribed = func(c *Call, op string) {
		if c == b && op == "Answer" {
			closed <- c.Close() // returns before Answer goes on
		}
	}
	defer func() { testHookDescribed = nil }()
	_, err = b.Answer(ctx, offer)
	if cerr := <-closed; cerr != nil {
		t.Fatalf("Close: %v", cerr)
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Answer after Close returned: %v, want ErrClosed", err)
	}
	b.mu.Lock()
	started := b.started
	b.mu.Unlock()
	if started {
		t.Error("Answer started the call after Close returned")
	}
}

// A description made while Close runs is not handed out: Offer, Restart,
// Hold, Resume and Answer to a later offer (a restart or one keeping the
// ICE session) return ErrClosed, leave no offer pending and arm no timer
// when Close ran once the description was made. Before, Restart armed its
// unanswered-offer timer after Close had stopped the call's timers (the
// timer then held the closed call for RestartTimeout) and returned its
// offer with a nil error, as Offer and a later Answer did.
func TestDescriptionClosedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   string // the method whose description Close meets
		// make returns the call to close and what it hands out.
		make func(ctx context.Context, t *testing.T) (*Call, func() (string, error))
	}{
		{"Offer", "Offer", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			c, err := New(Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c, func() (string, error) { return c.Offer(ctx) }
		}},
		{"Restart", "Restart", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			a, _, _ := restartPair(ctx, t)
			return a, func() (string, error) { return a.Restart(ctx) }
		}},
		{"Hold", "Hold", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			a, _, _ := restartPair(ctx, t)
			return a, func() (string, error) { return a.Hold(ctx) }
		}},
		{"Resume", "Resume", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			a, _, _ := restartPair(ctx, t)
			return a, func() (string, error) { return a.Resume(ctx) }
		}},
		{"Answer to a restart", "Answer", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			a, b, _ := restartPair(ctx, t)
			offer, err := a.Restart(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return b, func() (string, error) { return b.Answer(ctx, offer) }
		}},
		{"Answer to a hold", "Answer", func(ctx context.Context, t *testing.T) (*Call, func() (string, error)) {
			a, b, _ := restartPair(ctx, t)
			offer, err := a.Hold(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return b, func() (string, error) { return b.Answer(ctx, offer) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, hand := tc.make(ctx, t)
			closed := make(chan error, 1)
			testHookDescribed = func(d *Call, op string) {
				if d == c && op == tc.op {
					closed <- d.Close()
				}
			}
			defer func() { testHookDescribed = nil }()
			out, err := hand()
			select {
			case cerr := <-closed:
				if cerr != nil {
					t.Fatalf("Close: %v", cerr)
				}
			default:
				t.Fatalf("%s made no description (%v)", tc.op, err)
			}
			if !errors.Is(err, ErrClosed) || out != "" {
				t.Errorf("%s after Close ran: %d bytes, %v; want none, ErrClosed", tc.op, len(out), err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.offerTimer != nil {
				t.Errorf("%s armed the unanswered-offer timer after Close had stopped the timers", tc.op)
			}
			if c.offer != nil || c.making || c.signaling != SignalingClosed {
				t.Errorf("%s after Close: offer pending %v, making %v, signaling %s; want none, false, closed",
					tc.op, c.offer != nil, c.making, c.signaling)
			}
		})
	}
}
