package kms_test

import (
	"errors"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

// Ending a call through the client: a participant's watch ends with
// ErrEnded, fetches and rotations fail with it, and both clients forget
// the call's keys.
func TestSecurityEndCallClient(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan media.CallKey, 8)
	watched := make(chan error, 1)
	go func() { watched <- bob.Watch(ctx, uri, func(k media.CallKey) { seen <- k }) }()
	<-seen
	if _, err := alice.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := bob.EndCall(ctx, uri); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("a participant ended the creator's call: %v", err)
	}
	if err := alice.EndCall(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := <-watched; !errors.Is(err, kms.ErrEnded) {
		t.Fatalf("watch after the end: %v, want ErrEnded", err)
	}
	if _, err := bob.Fetch(ctx, uri); !errors.Is(err, kms.ErrEnded) {
		t.Fatalf("fetch after the end: %v", err)
	}
	if _, err := alice.Rotate(ctx, uri); !errors.Is(err, kms.ErrEnded) {
		t.Fatalf("rotate after the end: %v", err)
	}
	if n, m := alice.CachedCalls(), bob.CachedCalls(); n != 0 || m != 0 {
		t.Fatalf("clients still cache %d and %d calls after the end", n, m)
	}
	if err := alice.EndCall(ctx, uri); err != nil {
		t.Fatalf("ending an ended call: %v", err)
	}
}

// A long-lived client forgets calls: on Release, and beyond its bound,
// the least recently fetched first.
func TestSecurityClientCacheBounded(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "gw")
	cfg, err := env.ClientConfig("gw")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxCachedCalls = 8
	gw, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	ctx := ctxT(t)
	if err := gw.Register(ctx); err != nil {
		t.Fatal(err)
	}
	var uris []string
	for i := range 30 {
		uri, err := gw.CreateCall(ctx, kms.CallOptions{Participants: []string{"gw"}})
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, uri)
		if _, err := gw.Fetch(ctx, uri); err != nil {
			t.Fatal(err)
		}
		if n := gw.CachedCalls(); n > 8 {
			t.Fatalf("after %d calls the client caches %d, bound 8", i+1, n)
		}
	}
	gw.Release(uris[len(uris)-1])
	if n := gw.CachedCalls(); n != 7 {
		t.Fatalf("after Release: %d cached, want 7", n)
	}
	// Evicted calls are fetched again, not lost.
	if keys, err := gw.Fetch(ctx, uris[0]); err != nil || len(keys) != 1 {
		t.Fatalf("fetch of an evicted call: %v, %v", keys, err)
	}
}
