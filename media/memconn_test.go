package media

import (
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
)

// memConn is one end of an in-memory packet link: each Write is one
// datagram for the peer. It can reorder (hold a packet back behind the next
// few), drop or capture what is written, and inject datagrams, which
// loopback UDP cannot do on demand.
type memConn struct {
	in        chan []byte
	peer      *memConn
	closed    chan struct{}
	closeOnce sync.Once
	rdl       deadline

	mu      sync.Mutex
	rng     *rand.Rand
	reorder float64 // probability that a packet is held back
	held    []heldPacket
	tap     func(p []byte) bool // sees every written packet; false drops it
}

type heldPacket struct {
	p     []byte
	after int // delivered after this many further packets
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

func memPair() (*memConn, *memConn) { return memPairCap(8192) }

// memPairCap is memPair with room for n datagrams in flight each way.
func memPairCap(n int) (*memConn, *memConn) {
	a := &memConn{in: make(chan []byte, n), closed: make(chan struct{}), rng: rand.New(rand.NewPCG(1, 2))}
	b := &memConn{in: make(chan []byte, n), closed: make(chan struct{}), rng: rand.New(rand.NewPCG(3, 4))}
	a.peer, b.peer = b, a
	return a, b
}

func (c *memConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return readQueued(p, c.in, c.closed, &c.rdl)
}

// readQueued is a test conn's Read: the next datagram from in, or an
// error once closed is closed or the read deadline rdl has passed.
func readQueued(p []byte, in <-chan []byte, closed <-chan struct{}, rdl *deadline) (int, error) {
	for {
		select {
		case d := <-in:
			return copy(p, d), nil
		case <-closed:
			return 0, net.ErrClosed
		case <-rdl.wait():
			if rdl.exceeded() {
				return 0, os.ErrDeadlineExceeded
			}
		}
	}
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	d := append([]byte(nil), p...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tap != nil && !c.tap(d) {
		return len(p), nil
	}
	if c.reorder > 0 && c.rng.Float64() < c.reorder {
		c.held = append(c.held, heldPacket{p: d, after: 1 + c.rng.IntN(3)})
		return len(p), nil
	}
	c.peer.deliver(d)
	kept := c.held[:0]
	for _, h := range c.held {
		if h.after--; h.after == 0 {
			c.peer.deliver(h.p)
		} else {
			kept = append(kept, h)
		}
	}
	c.held = kept
	return len(p), nil
}

// inject delivers d to c as if the peer had sent it.
func (c *memConn) inject(d []byte) { c.deliver(append([]byte(nil), d...)) }

func (c *memConn) deliver(d []byte) {
	select {
	case c.in <- d:
	case <-c.closed:
	}
}

// flush delivers the packets held back for reordering.
func (c *memConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.held {
		c.peer.deliver(h.p)
	}
	c.held = nil
}

func (c *memConn) setTap(f func([]byte) bool) {
	c.mu.Lock()
	c.tap = f
	c.mu.Unlock()
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.rdl.stop()
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr                { return memAddr("local") }
func (c *memConn) RemoteAddr() net.Addr               { return memAddr("remote") }
func (c *memConn) SetDeadline(t time.Time) error      { return c.SetReadDeadline(t) }
func (c *memConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }
