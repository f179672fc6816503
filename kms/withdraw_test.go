package kms_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

// WatchChanges reports what the KMS withdraws from a call as soon as the
// operator acts, in the long-poll that brings new versions: a version
// compromised, the minimum raised, and, when the newest version is
// compromised, the version that replaces it before the withdrawal. The
// client's long-poll is an hour long, so only a wake-up can pass.
func TestWatchChangesReportsWithdrawals(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	alice := mustClient(t, env, "alice")
	cfg, err := env.ClientConfig("bob")
	if err != nil {
		t.Fatal(err)
	}
	cfg.WatchWait = time.Hour
	bob, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	ctx := ctxT(t)
	if err := bob.Register(ctx); err != nil {
		t.Fatal(err)
	}
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	id := callIDOf(t, uri)
	for range 2 {
		if _, err := alice.Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan media.KeyChange, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- bob.WatchChanges(wctx, uri, func(c media.KeyChange) { got <- c }) }()
	plain := make(chan media.CallKey, 16)
	go func() { done <- bob.Watch(wctx, uri, func(k media.CallKey) { plain <- k }) }()
	next := func(what string) media.KeyChange {
		t.Helper()
		select {
		case c := <-got:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("no change reported within 10 s: want %s", what)
		}
		return media.KeyChange{}
	}
	for want := uint32(1); want <= 3; want++ {
		if c := next("the versions"); c.Key.Version != want || c.Revoked != nil {
			t.Fatalf("change %+v, want version %d", c, want)
		}
	}

	if err := env.Server.SetKeyState(ctx, id, 2, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	if c := next("version 2 revoked"); c.Key.Version != 0 || !slices.Equal(c.Revoked, []uint32{2}) || c.MinVersion != 1 {
		t.Fatalf("change %+v, want version 2 revoked", c)
	}
	if err := env.Server.SetMinVersion(ctx, id, 3); err != nil {
		t.Fatal(err)
	}
	if c := next("minimum 3"); c.Key.Version != 0 || len(c.Revoked) != 0 || c.MinVersion != 3 {
		t.Fatalf("change %+v, want minimum 3 and nothing listed below it", c)
	}
	// Version 3 is the newest: compromising it makes version 4, which
	// comes first.
	if err := env.Server.SetKeyState(ctx, id, 3, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	if c := next("version 4"); c.Key.Version != 4 {
		t.Fatalf("change %+v, want version 4, the replacement, first", c)
	}
	if c := next("version 3 revoked"); !slices.Equal(c.Revoked, []uint32{3}) || c.MinVersion != 3 {
		t.Fatalf("change %+v, want version 3 revoked", c)
	}

	// Watch reports the versions only.
	for want := uint32(1); want <= 4; want++ {
		select {
		case k := <-plain:
			if k.Version != want {
				t.Fatalf("Watch reported version %d, want %d", k.Version, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Watch did not report version %d", want)
		}
	}
	select {
	case c := <-got:
		t.Fatalf("change %+v reported with nothing changed", c)
	case k := <-plain:
		t.Fatalf("Watch reported %+v with nothing changed", k)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	for range 2 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("watch returned %v, want context.Canceled", err)
		}
	}
}
