package ice

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// xnetReader reads with x/net's ReadBatch: the Endpoint's reader where
// mmsgReader is not built (off Linux, where ReadBatch reads one datagram
// per call), and mmsgReader's comparison in BenchmarkBatchRead. Unlike
// mmsgReader it allocates each datagram's source address.
type xnetReader struct {
	c    batchConn
	msgs []ipv4.Message
}

func newXnetReader(c batchConn, n, size int) *xnetReader {
	r := &xnetReader{c: c, msgs: make([]ipv4.Message, n)}
	bufs := make([]byte, n*size)
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{bufs[i*size : (i+1)*size]}
	}
	return r
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
	return b, unmap(ua.AddrPort()), truncated, true
}

// msgTrunc is MSG_TRUNC as on Linux (and x/net's Message.Flags carries
// the system's own), set when the datagram did not fit its buffer.
const msgTrunc = 0x20
