package kms_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// benchLimits keeps every limit on the path, with the request bucket above
// what one benchmark device asks (a device fetching as fast as it can would
// otherwise meet 429s, which is the point of the bucket, not of a
// benchmark).
var benchLimits = kmsserver.Config{RequestRate: 1e9, RequestBurst: 1 << 30}

// benchCall starts a KMS with the given devices and a call of theirs.
func benchCall(b *testing.B, identities ...string) (*devkms.Env, string) {
	env := startEnv(b, devkms.Options{Server: benchLimits}, identities...)
	c := mustClient(b, env, identities[0])
	uri, err := c.CreateCall(context.Background(), kms.CallOptions{Participants: identities})
	if err != nil {
		b.Fatal(err)
	}
	return env, uri
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkFetchWarm: TLS session up, key cached on the server; one
// wrapped-key fetch per op, including the client's unwrapping and checks.
func BenchmarkFetchWarm(b *testing.B) {
	env, uri := benchCall(b, "alice")
	c := mustClient(b, env, "alice")
	ctx := context.Background()
	if _, err := c.Fetch(ctx, uri); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.Fetch(ctx, uri); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportP50(b, lat)
}

// BenchmarkFetchCold: every fetch on a new TLS connection (full handshake
// with the device certificate, no session resumption).
func BenchmarkFetchCold(b *testing.B) {
	env, uri := benchCall(b, "alice")
	cfg, err := env.ClientConfig("alice")
	if err != nil {
		b.Fatal(err)
	}
	tr := transport(b, env, cfg.Certificate)
	cfg.HTTPClient = &http.Client{Transport: tr}
	c, err := kms.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Register(ctx); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		tr.CloseIdleConnections()
		t0 := time.Now()
		if _, err := c.Fetch(ctx, uri); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportP50(b, lat)
}

// BenchmarkServerThroughput: 16 clients (distinct devices, so nothing
// coalesces) fetch in parallel over warm connections. Clients and server
// share the machine's cores, so this understates the server alone.
func BenchmarkServerThroughput(b *testing.B) {
	const clients = 16
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprintf("device-%02d", i)
	}
	env, uri := benchCall(b, names...)
	cs := make([]*kms.Client, clients)
	var wg sync.WaitGroup
	for i := range cs {
		cs[i] = mustClient(b, env, names[i])
		wg.Add(1)
		go func() { defer wg.Done(); cs[i].Fetch(context.Background(), uri) }()
	}
	wg.Wait()
	var next atomic.Int32
	b.SetParallelism(clients / 2) // 8 × GOMAXPROCS(2) = 16 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := cs[int(next.Add(1)-1)%clients]
		for pb.Next() {
			if _, err := c.Fetch(context.Background(), uri); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fetches/s")
}
