package media

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadline turns a read deadline into a channel, for goroutines that wait
// on a queue rather than in conn.Read. The channel closes when the deadline
// passes and also when it is changed, so that a waiter that started before
// the change re-evaluates: after waking it asks exceeded. Its timer exists
// only while a deadline is set and fires once, at it.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	at    atomic.Int64 // unix ns; 0: no deadline
	ch    atomic.Pointer[chan struct{}]
}

// set arms the deadline at t; the zero t clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if old := d.ch.Load(); old != nil {
		select {
		case <-*old:
		default:
			close(*old)
		}
	}
	ch := make(chan struct{})
	d.ch.Store(&ch)
	if t.IsZero() {
		d.at.Store(0)
		return
	}
	d.at.Store(t.UnixNano())
	if wait := time.Until(t); wait <= 0 {
		close(ch)
	} else {
		d.timer = time.AfterFunc(wait, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if p := d.ch.Load(); p == &ch {
				close(ch)
			}
		})
	}
}

// wait returns a channel that is closed when the deadline passes or
// changes.
func (d *deadline) wait() <-chan struct{} {
	if p := d.ch.Load(); p != nil {
		return *p
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.ch.Load(); p != nil {
		return *p
	}
	ch := make(chan struct{})
	d.ch.Store(&ch)
	return ch
}

// exceeded reports whether a deadline is set and has passed.
func (d *deadline) exceeded() bool {
	at := d.at.Load()
	return at != 0 && time.Now().UnixNano() >= at
}

// stop releases the timer and wakes any waiter.
func (d *deadline) stop() { d.set(time.Time{}) }
