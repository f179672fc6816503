package ice

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pushRecorder is a session's side of PushDatagrams: it records what is
// pushed and notices a push that overlaps another.
type pushRecorder struct {
	mu      sync.Mutex
	got     []string
	running atomic.Int32
	overlap atomic.Bool
	ends    atomic.Int32
	endErr  atomic.Pointer[error]
	during  func(b []byte) // runs inside the push, if set
}

func (r *pushRecorder) deliver(b []byte) {
	if r.running.Add(1) != 1 {
		r.overlap.Store(true)
	}
	r.mu.Lock()
	r.got = append(r.got, string(b))
	r.mu.Unlock()
	if r.during != nil {
		r.during(b)
	}
	r.running.Add(-1)
}

func (r *pushRecorder) end(err error) {
	r.ends.Add(1)
	r.endErr.Store(&err)
}

func (r *pushRecorder) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func pushConn() *endpointConn { return newEndpointConn(&endpointUse{}) }

// Datagrams queued before PushDatagrams are pushed first, then every
// later one, in order; a push that writes to a call answering in the
// process (so that a datagram comes back to the same conn while its push
// runs) neither deadlocks nor overlaps: the datagram waits and is pushed
// next.
func TestEndpointConnPushesInOrder(t *testing.T) {
	c := pushConn()
	for i := range 3 {
		if !c.deliver(fmt.Appendf(nil, "q%d", i)) {
			t.Fatal("queueing before PushDatagrams failed")
		}
	}
	r := &pushRecorder{}
	var once sync.Once
	r.during = func(b []byte) {
		if string(b) == "p0" {
			once.Do(func() {
				if !c.deliver([]byte("echo")) {
					t.Error("a datagram arriving during a push was dropped")
				}
			})
		}
	}
	c.PushDatagrams(r.deliver, r.end)
	for i := range 3 {
		if !c.deliver(fmt.Appendf(nil, "p%d", i)) {
			t.Fatal("push refused")
		}
	}
	want := []string{"q0", "q1", "q2", "p0", "echo", "p1", "p2"}
	if got := r.received(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pushed %q, want %q", got, want)
	}
	if r.overlap.Load() {
		t.Error("two pushes ran at once")
	}
	if len(c.q) != 0 {
		t.Errorf("%d datagrams left in the queue", len(c.q))
	}
}

// While a push runs, datagrams from other goroutines wait in a bounded
// list and are pushed by the running goroutine when it returns; beyond
// the bound they are dropped (deliver reports it, and the Endpoint counts
// a queue drop), as a socket drops what its reader does not take.
func TestEndpointConnPushWaitsBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := pushConn()
	r := &pushRecorder{}
	entered, release := make(chan struct{}), make(chan struct{})
	r.during = func(b []byte) {
		if string(b) == "first" {
			close(entered)
			<-release
		}
	}
	c.PushDatagrams(r.deliver, r.end)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.deliver([]byte("first"))
	}()
	<-entered
	accepted := 0
	for i := range endpointMediaQueue + 10 {
		if c.deliver(fmt.Appendf(nil, "w%d", i)) {
			accepted++
		}
	}
	if accepted != endpointMediaQueue {
		t.Errorf("%d datagrams waited behind a running push, want %d (the bound)", accepted, endpointMediaQueue)
	}
	if got := r.received(); len(got) != 1 {
		t.Fatalf("pushed %q while the first push ran", got)
	}
	close(release)
	<-done
	got := r.received()
	if len(got) != 1+endpointMediaQueue || got[1] != "w0" || got[len(got)-1] != fmt.Sprintf("w%d", endpointMediaQueue-1) {
		t.Fatalf("pushed %d datagrams (%q ... %q), want the first and the %d that waited, in order", len(got), got[0], got[len(got)-1], endpointMediaQueue)
	}
	if r.overlap.Load() {
		t.Error("two pushes ran at once")
	}
}

