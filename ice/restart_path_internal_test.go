package ice

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// connectedPair connects two Transports of cfg on loopback, a controlling.
func connectedPair(t *testing.T, cfg Config) (a, b *Transport) {
	t.Helper()
	return connectedPairOf(t, cfg, cfg)
}

// onLoopback keeps cfg's gathering on 127.0.0.1.
func onLoopback(cfg Config) Config {
	cfg.InterfaceFilter = func(name string) bool { return name == "lo" }
	cfg.IPFilter = func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") }
	cfg.Networks = []Network{UDP4}
	return cfg
}

// connectedPairOf connects a Transport of cfgA (controlling) with one of
// cfgB on loopback.
func connectedPairOf(t *testing.T, cfgA, cfgB Config) (a, b *Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cands [2][]sdp.Candidate
	var trs [2]*Transport
	for i, cfg := range []Config{onLoopback(cfgA), onLoopback(cfgB)} {
		tr, err := NewTransport(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		if err := tr.Gather(ctx, func(c sdp.Candidate) { cands[i] = append(cands[i], c) }); err != nil {
			t.Fatal(err)
		}
		trs[i] = tr
	}
	for i, tr := range trs {
		for _, c := range cands[1-i] {
			if err := tr.AddRemoteCandidate(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	var errs [2]error
	for i, tr := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds := trs[1-i].LocalCredentials()
			_, errs[i] = tr.Connect(ctx, Peer{Ufrag: creds.Ufrag, Pwd: creds.Pwd}, i == 0)
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("connect: %v / %v", errs[0], errs[1])
	}
	return trs[0], trs[1]
}

// pion reports a selected pair on its notifier goroutine, which may run
// after a Restart has dropped that pair (a restart soon after Connect):
// such a late report is no path. Path stays zero and OnPathChange is not
// called, so that a Call does not take the old pair for the restart's new
// one.
func TestRestartIgnoresLateSelection(t *testing.T) {
	var changes atomic.Int32
	a, _ := connectedPair(t, Config{OnPathChange: func(Path) { changes.Add(1) }})
	pair, err := a.ag().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("no selected pair after Connect: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	before := changes.Load()
	a.onSelected(pair.Local, pair.Remote) // the old pair's report, late
	if p := a.Path(); p.Local.Type != "" {
		t.Errorf("Path after a late report of the pair the restart dropped: %+v, want zero", p)
	}
	if n := changes.Load() - before; n != 0 {
		t.Errorf("OnPathChange called %d times for the dropped pair, want 0", n)
	}
}
