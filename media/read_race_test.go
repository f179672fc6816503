package media

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A reader must return a packet that the read token's holder queued for it
// just before releasing the token, not take the token and block on the
// transport with the packet left in the queue. The hook puts the holder's
// queue-and-release exactly between the reader's look at its queue and its
// try for the token.
func TestReadTakesPacketQueuedAtTokenRelease(t *testing.T) {
	local, remote := net.Pipe() // nothing is ever written to remote
	defer remote.Close()
	defer local.Close()
	s := newSession(Config{}, local)
	s.tok <- struct{}{} // another reader holds the token
	var fired atomic.Bool
	hook := func(x *Session) {
		if x != s || !fired.CompareAndSwap(false, true) {
			return // another test's session, or the hook has run
		}
		b := getPacket()
		b.data = append(b.buf[:0], 0xab, 0xcd)
		s.rtpQ <- b
		s.release()
	}
	testHookBeforeToken.Store(&hook)
	defer testHookBeforeToken.Store(nil)
	got := make(chan []byte, 1)
	go func() {
		pkt, b, err := s.next(kindRTP, s.rtpQ)
		if err != nil {
			got <- nil
			return
		}
		if b != nil {
			defer putPacket(b)
		} else {
			defer s.release()
		}
		got <- append([]byte(nil), pkt...)
	}()
	select {
	case pkt := <-got:
		if string(pkt) != "\xab\xcd" {
			t.Fatalf("read %x, want the queued packet abcd", pkt)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the reader blocked on the transport with a packet queued for it")
	}
}
