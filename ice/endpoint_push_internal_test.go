package ice

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

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
// or 32 at a time as the queue fills; nested Batch calls send at the
// outermost return; outside Batch a lone write is sent at once.
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
		e.Batch(func() { write("a1") })
		write("a2")
		if n := len(g.entered); n != 0 {
			t.Errorf("%d sendmmsg calls inside Batch before the queue was full", n)
		}
	})
	if n := waitEntered(t, g); n != 3 {
		t.Fatalf("Batch sent a batch of %d, want the 3 datagrams in one sendmmsg", n)
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
	if st := e.Stats(); st.Sent != 3+endpointBatch+5+1 || st.WriteBatches != 4 {
		t.Errorf("stats %+v: want %d datagrams in 4 sendmmsg calls", st, 3+endpointBatch+5+1)
	}
}
