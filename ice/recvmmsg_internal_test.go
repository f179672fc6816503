package ice

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// readerOn listens on addr and returns the socket and the Endpoint's
// batch reader on it, with batches of 4 datagrams of up to 64 bytes.
func readerOn(t *testing.T, network, addr string) (*net.UDPConn, batchReader) {
	t.Helper()
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("no %s socket on %s here: %v", network, addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	r, err := newBatchReader(conn, ipv4.NewPacketConn(conn), 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	return conn, r
}

// readAll reads until n datagrams have come and returns them with their
// sources and truncation flags.
func readAll(t *testing.T, conn *net.UDPConn, r batchReader, n int) (got [][]byte, srcs []netip.AddrPort, trunc []bool) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		k, err := r.read()
		if err != nil {
			t.Fatalf("read after %d datagrams: %v", len(got), err)
		}
		for i := range k {
			b, src, tr, ok := r.datagram(i)
			if !ok {
				t.Fatalf("datagram %d: no source address", i)
			}
			got, srcs, trunc = append(got, bytes.Clone(b)), append(srcs, src), append(trunc, tr)
		}
	}
	return got, srcs, trunc
}

// The Endpoint's batch reader returns each datagram with its source as
// the Endpoint routes by it: IPv4, IPv6, and an IPv4 peer of a dual-stack
// socket unmapped; a datagram longer than the buffer is flagged, never
// passed on cut short; several datagrams come in one read; and once the
// socket is closed, read fails with net.ErrClosed.
func TestBatchReaderSources(t *testing.T) {
	for _, tc := range []struct {
		name, network, listen, from string
	}{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0", "[::1]:0"},
		{"ipv4-on-dual-stack", "udp", "[::]:0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, r := readerOn(t, tc.network, tc.listen)
			from, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.from)))
			if err != nil {
				t.Fatal(err)
			}
			defer from.Close()
			to := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			if tc.listen == "[::]:0" {
				to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), to.Port())
			}
			want := [][]byte{[]byte("one"), bytes.Repeat([]byte{7}, 64), []byte("three"), bytes.Repeat([]byte{9}, 65)}
			for _, p := range want {
				if _, err := from.WriteToUDPAddrPort(p, to); err != nil {
					t.Fatal(err)
				}
			}
			got, srcs, trunc := readAll(t, conn, r, len(want))
			wantSrc := from.LocalAddr().(*net.UDPAddr).AddrPort()
			for i := range want {
				if srcs[i] != wantSrc {
					t.Errorf("datagram %d from %v, want %v", i, srcs[i], wantSrc)
				}
				if long := len(want[i]) > 64; trunc[i] != long {
					t.Errorf("datagram %d of %d bytes: truncated %v", i, len(want[i]), trunc[i])
				} else if !long && !bytes.Equal(got[i], want[i]) {
					t.Errorf("datagram %d = %q, want %q", i, got[i], want[i])
				}
			}
			conn.Close()
			if _, err := r.read(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read on a closed socket: %v, want net.ErrClosed", err)
			}
		})
	}
}

// BenchmarkBatchRead compares, side by side in one run, the Endpoint's
// reader (recvmmsg of our own on Linux) with x/net's ReadBatch: each
// iteration queues 32 datagrams of 172 bytes (a PCMU frame in SRTP) on
// each of two loopback sockets, then times each reader taking its 32,
// the two taking turns to go first.
// Reported: ns per datagram of each and their ratio (x-xnet below 1: ours
// is faster). Allocations are TestEndpointZeroAllocsPerDatagram's.
func BenchmarkBatchRead(b *testing.B) {
	const batch, size = 32, 2048
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadBuffer(1 << 20)
		b.Cleanup(func() { c.Close() })
		return c
	}
	ours, theirs, from := listen(), listen(), listen()
	mine, err := newBatchReader(ours, ipv4.NewPacketConn(ours), batch, size)
	if err != nil {
		b.Fatal(err)
	}
	readers := []struct {
		r    batchReader
		to   *net.UDPAddr
		took time.Duration
	}{
		{r: mine, to: ours.LocalAddr().(*net.UDPAddr)},
		{r: newXnetReader(ipv4.NewPacketConn(theirs), batch, size), to: theirs.LocalAddr().(*net.UDPAddr)},
	}
	out := ipv4.NewPacketConn(from)
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 172)}
	}
	for iter := 0; b.Loop(); iter++ {
		for j := range readers {
			rd := &readers[(j+iter)%len(readers)] // each goes first every other time
			for i := range msgs {
				msgs[i].Addr = rd.to
			}
			for sent := 0; sent < batch; {
				n, err := out.WriteBatch(msgs[sent:], 0)
				if err != nil {
					b.Fatal(err)
				}
				sent += n
			}
			start := time.Now()
			for got := 0; got < batch; {
				n, err := rd.r.read()
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					if _, src, _, ok := rd.r.datagram(i); !ok || !src.IsValid() {
						b.Fatal("no source")
					}
				}
				got += n
			}
			rd.took += time.Since(start)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*batch) }
	b.ReportMetric(per(readers[0].took), "ns/datagram")
	b.ReportMetric(per(readers[1].took), "xnet-ns/datagram")
	b.ReportMetric(per(readers[0].took)/per(readers[1].took), "x-xnet")
}
