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
	testHookAnswerDescribed = func(c *Call) {
		if c == b {
			closed <- c.Close() // returns before Answer goes on
		}
	}
	defer func() { testHookAnswerDescribed = nil }()
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