// Delivery ends once, with the reason, when the conn is closed or fails;
// nothing is pushed after, and PushDatagrams on a closed conn ends at once.
func TestEndpointConnPushEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(c *endpointConn)
		want error
	}{
		{"close", func(c *endpointConn) { c.Close() }, net.ErrClosed},
		{"endpoint closed", func(c *endpointConn) { c.fail(ErrEndpointClosed) }, ErrEndpointClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := pushConn()
			r := &pushRecorder{}
			c.PushDatagrams(r.deliver, r.end)
			c.deliver([]byte("a"))
			tc.stop(c)
			tc.stop(c)
			if c.deliver([]byte("b")) {
				t.Error("a datagram was taken after delivery ended")
			}
			if got := r.received(); len(got) != 1 {
				t.Errorf("pushed %q, want only the datagram before the end", got)
			}
			if n := r.ends.Load(); n != 1 {
				t.Fatalf("end called %d times, want once", n)
			}
			if err := *r.endErr.Load(); !errors.Is(err, tc.want) {
				t.Errorf("end(%v), want an error wrapping %v", err, tc.want)
			}
		})
	}
	t.Run("already closed", func(t *testing.T) {
		c := pushConn()
		c.Close()
		r := &pushRecorder{}
		c.PushDatagrams(r.deliver, r.end)
		if n := r.ends.Load(); n != 1 {
			t.Errorf("PushDatagrams on a closed conn: end called %d times, want once at once", n)
		}
	})
}

