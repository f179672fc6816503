package kms_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

// A version the KMS reports revoked (compromised, destroyed), below the
// call's minimum, or of an ended call, is dropped from the cache the
// moment the client learns it, here from FetchVersion: with the KMS gone
// it is never served again, while the versions nothing was said about
// still are.
func TestRevokedVersionNotServedFromCache(t *testing.T) {
	for _, c := range []struct {
		name    string
		change  func(ctx context.Context, env *devkms.Env, alice *kms.Client, uri, id string) error
		ask     uint32
		want    error
		cached  []uint32 // served with the KMS gone
		wantErr error    // when nothing is left to serve
	}{
		{"compromised", func(ctx context.Context, env *devkms.Env, _ *kms.Client, _, id string) error {
			return env.Server.SetKeyState(ctx, id, 2, kmsserver.StateCompromised)
		}, 2, kms.ErrRevoked, []uint32{1, 3}, nil},
		{"destroyed", func(ctx context.Context, env *devkms.Env, _ *kms.Client, _, id string) error {
			return env.Server.SetKeyState(ctx, id, 3, kmsserver.StateDestroyed)
		}, 3, kms.ErrRevoked, []uint32{1, 2}, nil},
		{"below minimum", func(ctx context.Context, env *devkms.Env, _ *kms.Client, _, id string) error {
			return env.Server.SetMinVersion(ctx, id, 3)
		}, 2, kms.ErrBelowMinimum, []uint32{3}, nil},
		{"ended", func(ctx context.Context, _ *devkms.Env, alice *kms.Client, uri, _ string) error {
			return alice.EndCall(ctx, uri)
		}, 3, kms.ErrEnded, nil, kms.ErrUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := startEnv(t, devkms.Options{Server: hammering}, "alice", "bob")
			alice := mustClient(t, env, "alice")
			bob := ownClient(t, env, "bob") // outlives the KMS
			ctx := ctxT(t)
			uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := alice.Rotate(ctx, uri); err != nil {
					t.Fatal(err)
				}
			}
			keys, err := bob.Fetch(ctx, uri)
			if err != nil || !slices.Equal(versions(keys), []uint32{1, 2, 3}) {
				t.Fatalf("fetch: %v, %v; want versions 1 to 3", versions(keys), err)
			}
			if err := c.change(ctx, env, alice, uri, keys[0].CallID); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.FetchVersion(ctx, uri, c.ask); !errors.Is(err, c.want) {
				t.Fatalf("FetchVersion(%d): %v, want %v", c.ask, err, c.want)
			}
			env.Close() // the KMS goes away
			got, err := bob.Fetch(ctx, uri)
			if !slices.Equal(versions(got), c.cached) || (c.wantErr == nil) != (err == nil) || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
				t.Fatalf("with the KMS unreachable, after it answered version %d %v: served %v, %v; want %v, %v",
					c.ask, c.want, versions(got), err, c.cached, c.wantErr)
			}
		})
	}
}

// A fetch the KMS answered before it revoked a version, but that lands
// after the client learnt of the revocation, neither hands the version on
// nor puts it back in the cache.
func TestRevokedVersionNotCachedByEarlierFetch(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
	ctx := ctxT(t)
	alice, answered, gate := clientHoldingFirst(t, env, "alice", func(r *http.Request) bool {
		return r.Method == http.MethodGet && !r.URL.Query().Has("version")
	})
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	early := fetchAsync(ctx, alice, uri)
	<-answered // the KMS delivered versions 1 and 2; the response is on its way
	id := callIDOf(t, uri)
	if err := env.Server.SetKeyState(ctx, id, 2, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.FetchVersion(ctx, uri, 2); !errors.Is(err, kms.ErrRevoked) {
		t.Fatalf("FetchVersion(2): %v, want ErrRevoked", err)
	}
	close(gate)
	r := <-early
	if r.err != nil || !slices.Equal(versions(r.keys), []uint32{1}) {
		t.Fatalf("the fetch answered before the revocation, landing after it: %v, %v; want only version 1", versions(r.keys), r.err)
	}
	env.Close()
	if got, err := alice.Fetch(ctx, uri); err != nil || !slices.Equal(versions(got), []uint32{1}) {
		t.Fatalf("with the KMS unreachable: %v, %v; want only version 1", versions(got), err)
	}
}

// clientHoldingFirst makes a client for identity whose first request
// that match selects is answered by the KMS but held on its way back:
// answered closes once the KMS has answered it, and the answer goes on
// to the client when the test closes gate.
func clientHoldingFirst(t *testing.T, env *devkms.Env, identity string, match func(*http.Request) bool) (c *kms.Client, answered, gate chan struct{}) {
	answered, gate = make(chan struct{}), make(chan struct{})
	var once sync.Once
	c, _ = clientWith(t, env, identity, func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if match(r) {
				held := false
				once.Do(func() { held = true })
				if held {
					close(answered)
					<-gate
				}
			}
			return resp, err
		})
	})
	return c, answered, gate
}

// fetchResult is what a Fetch returned.
type fetchResult struct {
	keys []media.CallKey
	err  error
}

// fetchAsync runs c.Fetch(ctx, uri) on its own goroutine and hands its
// result to the channel it returns.
func fetchAsync(ctx context.Context, c *kms.Client, uri string) <-chan fetchResult {
	ch := make(chan fetchResult, 1)
	go func() {
		keys, err := c.Fetch(ctx, uri)
		ch <- fetchResult{keys, err}
	}()
	return ch
}

// ownClient makes and registers a client for identity that env does not
// close with it, for a test that stops the KMS.
func ownClient(t *testing.T, env *devkms.Env, identity string) *kms.Client {
	c, _ := clientWith(t, env, identity, func(rt http.RoundTripper) http.RoundTripper { return rt })
	return c
}

// callIDOf is the call id of a key URI (its last path segment).
func callIDOf(t *testing.T, uri string) string {
	t.Helper()
	i := len(uri) - 1
	for i >= 0 && uri[i] != '/' {
		i--
	}
	if i < 0 {
		t.Fatalf("key URI %q", uri)
	}
	return uri[i+1:]
}

// A version the KMS reports expired (here superseded, past its grace) is
// dropped from the cache too, though the expiry it came with is later.
func TestExpiredVersionNotServedFromCache(t *testing.T) {
	srv := hammering
	srv.ActivationDelay, srv.Grace = -1, -time.Millisecond // superseded versions retire at once
	env := startEnv(t, devkms.Options{Server: srv}, "alice", "bob")
	alice, bob := mustClient(t, env, "alice"), ownClient(t, env, "bob")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := bob.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("fetch: %v, %v", versions(keys), err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.FetchVersion(ctx, uri, 1); !errors.Is(err, kms.ErrExpired) {
		t.Fatalf("FetchVersion(1) after it was superseded: %v, want ErrExpired", err)
	}
	env.Close()
	if got, err := bob.Fetch(ctx, uri); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("with the KMS unreachable, after it answered version 1 expired: served %v, %v; want ErrUnavailable", versions(got), err)
	}
}

// zeroed reports whether b is a key that has been wiped.
func zeroed(b []byte) bool {
	return len(b) > 0 && !slices.ContainsFunc(b, func(x byte) bool { return x != 0 })
}

// opened collects the client's own slices of the keys it opens.
type opened struct {
	mu   sync.Mutex
	keys [][]byte
}

func (o *opened) hook(keys []media.CallKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, k := range keys {
		o.keys = append(o.keys, k.Key)
	}
}

// take returns the slices collected so far and starts afresh.
func (o *opened) take() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.keys
	o.keys = nil
	return out
}

// The keys a shared fetch holds are wiped once every waiter has its copy,
// and when every waiter gave up before the fetch landed; the waiters'
// copies are theirs and stay.
func TestSharedFetchKeysWiped(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
	ctx := ctxT(t)
	var mu sync.Mutex
	var gate chan struct{}
	hold := func(g chan struct{}) {
		mu.Lock()
		gate = g
		mu.Unlock()
	}
	alice, _ := clientWith(t, env, "alice", func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			g := gate
			mu.Unlock()
			if r.Method == http.MethodGet && g != nil {
				<-g
			}
			return rt.RoundTrip(r)
		})
	})
	var o opened
	alice.OnOpened(o.hook)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}

	g := make(chan struct{})
	hold(g)
	const n = 8
	results := make([][]media.CallKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], _ = alice.Fetch(ctx, uri) })
	}
	for alice.FlightJoined(uri) < n {
		runtime.Gosched()
	}
	hold(nil)
	close(g)
	wg.Wait()
	for i, r := range results {
		if len(r) != 2 || zeroed(r[0].Key) || zeroed(r[1].Key) {
			t.Fatalf("waiter %d got %v (wiped: %t)", i, versions(r), len(r) == 2 && zeroed(r[0].Key))
		}
	}
	shared := o.take()
	if len(shared) != 2 {
		t.Fatalf("the shared fetch opened %d keys, want 2", len(shared))
	}
	for i, k := range shared {
		if !zeroed(k) {
			t.Errorf("key %d of the shared fetch not wiped after its %d waiters took their copies", i, n)
		}
	}

	// Every waiter gives up; the fetch lands later.
	g = make(chan struct{})
	hold(g)
	cctx, cancel := context.WithCancel(ctx)
	for range 3 {
		wg.Go(func() {
			if _, err := alice.Fetch(cctx, uri); !errors.Is(err, context.Canceled) {
				t.Errorf("abandoned fetch: %v", err)
			}
		})
	}
	for alice.FlightJoined(uri) < 3 {
		runtime.Gosched()
	}
	cancel()
	wg.Wait()
	hold(nil)
	close(g)
	for alice.FlightJoined(uri) != 0 { // until the fetch has landed
		runtime.Gosched()
	}
	abandoned := o.take()
	if len(abandoned) != 2 {
		t.Fatalf("the abandoned fetch opened %d keys, want 2", len(abandoned))
	}
	for i, k := range abandoned {
		if !zeroed(k) {
			t.Errorf("key %d of a shared fetch every waiter gave up on not wiped", i)
		}
	}
}

