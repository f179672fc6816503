//go:build linux

package ice

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestBatchReaderGivesBuffersBack checks that the Linux batch reader keeps
// its buffers only from a read until the socket has nothing more to give,
// and hands them back to the shared pool before it waits, so that an
// Endpoint waiting for datagrams holds none; it reads as before once
// datagrams come again.
func TestBatchReaderGivesBuffersBack(t *testing.T) {
	conn, br := readerOn(t, "udp4", "127.0.0.1:0")
	r := br.(*mmsgReader)
	if r.cur != nil {
		t.Fatal("a new reader holds buffers")
	}
	from, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	send := func(msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			if _, err := from.WriteToUDP([]byte(m), conn.LocalAddr().(*net.UDPAddr)); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("a", "b", "c")
	if got, _, _ := readAll(t, conn, r, 3); string(got[0])+string(got[1])+string(got[2]) != "abc" {
		t.Fatalf("read %q, want a, b, c", got)
	}
	if r.cur == nil {
		t.Fatal("the buffers of the datagrams just read were given back")
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of an empty socket: %v, want its deadline", err)
	}
	if r.cur != nil {
		t.Fatal("the reader holds its buffers while it waits")
	}
	send("d")
	if got, _, _ := readAll(t, conn, r, 1); string(got[0]) != "d" {
		t.Fatalf("read %q after waiting, want d", got)
	}
}
