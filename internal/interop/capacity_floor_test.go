package interop

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

// The batched floor: no stack, with the I/O of the securecall-push row.
// The ends sit on a grid of shared loopback sockets as the Endpoint grid
// does; one goroutine per socket reads it with recvmmsg and counts each
// frame on that goroutine, routed by source address; each tick's frames
// of one socket leave in sendmmsg calls of up to 32. A 12-byte RTP header
// in the clear, no ICE, no SRTP, no RTCP. Its row is the floor under
// push delivery with batched writes in this harness.

const floorBatch = 32

type floorSocket struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	addr netip.AddrPort
	done chan struct{}

	routeMu sync.Mutex
	routes  map[netip.AddrPort]*floorBatchEnd // remote address -> end

	sendMu sync.Mutex
	out    []ipv4.Message
	bufs   [][12 + frameBytes]byte
	n      int
	calls  atomic.Uint64 // recvmmsg and sendmmsg calls
	moved  atomic.Uint64 // datagrams they moved
}

func newFloorSocket() (*floorSocket, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	s := &floorSocket{
		conn: c, pc: ipv4.NewPacketConn(c), addr: c.LocalAddr().(*net.UDPAddr).AddrPort(),
		done: make(chan struct{}), routes: map[netip.AddrPort]*floorBatchEnd{},
		out: make([]ipv4.Message, floorBatch), bufs: make([][12 + frameBytes]byte, floorBatch),
	}
	go s.read()
	return s, nil
}

func (s *floorSocket) read() {
	defer close(s.done)
	ms := make([]ipv4.Message, floorBatch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := s.pc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.calls.Add(1)
		s.moved.Add(uint64(n))
		for _, m := range ms[:n] {
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N < 12 {
				continue
			}
			s.routeMu.Lock()
			e := s.routes[ua.AddrPort()]
			s.routeMu.Unlock()
			if e == nil {
				continue
			}
			if r := e.recv.Load(); r != nil {
				r.frame(m.Buffers[0][12:m.N])
			}
		}
	}
}

// flushLocked sends the queued frames in one sendmmsg (more if the kernel
// takes fewer); sendMu is held.
func (s *floorSocket) flushLocked() {
	for off := 0; off < s.n; {
		k, err := s.pc.WriteBatch(s.out[off:s.n], 0)
		s.calls.Add(1)
		if err != nil {
			k = max(k, 1) // the datagram at off is lost
		}
		s.moved.Add(uint64(k))
		off += k
	}
	s.n = 0
}

func (s *floorSocket) batch(fn func()) {
	fn()
	s.sendMu.Lock()
	s.flushLocked()
	s.sendMu.Unlock()
}

func (s *floorSocket) close() {
	s.conn.Close()
	<-s.done
}

// floorBatchEnd is one call end on a floorSocket.
type floorBatchEnd struct {
	sock *floorSocket
	peer *net.UDPAddr
	seq  uint16
	recv atomic.Pointer[capacityReceiver]
}

func (e *floorBatchEnd) Offer(context.Context) (string, error)          { return "", nil }
func (e *floorBatchEnd) Answer(context.Context, string) (string, error) { return "", nil }
func (e *floorBatchEnd) SetAnswer(context.Context, string) error        { return nil }
func (e *floorBatchEnd) Connect(context.Context) error                  { return nil }
func (e *floorBatchEnd) Codec() (string, uint8)                         { return "pcmu", 0 }

func (e *floorBatchEnd) pushTo(r *capacityReceiver) { e.recv.Store(r) }

func (e *floorBatchEnd) WriteAudio(payload []byte) error {
	s := e.sock
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.n == floorBatch {
		s.flushLocked()
	}
	b := &s.bufs[s.n]
	b[0], b[1] = 0x80, 0
	b[2], b[3] = byte(e.seq>>8), byte(e.seq)
	e.seq++
	n := 12 + copy(b[12:], payload)
	m := &s.out[s.n]
	m.Buffers = [][]byte{b[:n]}
	m.Addr = e.peer
	s.n++
	return nil
}

func (e *floorBatchEnd) ReadAudio(ctx context.Context, _ []byte) (uint8, int, error) {
	<-ctx.Done() // frames are pushed to the receiver
	return 0, 0, ctx.Err()
}

func (e *floorBatchEnd) Close() error { return nil }

// floorGrid is the endpointGrid's layout with floorSockets.
type floorGrid struct{ socks []*floorSocket }

func (g *floorGrid) io() (calls, datagrams uint64) {
	for _, s := range g.socks {
		calls += s.calls.Load()
		datagrams += s.moved.Load()
	}
	return calls, datagrams
}

func (g *floorGrid) pairs(n int) (func(int) (endpoint, endpoint, error), func(), error) {
	socks, k, cleanup, err := openGrid(n, newFloorSocket, (*floorSocket).close)
	if err != nil {
		return nil, nil, err
	}
	g.socks = socks
	return func(i int) (endpoint, endpoint, error) {
		x, y := socks[gridSlot(2*i, k)], socks[gridSlot(2*i+1, k)]
		o := &floorBatchEnd{sock: x, peer: net.UDPAddrFromAddrPort(y.addr)}
		a := &floorBatchEnd{sock: y, peer: net.UDPAddrFromAddrPort(x.addr)}
		x.routeMu.Lock()
		x.routes[y.addr] = o
		x.routeMu.Unlock()
		y.routeMu.Lock()
		y.routes[x.addr] = a
		y.routeMu.Unlock()
		return o, a, nil
	}, cleanup, nil
}

func (g *floorGrid) sendGroups(ends []endpoint) []sendGroup {
	batches := make([]func(func()), len(g.socks))
	for i, s := range g.socks {
		batches[i] = s.batch
	}
	return gridGroups(len(ends), batches)
}