// A FetchVersion answered with other versions than the one asked for
// refuses the delivery and wipes every key it opened.
func TestFetchVersionRefusedKeysWiped(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
	ctx := ctxT(t)
	// A KMS that answers ?version=N with the versions above N-1.
	alice, _ := clientWith(t, env, "alice", func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if q := r.URL.Query(); q.Has("version") {
				n, _ := strconv.Atoi(q.Get("version"))
				r = r.Clone(r.Context())
				r.URL.RawQuery = url.Values{"after": {strconv.Itoa(n - 1)}}.Encode()
			}
			return rt.RoundTrip(r)
		})
	})
	var o opened
	alice.OnOpened(o.hook)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if k, err := alice.FetchVersion(ctx, uri, 1); !errors.Is(err, kms.ErrBinding) || k.Key != nil {
		t.Fatalf("FetchVersion(1) answered with versions 1 and 2: %v, %v; want ErrBinding", k, err)
	}
	got := o.take()
	if len(got) != 2 {
		t.Fatalf("opened %d keys, want 2", len(got))
	}
	for i, k := range got {
		if !zeroed(k) {
			t.Errorf("key %d of the refused FetchVersion delivery not wiped", i)
		}
	}
}

// Cached keys that have expired (by the client's clock) are wiped the next
// time the client touches its cache, whichever call it touches: a fetch
// landing, or keys served while the KMS is unreachable.
func TestExpiredCachedKeysWiped(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
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
	create := func(life time.Duration) string {
		uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}, KeyLifetime: life})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Fetch(ctx, uri); err != nil {
			t.Fatal(err)
		}
		return uri
	}
	long, short1, short2 := create(time.Hour), create(time.Minute), create(2*time.Minute)
	b1, b2 := alice.CachedKeyBytes(short1)[1], alice.CachedKeyBytes(short2)[1]
	if len(b1) == 0 || zeroed(b1) || len(b2) == 0 || zeroed(b2) {
		t.Fatal("the short calls' keys are not cached")
	}

	clock.Advance(time.Minute + time.Second) // past short1's expiry
	if _, err := alice.Fetch(ctx, long); err != nil {
		t.Fatal(err)
	}
	if !zeroed(b1) || len(alice.CachedKeyBytes(short1)) != 0 {
		t.Fatal("short1's key, expired, still in the cache after a fetch landed")
	}
	if zeroed(b2) {
		t.Fatal("short2's key, not expired, was wiped")
	}

	clock.Advance(time.Minute) // past short2's expiry
	env.Close()
	if keys, err := alice.Fetch(ctx, long); err != nil || len(keys) != 1 {
		t.Fatalf("the long call's cached key with the KMS unreachable: %v, %v", versions(keys), err)
	}
	if !zeroed(b2) || len(alice.CachedKeyBytes(short2)) != 0 {
		t.Fatal("short2's key, expired, still in the cache after keys were served from it")
	}
	if b := alice.CachedKeyBytes(long)[1]; zeroed(b) {
		t.Fatal("the long call's key was wiped")
	}
}

// TestReleaseDropsLateAnswer: an answer to a fetch sent before Release
// (or EndCall) that lands after it is handed to its caller but does not
// put the released call's keys back in the cache: they would stay in
// memory, and be served, after the application said it was done with
// the call.
func TestReleaseDropsLateAnswer(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
	ctx := ctxT(t)
	alice, answered, gate := clientHoldingFirst(t, env, "alice", func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/keys")
	})
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	early := fetchAsync(ctx, alice, uri)
	<-answered // the KMS answered; the response is on its way
	alice.Release(uri)
	close(gate)
	if r := <-early; r.err != nil || len(r.keys) == 0 {
		t.Fatalf("the fetch in flight: %v, %v; want its keys", versions(r.keys), r.err)
	}
	if n := alice.CachedCalls(); n != 0 {
		t.Errorf("after Release, a late answer left %d calls cached (%d versions)", n, len(alice.CachedKeyBytes(uri)))
	}
	// A fetch after the Release caches again.
	if _, err := alice.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if n := alice.CachedCalls(); n != 1 {
		t.Errorf("a fetch after Release: %d calls cached, want 1", n)
	}
}
