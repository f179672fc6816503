package kms_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

// 100 clients fetch and watch one call while it rotates: every client sees
// every version, in order, with the same key material as everyone else.
func TestManyClientsSeeEveryRotation(t *testing.T) {
	const clients, rotations = 100, 10
	names := make([]string, clients)
	for i := range names {
		names[i] = fmt.Sprintf("device-%03d", i)
	}
	env := startEnv(t, devkms.Options{Server: hammering}, names...)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	cs := make([]*kms.Client, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients*4)
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A generous request timeout: this machine's cores are shared,
			// and the test is about ordering, not latency.
			cfg, err := env.ClientConfig(n)
			if err != nil {
				errs <- err
				return
			}
			cfg.RequestTimeout = time.Minute
			c, err := kms.NewClient(cfg)
			if err != nil {
				errs <- err
				return
			}
			t.Cleanup(func() { c.Close() })
			if err := c.Register(ctx); err != nil {
				errs <- err
			}
			cs[i] = c
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	uri, err := cs[0].CreateCall(ctx, kms.CallOptions{Participants: names})
	if err != nil {
		t.Fatal(err)
	}

	const last = rotations + 1
	seen := make([][]media.CallKey, clients)
	var reachedLast sync.WaitGroup
	wctx, stopWatching := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	for i, c := range cs {
		reachedLast.Add(1)
		watchers.Add(2)
		go func() {
			defer watchers.Done()
			done := false
			err := c.Watch(wctx, uri, func(k media.CallKey) {
				seen[i] = append(seen[i], k)
				if k.Version == last && !done {
					done = true
					reachedLast.Done()
				}
			})
			if !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: watch: %w", names[i], err)
			}
			if !done {
				reachedLast.Done()
			}
		}()
		go func() { // and fetch, concurrently with its own watch
			defer watchers.Done()
			for range 5 {
				keys, err := c.Fetch(wctx, uri)
				if err != nil {
					if wctx.Err() == nil {
						errs <- fmt.Errorf("%s: fetch: %w", names[i], err)
					}
					return
				}
				if !slices.IsSortedFunc(keys, func(a, b media.CallKey) int { return int(a.Version) - int(b.Version) }) {
					errs <- fmt.Errorf("%s: fetch out of order: %v", names[i], versions(keys))
				}
			}
		}()
	}
	for range rotations {
		if _, err := cs[0].Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	all := make(chan struct{})
	go func() { reachedLast.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("not every client saw the last version in time")
	}
	stopWatching()
	watchers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ref := seen[0]
	for i, s := range seen {
		if len(s) != last {
			t.Fatalf("%s saw versions %v", names[i], versions(s))
		}
		for j, k := range s {
			if k.Version != uint32(j+1) || string(k.Key) != string(ref[j].Key) {
				t.Fatalf("%s: entry %d is version %d (or another key)", names[i], j, k.Version)
			}
		}
	}
}

// Concurrent fetches of one URI share one request.
func TestFetchCoalesces(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	var gets atomic.Int32
	c, _ := clientWith(t, env, "alice", func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet {
				gets.Add(1)
				<-gate
			}
			return rt.RoundTrip(r)
		})
	})
	const n = 50
	var wg sync.WaitGroup
	results := make([][]media.CallKey, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = c.Fetch(ctx, uri)
		}()
	}
	for c.FlightJoined(uri) < n {
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	if g := gets.Load(); g != 1 {
		t.Fatalf("%d concurrent fetches made %d requests, want 1", n, g)
	}
	for i, r := range results {
		if len(r) != 1 || r[0].Version != 1 {
			t.Fatalf("fetch %d got %v", i, r)
		}
	}
	// Callers get copies: changing one result changes no other.
	results[0][0].Key[0] ^= 0xff
	if results[0][0].Key[0] == results[1][0].Key[0] {
		t.Fatal("fetch results share key memory")
	}
}

// While the KMS is unreachable, the last keys fetched keep serving until
// they expire; then the error says unavailable. The client's clock is
// fake: the test moves it to the expiry instead of sleeping until then.
func TestCachedKeysWhileUnreachable(t *testing.T) {
	env, err := devkms.Start(context.Background(), t.TempDir(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	cfg, err := env.ClientConfig("alice")
	if err != nil {
		t.Fatal(err)
	}
	clock := fakeclock.New(time.Now())
	cfg.Clock = clock.Now
	alice, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	ctx := ctxT(t)
	if err := alice.Register(ctx); err != nil {
		t.Fatal(err)
	}
	long, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	short, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}, KeyLifetime: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := alice.Fetch(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	shortKeys, err := alice.Fetch(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	env.Close() // the KMS goes away
	cached, err := alice.Fetch(ctx, long)
	if err != nil || len(cached) != 1 || string(cached[0].Key) != string(fresh[0].Key) {
		t.Fatalf("unreachable KMS: %v, %v; want the cached key", cached, err)
	}
	// Up to the short key's expiry it is still served; at its expiry
	// nothing is left to serve, while the long call's key still is.
	clock.Advance(shortKeys[0].ExpiresAt.Sub(clock.Now()) - time.Millisecond)
	if keys, err := alice.Fetch(ctx, short); err != nil || len(keys) != 1 || string(keys[0].Key) != string(shortKeys[0].Key) {
		t.Fatalf("a millisecond before expiry: %v, %v; want the cached key", keys, err)
	}
	clock.Advance(time.Millisecond)
	if keys, err := alice.Fetch(ctx, short); !errors.Is(err, kms.ErrUnavailable) || keys != nil {
		t.Fatalf("after expiry: %v, %v; want ErrUnavailable", keys, err)
	}
	if cached, err := alice.Fetch(ctx, long); err != nil || len(cached) != 1 {
		t.Fatalf("the unexpired key of the other call: %v, %v", cached, err)
	}
}

func TestBackoffJitter(t *testing.T) {
	b := kms.Backoff{Initial: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	for attempt, ceil := range []time.Duration{10, 20, 40, 80, 80, 80} {
		ceil *= time.Millisecond
		distinct := map[time.Duration]bool{}
		for range 200 {
			d := kms.BackoffDelay(b, attempt)
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: %v outside [0, %v)", attempt, d, ceil)
			}
			distinct[d] = true
		}
		if len(distinct) < 50 {
			t.Fatalf("attempt %d: only %d distinct delays: no jitter", attempt, len(distinct))
		}
	}
	if d := kms.BackoffDelay(kms.Backoff{}, 1000); d < 0 || d >= kms.DefaultMaxBackoff {
		t.Fatalf("attempt 1000: %v", d)
	}
}

// Watch retries while the KMS is down and resumes when it is back.
func TestWatchSurvivesOutage(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := env.ClientConfig("alice")
	cfg.Backoff = kms.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}
	alice, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	ctx := ctxT(t)
	alice.Register(ctx)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint32, 8)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- alice.Watch(wctx, uri, func(k media.CallKey) { got <- k.Version }) }()
	if v := <-got; v != 1 {
		t.Fatal(v)
	}
	env.Close()
	env2 := reopen(t, dir, uri)
	admin := mustClient(t, env2, "alice")
	if _, err := admin.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != 2 {
			t.Fatalf("after the outage watched %d", v)
		}
	case <-ctx.Done():
		t.Fatal("watch did not resume")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
