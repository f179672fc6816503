package securecall_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

// The tests below run the KMS scheduler, the kms.Clients and both calls'
// key schedules on one fake clock, so that a rotation, an activation or an
// expiry happens when the test advances the clock, never after a wait on
// wall time. Media packets, TLS, long-polls and backoff stay on real time.

// clockKMSOptions are devkms options whose server decides and sleeps by
// clk.
func clockKMSOptions(clk *fakeclock.Clock, opts devkms.Options) devkms.Options {
	opts.Server.Clock, opts.Server.WakeAt = clk.Now, clk.WakeAt
	return opts
}

// clockKMS starts a development KMS in dir on clk, closed when the test
// ends.
func clockKMS(t *testing.T, clk *fakeclock.Clock, dir string, ids ...string) *devkms.Env {
	t.Helper()
	env, err := devkms.StartWith(context.Background(), dir, clockKMSOptions(clk, devkms.Options{}), ids...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

// clockClient is a registered kms.Client on clk, closed when the test
// ends; a zero backoff is the client's default.
func clockClient(t *testing.T, env *devkms.Env, clk *fakeclock.Clock, id string, b kms.Backoff) *kms.Client {
	t.Helper()
	cfg, err := env.ClientConfig(id)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clock, cfg.Backoff = clk.Now, b
	c, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// watchedSource is a kms.Client as a call's KeySource that records each
// version its watch has handed to the call's media session (after the
// session installed it), so that a test advances the clock to a version's
// activation only once both ends can receive under it.
type watchedSource struct {
	*kms.Client
	mu      sync.Mutex
	seen    map[uint32]bool
	changed chan struct{}
}

func watched(c *kms.Client) *watchedSource {
	return &watchedSource{Client: c, seen: map[uint32]bool{}, changed: make(chan struct{})}
}

// Watch is the client's Watch, noting each version after fn returns.
func (w *watchedSource) Watch(ctx context.Context, uri string, fn func(media.CallKey)) error {
	return w.Client.Watch(ctx, uri, func(k media.CallKey) {
		v := k.Version
		fn(k)
		w.note(v)
	})
}

// WatchChanges is the client's WatchChanges, which a session prefers to
// Watch, noting each version after fn returns.
func (w *watchedSource) WatchChanges(ctx context.Context, uri string, fn func(media.KeyChange)) error {
	return w.Client.WatchChanges(ctx, uri, func(c media.KeyChange) {
		v := c.Key.Version
		fn(c)
		if v != 0 {
			w.note(v)
		}
	})
}

func (w *watchedSource) note(v uint32) {
	w.mu.Lock()
	w.seen[v] = true
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// waitSeen waits, at most d of real time, until the watch handed over
// version v.
func (w *watchedSource) waitSeen(t *testing.T, v uint32, d time.Duration) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		w.mu.Lock()
		ok, ch := w.seen[v], w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("the watch did not deliver version %d within %s", v, d)
		}
	}
}

// waitParked waits until the KMS scheduler has done what is due on the
// fake clock and armed its next wake-up.
func waitParked(t *testing.T, clk *fakeclock.Clock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := clk.WaitArmed(ctx, 1); err != nil {
		t.Fatalf("the KMS scheduler did not park again: %v", err)
	}
}

// received is how many packets s has received.
func (s *stream) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// waitFlow waits until each stream has received n more packets.
func waitFlow(t *testing.T, n int, ss ...*stream) {
	t.Helper()
	want := make([]int, len(ss))
	for i, s := range ss {
		want[i] = s.received() + n
	}
	waitFor(t, 10*time.Second, func() bool {
		for i, s := range ss {
			if s.received() < want[i] {
				return false
			}
		}
		return true
	})
}

// settleStreams waits, at most 3 s, until each stream has received every packet
// it sent (the last ones are in flight when it stops).
func settleStreams(ss ...*stream) {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		done := true
		for _, s := range ss {
			if lost, _ := s.lost(); lost != 0 {
				done = false
			}
		}
		if done {
			return
		}
	}
}
