package pgstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/pgtest"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

// benchLimits keeps every limit on the path, above what the benchmark
// devices ask.
var benchLimits = kmsserver.Config{RequestRate: 1e9, RequestBurst: 1 << 30, RotationsPerMinute: 1 << 30}

// benchSet is n replicas on PostgreSQL, or (n == 0) one server on the
// embedded file store, with devices registered and one call of theirs.
type benchSet struct {
	urls []string
	cfg  func(identity string, first int) kms.Config
}

func startBench(b *testing.B, c *pgtest.Cluster, n int, names []string) *benchSet {
	b.Helper()
	bs := &benchSet{}
	var envs []*devkms.Env
	if n == 0 {
		env, err := devkms.StartWith(context.Background(), b.TempDir(), devkms.Options{Server: benchLimits}, names...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { env.Close() })
		envs = append(envs, env)
	} else {
		dsn := c.CreateDatabase(b, fmt.Sprintf("b%d", dbSeq.Add(1)))
		dir := b.TempDir()
		scfg := benchLimits
		for i := range n {
			st := open(b, dsn)
			env, err := devkms.StartWith(context.Background(), dir, devkms.Options{Store: st, Server: scfg}, names...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { env.Close(); st.Close() })
			if i == 0 {
				scfg.BaseURL = env.URL
			}
			envs = append(envs, env)
		}
	}
	for _, e := range envs {
		bs.urls = append(bs.urls, e.URL)
	}
	bs.cfg = func(identity string, first int) kms.Config {
		cfg, err := envs[first].ClientConfig(identity)
		if err != nil {
			b.Fatal(err)
		}
		for i, u := range bs.urls {
			if i != first {
				cfg.URLs = append(cfg.URLs, u)
			}
		}
		return cfg
	}
	return bs
}

func (bs *benchSet) client(b *testing.B, identity string, first int) *kms.Client {
	c, err := kms.NewClient(bs.cfg(identity, first))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Register(context.Background()); err != nil {
		b.Fatal(err)
	}
	return c
}

func stores(b *testing.B) (*pgtest.Cluster, []int) {
	c := pgtest.Start(b)
	return c, []int{0, 1, 2, 3}
}

func storeName(n int) string {
	if n == 0 {
		return "store=bbolt"
	}
	return fmt.Sprintf("store=postgres/replicas=%d", n)
}

// BenchmarkInteropPostgresFetchWarm: one device's warm fetches (TLS up,
// key cached), through the first replica; bbolt in the same run.
func BenchmarkInteropPostgresFetchWarm(b *testing.B) {
	c, ns := stores(b)
	for _, n := range ns {
		b.Run(storeName(n), func(b *testing.B) {
			bs := startBench(b, c, n, []string{"alice"})
			cl := bs.client(b, "alice", 0)
			ctx := context.Background()
			uri, err := cl.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cl.Fetch(ctx, uri); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, err := cl.Fetch(ctx, uri); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			reportP50(b, lat)
		})
	}
}

// BenchmarkInteropPostgresThroughput: 16 devices fetch in parallel over
// warm connections, spread over the replicas. Clients, replicas and
// PostgreSQL share the machine's cores.
func BenchmarkInteropPostgresThroughput(b *testing.B) {
	c, ns := stores(b)
	const clients = 16
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprintf("device-%02d", i)
	}
	for _, n := range ns {
		b.Run(storeName(n), func(b *testing.B) {
			bs := startBench(b, c, n, names)
			cs := make([]*kms.Client, clients)
			for i := range cs {
				cs[i] = bs.client(b, names[i], i%len(bs.urls))
			}
			uri, err := cs[0].CreateCall(context.Background(), kms.CallOptions{Participants: names})
			if err != nil {
				b.Fatal(err)
			}
			for _, cl := range cs {
				if err := waitFetch(context.Background(), cl, uri, 1); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int32
			b.SetParallelism(clients / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				cl := cs[int(next.Add(1)-1)%clients]
				for pb.Next() {
					if _, err := cl.Fetch(context.Background(), uri); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			total := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(total, "fetches/s")
			b.ReportMetric(total/float64(len(bs.urls)), "fetches/s/replica")
		})
	}
}

// BenchmarkInteropPostgresRotate: on-demand rotations of 16 calls in
// parallel (each a commit with its audit entry), spread over the replicas.
func BenchmarkInteropPostgresRotate(b *testing.B) {
	c, ns := stores(b)
	for _, n := range ns {
		b.Run(storeName(n), func(b *testing.B) {
			bs := startBench(b, c, n, []string{"alice"})
			var cs []*kms.Client
			for i := range bs.urls {
				cs = append(cs, bs.client(b, "alice", i))
			}
			var uris []string
			for range 16 {
				uri, err := cs[0].CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice"}})
				if err != nil {
					b.Fatal(err)
				}
				uris = append(uris, uri)
			}
			var next atomic.Int32
			var mu sync.Mutex
			failed := 0
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1) - 1)
				cl, uri := cs[i%len(cs)], uris[i%len(uris)]
				for pb.Next() {
					if _, err := cl.Rotate(context.Background(), uri); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N-failed)/b.Elapsed().Seconds(), "rotations/s")
			b.ReportMetric(float64(failed), "refused")
		})
	}
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkInteropPostgresWatchPropagation: a version created on replica A
// reaches a watch held on replica B; per op, from A's answer to the
// rotate to B's delivery.
func BenchmarkInteropPostgresWatchPropagation(b *testing.B) {
	c := pgtest.Start(b)
	bs := startBench(b, c, 2, []string{"alice", "bob"})
	alice, bob := bs.client(b, "alice", 0), bs.client(b, "bob", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan uint32, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); bob.Watch(ctx, uri, func(k media.CallKey) { got <- k.Version }) }()
	defer wg.Wait()
	defer cancel()
	for v := range got {
		if v == 1 {
			break
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		v, err := alice.Rotate(ctx, uri)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for w := range got {
			if w == v {
				break
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportP50(b, lat)
}
