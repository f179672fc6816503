package kms_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

func TestMain(m *testing.M) {
	if runCrashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// hammering is a server configuration for tests that rotate as fast as
// they can on purpose: limits far above what they do.
var hammering = kmsserver.Config{RotationsPerMinute: 1 << 20, RequestRate: 1e6, RequestBurst: 1 << 20, MinRotateEvery: 10 * time.Millisecond}

// startEnv runs a development KMS in a temporary directory for the test.
func startEnv(t testing.TB, opts devkms.Options, identities ...string) *devkms.Env {
	t.Helper()
	env, err := devkms.StartWith(context.Background(), t.TempDir(), opts, identities...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

func mustClient(t testing.TB, env *devkms.Env, identity string) *kms.Client {
	t.Helper()
	c, err := env.Client(identity)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func versions(keys []media.CallKey) []uint32 {
	var out []uint32
	for _, k := range keys {
		out = append(out, k.Version)
	}
	return out
}

func TestCreateFetchRotate(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	ctx := ctxT(t)

	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	ka, err := alice.Fetch(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := bob.Keys(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != 1 || len(kb) != 1 || ka[0].Version != 1 || string(ka[0].Key) != string(kb[0].Key) {
		t.Fatalf("alice %v bob %v: want the same single version 1", ka, kb)
	}
	if len(ka[0].Key) != media.CallKeySize || ka[0].URI != uri || ka[0].CallID == "" {
		t.Fatalf("bad key %v", ka[0])
	}
	if ka[0].ExpiresAt.Sub(ka[0].ActivateAt) != kmsserver.DefaultKeyLifetime {
		t.Fatalf("lifetime %v, want %v", ka[0].ExpiresAt.Sub(ka[0].ActivateAt), kmsserver.DefaultKeyLifetime)
	}

	before := time.Now().Truncate(time.Millisecond)
	v, err := bob.Rotate(ctx, uri)
	after := time.Now()
	if err != nil || v != 2 {
		t.Fatalf("rotate: %d, %v", v, err)
	}
	kb, err = bob.Fetch(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(versions(kb), []uint32{1, 2}) {
		t.Fatalf("versions after rotation %v, want [1 2]", versions(kb))
	}
	if string(kb[0].Key) == string(kb[1].Key) {
		t.Fatal("rotation kept the key")
	}
	// The new version activates after the activation delay; the old one
	// stays usable for the grace period after that.
	if act := kb[1].ActivateAt; act.Before(before.Add(kmsserver.DefaultActivationDelay)) || act.After(after.Add(kmsserver.DefaultActivationDelay)) {
		t.Fatalf("v2 activates at %v, want the rotation time (%v to %v) + %v", act, before, after, kmsserver.DefaultActivationDelay)
	}
	if !kb[0].ExpiresAt.Equal(kb[1].ActivateAt.Add(kmsserver.DefaultGrace)) {
		t.Fatalf("v1 expires %v, want v2 activation + grace %v", kb[0].ExpiresAt, kb[1].ActivateAt.Add(kmsserver.DefaultGrace))
	}
	if s := fmt.Sprintf("%v %+v %#v", kb[0], kb[0], kb); containsKey(s, kb[0].Key) {
		t.Fatalf("printed key material: %s", s)
	}
}

// containsKey reports whether s shows key raw, in hex or as a byte list.
func containsKey(s string, key []byte) bool {
	for _, enc := range []string{string(key), fmt.Sprintf("%x", key), fmt.Sprintf("%v", key)} {
		if strings.Contains(s, enc) {
			return true
		}
	}
	return false
}

func TestWatchSeesRotations(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan media.CallKey, 16)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bob.Watch(wctx, uri, func(k media.CallKey) { got <- k }) }()
	next := func() media.CallKey {
		select {
		case k := <-got:
			return k
		case <-ctx.Done():
			t.Fatal("watch delivered nothing")
		}
		return media.CallKey{}
	}
	if k := next(); k.Version != 1 {
		t.Fatalf("first watched version %d", k.Version)
	}
	for want := uint32(2); want <= 4; want++ {
		if _, err := alice.Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
		if k := next(); k.Version != want {
			t.Fatalf("watched version %d, want %d", k.Version, want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch returned %v, want context.Canceled", err)
	}
}

// Scheduled rotation on a fake clock shared by server and client: each
// time the clock reaches the next rotation time the scheduler makes the
// next version, activating the activation delay after that time.
func TestScheduledRotation(t *testing.T) {
	const every = time.Hour
	env, clock := startFakeClockEnv(t, devkms.Options{Server: hammering}, "alice")
	alice := fakeClockClient(t, env, clock, "alice")
	ctx := ctxT(t)
	start := clock.Now()
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}, RotateEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan media.CallKey, 64)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go alice.Watch(wctx, uri, func(k media.CallKey) { got <- k })
	for want := uint32(1); want <= 4; want++ {
		if want > 1 {
			// A millisecond before the rotation time nothing rotates:
			// once the scheduler has parked again, the KMS still has
			// the versions it had.
			clock.Advance(every - time.Millisecond)
			if err := clock.WaitArmed(ctx, 1); err != nil {
				t.Fatalf("the scheduler did not park: %v", err)
			}
			keys, err := alice.Fetch(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			if n := keys[len(keys)-1].Version; n != want-1 {
				t.Fatalf("newest version %d a millisecond before rotation %d", n, want)
			}
			clock.Advance(time.Millisecond)
		}
		select {
		case k := <-got:
			if k.Version != want {
				t.Fatalf("version %d, want %d", k.Version, want)
			}
			if want > 1 {
				rotatedAt := start.Add(time.Duration(want-1) * every)
				if !k.ActivateAt.Equal(rotatedAt.Add(kmsserver.DefaultActivationDelay).Truncate(time.Millisecond)) {
					t.Fatalf("version %d activates at %v, want its rotation time %v + %v", want, k.ActivateAt, rotatedAt, kmsserver.DefaultActivationDelay)
				}
			}
		case <-ctx.Done():
			t.Fatalf("scheduled rotation to version %d did not happen", want)
		}
	}
	cancel()
}

// startFakeClockEnv runs a development KMS whose time (decisions and
// scheduler) is a fake clock starting now, on a whole millisecond (the
// wire's resolution).
func startFakeClockEnv(t testing.TB, opts devkms.Options, identities ...string) (*devkms.Env, *fakeclock.Clock) {
	t.Helper()
	clock := fakeclock.New(time.Now().Truncate(time.Millisecond))
	opts.Server.Clock, opts.Server.WakeAt = clock.Now, clock.WakeAt
	return startEnv(t, opts, identities...), clock
}

// fakeClockClient is a registered client of env on clock.
func fakeClockClient(t testing.TB, env *devkms.Env, clock *fakeclock.Clock, identity string) *kms.Client {
	t.Helper()
	cfg, err := env.ClientConfig(identity)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clock = clock.Now
	c, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
