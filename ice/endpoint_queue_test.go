package ice_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The net.Conn of a call on an Endpoint: a read deadline ends a blocked
// Read with a timeout, also when it is moved while the Read waits; a
// datagram longer than the buffer is cut and reported; Close ends a
// blocked Read with net.ErrClosed.
func TestEndpointConnDeadlines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	a, b := newSide(t, onEndpoint(ep)), newSide(t, onEndpoint(ep))
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	buf := make([]byte, 1500)

	a.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := a.conn.Read(buf); !isTimeout(err) {
		t.Fatalf("Read past its deadline: %v, want a timeout", err)
	}
	// Far away, then moved near while the Read waits.
	a.conn.SetReadDeadline(time.Now().Add(time.Hour))
	errc := make(chan error, 1)
	go func() { _, err := a.conn.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	a.conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Fatalf("Read after the deadline moved: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Read blocked past a deadline moved nearer")
	}
	a.conn.SetReadDeadline(time.Time{})

	if _, err := b.conn.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := a.conn.Read(buf[:10]); n != 10 || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("short Read: %d, %v; want 10 and io.ErrShortBuffer", n, err)
	}
	a.conn.SetReadDeadline(time.Time{})

	go func() { _, err := a.conn.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	a.conn.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
	a.t.Close()
	b.t.Close()
	ep.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
