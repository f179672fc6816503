package kms_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

// An operator revokes a device (a lost phone whose certificate is still
// valid): every request of it is refused with ErrDeviceRevoked, through
// the real client, and every call it is in rotates, so the keys it holds
// stop protecting new media. Restoring it lets it back in.
func TestDeviceRevoked(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.StartWith(context.Background(), dir, devkms.Options{}, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { env.Close() }()
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	ctx := ctxT(t)
	withBob, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	bobs, err := bob.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}}) // bob creates, is no participant
	if err != nil {
		t.Fatal(err)
	}
	without, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Fetch(ctx, withBob); err != nil {
		t.Fatal(err)
	}
	if err := env.Server.RevokeDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := env.Server.RevokeDevice(ctx, "bob"); err != nil {
		t.Fatalf("revoking a revoked device again: %v, want nil (a no-op)", err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, kms.ErrDeviceRevoked) {
			t.Fatalf("%s by a revoked device: %v, want ErrDeviceRevoked", what, err)
		}
	}
	_, err = bob.Fetch(ctx, withBob)
	refused("fetch", err)
	refused("register", bob.Register(ctx))
	_, err = bob.CreateCall(ctx, kms.CallOptions{Participants: []string{"bob"}})
	refused("create", err)
	_, err = bob.Rotate(ctx, withBob)
	refused("rotate", err)
	refused("end", bob.EndCall(ctx, bobs))
	refused("remove", bob.RemoveParticipant(ctx, bobs, "alice"))
	_, err = bob.FetchVersion(ctx, withBob, 1)
	refused("fetch version", err)

	// Its calls (as participant or creator) rotated; the others did not.
	for _, c := range []struct {
		uri  string
		want uint32
	}{{withBob, 2}, {bobs, 2}, {without, 1}} {
		keys, err := alice.Fetch(ctx, c.uri)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys[len(keys)-1].Version; got != c.want {
			t.Fatalf("call %s: newest version %d after revoking bob, want %d", c.uri, got, c.want)
		}
	}
	entries := auditEntries(t, env)
	if !hasEntry(entries, "revoke", "operator", "ok", "bob") {
		t.Fatal("the revocation is not audited")
	}
	n := 0
	for _, e := range entries {
		if e.Action == "revoke" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d revoke entries, want 1 (the second revocation is a no-op)", n)
	}

	// It survives a restart.
	env.Close()
	old := env.URL
	env, err = devkms.StartWith(context.Background(), dir, devkms.Options{}, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	withBob = env.URL + withBob[len(old):] // the restarted KMS listens elsewhere
	cfg, err := env.ClientConfig("bob")
	if err != nil {
		t.Fatal(err)
	}
	bob2, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	refused("register after a restart", bob2.Register(ctx))
	_, err = bob2.Fetch(ctx, withBob)
	refused("fetch after a restart", err)

	if err := env.Server.RestoreDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := bob2.Register(ctx); err != nil {
		t.Fatalf("register after restore: %v", err)
	}
	keys, err := bob2.Fetch(ctx, withBob)
	if err != nil || keys[len(keys)-1].Version != 2 {
		t.Fatalf("fetch after restore: %v, %v", keys, err)
	}
	if !hasEntry(auditEntries(t, env), "restore", "operator", "ok", "") {
		t.Fatal("the restoration is not audited")
	}
}

// A running watch of a device ends promptly when the device is revoked,
// with ErrDeviceRevoked (permanent: not retried).
func TestDeviceRevokedWatchEnds(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: hammering}, "alice", "bob")
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan media.CallKey, 16)
	done := make(chan error, 1)
	go func() { done <- bob.Watch(ctx, uri, func(k media.CallKey) { got <- k }) }()
	select {
	case <-got:
	case err := <-done:
		t.Fatalf("watch ended before revocation: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // the watch is parked in its long-poll
	start := time.Now()
	if err := env.Server.RevokeDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, kms.ErrDeviceRevoked) {
			t.Fatalf("watch of a revoked device ended with %v, want ErrDeviceRevoked", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the watch ended %v after the revocation", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch of a revoked device goes on")
	}
	for {
		select {
		case k := <-got:
			if k.Version > 1 {
				t.Fatalf("the revoked device's watch delivered version %d (the revocation's rotation)", k.Version)
			}
			continue
		default:
		}
		break
	}
}

// device_revoked is permanent: the client does not retry it, nor send it
// to another replica.
func TestDeviceRevokedNoFailover(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	refusing, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"device_revoked"}`))
	})
	c := failoverClient(t, env, "alice", refusing.URL, env.URL)
	uri = refusing.URL + uri[len(env.URL):]
	if _, err := c.Fetch(ctx, uri); !errors.Is(err, kms.ErrDeviceRevoked) {
		t.Fatalf("fetch: %v, want ErrDeviceRevoked", err)
	}
	if err := c.Watch(ctx, uri, func(media.CallKey) {}); !errors.Is(err, kms.ErrDeviceRevoked) {
		t.Fatalf("watch: %v, want ErrDeviceRevoked", err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("the refusing replica saw %d requests, want 2 (no retry)", n)
	}
	if keys, err := alice.Fetch(ctx, env.URL+uri[len(refusing.URL):]); err != nil || len(keys) != 1 {
		t.Fatalf("the other replica: %v, %v", keys, err)
	}
	var se error = &kms.ServerError{Status: http.StatusForbidden, Code: "device_revoked"}
	if !errors.Is(se, kms.ErrDeviceRevoked) || !errors.Is(se, kms.ErrForbidden) || errors.Is(se, kms.ErrUnavailable) {
		t.Fatal("device_revoked must map to ErrDeviceRevoked (and ErrForbidden, as a 403)")
	}
}
