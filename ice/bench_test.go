package ice_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// BenchmarkConnect measures Connect, from the moment both sides call it
// (candidates already gathered and exchanged) until both have a net.Conn;
// setup-ns/op adds gathering, the exchange and Close.
func BenchmarkConnect(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		benchConnect(b, loopback(), nil)
	})
	b.Run("relay", func(b *testing.B) {
		srv := startTURN(b)
		cfg := loopback()
		cfg.Servers = srv.Servers()
		// The host candidates are not exchanged: the direct path is
		// blocked and the call falls back to the relay.
		benchConnect(b, cfg, func(c sdp.Candidate) bool { return c.Type != sdp.CandidateRelay })
	})
}

func benchConnect(b *testing.B, cfg ice.Config, skip func(sdp.Candidate) bool) {
	var connectTotal time.Duration
	start := time.Now()
	for b.Loop() {
		x, y := newSideNoCleanup(b, cfg), newSideNoCleanup(b, cfg)
		x.gather(b)
		y.gather(b)
		for _, p := range []struct{ to, from *side }{{x, y}, {y, x}} {
			for _, c := range p.from.cands {
				if skip == nil || !skip(c) {
					if err := p.to.t.AddRemoteCandidate(c); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		wg.Add(2)
		t0 := time.Now()
		go func() { defer wg.Done(); _, x.err = x.t.Connect(ctx, y.peer(false), true) }()
		go func() { defer wg.Done(); _, y.err = y.t.Connect(ctx, x.peer(false), false) }()
		wg.Wait()
		connectTotal += time.Since(t0)
		cancel()
		if x.err != nil || y.err != nil {
			b.Fatal(x.err, y.err)
		}
		if skip != nil && x.t.Path().Direct() {
			b.Fatal("relay benchmark connected directly")
		}
		x.t.Close()
		y.t.Close()
	}
	b.ReportMetric(float64(connectTotal.Nanoseconds())/float64(b.N), "connect-ns/op")
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "setup-ns/op")
}

func newSideNoCleanup(b *testing.B, cfg ice.Config) *side {
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return &side{t: tr}
}

// BenchmarkGoroutinesPerTransport connects pairs of transports and reports
// the goroutines each connected transport holds while idle.
func BenchmarkGoroutinesPerTransport(b *testing.B) {
	for _, c := range []struct {
		name           string
		turn, endpoint bool
	}{{"host", false, false}, {"host+stun+turn", true, false}, {"endpoint", false, true}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := loopback()
			if c.turn {
				cfg.Servers = startTURN(b).Servers()
			}
			if c.endpoint {
				// Both ends of every pair on one Endpoint, opened before
				// the count starts: its reader is shared by all.
				cfg.Endpoint = listenEndpoint(b)
			}
			const pairs = 10
			var perTransport float64
			for b.Loop() {
				before := runtime.NumGoroutine()
				var sides []*side
				for range pairs {
					x, y := newSideNoCleanup(b, cfg), newSideNoCleanup(b, cfg)
					connect(b, x, y, false, false, nil)
					sides = append(sides, x, y)
				}
				time.Sleep(100 * time.Millisecond) // let transient goroutines end
				perTransport = float64(runtime.NumGoroutine()-before) / float64(len(sides))
				for _, s := range sides {
					s.t.Close()
				}
			}
			b.ReportMetric(perTransport, "goroutines/transport")
		})
	}
}
