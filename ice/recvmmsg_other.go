//go:build !linux

package ice

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// xnetReader reads with x/net's ReadBatch where recvmmsg is not at hand
// (there it reads one datagram per call); unlike mmsgReader it allocates
// each datagram's source address.
type xnetReader struct {
	c    batchConn
	msgs []ipv4.Message
}

func newBatchReader(_ *net.UDPConn, c batchConn, n, size int) (batchReader, error) {
	r := &xnetReader{c: c, msgs: make([]ipv4.Message, n)}
	bufs := make([]byte, n*size)
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{bufs[i*size : (i+1)*size]}
	}
	return r, nil
}

func (r *xnetReader) read() (int, error) { return r.c.ReadBatch(r.msgs, 0) }

func (r *xnetReader) datagram(i int) (b []byte, src netip.AddrPort, truncated, ok bool) {
	m := &r.msgs[i]
	b = m.Buffers[0][:m.N]
	truncated = m.Flags&msgTrunc != 0
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return b, src, truncated, false
	}
	src = ua.AddrPort()
	return b, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), truncated, true
}

// msgTrunc is MSG_TRUNC as on Linux, set in a message's flags when the
// datagram did not fit its buffer.
const msgTrunc = 0x20