// Inside Batch, writes queue and leave in one sendmmsg when Batch returns,
// or 32 at a time as the queue fills; a nested Batch sends at its own
// return; outside Batch a lone write is sent at once.
func TestEndpointBatchHoldsSends(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, g := gateEndpoint(t)
	for range 64 {
		g.release <- struct{}{} // let every batch through
	}
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	write := func(s string) {
		t.Helper()
		if err := e.write([]byte(s), dst, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.Batch(func() {
		write("a0")
		write("a1")
		write("a2")
		if n := len(g.entered); n != 0 {
			t.Errorf("%d sendmmsg calls inside Batch before the queue was full", n)
		}
	})
	if n := waitEntered(t, g); n != 3 {
		t.Fatalf("Batch sent a batch of %d, want the 3 datagrams in one sendmmsg", n)
	}
	// A Batch inside another sends what is queued when it returns (a
	// Batch cannot tell a nested call from another goroutine's), and the
	// outer one the rest.
	e.Batch(func() {
		write("n0")
		e.Batch(func() { write("n1") })
		write("n2")
	})
	if n := waitEntered(t, g); n != 2 {
		t.Fatalf("the inner Batch sent a batch of %d, want 2", n)
	}
	if n := waitEntered(t, g); n != 1 {
		t.Fatalf("the outer Batch sent a batch of %d, want 1", n)
	}
	e.Batch(func() {
		for i := range endpointBatch + 5 {
			write(fmt.Sprintf("b%d", i))
		}
		if n := waitEntered(t, g); n != endpointBatch {
			t.Errorf("a full queue inside Batch left in a batch of %d, want %d", n, endpointBatch)
		}
	})
	if n := waitEntered(t, g); n != 5 {
		t.Fatalf("the rest left in a batch of %d, want 5", n)
	}
	write("c0")
	if n := waitEntered(t, g); n != 1 {
		t.Fatalf("a write outside Batch left in a batch of %d, want 1", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var closedErr error
	e.Batch(func() { closedErr = e.write([]byte("d0"), dst, nil) })
	if !errors.Is(closedErr, ErrEndpointClosed) {
		t.Errorf("a write in Batch on a closed Endpoint: %v, want ErrEndpointClosed", closedErr)
	}
	if st := e.Stats(); st.Sent != 3+3+endpointBatch+5+1 || st.WriteBatches != 6 {
		t.Errorf("stats %+v: want %d datagrams in 6 sendmmsg calls", st, 3+3+endpointBatch+5+1)
	}
}

// A conn closed while a push runs ends its pushes: what is still queued is
// not pushed after end.
func TestEndpointConnNoPushAfterEnd(t *testing.T) {
	c := pushConn()
	c.deliver([]byte("q0"))
	c.deliver([]byte("q1"))
	var mu sync.Mutex
	var ev []string
	c.PushDatagrams(func(b []byte) {
		mu.Lock()
		ev = append(ev, "push "+string(b))
		mu.Unlock()
		if string(b) == "q0" {
			c.Close()
		}
	}, func(error) { mu.Lock(); ev = append(ev, "end"); mu.Unlock() })
	mu.Lock()
	defer mu.Unlock()
	if len(ev) != 2 || ev[0] != "push q0" || ev[1] != "end" {
		t.Fatalf("events %q, want [push q0 end]", ev)
	}
}

// PushDatagrams on a conn closed already pushes nothing it queued before
// the Close, and ends at once.
func TestEndpointConnPushOnClosedConnDropsQueued(t *testing.T) {
	c := pushConn()
	c.deliver([]byte("stale"))
	c.Close()
	r := &pushRecorder{}
	c.PushDatagrams(r.deliver, r.end)
	if got := r.received(); len(got) != 0 {
		t.Fatalf("PushDatagrams on a closed conn pushed %q", got)
	}
	if n := r.ends.Load(); n != 1 {
		t.Fatalf("end called %d times, want 1", n)
	}
}

// A datagram the reader delivers while PushDatagrams starts goes after
// those queued before it.
func TestEndpointConnPushKeepsQueuedFirst(t *testing.T) {
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; i < 20_000 && time.Now().Before(deadline); i++ {
		c := pushConn()
		c.deliver([]byte("d0"))
		r := &pushRecorder{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for !c.pushing.Load() {
				runtime.Gosched()
			}
			c.deliver([]byte("d1"))
		}()
		c.PushDatagrams(r.deliver, r.end)
		<-done
		if got := r.received(); len(got) != 2 || got[0] != "d0" || got[1] != "d1" {
			t.Fatalf("iteration %d: pushed %q, want [d0 d1]", i, got)
		}
	}
}

// A datagram queued in the process as push began, whose nudge to the
// hand-over goroutine is lost (its queue full), is pushed with the call's
// next datagram: pushes after the queue was found empty skip it, except
// after such a datagram.
func TestEndpointConnLostNudgeQueuedPushedNext(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	e.mu.Lock()
	e.handOverQ = make(chan handOverItem) // no room, no goroutine: every nudge is lost
	e.handOverDone = make(chan struct{})
	close(e.handOverDone)
	e.mu.Unlock()
	u, _ := e.attach(nil, nil, nil)
	c := u.media
	r := &pushRecorder{}
	c.PushDatagrams(r.deliver, r.end)
	c.deliver([]byte("a")) // the queue is found empty
	// deliverInProcess, having seen no push, queues b; then it sees one.
	if !c.enqueue([]byte("b")) {
		t.Fatal("queue full")
	}
	c.queuedAsPushBegan()
	c.deliver([]byte("c"))
	if got := r.received(); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("pushed %q, want [a b c]", got)
	}
}

// goid is the calling goroutine's id, for tests that check which
// goroutine runs a callback.
func goid() uint64 {
	var buf [64]byte
	s := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	n, _ := strconv.ParseUint(string(s[:bytes.IndexByte(s, ' ')]), 10, 64)
	return n
}

// A datagram written in the process to a call that starts pushing
// meanwhile is pushed on the hand-over goroutine, never on the writer's
// (which may hold its own session's locks), and never in the writer's
// buffer (media unprotects in place).
func TestEndpointInProcessPushNeverOnWriter(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	from, _ := e.attach(nil, nil, nil)
	from.setPeer(Peer{Ufrag: "b"})
	var onWriter, mutated atomic.Int32
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; i < 20_000 && time.Now().Before(deadline) && onWriter.Load() == 0 && mutated.Load() == 0; i++ {
		to, _ := e.attach(nil, nil, nil)
		e.mu.Lock()
		e.byLocal["b"] = to
		e.mu.Unlock()
		var writer atomic.Uint64
		start, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			writer.Store(goid())
			close(start)
			for j := range 8 {
				b := []byte{0x80, 0, 0, byte(j)}
				_ = e.write(b, e.addr, from)
				if b[0] != 0x80 {
					mutated.Add(1)
				}
			}
		}()
		<-start
		to.media.PushDatagrams(func(b []byte) {
			if goid() == writer.Load() {
				onWriter.Add(1)
			}
			b[0] = 'X' // as media unprotects in place
		}, func(error) {})
		<-done
		e.detach(to)
	}
	if onWriter.Load() > 0 || mutated.Load() > 0 {
		t.Fatalf("pushed on the in-process writer %d times; the writer's buffer changed %d times", onWriter.Load(), mutated.Load())
	}
}

// A call whose Transport closes while the reader routes a response to it
// leaves no route behind: the next call from the same address connects.
// The interleaving TestEndpointClaimAfterDetach races for, in order, so
// that it fails without the race detector too: the reader has routed a
// nomination's response to u, Transport.Close detaches u, then the reader
// claims the response's source for u.
func TestEndpointClaimAfterDetachInOrder(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	u, _ := e.attach(nil, nil, nil)
	e.detach(u)
	if err := e.claim(u, src); !errors.Is(err, net.ErrClosed) {
		t.Errorf("claim for a detached use: %v, want net.ErrClosed", err)
	}
	e.mu.Lock()
	stale := e.byTuple[src]
	e.mu.Unlock()
	if stale != nil {
		t.Fatalf("a detached call owns %v", src)
	}
}

func TestEndpointClaimAfterDetach(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	const peerPwd = "the peer's password, 22+ chars"
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; i < 20_000 && time.Now().Before(deadline); i++ {
		u, _ := e.attach(nil, nil, nil)
		u.GetConn(fmt.Sprintf("uf%d", i), nil)
		u.setPeer(Peer{Ufrag: "peer", Pwd: peerPwd})
		id := [12]byte{byte(i), byte(i >> 8), byte(i >> 16)}
		e.mu.Lock()
		e.addPendingLocked(id, pendingTx{to: u.currentSTUN(), use: true})
		e.mu.Unlock()
		resp := bindingSuccess(t, id, src, peerPwd)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); e.dispatchSTUN(resp, src) }() // the reader
		go func() { defer wg.Done(); e.detach(u) }()               // Transport.Close
		wg.Wait()
		e.mu.Lock()
		stale := e.byTuple[src]
		e.mu.Unlock()
		if stale != nil {
			v, _ := e.attach(nil, nil, nil)
			t.Fatalf("iteration %d: a detached call still owns %v; a new call's claim: %v", i, src, e.claim(v, src))
		}
	}
}

// Media handed over in the process and still queued when the Endpoint
// closes is dropped and counted: every datagram written is pushed or
// counted.
func TestEndpointHandOverDropsCountedAtClose(t *testing.T) {
	e := newLoopbackEndpoint(t)
	from, _ := e.attach(nil, nil, nil)
	from.setPeer(Peer{Ufrag: "b"})
	to, _ := e.attach(nil, nil, nil)
	e.mu.Lock()
	e.byLocal["b"] = to
	e.mu.Unlock()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var pushed atomic.Int32
	to.media.PushDatagrams(func([]byte) {
		pushed.Add(1)
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}, func(error) {})
	const n = 100
	for j := range n {
		if err := e.write([]byte{0x80, 0, 0, byte(j)}, e.addr, from); err != nil {
			t.Fatal(err)
		}
	}
	<-entered // the hand-over goroutine is in the first push
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	<-e.stop // Close is waiting for the hand-over goroutine
	close(release)
	<-closed
	if st := e.Stats(); uint64(pushed.Load())+st.QueueDrops != n {
		t.Fatalf("%d written in the process, %d pushed, %d counted as dropped", n, pushed.Load(), st.QueueDrops)
	}
}
