// Package fakeclock is a clock for tests that only moves when the test
// advances it. It plugs into the clock seams of kmsserver.Config (Clock,
// WakeAt) and kms.Config (Clock), so that tests over a real loopback KMS
// run scheduled rotation, expiry and retention without waiting on wall
// time. testing/synctest cannot hold those tests: they do real network
// I/O.
//
// # Concurrency
//
// All methods are safe for concurrent use.
package fakeclock

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake clock. Its zero value is not usable; use New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters map[*waiter]struct{}
	armed   chan struct{} // closed and replaced when a wake-up is armed
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

// New returns a clock that reads start until it is advanced.
func New(start time.Time) *Clock {
	return &Clock{now: start, waiters: map[*waiter]struct{}{}, armed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// WakeAt returns a channel that receives the clock's time once the clock
// has reached at (at once if it has already), and a function that
// releases the wake-up early. Its signature is kmsserver.Config.WakeAt's.
// The wake-up time is absolute, so a caller that read the clock before an
// Advance and arms after it still wakes.
func (c *Clock) WakeAt(at time.Time) (<-chan time.Time, func()) {
	w := &waiter{at: at, c: make(chan time.Time, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.now.Before(at) {
		w.c <- c.now
		return w.c, func() {}
	}
	c.waiters[w] = struct{}{}
	close(c.armed)
	c.armed = make(chan struct{})
	return w.c, func() {
		c.mu.Lock()
		delete(c.waiters, w)
		c.mu.Unlock()
	}
}

// Advance moves the clock forward by d (d must not be negative) and fires
// every wake-up that is now due.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("fakeclock: negative Advance")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for w := range c.waiters {
		if !c.now.Before(w.at) {
			w.c <- c.now
			delete(c.waiters, w)
		}
	}
}

// Armed returns how many wake-ups are waiting for a later time.
func (c *Clock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// WaitArmed blocks until at least n wake-ups are armed for a later time,
// or ctx is done. After an Advance has fired sleepers' wake-ups, it
// returns once n sleepers (such as the schedulers of n servers) have done
// their work and armed their next ones: everything due by then has been
// done.
func (c *Clock) WaitArmed(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		armedNow, armed := len(c.waiters), c.armed
		c.mu.Unlock()
		if armedNow >= n {
			return nil
		}
		select {
		case <-armed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
