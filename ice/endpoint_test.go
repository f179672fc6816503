package ice_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

func listenEndpoint(t testing.TB) *ice.Endpoint {
	t.Helper()
	ep, err := ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

func onEndpoint(ep *ice.Endpoint) ice.Config {
	cfg := loopback()
	cfg.Endpoint = ep
	return cfg
}

// Both ends of a call on one Endpoint: one socket, and the datagrams
// between them are handed over in the process.
func TestEndpointBothEndsOneSocket(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	a, b := newSide(t, onEndpoint(ep)), newSide(t, onEndpoint(ep))
	connect(t, a, b, false, false, nil)
	for _, s := range []*side{a, b} {
		if got := s.cands[0].Port; len(s.cands) != 1 || got != ep.Addr().Port() {
			t.Fatalf("candidates %v, want one on the endpoint's port %d", s.cands, ep.Addr().Port())
		}
	}
	exchange(t, a.conn, b.conn)
	st := ep.Stats()
	if st.InProcess == 0 || st.Transports != 2 {
		t.Errorf("stats %+v: want datagrams handed over in the process and 2 transports", st)
	}
	a.t.Close()
	b.t.Close()
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ep.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// endpointPeer is the far end of a call with the gateway's Endpoint: a
// Transport with its own socket, as a phone would have.
func endpointPair(t testing.TB, ep *ice.Endpoint) (gw, phone *side) {
	gw, phone = newSide(t, onEndpoint(ep)), newSide(t, loopback())
	connect(t, phone, gw, false, false, nil)
	return gw, phone
}

// A call between a Transport on an Endpoint and one with its own socket,
// through the kernel both ways, with batched reads.
func TestEndpointCall(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	gw, phone := endpointPair(t, ep)
	exchange(t, gw.conn, phone.conn)
	if p := gw.t.Path(); p.Local.Address != ep.Addr() {
		t.Errorf("gateway path %+v, want the endpoint's address %v", p, ep.Addr())
	}
	gw.t.Close()
	phone.t.Close()
	ep.Close()
}

// A datagram from an address no call on the Endpoint has selected, and
// one spoofed as STUN for an unknown ufrag, are dropped and counted; the
// call goes on.
func TestEndpointStrayDatagramDropped(t *testing.T) {
	ep := listenEndpoint(t)
	gw, phone := endpointPair(t, ep)
	exchange(t, gw.conn, phone.conn)
	stray, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	before := ep.Stats().Unrouted
	// An SRTP-looking packet, and a binding request for a ufrag nobody has.
	rtp := append([]byte{0x80, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, make([]byte, 160)...)
	req := make([]byte, 20, 32)
	binary.BigEndian.PutUint16(req[0:2], 0x0001)
	binary.BigEndian.PutUint32(req[4:8], 0x2112A442)
	req = binary.BigEndian.AppendUint16(req, 0x0006)
	req = binary.BigEndian.AppendUint16(req, 8)
	req = append(req, "nobody:x"...)
	binary.BigEndian.PutUint16(req[2:4], uint16(len(req)-20))
	for _, p := range [][]byte{rtp, req} {
		if _, err := stray.WriteToUDPAddrPort(p, ep.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ep.Stats().Unrouted < before+2 {
		if ctx.Err() != nil {
			t.Fatalf("unrouted %d, want %d", ep.Stats().Unrouted, before+2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	gw.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := gw.conn.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("the call received a stray datagram of %d bytes", n)
	}
	gw.conn.SetReadDeadline(time.Time{})
	exchange(t, gw.conn, phone.conn)
}

// Closing one call leaves the others on the Endpoint running; closing
// the Endpoint ends every call's connection with ErrEndpointClosed.
func TestEndpointCloseOneThenAll(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	var gws, phones []*side
	for range 3 {
		g, p := endpointPair(t, ep)
		gws, phones = append(gws, g), append(phones, p)
	}
	if err := gws[0].t.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := gws[0].conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Transport.Close: %v, want net.ErrClosed", err)
	}
	for i := 1; i < 3; i++ {
		exchange(t, gws[i].conn, phones[i].conn)
	}
	if got := ep.Stats().Transports; got != 2 {
		t.Errorf("%d transports attached, want 2", got)
	}
	read := make(chan error, 1)
	go func() {
		_, err := gws[1].conn.Read(make([]byte, 1500))
		read <- err
	}()
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{<-read, func() error { _, err := gws[2].conn.Write([]byte("x")); return err }()} {
		if !errors.Is(err, ice.ErrEndpointClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("after Endpoint.Close: %v, want ErrEndpointClosed", err)
		}
	}
	if _, err := ice.NewTransport(onEndpoint(ep)); !errors.Is(err, ice.ErrEndpointClosed) {
		t.Errorf("NewTransport on a closed endpoint: %v", err)
	}
	for i := range gws {
		gws[i].t.Close()
		phones[i].t.Close()
	}
}

// TestEndpointThousandCalls runs many calls (1,000 unless
// SECURECALL_ENDPOINT_CALLS says otherwise) on one gateway socket, each
// with a phone on its own socket, and sends 50 numbered datagrams each
// way on every call at 20 ms intervals (100,000 a second in all): every
// one must arrive, on its own call. The race detector slows the 1,000
// phones (full ICE agents with their own sockets) and the Endpoint's
// reader alike several times, past what two shared cores carry, so
// under it the test runs 200 calls: it is a test of demultiplexing at
// scale; the capacity benchmark in internal/interop measures the rate.
func TestEndpointThousandCalls(t *testing.T) {
	n := 1000
	if s := os.Getenv("SECURECALL_ENDPOINT_CALLS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	if testing.Short() || raceEnabled && os.Getenv("SECURECALL_ENDPOINT_CALLS") == "" {
		n = 200
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gws, phones := make([]*side, n), make([]*side, n)
	// Connect in bounded parallel waves.
	var mu sync.Mutex
	var failed []error
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i := range n {
		gws[i], phones[i] = newSide(t, onEndpoint(ep)), newSide(t, loopback())
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := connectQuiet(ctx, phones[i], gws[i]); err != nil {
				mu.Lock()
				failed = append(failed, fmt.Errorf("call %d: %w", i, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d calls failed to connect: %v", len(failed), n, failed[0])
	}
	const packets = 50
	const interval = 20 * time.Millisecond
	errs := make(chan error, 2*n)
	for i := range n {
		for _, d := range [][2]net.Conn{{gws[i].conn, phones[i].conn}, {phones[i].conn, gws[i].conn}} {
			go func() { errs <- sendAndCount(ctx, i, d[0], d[1], packets, interval) }()
		}
	}
	var lost int
	for range 2 * n {
		if err := <-errs; err != nil {
			if lost++; lost <= 5 {
				t.Error(err)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d directions lost datagrams; endpoint %+v", lost, 2*n, ep.Stats())
	}
	if st := ep.Stats(); st.QueueDrops != 0 || st.ReadBatches == 0 {
		t.Errorf("endpoint stats %+v", st)
	} else {
		t.Logf("%d calls: %d datagrams in %d read batches, %d sent in %d write batches",
			n, st.Received, st.ReadBatches, st.Sent, st.WriteBatches)
	}
	for i := range n {
		gws[i].t.Close()
		phones[i].t.Close()
	}
	ep.Close()
}

// sendAndCount sends count datagrams "call:seq" from one end and checks
// that the other receives each once, in a bounded time.
func sendAndCount(ctx context.Context, call int, from, to net.Conn, count int, interval time.Duration) error {
	got := make(chan error, 1)
	go func() {
		seen := make(map[int]bool)
		buf := make([]byte, 1500)
		to.SetReadDeadline(time.Now().Add(time.Duration(count)*interval + 20*time.Second))
		defer to.SetReadDeadline(time.Time{})
		for len(seen) < count {
			n, err := to.Read(buf)
			if err != nil {
				got <- fmt.Errorf("call %d, to %v: received %d of %d: %w", call, to.LocalAddr(), len(seen), count, err)
				return
			}
			var c, seq int
			if _, err := fmt.Sscanf(string(buf[:n]), "%d:%d", &c, &seq); err != nil || c != call {
				got <- fmt.Errorf("call %d: received %q, another call's datagram", call, buf[:n])
				return
			}
			seen[seq] = true
		}
		got <- nil
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := range count {
		if _, err := fmt.Fprintf(from, "%d:%d", call, seq); err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return <-got
}

// connectQuiet is connect for many calls at once: errors are returned,
// not reported with t.
func connectQuiet(ctx context.Context, a, b *side) error {
	for _, s := range []*side{a, b} {
		s.cands = nil
		if err := s.t.Gather(ctx, func(c sdp.Candidate) { s.cands = append(s.cands, c) }); err != nil {
			return err
		}
	}
	for _, p := range [][2]*side{{a, b}, {b, a}} {
		for _, c := range p[1].cands {
			if err := p[0].t.AddRemoteCandidate(c); err != nil {
				return err
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.conn, a.err = a.t.Connect(ctx, b.peer(false), true) }()
	go func() { defer wg.Done(); b.conn, b.err = b.t.Connect(ctx, a.peer(false), false) }()
	wg.Wait()
	return errors.Join(a.err, b.err)
}

// Two calls between the same two Endpoints would share a 5-tuple, which
// media cannot be told apart by: the second fails Connect with
// ErrTupleInUse and the first goes on.
func TestEndpointTupleInUse(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	x, y := listenEndpoint(t), listenEndpoint(t)
	a1, b1 := newSide(t, onEndpoint(x)), newSide(t, onEndpoint(y))
	connect(t, a1, b1, false, false, nil)
	a2, b2 := newSide(t, onEndpoint(x)), newSide(t, onEndpoint(y))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := connectQuiet(ctx, a2, b2)
	if !errors.Is(err, ice.ErrTupleInUse) {
		t.Fatalf("second call between the same endpoints: %v, want ErrTupleInUse", err)
	}
	exchange(t, a1.conn, b1.conn)
	for _, s := range []*side{a1, b1, a2, b2} {
		s.t.Close()
	}
	x.Close()
	y.Close()
}

// The Endpoint's one reader serves every call on its socket, so it must
// not queue behind the process's other goroutines while datagrams wait:
// a reader that yielded after every full batch took one trip through the
// run queue per 32 datagrams, and with many goroutines runnable the
// socket's buffer overflowed and the kernel dropped media of every call
// (TestEndpointThousandCalls lost datagrams in all directions on a loaded
// 2-core machine). Here 256 goroutines keep the run queue long while
// five times the socket's buffer arrives; the reader must take all of it.
func TestEndpointReaderKeepsUpWithBusyScheduler(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep := listenEndpoint(t)
	defer ep.Close()
	const total, burst = 40_000, 256
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	stop := make(chan struct{})
	var spin sync.WaitGroup
	for range 256 {
		spin.Add(1)
		go func() {
			defer spin.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// About 20 us of work, then the next in the run queue.
				for end := time.Now().Add(20 * time.Microsecond); time.Now().Before(end); {
				}
				runtime.Gosched()
			}
		}()
	}
	defer func() { close(stop); spin.Wait() }()
	// Datagrams that are neither STUN nor any call's: the reader takes
	// them off the socket and counts them unrouted.
	pc := ipv4.NewPacketConn(src)
	to := net.UDPAddrFromAddrPort(ep.Addr())
	msgs := make([]ipv4.Message, burst)
	for i := range msgs {
		b := make([]byte, 172)
		b[0] = 0x80
		msgs[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: to}
	}
	// The sender takes its turn in the run queue after each burst, as the
	// reader did after each batch of 32: a reader that yields falls
	// behind by a burst a turn; one that keeps its core drains them.
	for sent := 0; sent < total; {
		n, err := pc.WriteBatch(msgs[:min(burst, total-sent)], 0)
		if err != nil {
			t.Fatal(err)
		}
		sent += n
		runtime.Gosched()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ep.Stats().Received < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := ep.Stats(); st.Received != total {
		t.Fatalf("the reader took %d of %d datagrams off the socket (the kernel dropped the rest); %+v", st.Received, total, st)
	}
}
