package ice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/transport/v3/packetio"
)

// receiveBufferSize bounds the packets waiting for Read, like a socket's
// receive buffer; more are dropped.
const receiveBufferSize = 1 << 20

// conn is the net.Conn that Connect returns. pion's connection has no
// deadlines, which SRTP and DTLS need, so one goroutine per connection
// moves packets from it into a buffer that has them.
type conn struct {
	pc   *pice.Conn
	buf  *packetio.Buffer
	done chan struct{} // closed when the pump has stopped

	mu        sync.Mutex
	closed    bool
	writeDead time.Time
	rtcp      *conn // ICE component 2, when RTCP is not multiplexed
	dropDTLS  bool  // set before the pump starts, on component 2
	refusal   error // set by refuse: the policy refused the selected path
}

func newConn(pc *pice.Conn) *conn {
	buf := packetio.NewBuffer()
	buf.SetLimitSize(receiveBufferSize)
	return newConnInto(pc, buf, false)
}

// newConnInto makes a conn whose packets go to buf; component 2 shares
// the buffer of component 1, so that one Read sees both.
func newConnInto(pc *pice.Conn, buf *packetio.Buffer, dropDTLS bool) *conn {
	c := &conn{pc: pc, buf: buf, done: make(chan struct{}), dropDTLS: dropDTLS}
	go c.pump()
	return c
}

func (c *conn) pump() {
	defer close(c.done)
	defer c.buf.Close()
	b := make([]byte, 1500)
	for {
		n, err := c.pc.Read(b)
		if err != nil {
			return
		}
		if c.dropDTLS && n > 0 && b[0] >= 20 && b[0] <= 63 {
			continue // DTLS on ICE component 2: see rtcp.go
		}
		// A full buffer drops the packet, as a socket would.
		_, _ = c.buf.Write(b[:n])
	}
}

// wait blocks until the pump has stopped; the agent must be closed.
func (c *conn) wait() { <-c.done }

// Read reads one packet.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.buf.Read(p)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// As a net.Conn's: a timeout that is os.ErrDeadlineExceeded.
			return n, timeoutError{op: "read"}
		}
		if errors.Is(err, packetio.ErrFull) || errors.Is(err, io.ErrShortBuffer) {
			return n, fmt.Errorf("ice: read: %w", err)
		}
		if r := c.refused(); r != nil {
			return n, fmt.Errorf("ice: read: %w", r)
		}
		return n, fmt.Errorf("ice: read: %w", net.ErrClosed)
	}
	return n, nil
}

// Write sends one packet on the selected path. While no path is selected
// (during an ICE restart) the packet is dropped, as on a network without a
// route, and Write reports success.
func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed, dl, rtcp, refusal := c.closed, c.writeDead, c.rtcp, c.refusal
	c.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("ice: write: %w", net.ErrClosed)
	}
	if refusal != nil {
		return 0, fmt.Errorf("ice: write: %w", refusal)
	}
	if rtcp != nil && isRTCP(p) {
		return rtcp.Write(p)
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, timeoutError{op: "write"}
	}
	n, err := c.pc.Write(p)
	if err != nil {
		return n, fmt.Errorf("ice: write: %w", err)
	}
	if n == 0 && len(p) > 0 {
		return len(p), nil
	}
	return n, nil
}

// Close closes this connection: Read and Write fail with net.ErrClosed.
// The Transport's sockets stay open until Transport.Close.
func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("ice: close conn: %w", net.ErrClosed)
	}
	c.closed = true
	return c.buf.Close()
}

// LocalAddr returns the local address of the selected pair, or nil.
func (c *conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// RemoteAddr returns the remote address of the selected pair, or nil.
func (c *conn) RemoteAddr() net.Addr { return c.pc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes Read return a timeout error at t.
func (c *conn) SetReadDeadline(t time.Time) error { return c.buf.SetReadDeadline(t) }

// SetWriteDeadline makes Write fail once t has passed. A write itself does
// not block on UDP; over TURN/TCP it may until the socket accepts it.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDead = t
	c.mu.Unlock()
	return nil
}

// timeoutError is returned by Read and Write after their deadlines; like
// the standard library's, it is a net.Error whose Timeout is true and it
// unwraps to os.ErrDeadlineExceeded.
type timeoutError struct{ op string }

func (e timeoutError) Error() string { return "ice: " + e.op + ": i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }
