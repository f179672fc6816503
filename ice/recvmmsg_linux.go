//go:build linux

package ice

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
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
// One goroutine reads (the Endpoint's reader): read and datagram are not
// safe for concurrent use.
type mmsgReader struct {
	rc    syscall.RawConn
	size  int
	bufs  []byte
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names [][unix.SizeofSockaddrInet6]byte
	recv  func(fd uintptr) bool // r.recvOnce, made once: a closure per read would allocate
	n     int                   // recvOnce's result
	err   error
	zones map[uint32]string // IPv6 scope ID -> zone, for link-local sources
}

// mmsghdr is struct mmsghdr: a msghdr and the length received, padded as
// the C struct is.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

func newBatchReader(conn *net.UDPConn, _ batchConn, n, size int) (batchReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &mmsgReader{
		rc:    rc,
		size:  size,
		bufs:  make([]byte, n*size),
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([][unix.SizeofSockaddrInet6]byte, n),
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i*size]
		r.iovs[i].SetLen(size)
		h := &r.hdrs[i].hdr
		h.Name = &r.names[i][0]
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.recv = r.recvOnce
	return r, nil
}

// read waits for datagrams and reads as many as have arrived, up to the
// batch size. An error wraps net.ErrClosed once the socket is closed.
func (r *mmsgReader) read() (int, error) {
	for i := range r.hdrs {
		r.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].hdr.Flags = 0
		r.hdrs[i].n = 0
	}
	if err := r.rc.Read(r.recv); err != nil {
		return 0, err
	}
	return r.n, r.err
}

// recvOnce is the RawConn's read function: one recvmmsg, false to wait
// for the socket to be readable.
func (r *mmsgReader) recvOnce(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), 0, 0, 0)
		switch e {
		case 0:
			r.n, r.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.n, r.err = 0, os.NewSyscallError("recvmmsg", e)
			return true
		}
	}
}

// datagram returns the i-th datagram of the last read, valid until the
// next read, and its source; truncated says it was longer than the
// buffer, ok false that its source is not an IP address.
func (r *mmsgReader) datagram(i int) (b []byte, src netip.AddrPort, truncated, ok bool) {
	h := &r.hdrs[i]
	b = r.bufs[i*r.size : i*r.size+min(int(h.n), r.size)]
	truncated = h.hdr.Flags&unix.MSG_TRUNC != 0
	sa := r.names[i][:min(int(h.hdr.Namelen), len(r.names[i]))]
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
