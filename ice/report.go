package ice

import (
	"sync"

	pice "github.com/pion/ice/v3"
)

// This file holds the Transport's report queue: what it tells the
// application (OnPathChange, OnConnectivity, OnFailed) passes through one
// queue per Transport, so that the callbacks run in the order the reports
// were made and never concurrently, and each report carries the restart
// generation it belongs to. A Restart starts a new generation; a report of
// an older one (pion's notifier or the consent goroutine may deliver one
// late, after the restart or after its new pair) is dropped.

// reportKind says what a report tells.
type reportKind uint8

const (
	reportState  reportKind = iota // a connection state of pion's agent or of the consent session
	reportPath                     // a newly selected path
	reportDown                     // Restart dropped the path
	reportFailed                   // the Transport gave up (a restart that found no path)
)

// report is one thing to tell the application.
type report struct {
	gen   uint64 // the restart generation it belongs to
	kind  reportKind
	state pice.ConnectionState // reportState
	path  Path                 // reportPath
	err   error                // reportFailed
}

// reportQueue delivers reports one at a time, in the order they were
// added. It owns no goroutine while idle: whoever adds a report while
// none is being delivered delivers it (and those added meanwhile) on its
// own goroutine, except addAsync, which starts a goroutine for that.
type reportQueue struct {
	deliver func(report)

	mu      sync.Mutex
	idle    sync.Cond // signalled when running ends (L: &mu)
	q       []report
	running bool
	closed  bool
	async   sync.WaitGroup // addAsync's goroutines
}

func (r *reportQueue) init(deliver func(report)) {
	r.deliver = deliver
	r.idle.L = &r.mu
}

// add queues rep and, when no report is being delivered, delivers the
// queue on the calling goroutine.
func (r *reportQueue) add(rep report) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.q = append(r.q, rep)
	if r.running {
		r.mu.Unlock()
		return
	}
	r.running = true
	r.drainLocked()
	r.mu.Unlock()
}

// addAsync queues rep and, when no report is being delivered, delivers
// the queue on a goroutine of its own: for a caller that may hold locks
// the application's callbacks take (Restart).
func (r *reportQueue) addAsync(rep report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.q = append(r.q, rep)
	if r.running {
		return
	}
	r.running = true
	r.async.Add(1)
	go func() {
		defer r.async.Done()
		r.mu.Lock()
		r.drainLocked()
		r.mu.Unlock()
	}()
}

// drainLocked delivers the queue, without r.mu while a report runs.
func (r *reportQueue) drainLocked() {
	for len(r.q) > 0 && !r.closed {
		rep := r.q[0]
		r.q[0] = report{}
		r.q = r.q[1:]
		r.mu.Unlock()
		r.deliver(rep)
		r.mu.Lock()
	}
	r.q = nil
	r.running = false
	r.idle.Broadcast()
}

// close drops what is queued, waits for a report being delivered, and
// makes the queue deliver nothing more. It must not run inside a report.
func (r *reportQueue) close() {
	r.mu.Lock()
	r.closed = true
	for r.running {
		r.idle.Wait()
	}
	r.q = nil
	r.mu.Unlock()
	r.async.Wait()
}
