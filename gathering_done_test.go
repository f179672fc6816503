package securecall_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// gatherEvents records, in order, what a trickling Call hands to
// OnCandidate and OnGatheringDone.
type gatherEvents struct {
	mu     sync.Mutex
	events []string
	done   chan error
}

func newGatherEvents() *gatherEvents { return &gatherEvents{done: make(chan error, 4)} }

func (g *gatherEvents) candidate(c sdp.Candidate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events = append(g.events, "candidate "+string(c.Type))
}

func (g *gatherEvents) gatheringDone(err error) {
	g.mu.Lock()
	g.events = append(g.events, fmt.Sprintf("done %v", err))
	g.mu.Unlock()
	g.done <- err
}

func (g *gatherEvents) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.events...)
}

// wait returns what OnGatheringDone was called with, failing t if it is
// not called before ctx ends.
func (g *gatherEvents) wait(ctx context.Context, t *testing.T) error {
	t.Helper()
	select {
	case err := <-g.done:
		return err
	case <-ctx.Done():
		t.Fatalf("OnGatheringDone was never called; events %q", g.list())
		return nil
	}
}

// TestTrickleReportsGatheringDone: with trickle ICE the application is
// told when the gathering has passed its last candidate, so that it can
// signal end-of-candidates to the peer (RFC 8838 section 4; a SIP INFO
// with a=end-of-candidates, RFC 8840; a null candidate to a browser):
// once, with no error, after every candidate, and nothing follows it.
func TestTrickleReportsGatheringDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g := newGatherEvents()
	c, err := securecall.New(securecall.Config{
		ICE: loopbackICE(), OnCandidate: g.candidate, OnGatheringDone: g.gatheringDone,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Offer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.wait(ctx, t); err != nil {
		t.Fatalf("OnGatheringDone(%v) for a gathering that completed", err)
	}
	c.Close() // waits for the call's goroutines: nothing more can arrive
	ev := g.list()
	if len(ev) < 2 || ev[len(ev)-1] != "done <nil>" {
		t.Fatalf("events %q: want at least one candidate, then done <nil> last", ev)
	}
	for _, e := range ev[:len(ev)-1] {
		if !strings.HasPrefix(e, "candidate ") {
			t.Errorf("events %q: %q before the last candidate", ev, e)
		}
	}
}

// TestTrickleReportsGatheringFailure: a trickled gathering that fails
// (RelayOnly, and the TURN server does not answer) tells the application
// why, through OnGatheringDone, instead of only logging it: it has no
// candidate to send and should end or retry the call.
func TestTrickleReportsGatheringFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A loopback port with nothing behind it: the allocation fails.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	cfg := loopbackICE()
	cfg.Policy = ice.RelayOnly
	cfg.Servers = []ice.Server{{URL: "turn:" + dead + "?transport=udp", Username: "u", Credential: "p"}}
	g := newGatherEvents()
	c, err := securecall.New(securecall.Config{ICE: cfg, OnCandidate: g.candidate, OnGatheringDone: g.gatheringDone})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Offer(ctx); err != nil {
		t.Fatal(err)
	}
	err = g.wait(ctx, t)
	if err == nil {
		t.Fatalf("OnGatheringDone(nil) for a RelayOnly gathering with no relay; events %q", g.list())
	}
	if !strings.Contains(err.Error(), "RelayOnly") {
		t.Errorf("OnGatheringDone(%v): want the reason (no relay under RelayOnly)", err)
	}
}

// TestGatheringDoneNeedsTrickle: OnGatheringDone without OnCandidate
// would never be called (without trickle, Offer and Answer gather
// everything first), so New refuses it.
func TestGatheringDoneNeedsTrickle(t *testing.T) {
	c, err := securecall.New(securecall.Config{ICE: loopbackICE(), OnGatheringDone: func(error) {}})
	if err == nil {
		c.Close()
		t.Fatal("New took OnGatheringDone without OnCandidate")
	}
}
