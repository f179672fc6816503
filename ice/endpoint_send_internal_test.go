package ice

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"
)

// gatedBatch stands in for the Endpoint's socket on the send side: each
// WriteBatch records its datagrams and then waits for the test to
// release it, as a busy kernel would hold a writer in sendmmsg.
type gatedBatch struct {
	batchConn // nil: only WriteBatch is called
	mu        sync.Mutex
	batches   [][]string // the payloads of each WriteBatch, in order
	fail      bool       // WriteBatch refuses the first datagram

	entered chan int      // the size of each batch, as it enters
	release chan struct{} // one per batch
}

func (g *gatedBatch) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	var got []string
	for _, m := range ms {
		got = append(got, string(m.Buffers[0]))
	}
	g.mu.Lock()
	g.batches = append(g.batches, got)
	fail := g.fail
	g.mu.Unlock()
	g.entered <- len(ms)
	<-g.release
	if fail {
		return 0, errors.New("sendmmsg: no route")
	}
	return len(ms), nil
}

// newLoopbackEndpoint opens an Endpoint on loopback; the caller closes it
// (before its goleak check, which runs ahead of t.Cleanup).
func newLoopbackEndpoint(t *testing.T) *Endpoint {
	t.Helper()
	e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func gateEndpoint(t *testing.T) (*Endpoint, *gatedBatch) {
	t.Helper()
	e := newLoopbackEndpoint(t)
	g := &gatedBatch{entered: make(chan int, 64), release: make(chan struct{}, 64)}
	e.out = g // before any write: only writers read e.out
	return e, g
}

func waitEntered(t *testing.T, g *gatedBatch) int {
	t.Helper()
	select {
	case n := <-g.entered:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no writer called sendmmsg")
		return 0
	}
}

// Writers that find a batch in the kernel add to the next one and return
// at once, and the writer that is sending sends their datagrams in one
// sendmmsg, in the order they were written.
func TestEndpointConcurrentWritersShareSendmmsg(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, g := gateEndpoint(t)
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	first := make(chan error, 1)
	go func() { first <- e.write([]byte("d0"), dst, nil) }()
	if n := waitEntered(t, g); n != 1 {
		t.Fatalf("first batch of %d, want 1", n)
	}
	// "d0"'s writer is in sendmmsg: these return at once, queued.
	for _, s := range []string{"d1", "d2", "d3", "d4", "d5"} {
		if err := e.write([]byte(s), dst, nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-first:
		t.Fatalf("the sending writer returned (%v) with datagrams queued behind it", err)
	default:
	}
	g.release <- struct{}{}
	if n := waitEntered(t, g); n != 5 {
		t.Fatalf("second batch of %d, want the 5 queued datagrams in one sendmmsg", n)
	}
	g.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	got := g.batches
	g.mu.Unlock()
	want := [][]string{{"d0"}, {"d1", "d2", "d3", "d4", "d5"}}
	if len(got) != len(want) || len(got[1]) != 5 {
		t.Fatalf("batches %q, want %q", got, want)
	}
	for i := range want {
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("batches %q, want %q (in order)", got, want)
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.WriteBatches != 2 || st.Sent != 6 {
		t.Errorf("stats %+v: want 2 sendmmsg calls for 6 datagrams", st)
	}
}

// The queue is bounded: a writer that finds a full batch waiting behind
// the one in the kernel waits for room (it is not sent out of order, as
// it was before, and memory does not grow), and Close wakes it with
// ErrEndpointClosed.
func TestEndpointSendQueueBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, g := gateEndpoint(t)
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	first := make(chan error, 1)
	go func() { first <- e.write([]byte("first"), dst, nil) }()
	waitEntered(t, g) // "first" is in sendmmsg
	for range endpointBatch {
		if err := e.write([]byte("queued"), dst, nil); err != nil {
			t.Fatal(err)
		}
	}
	blocked := make(chan error, 1)
	go func() { blocked <- e.write([]byte("one too many"), dst, nil) }()
	select {
	case err := <-blocked:
		t.Fatalf("a write beyond the bound returned %v at once, want it to wait for room", err)
	case n := <-g.entered:
		t.Fatalf("a write beyond the bound was sent (a batch of %d) ahead of the queue", n)
	case <-time.After(50 * time.Millisecond):
	}
	e.sendMu.Lock()
	queued := e.queued
	e.sendMu.Unlock()
	if queued != endpointBatch {
		t.Fatalf("%d queued, want the bound %d", queued, endpointBatch)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrEndpointClosed) || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked write: %v, want ErrEndpointClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a writer waiting")
	}
	g.release <- struct{}{} // let "first" out of sendmmsg: its writer sends the queue
	for done := false; !done; {
		select {
		case <-g.entered:
			g.release <- struct{}{}
		case err := <-first:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := e.write([]byte("late"), dst, nil); !errors.Is(err, ErrEndpointClosed) {
		t.Fatalf("write after Close: %v, want ErrEndpointClosed", err)
	}
}

// A datagram the socket refuses is lost, as UDP loses it, and counted.
func TestEndpointSendErrorsCounted(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, g := gateEndpoint(t)
	g.fail = true
	done := make(chan error, 1)
	go func() { done <- e.write([]byte("x"), netip.MustParseAddrPort("127.0.0.1:9"), nil) }()
	waitEntered(t, g)
	g.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.SendErrors != 1 || st.Sent != 0 {
		t.Fatalf("stats %+v: want 1 send error and nothing sent", st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// A datagram too large for a send slot goes out alone; when the socket
// refuses it, it is counted as a send error (not as sent) and its writer,
// whose own datagram it is, gets the error.
func TestEndpointLargeDatagramRefusedCounted(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Port 0 is no destination: sendto refuses it.
	if err := e.write(make([]byte, endpointBufSize+1), netip.MustParseAddrPort("127.0.0.1:0"), nil); err == nil {
		t.Fatal("a datagram to port 0 was accepted")
	}
	if st := e.Stats(); st.SendErrors != 1 || st.Sent != 0 {
		t.Fatalf("stats %+v: want 1 send error and nothing sent", st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// A Batch's datagrams leave when it returns, even while another goroutine
// is inside a Batch of its own.
func TestEndpointBatchReturnSendsQueued(t *testing.T) {
	e, g := gateEndpoint(t)
	for range 64 {
		g.release <- struct{}{}
	}
	defer e.Close()
	inA, leaveA, aDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { defer close(aDone); e.Batch(func() { close(inA); <-leaveA }) }()
	<-inA
	e.Batch(func() { _ = e.write([]byte("mine"), netip.MustParseAddrPort("127.0.0.1:9"), nil) })
	var sent bool
	select {
	case <-g.entered:
		sent = true
	case <-time.After(2 * time.Second):
	}
	close(leaveA)
	<-aDone
	if !sent {
		t.Fatal("the datagram of a Batch that returned waited for another goroutine's Batch")
	}
}

// A writer that finds the queue idle sends it, but not for as long as
// other goroutines keep writing: after maxFlushRounds it hands the rest
// to a goroutine of the Endpoint's and returns (it may be the Endpoint's
// reader, answering a consent check or forwarding from OnRTP).
func TestEndpointFlushRoundsBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, g := gateEndpoint(t)
	defer e.Close()
	defer func() {
		for range 64 {
			g.release <- struct{}{} // whatever is still in the gate
		}
	}()
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	mine := make(chan error, 1)
	go func() { mine <- e.write([]byte("mine"), dst, nil) }()
	for round := range maxFlushRounds {
		waitEntered(t, g) // the writer's sendmmsg of this round
		for k := range 4 {
			// Other calls' writes: queued behind the batch in the kernel.
			if err := e.write([]byte(fmt.Sprint(round, k)), dst, nil); err != nil {
				t.Fatal(err)
			}
		}
		g.release <- struct{}{}
	}
	// The writer has made its rounds with 4 datagrams still queued.
	select {
	case err := <-mine:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("a one-datagram write was still sending others' datagrams after %d sendmmsg calls", maxFlushRounds)
	}
	// The Endpoint's flusher sends them.
	if n := waitEntered(t, g); n != 4 {
		t.Errorf("the rest left in a batch of %d, want 4", n)
	}
	g.release <- struct{}{}
	e.Close()
	if st := e.Stats(); st.Sent+st.SendErrors != 1+4*maxFlushRounds {
		t.Errorf("stats %+v, want %d sent or counted", st, 1+4*maxFlushRounds)
	}
}

// Close while a Batch holds accepted datagrams counts them as lost.
func TestEndpointCloseDuringBatchCounts(t *testing.T) {
	e := newLoopbackEndpoint(t)
	accepted := 0
	e.Batch(func() {
		for range 3 {
			if e.write([]byte{0x80, 0, 0, 0}, netip.MustParseAddrPort("127.0.0.1:9"), nil) == nil {
				accepted++
			}
		}
		e.Close()
	})
	if st := e.Stats(); accepted != 3 || st.Sent+st.SendErrors != 3 {
		t.Fatalf("%d writes returned nil; Sent=%d SendErrors=%d", accepted, st.Sent, st.SendErrors)
	}
}

// TestEndpointHoldsNoSendQueueWhenIdle checks that an Endpoint gives its
// send queue's memory (32 slots of 2 KiB) back once the queue is sent, in
// and out of Batch, so that idle Endpoints hold none and busy ones share
// what the process's cache holds (BenchmarkEndpointSendQueue).
func TestEndpointHoldsNoSendQueueWhenIdle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	e.out = discardBatch{}
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	idle := func(when string) {
		t.Helper()
		e.sendMu.Lock()
		defer e.sendMu.Unlock()
		if e.sendQ != nil || e.queued != 0 {
			t.Fatalf("%s: the Endpoint holds a send queue (%d queued)", when, e.queued)
		}
	}
	idle("new")
	if err := e.write([]byte("alone"), dst, nil); err != nil {
		t.Fatal(err)
	}
	idle("after a write")
	e.Batch(func() {
		for range 2*endpointBatch + 5 {
			if err := e.write([]byte("batched"), dst, nil); err != nil {
				t.Error(err)
			}
		}
	})
	idle("after a Batch")
	if st := e.Stats(); st.Sent != 2*endpointBatch+6 || st.WriteBatches != 4 {
		t.Fatalf("sent %d in %d batches, want %d in 4", st.Sent, st.WriteBatches, 2*endpointBatch+6)
	}
}
