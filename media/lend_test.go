package media

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// lendingConn is a transport that lends its datagrams (as the conns of an
// ice.Endpoint do) and counts what is lent and not yet handed back.
type lendingConn struct {
	net.Conn
	mu       sync.Mutex
	lent     int
	out      map[*[MaxPacketSize + 512]byte]bool
	released int
}

func (c *lendingConn) ReadDatagram() ([]byte, any, error) {
	b := new([MaxPacketSize + 512]byte)
	n, err := c.Conn.Read(b[:])
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	c.lent++
	c.out[b] = true
	c.mu.Unlock()
	return b[:n], b, nil
}

func (c *lendingConn) ReleaseDatagram(held any) {
	b := held.(*[MaxPacketSize + 512]byte)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.out[b] {
		panic("released a datagram that was not lent, or twice")
	}
	delete(c.out, b)
	c.released++
}

func (c *lendingConn) counts() (lent, outstanding int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lent, len(c.out)
}

// A session on a transport that lends its buffers reads every datagram
// through them, in every keying: it keeps no read buffer of its own
// (1.5 KB less per call on an ice.Endpoint, and a copy less per packet),
// and hands each datagram back once done with it, whatever the path:
// media read, RTCP passed to its queue, DTLS, the attestation wait.
func TestSessionReadsLentDatagrams(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingSDES, sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(mode), func(t *testing.T) {
			ua, ub := udpPair(t)
			ca := &lendingConn{Conn: ua, out: map[*[MaxPacketSize + 512]byte]bool{}}
			cb := &lendingConn{Conn: ub, out: map[*[MaxPacketSize + 512]byte]bool{}}
			a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
			sa, sb := mustPair(t, ca, cb, a, b)
			if sa.rbuf != nil || sb.rbuf != nil {
				t.Error("a session on a lending transport allocated its own read buffer")
			}
			exchange(t, sa, sb, 0x1234, 20)
			exchange(t, sb, sa, 0x5678, 20)
			for _, c := range []*lendingConn{ca, cb} {
				lent, out := c.counts()
				// The reader that returned last still holds nothing: ReadRTP
				// and ReadRTCP hand the datagram back before they return.
				if lent < 20 || out != 0 { // 21 sent each way; in dtls keying the handshake pump reads the first
					t.Errorf("%d datagrams lent, %d not handed back: want every media datagram lent and none held", lent, out)
				}
			}
		})
	}
}

// A lent datagram longer than any packet a session accepts is dropped and
// counted, not taken for a failed read: more of them in a row than the
// readers ride out (maxReadFailures), as anyone who can send to the call's
// address can make, must not end ReadRTP.
func TestSessionDropsOversizeLentDatagrams(t *testing.T) {
	ua, ub := udpPair(t)
	ca := &lendingConn{Conn: ua, out: map[*[MaxPacketSize + 512]byte]bool{}}
	cb := &lendingConn{Conn: ub, out: map[*[MaxPacketSize + 512]byte]bool{}}
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	sa, sb := mustPair(t, ca, cb, a, b)
	junk := make([]byte, MaxPacketSize+100)
	junk[0] = 0x80 // looks like RTP
	got := make(chan error, 1)
	go func() {
		sb.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, _, err := sb.ReadRTP(make([]byte, 1500))
		got <- err
	}()
	const n = 2 * maxReadFailures
	for i := range n {
		if _, err := ua.Write(junk); err != nil {
			t.Fatal(err)
		}
		// Paced, so that the kernel's receive buffer drops none of them:
		// the reader has to meet more of them in a row than it rides out.
		for deadline := time.Now().Add(5 * time.Second); sb.Stats().Malformed < uint64(i+1); {
			if time.Now().After(deadline) {
				t.Fatalf("the reader took %d of %d oversize datagrams", sb.Stats().Malformed, i+1)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	select {
	case err := <-got:
		t.Fatalf("ReadRTP returned %v after %d oversize datagrams, before any packet", err, n)
	default:
	}
	if err := sa.WriteRTP(RTPHeader{PayloadType: 0, SSRC: 7}, []byte("after the junk")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("ReadRTP after %d oversize datagrams: %v", n, err)
	}
	if _, out := cb.counts(); out != 0 {
		t.Errorf("%d lent datagrams not handed back", out)
	}
}
