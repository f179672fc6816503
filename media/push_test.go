package media

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// pushingConn is a transport that pushes its datagrams, as the conns of
// an ice.Endpoint do: from PushDatagrams on, its own reader goroutine
// reads the socket and calls deliver; when reading ends it calls end.
type pushingConn struct {
	net.Conn
	pushed   atomic.Int64
	reads    atomic.Int64 // Read calls by anyone but the pusher: none expected
	wg       sync.WaitGroup
	once     sync.Once
	started  chan struct{}
	inFlight atomic.Int32
	overlap  atomic.Bool
}

func newPushingConn(c net.Conn) *pushingConn {
	return &pushingConn{Conn: c, started: make(chan struct{})}
}

func (c *pushingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

func (c *pushingConn) PushDatagrams(deliver func([]byte), end func(error)) {
	c.once.Do(func() { close(c.started) })
	// What waits in the socket is delivered before PushDatagrams returns,
	// as an Endpoint's conn delivers what it queued.
	buf := make([]byte, 2048)
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	for {
		n, err := c.Conn.Read(buf)
		if err != nil {
			break
		}
		deliver(buf[:n])
		c.pushed.Add(1)
	}
	c.Conn.SetReadDeadline(time.Time{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := c.Conn.Read(buf)
			if err != nil {
				end(err)
				return
			}
			if c.inFlight.Add(1) != 1 {
				c.overlap.Store(true)
			}
			deliver(buf[:n])
			c.inFlight.Add(-1)
			c.pushed.Add(1)
		}
	}()
}

// Close does not wait for a delivery in progress, as an Endpoint's conn
// does not (its reader serves every call); wait does.
func (c *pushingConn) Close() error { return c.Conn.Close() }

func (c *pushingConn) wait() { c.wg.Wait() }

// rtpLog collects what OnRTP receives, copying it.
type rtpLog struct {
	mu      sync.Mutex
	seqs    []uint16
	payload [][]byte
	arrived chan struct{} // one token per packet
}

func newRTPLog() *rtpLog { return &rtpLog{arrived: make(chan struct{}, 4096)} }

func (l *rtpLog) on(h RTPHeader, payload []byte) {
	l.mu.Lock()
	l.seqs = append(l.seqs, h.SequenceNumber)
	l.payload = append(l.payload, bytes.Clone(payload))
	l.mu.Unlock()
	l.arrived <- struct{}{}
}

// got returns a copy of the sequence numbers received so far, in order.
func (l *rtpLog) got() []uint16 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint16(nil), l.seqs...)
}

func (l *rtpLog) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-l.arrived:
		case <-time.After(10 * time.Second):
			l.mu.Lock()
			got := len(l.seqs)
			l.mu.Unlock()
			t.Fatalf("OnRTP got %d packets, want %d", got, n)
		}
	}
}

// checkPushed sends n packets and an RTCP packet from s to r, which
// pushes, and checks what OnRTP and ReadRTCP receive.
func checkPushed(t *testing.T, s, r *Session, log *rtpLog, first uint16, n int) {
	t.Helper()
	for i := range n {
		h := RTPHeader{PayloadType: 0, SequenceNumber: first + uint16(i), Timestamp: uint32(160 * i), SSRC: 0x1234}
		if err := s.WriteRTP(h, bytes.Repeat([]byte{byte(i)}, 160)); err != nil {
			t.Fatal(err)
		}
	}
	log.wait(t, n)
	log.mu.Lock()
	seqs, payloads := log.seqs[len(log.seqs)-n:], log.payload[len(log.payload)-n:]
	log.mu.Unlock()
	for i := range n {
		if seqs[i] != first+uint16(i) || !bytes.Equal(payloads[i], bytes.Repeat([]byte{byte(i)}, 160)) {
			t.Fatalf("packet %d: seq %d, payload %x..., want seq %d in order, unchanged", i, seqs[i], payloads[i][:4], first+uint16(i))
		}
	}
	if err := s.WriteRTCP(rtcpRR(0x1234)); err != nil {
		t.Fatal(err)
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	if _, err := r.ReadRTCP(buf); err != nil {
		t.Fatalf("ReadRTCP on a pushing session: %v", err)
	}
	r.SetReadDeadline(time.Time{})
}

// A session with OnRTP hands every authenticated RTP packet to it, in
// order and unchanged, in every keying, whether the transport pushes (an
// ice.Endpoint's conn: the session then never reads it and keeps no read
// buffer) or not (the session reads it on one goroutine); ReadRTP says
// so with ErrRTPHandled, and RTCP still reaches ReadRTCP.
func TestSessionPushesRTP(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingSDES, sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid} {
		for _, pushes := range []bool{true, false} {
			name := string(mode) + "/own-reader"
			if pushes {
				name = string(mode) + "/transport-pushes"
			}
			t.Run(name, func(t *testing.T) {
				ua, ub := udpPair(t)
				var cb net.Conn = ub
				var pc *pushingConn
				if pushes {
					pc = newPushingConn(ub)
					cb = pc
					t.Cleanup(pc.wait)
				}
				a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
				log := newRTPLog()
				b.OnRTP = log.on
				sa, sb := mustPair(t, ua, cb, a, b)
				checkPushed(t, sa, sb, log, 100, 50)
				if _, _, err := sb.ReadRTP(make([]byte, 1500)); !errors.Is(err, ErrRTPHandled) {
					t.Errorf("ReadRTP with OnRTP set: %v, want ErrRTPHandled", err)
				}
				if st := sb.Stats(); st.RTPPacketsReceived != 50 {
					t.Errorf("Stats().RTPPacketsReceived %d, want 50", st.RTPPacketsReceived)
				}
				if pushes {
					if sb.rbuf != nil {
						t.Error("a session on a pushing transport allocated a read buffer")
					}
					if n := pc.reads.Load(); n != 0 {
						t.Errorf("the session read a pushing transport %d times", n)
					}
					if pc.overlap.Load() {
						t.Error("deliveries overlapped")
					}
				}
				// The other way round still works in pull mode.
				exchange(t, sb, sa, 0x5678, 5)
			})
		}
	}
}

