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

func TestScheduledRotation(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}, RotateEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint32, 64)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go alice.Watch(wctx, uri, func(k media.CallKey) { got <- k.Version })
	for want := uint32(1); want <= 4; want++ {
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("version %d, want %d", v, want)
			}
		case <-ctx.Done():
			t.Fatal("scheduled rotation did not happen")
		}
	}
	cancel()
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
