package securecall_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/sdp"
)

// stripKeyMgmt removes every a=key-mgmt line, as an attacker on the
// signaling path would to push a call out of the customer's keys.
func stripKeyMgmt(desc string) string {
	var out []string
	for _, line := range strings.SplitAfter(desc, "\n") {
		if strings.HasPrefix(line, "a=key-mgmt") {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "")
}

// syncBuffer is a log sink that tests read while calls write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A Call with a KeySource and a zero Keying never ends up in dtls keying: an
// offer, an answer or a restart offer stripped of its a=key-mgmt line fails
// with ErrDowngrade, changes nothing, and the call still takes the genuine
// description afterwards.
func TestSecurityKeyingDowngrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	newCall := func(cfg securecall.Config) *securecall.Call {
		t.Helper()
		c, err := securecall.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := newCall(securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri})
	b := newCall(securecall.Config{ICE: loopbackICE(), KeySource: kmsClient(t, env, "bob"), Logger: logger})

	wantDowngrade := func(what string, err error, offered sdp.Keying) {
		t.Helper()
		if !errors.Is(err, securecall.ErrDowngrade) {
			t.Fatalf("%s: %v, want ErrDowngrade", what, err)
		}
		var de *securecall.DowngradeError
		if !errors.As(err, &de) || de.Offered != offered || len(de.Required) == 0 {
			t.Fatalf("%s: %v, want a DowngradeError naming %s", what, err, offered)
		}
		for _, k := range de.Required {
			if k == sdp.KeyingDTLS {
				t.Fatalf("%s: required keying %v includes dtls", what, de.Required)
			}
		}
	}

	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(offer, "a=key-mgmt") {
		t.Fatal("hybrid offer without a=key-mgmt")
	}
	t.Run("offer stripped", func(t *testing.T) {
		_, err := b.Answer(ctx, stripKeyMgmt(offer))
		wantDowngrade("Answer to a stripped offer", err, sdp.KeyingDTLS)
		if b.State() != securecall.StateNew || b.Keying() != sdp.KeyingHybrid {
			t.Fatalf("refused offer left the call %s in %s keying", b.State(), b.Keying())
		}
		if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "downgrade") {
			t.Fatalf("refusal not logged at Warn: %q", got)
		}
		if strings.Contains(logs.String(), "ice-pwd") {
			t.Fatal("the refusal log carries the description")
		}
	})

	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("Answer to the genuine offer after a refused one: %v", err)
	}
	t.Run("answer stripped", func(t *testing.T) {
		err := a.SetAnswer(ctx, stripKeyMgmt(answer))
		wantDowngrade("SetAnswer with a stripped answer", err, sdp.KeyingDTLS)
		if a.State() != securecall.StateNew {
			t.Fatalf("refused answer moved the call to %s", a.State())
		}
	})
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatalf("SetAnswer with the genuine answer after a refused one: %v", err)
	}
	for _, c := range []*securecall.Call{a, b} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if c.Keying() != sdp.KeyingHybrid {
			t.Fatalf("keying %s, want hybrid", c.Keying())
		}
	}
	sendRecv(t, a, b, 5)

	t.Run("restart stripped", func(t *testing.T) {
		restart, err := a.Restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Answer(ctx, stripKeyMgmt(restart))
		wantDowngrade("Answer to a stripped restart offer", err, sdp.KeyingDTLS)
		answer, err := b.Answer(ctx, restart)
		if err != nil {
			t.Fatalf("Answer to the genuine restart after a refused one: %v", err)
		}
		err = a.SetAnswer(ctx, stripKeyMgmt(answer))
		wantDowngrade("SetAnswer with a stripped restart answer", err, sdp.KeyingDTLS)
		if err := a.SetAnswer(ctx, answer); err != nil {
			t.Fatalf("SetAnswer with the genuine restart answer: %v", err)
		}
		waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
		sendRecv(t, a, b, 5)
		sendRecv(t, b, a, 5)
		if a.Keying() != sdp.KeyingHybrid || b.Keying() != sdp.KeyingHybrid {
			t.Fatalf("after restart: %s/%s keying", a.Keying(), b.Keying())
		}
	})
}

// A zero-Keying Call with a KeySource accepts kms keying too: "kms or
// hybrid, never less".
func TestKeyingZeroAcceptsKMS(t *testing.T) {
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pair(t,
		securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingKMS, KeySource: alice, KeyURI: uri},
		securecall.Config{ICE: loopbackICE(), KeySource: kmsClient(t, env, "bob")})
	if b.Keying() != sdp.KeyingKMS {
		t.Fatalf("answerer keying %s, want kms", b.Keying())
	}
	sendRecv(t, a, b, 5)
}

// An application that asks for dtls explicitly gets dtls, KeySource or not.
func TestKeyingExplicitDTLS(t *testing.T) {
	env := kmsEnv(t, "bob")
	a, b := pair(t, securecall.Config{ICE: loopbackICE()},
		securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS, KeySource: kmsClient(t, env, "bob")})
	if b.Keying() != sdp.KeyingDTLS {
		t.Fatalf("keying %s, want dtls", b.Keying())
	}
	sendRecv(t, a, b, 5)
}