// blockingKeys is a KeySource whose Keys waits until released, so that
// the peer's media arrives before this end has its keys.
type blockingKeys struct {
	KeySource
	release chan struct{}
}

func (k blockingKeys) Keys(ctx context.Context, uri string) ([]CallKey, error) {
	select {
	case <-k.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return k.KeySource.Keys(ctx, uri)
}

// Media pushed before the keys are in waits in the early queue and is
// delivered, in order and before what follows, once they are: nothing is
// lost to the key fetch.
func TestSessionPushesEarlyMediaInOrder(t *testing.T) {
	keys := newFakeKeys(t, 1)
	ua, ub := udpPair(t)
	pc := newPushingConn(ub)
	t.Cleanup(pc.wait)
	a, b := pairConfigs(t, sdp.KeyingKMS, keys)
	release := make(chan struct{})
	b.KeySource = blockingKeys{KeySource: keys, release: release}
	log := newRTPLog()
	b.OnRTP = log.on
	ctx := context.Background()
	type result struct {
		s   *Session
		err error
	}
	bDone := make(chan result, 1)
	go func() {
		s, err := NewSession(ctx, pc, b)
		bDone <- result{s, err}
	}()
	sa, err := NewSession(ctx, ua, a)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	<-pc.started
	const early = 10
	for i := range early {
		if err := sa.WriteRTP(RTPHeader{SequenceNumber: uint16(i), SSRC: 1}, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); pc.pushed.Load() < early; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams pushed before the keys", pc.pushed.Load(), early)
		}
		time.Sleep(time.Millisecond)
	}
	if len(log.arrived) != 0 {
		t.Fatal("OnRTP ran before the keys were in")
	}
	close(release)
	r := <-bDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.s.Close()
	log.wait(t, early)
	checkPushed(t, sa, r.s, log, early, 5)
	log.mu.Lock()
	defer log.mu.Unlock()
	for i, seq := range log.seqs {
		if seq != uint16(i) {
			t.Fatalf("sequence numbers %v, want 0..%d in order", log.seqs, early+4)
		}
	}
}

// Close waits for an OnRTP call in progress, and OnRTP is not called once
// Close has returned: an application may free what OnRTP uses.
func TestSessionCloseWaitsForOnRTP(t *testing.T) {
	for _, pushes := range []bool{true, false} {
		t.Run(map[bool]string{true: "transport-pushes", false: "own-reader"}[pushes], func(t *testing.T) {
			ua, ub := udpPair(t)
			var cb net.Conn = ub
			if pushes {
				pc := newPushingConn(ub)
				cb = pc
				t.Cleanup(pc.wait)
			}
			a, b := pairConfigs(t, sdp.KeyingSDES, nil)
			var (
				entered     = make(chan struct{})
				closeDone   = make(chan struct{})
				afterClose  atomic.Bool
				closeReturn atomic.Bool
				calls       atomic.Int32
				sb          *Session
			)
			b.OnRTP = func(RTPHeader, []byte) {
				if closeReturn.Load() {
					afterClose.Store(true)
				}
				if calls.Add(1) != 1 {
					return
				}
				close(entered)
				// Close has started once closed is set; it must not return
				// while this call runs.
				for !sb.closed.Load() {
					time.Sleep(time.Millisecond)
				}
				select {
				case <-closeDone:
					t.Error("Close returned while OnRTP ran")
				case <-time.After(200 * time.Millisecond):
				}
			}
			var sa *Session
			sa, sb = mustPair(t, ua, cb, a, b)
			go func() {
				for i := 0; !closeReturn.Load() && i < 1000; i++ {
					sa.WriteRTP(RTPHeader{SequenceNumber: uint16(i), SSRC: 1}, []byte{1})
					time.Sleep(time.Millisecond)
				}
			}()
			<-entered
			if err := sb.Close(); err != nil {
				t.Fatal(err)
			}
			closeReturn.Store(true)
			close(closeDone)
			if afterClose.Load() {
				t.Error("OnRTP was called after Close returned")
			}
		})
	}
}

