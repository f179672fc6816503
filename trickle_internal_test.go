package securecall

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// tricklingPair connects two trickling calls on loopback: each hands its
// candidates to OnCandidate, which records them (sent) and passes them to
// the other's AddRemoteCandidate.
func tricklingPair(ctx context.Context, t *testing.T) (a, b *Call, sent func(*Call) []string) {
	t.Helper()
	var (
		mu    sync.Mutex
		calls = map[string]*Call{}
		got   = map[string][]string{}
	)
	lo := ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
	var wg sync.WaitGroup
	cfg := func(side, other string) Config {
		return Config{ICE: lo, OnCandidate: func(c sdp.Candidate) {
			mu.Lock()
			got[side] = append(got[side], c.String())
			to := calls[other]
			mu.Unlock()
			wg.Add(1)
			go func() { // off the gathering goroutine, as a signaling layer would
				defer wg.Done()
				if err := to.AddRemoteCandidate(c.String()); err != nil && ctx.Err() == nil {
					t.Errorf("AddRemoteCandidate: %v", err)
				}
			}()
		}}
	}
	var err error
	if a, err = New(cfg("a", "b")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = New(cfg("b", "a")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	mu.Lock()
	calls["a"], calls["b"] = a, b
	mu.Unlock()
	t.Cleanup(wg.Wait)
	offer, err := a.Offer(ctx)
	if err != nil {
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
	sent = func(c *Call) []string {
		mu.Lock()
		defer mu.Unlock()
		side := "a"
		if c == b {
			side = "b"
		}
		return slices.Clone(got[side])
	}
	return a, b, sent
}

// awaitGathered waits until c's trickled gathering has completed.
func awaitGathered(ctx context.Context, t *testing.T, c *Call) {
	t.Helper()
	for {
		c.mu.Lock()
		done := c.trickle.done
		c.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("gathering did not complete")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// checkTrickled checks that desc, a description of c that keeps the ICE
// session, describes its ICE state: every candidate c trickled, no other,
// and end-of-candidates, since its gathering is done.
func checkTrickled(t *testing.T, what, desc string, sent []string) {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	m := d.Media[0]
	var in []string
	for _, c := range m.ICE.Candidates {
		in = append(in, c.String())
	}
	slices.Sort(in)
	sent = slices.Clone(sent)
	slices.Sort(sent)
	if !slices.Equal(in, sent) {
		t.Errorf("%s carries %d candidates %q; the call trickled %d: %q", what, len(in), in, len(sent), sent)
	}
	if !m.ICE.EndOfCandidates {
		t.Errorf("%s has no a=end-of-candidates, and the call's gathering is done", what)
	}
	if len(sent) > 0 && m.Port == sdp.DefaultPort {
		t.Errorf("%s: m= port %d (no default candidate)", what, m.Port)
	}
}

// TestTrickleReofferCarriesCandidates: with trickle ICE, a later
// description that keeps the ICE session (Hold, Resume, and the answers
// to them) describes the current ICE state, as RFC 8839 section
// 4.4.1.2.2 requires of an updated offer (every local candidate already
// signalled, trickled ones included) and RFC 8838 of a trickling agent
// (end-of-candidates once gathering is done): a peer that takes the
// description as a full one (a SIP B2BUA that does not trickle) keeps
// the path. Between two Calls the exchanges complete and media flows.
func TestTrickleReofferCarriesCandidates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, sent := tricklingPair(ctx, t)
	awaitGathered(ctx, t, a)
	awaitGathered(ctx, t, b)
	flows(t, a, b)
	for i, op := range []func(context.Context) (string, error){a.Hold, a.Resume} {
		name := [...]string{"Hold", "Resume"}[i]
		offer, err := op(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkTrickled(t, name+" offer", offer, sent(a))
		answer, err := b.Answer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		checkTrickled(t, "the answer to "+name, answer, sent(b))
		if err := a.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		flows(t, a, b)
	}
	flows(t, b, a)
}
