//go:build linux

package ice

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgReader reads datagrams in batches with recvmmsg, as x/net's
// ReadBatch does, but allocates nothing per datagram: ReadBatch returns
// each source address as a new *net.UDPAddr with a new IP slice, two
// allocations per datagram, which at a gateway's tens of thousands of
// datagrams a second keep the collector running
// (TestEndpointZeroAllocsPerDatagram). The source address is parsed from
// the kernel's sockaddr into a netip.AddrPort instead. Sending stays with
// x/net's WriteBatch, which allocates nothing.
//
// The buffers (32 of 2 KiB) come from a pool that every reader shares,
// taken for a recvmmsg and given back when the socket has nothing more to
// read, before the reader waits: a waiting Endpoint holds none, and the
// kernel copies each datagram into buffers that the last reader on this
// core used, still in its cache, rather than into this Endpoint's own,
// cold since its last datagram.
//
// One goroutine reads (the Endpoint's reader): read and datagram are not
// safe for concurrent use.
type mmsgReader struct {
	rc    syscall.RawConn
	n     int                   // datagrams per recvmmsg, at most endpointBatch
	size  int                   // bytes per buffer, at most endpointBufSize
	cur   *recvBatch            // the last read's, or nil
	recv  func(fd uintptr) bool // r.recvOnce, made once: a closure per read would allocate
	got   int                   // recvOnce's result
	err   error
	zones map[uint32]string // IPv6 scope ID -> zone, for link-local sources
}

// recvBatch is the memory of one recvmmsg: the buffers, their headers and
// the senders' addresses, wired together once, in one allocation.
type recvBatch struct {
	hdrs  [endpointBatch]mmsghdr
	iovs  [endpointBatch]unix.Iovec
	names [endpointBatch][unix.SizeofSockaddrInet6]byte
	bufs  [endpointBatch][endpointBufSize]byte
}

var recvBatches = sync.Pool{New: func() any {
	b := new(recvBatch)
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		h := &b.hdrs[i].hdr
		h.Name = &b.names[i][0]
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
	}
	return b
}}

// mmsghdr is struct mmsghdr: a msghdr and the length received, padded as
// the C struct is.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// newBatchReader makes a reader of up to n datagrams of up to size bytes
// per read (at most endpointBatch and endpointBufSize).
func newBatchReader(conn *net.UDPConn, _ batchConn, n, size int) (batchReader, error) {
	if n < 1 || n > endpointBatch || size < 1 || size > endpointBufSize {
		return nil, fmt.Errorf("ice: batch reader of %d datagrams of %d bytes: at most %d of %d", n, size, endpointBatch, endpointBufSize)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &mmsgReader{rc: rc, n: n, size: size}
	r.recv = r.recvOnce
	return r, nil
}

// read waits for datagrams and reads as many as have arrived, up to the
// batch size. An error wraps net.ErrClosed once the socket is closed.
func (r *mmsgReader) read() (int, error) {
	if err := r.rc.Read(r.recv); err != nil {
		return 0, err
	}
	return r.got, r.err
}

// recvOnce is the RawConn's read function: one recvmmsg, false to wait
// for the socket to be readable, with the buffers given back.
func (r *mmsgReader) recvOnce(fd uintptr) bool {
	if r.cur == nil {
		r.cur = recvBatches.Get().(*recvBatch)
	}
	b := r.cur
	for i := range r.n {
		b.iovs[i].SetLen(r.size)
		b.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].hdr.Flags = 0
		b.hdrs[i].n = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(r.n), 0, 0, 0)
		switch e {
		case 0:
			r.got, r.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			recvBatches.Put(b)
			r.cur = nil
			return false
		default:
			r.got, r.err = 0, os.NewSyscallError("recvmmsg", e)
			return true
		}
	}
}

// datagram returns the i-th datagram of the last read, valid until the
// next read, and its source; truncated says it was longer than the
// buffer, ok false that its source is not an IP address.
func (r *mmsgReader) datagram(i int) (b []byte, src netip.AddrPort, truncated, ok bool) {
	rb := r.cur
	h := &rb.hdrs[i]
	b = rb.bufs[i][:min(int(h.n), r.size)]
	truncated = h.hdr.Flags&unix.MSG_TRUNC != 0
	sa := rb.names[i][:min(int(h.hdr.Namelen), len(rb.names[i]))]
	if len(sa) < 2 {
		return b, src, truncated, false
	}
	switch binary.NativeEndian.Uint16(sa[0:2]) {
	case unix.AF_INET:
		if len(sa) < unix.SizeofSockaddrInet4 {
			return b, src, truncated, false
		}
		return b, netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4])), truncated, true
	case unix.AF_INET6:
		if len(sa) < unix.SizeofSockaddrInet6 {
			return b, src, truncated, false
		}
		a := netip.AddrFrom16([16]byte(sa[8:24]))
		if a.Is4In6() {
			a = a.Unmap()
		} else if id := binary.NativeEndian.Uint32(sa[24:28]); id != 0 {
			a = a.WithZone(r.zone(id))
		}
		return b, netip.AddrPortFrom(a, binary.BigEndian.Uint16(sa[2:4])), truncated, true
	}
	return b, src, truncated, false
}

// zone names the interface of IPv6 scope ID id as the net package does
// (its name, or the number when there is none), cached: a link-local
// peer's every datagram carries it.
func (r *mmsgReader) zone(id uint32) string {
	if z, ok := r.zones[id]; ok {
		return z
	}
	z := strconv.FormatUint(uint64(id), 10)
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		z = ifi.Name
	}
	if r.zones == nil || len(r.zones) >= 64 {
		r.zones = make(map[uint32]string) // bounded: interfaces come and go
	}
	r.zones[id] = z
	return z
}