// When a pushing transport stops delivering (its path gone, an
// ice.Endpoint closed), ReadRTCP returns with its reason rather than wait
// for ever.
func TestSessionPushReadRTCPEndsWithTransport(t *testing.T) {
	ua, ub := udpPair(t)
	pc := newPushingConn(ub)
	t.Cleanup(pc.wait)
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	b.OnRTP = func(RTPHeader, []byte) {}
	_, sb := mustPair(t, ua, pc, a, b)
	errc := make(chan error, 1)
	go func() {
		_, err := sb.ReadRTCP(make([]byte, 1500))
		errc <- err
	}()
	pc.Conn.Close() // the path, not the session
	select {
	case err := <-errc:
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadRTCP after the transport ended: %v, want its reason (net.ErrClosed)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadRTCP still waits after the transport stopped delivering")
	}
}

// countingConn counts the DTLS datagrams written through it.
type countingConn struct {
	net.Conn
	dtls atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	if classify(p) == kindDTLS {
		c.dtls.Add(1)
	}
	return c.Conn.Write(p)
}

// A ClientHello that reaches a pushing server before its session starts
// the handshake is answered, not dropped: the client sends no flight
// twice, just as against a server that reads its transport itself.
func TestSessionPushKeepsEarlyHandshake(t *testing.T) {
	for _, keying := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingHybrid} {
		writes := map[bool]int64{}
		for _, pushes := range []bool{false, true} {
			ua, ub := udpPair(t)
			client := &countingConn{Conn: ua}
			var server net.Conn = ub
			if pushes {
				pc := newPushingConn(ub)
				t.Cleanup(pc.wait)
				server = pc
			}
			a, b := pairConfigs(t, keying, newFakeKeys(t, 1))
			b.OnRTP = func(RTPHeader, []byte) {}
			ctx := context.Background()
			aDone := make(chan error, 1)
			var sa *Session
			go func() {
				var err error
				sa, err = NewSession(ctx, client, a)
				aDone <- err
			}()
			for deadline := time.Now().Add(10 * time.Second); client.dtls.Load() == 0; {
				if time.Now().After(deadline) {
					t.Fatal("the client sent no ClientHello")
				}
				time.Sleep(time.Millisecond)
			}
			sb, err := NewSession(ctx, server, b)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-aDone; err != nil {
				t.Fatal(err)
			}
			writes[pushes] = client.dtls.Load()
			sa.Close()
			sb.Close()
		}
		if writes[true] != writes[false] {
			t.Errorf("%s: the client wrote %d DTLS datagrams against a pushing server, %d against one that reads: a flight was lost and sent again", keying, writes[true], writes[false])
		}
	}
}

// refusingConn fails its next failing reads as a connected UDP socket
// does when ICMP port unreachables come back (the peer not listening).
type refusingConn struct {
	*memConn
	failing atomic.Int32
}

func (c *refusingConn) Read(p []byte) (int, error) {
	if c.failing.Load() > 0 {
		c.failing.Add(-1)
		return 0, &net.OpError{Op: "read", Net: "udp", Err: syscall.ECONNREFUSED}
	}
	return c.memConn.Read(p)
}

