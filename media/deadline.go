package media

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadline turns a read deadline into a channel that closes when it
// passes, for goroutines that wait on a queue rather than in conn.Read. Its
// timer exists only while a deadline is set and fires once, at it.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    atomic.Pointer[chan struct{}] // nil: no deadline
}

// set arms the deadline at t; the zero t clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if t.IsZero() {
		d.ch.Store(nil)
		return
	}
	ch := make(chan struct{})
	if wait := time.Until(t); wait <= 0 {
		close(ch)
	} else {
		d.timer = time.AfterFunc(wait, func() { close(ch) })
	}
	d.ch.Store(&ch)
}

// wait returns a channel that is closed once the deadline has passed, or
// nil (which blocks forever) when no deadline is set.
func (d *deadline) wait() <-chan struct{} {
	if p := d.ch.Load(); p != nil {
		return *p
	}
	return nil
}

// stop releases the timer.
func (d *deadline) stop() { d.set(time.Time{}) }