// A run of transient read errors longer than maxReadFailures (2 s of
// unreachables at 50 packets a second) does not end delivery: with OnRTP
// on a transport that does not push, the session's reader pauses and
// reads on once the transport recovers, as ReadRTP's next call does.
func TestSessionPushLoopSurvivesTransientErrors(t *testing.T) {
	for _, push := range []bool{true, false} {
		t.Run(map[bool]string{true: "OnRTP", false: "ReadRTP"}[push], func(t *testing.T) {
			ma, mb := memPair()
			rc := &refusingConn{memConn: mb}
			a, b := pairConfigs(t, sdp.KeyingSDES, nil)
			got := make(chan uint16, 16)
			if push {
				b.OnRTP = func(h RTPHeader, _ []byte) { got <- h.SequenceNumber }
			}
			sa, sb := mustPair(t, ma, rc, a, b)
			if !push {
				go func() {
					buf := make([]byte, 1500)
					for range 10 { // a call that meets the run fails, the next reads on
						if h, _, err := sb.ReadRTP(buf); err == nil {
							got <- h.SequenceNumber
						} else if sb.closed.Load() {
							return
						}
					}
				}()
			}
			rc.failing.Store(maxReadFailures + 1)
			mb.inject([]byte{0}) // wakes a Read already waiting
			waitUntil(t, func() bool { return rc.failing.Load() == 0 })
			if err := sa.WriteRTP(RTPHeader{SSRC: 5, SequenceNumber: 7}, make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			select {
			case seq := <-got:
				if seq != 7 {
					t.Fatalf("got packet %d, want 7", seq)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing delivered after the transport recovered")
			}
		})
	}
}

// ReadRTCP called from OnRTP cannot wait for RTCP to arrive: the goroutine
// that would queue it is its caller, which delivers nothing meanwhile. It
// returns a packet already queued at once; otherwise it returns at the
// read deadline, or with net.ErrClosed when another goroutine closes the
// session, and delivery goes on from where it stopped: the RTCP and RTP
// that arrived meanwhile reach ReadRTCP and OnRTP, none lost. In a
// synctest bubble, so that the deadline is exact.
func TestSessionReadRTCPFromOnRTP(t *testing.T) {
	for _, pushes := range []bool{true, false} {
		t.Run(map[bool]string{true: "transport-pushes", false: "own-reader"}[pushes], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testReadRTCPFromOnRTP(t, pushes) })
		})
	}
}

func testReadRTCPFromOnRTP(t *testing.T, pushes bool) {
	const wait = time.Second
	ma, mb := memPair()
	var conn net.Conn = mb
	if pushes {
		pc := newPushingConn(mb)
		t.Cleanup(pc.wait)
		conn = pc
	}
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	a.RTCP.Disabled, b.RTCP.Disabled = true, true // only the test's RTCP
	type result struct {
		n       int
		err     error
		elapsed time.Duration
	}
	var (
		sb      *Session
		results = make(chan result, 8)
		seqs    = make(chan uint16, 8)
	)
	b.OnRTP = func(h RTPHeader, _ []byte) {
		seqs <- h.SequenceNumber
		switch h.SequenceNumber {
		case 1, 2:
			sb.SetReadDeadline(time.Now().Add(wait))
		case 3:
			sb.SetReadDeadline(time.Time{})
		default:
			return
		}
		start := time.Now()
		n, err := sb.ReadRTCP(make([]byte, 1500))
		results <- result{n, err, time.Since(start)}
	}
	sa, sbb := mustPair(t, ma, conn, a, b)
	sb = sbb
	send := func(seq uint16) {
		t.Helper()
		if err := sa.WriteRTP(RTPHeader{SSRC: 1, SequenceNumber: seq}, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
	}
	sendRTCP := func(ssrc uint32) {
		t.Helper()
		if err := sa.WriteRTCP(rtcpRR(ssrc)); err != nil {
			t.Fatal(err)
		}
	}

	// Queued before OnRTP runs: returned at once.
	sendRTCP(0xa)
	send(1)
	if r := <-results; r.err != nil || r.n != len(rtcpRR(0xa)) || r.elapsed != 0 {
		t.Fatalf("ReadRTCP from OnRTP with a packet queued: %d bytes, %v after %v; want it at once", r.n, r.err, r.elapsed)
	}
	// Nothing queued: the deadline, while the packets that arrive wait.
	send(2)
	synctest.Wait()
	sendRTCP(0xb)
	send(10)
	if r := <-results; !errors.Is(r.err, os.ErrDeadlineExceeded) || r.elapsed != wait {
		t.Fatalf("ReadRTCP from OnRTP with nothing queued: %v after %v, want the deadline after %v", r.err, r.elapsed, wait)
	}
	sb.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	if n, err := sb.ReadRTCP(buf); err != nil || !bytes.Equal(buf[:n], rtcpRR(0xb)) {
		t.Fatalf("the RTCP that arrived meanwhile: %x, %v", buf[:n], err)
	}
	// No deadline: Close ends it.
	send(3)
	synctest.Wait()
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-results; !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("ReadRTCP from OnRTP when another goroutine closed the session: %v, want net.ErrClosed", r.err)
	}
	close(seqs)
	var got []uint16
	for seq := range seqs {
		got = append(got, seq)
	}
	if !slices.Equal(got, []uint16{1, 2, 10, 3}) {
		t.Fatalf("OnRTP got %v, want [1 2 10 3]", got)
	}
}
