package securecall_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// pushed collects what a call's MediaConfig.OnRTP receives.
type pushed struct {
	mu   sync.Mutex
	seqs []uint16
	bad  int // payloads that arrived altered
	n    chan struct{}
}

func newPushed() *pushed { return &pushed{n: make(chan struct{}, 1<<14)} }

func (p *pushed) on(h media.RTPHeader, payload []byte) {
	p.mu.Lock()
	p.seqs = append(p.seqs, h.SequenceNumber)
	if len(payload) != 160 || payload[1] != byte(h.SequenceNumber) {
		p.bad++
	}
	p.mu.Unlock()
	p.n <- struct{}{}
}

func (p *pushed) wait(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-p.n:
		case <-time.After(10 * time.Second):
			t.Fatalf("OnRTP received %d of %d packets", i, n)
		}
	}
}

// sendPushed sends n packets from a, numbered from base, and checks that
// to's OnRTP receives them all, in order and unaltered.
func sendPushed(t *testing.T, a *securecall.Call, to *pushed, base uint16, n int) {
	t.Helper()
	payload := make([]byte, 160)
	for i := range n {
		seq := base + uint16(i)
		payload[1] = byte(seq)
		h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SequenceNumber: seq, Timestamp: uint32(160 * i), SSRC: a.SSRC()}
		if err := a.WriteRTP(h, payload); err != nil {
			t.Fatal(err)
		}
	}
	to.wait(t, n)
	to.mu.Lock()
	defer to.mu.Unlock()
	got := to.seqs[len(to.seqs)-n:]
	for i, s := range got {
		if s != base+uint16(i) {
			t.Fatalf("OnRTP received sequence numbers %v, want %d.. in order", got, base)
		}
	}
	if to.bad != 0 {
		t.Fatalf("%d packets arrived altered", to.bad)
	}
}

// MediaConfig.OnRTP delivers a call's RTP, in order and unaltered, on an
// ice.Endpoint (both ends of a call on one, which hands media over in the
// process: the callee echoes packets from inside OnRTP and the caller
// answers each echo from inside its own, with no deadlock on either
// call's write lock) and on a call's own socket; ReadRTP
// then says so with media.ErrRTPHandled, RTCP still reaches ReadRTCP, and
// closing the Endpoint ends ReadRTCP with ice.ErrEndpointClosed.
func TestCallPushDelivery(t *testing.T) {
	ep, shared := sharedEndpoint(t)
	for _, tc := range endpointCases(shared) {
		t.Run(tc.name, func(t *testing.T) {
			pa, pb, echoes, answers := newPushed(), newPushed(), newPushed(), newPushed()
			var b *securecall.Call
			var echoing sync.WaitGroup
			ready := make(chan struct{})
			cb := securecall.Config{ICE: tc.cb, Keying: sdp.KeyingDTLS}
			cb.Media.OnRTP = func(h media.RTPHeader, payload []byte) {
				if h.SequenceNumber >= 3000 {
					answers.on(h, payload)
					return
				}
				pb.on(h, payload)
				<-ready
				if h.SequenceNumber >= 1000 {
					// Echo from inside OnRTP, with the header of b's own stream.
					h.SSRC, h.SequenceNumber = b.SSRC(), h.SequenceNumber+1000
					if err := b.WriteRTP(h, payload); err != nil {
						t.Error(err)
					}
					echoing.Done()
				}
			}
			ca := securecall.Config{ICE: tc.ca, Keying: sdp.KeyingDTLS}
			var a *securecall.Call
			ca.Media.OnRTP = func(h media.RTPHeader, payload []byte) {
				if h.SequenceNumber < 2000 {
					pa.on(h, payload)
					return
				}
				echoes.on(h, payload)
				<-ready
				// Answer the echo from inside OnRTP too: in the process this
				// runs while b's write of the echo, and a's own write that
				// b echoed, are under way. The answers are a stream of
				// their own (another SSRC): a's first stream is still being
				// written, and one stream's sequence numbers must not jump
				// back and forth (SRTP would drop the older ones as replays).
				h.SSRC, h.SequenceNumber = a.SSRC()+1, h.SequenceNumber+1000
				if err := a.WriteRTP(h, payload); err != nil {
					t.Error(err)
				}
			}
			a, b = pair(t, ca, cb)
			close(ready)
			sendPushed(t, a, pb, 1, 50)
			sendPushed(t, b, pa, 1, 50)
			echoing.Add(20)
			sendPushed(t, a, pb, 1000, 20)
			echoing.Wait()
			echoes.wait(t, 20)
			answers.wait(t, 20)
			for _, c := range []*securecall.Call{a, b} {
				if _, _, err := c.ReadRTP(make([]byte, 1500)); !errors.Is(err, media.ErrRTPHandled) {
					t.Errorf("ReadRTP with OnRTP set: %v, want media.ErrRTPHandled", err)
				}
			}
			rtcpBothWays(t, a, b)
			if st := b.Stats(); st.RTPPacketsReceived != 90 {
				t.Errorf("callee counted %d packets received, want 90", st.RTPPacketsReceived)
			}
		})
	}
	pa := newPushed()
	ca := securecall.Config{ICE: shared, Keying: sdp.KeyingDTLS}
	ca.Media.OnRTP = pa.on
	a, b := pair(t, ca, securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS})
	sendPushed(t, b, pa, 1, 5)
	errc := make(chan error, 1)
	go func() {
		_, err := a.ReadRTCP(make([]byte, 1500))
		for err == nil { // the peer's own reports
			_, err = a.ReadRTCP(make([]byte, 1500))
		}
		errc <- err
	}()
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ice.ErrEndpointClosed) {
			t.Errorf("ReadRTCP after the endpoint closed: %v, want ice.ErrEndpointClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadRTCP still waits after the endpoint closed")
	}
}

// A gateway's calls on one Endpoint, with push delivery and each tick's
// writes in one Endpoint.Batch, against phones with sockets of their own:
// every packet arrives, each on its own call, in order, and the gateway's
// writes leave several to a sendmmsg.
func TestCallPushGatewayBatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	n := 100
	if testing.Short() {
		n = 20
	}
	ep, shared := sharedEndpoint(t)
	defer ep.Close() // before goleak looks (t.Cleanup runs after)
	gws, phones := make([]*securecall.Call, n), make([]*securecall.Call, n)
	got := make([]*pushed, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		got[i] = newPushed()
		cfg := securecall.Config{ICE: shared, Keying: sdp.KeyingDTLS}
		cfg.Media.OnRTP = got[i].on
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gw, phone, err := connectCalls(ctx, cfg, securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS})
			if err != nil {
				errs <- fmt.Errorf("call %d: %w", i, err)
				return
			}
			gws[i], phones[i] = gw, phone
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for i := range n {
			if gws[i] != nil {
				gws[i].Close()
				phones[i].Close()
			}
		}
	}()
	for err := range errs {
		t.Fatal(err)
	}
	const packets = 20
	// The phones read as an application without push does.
	recvd := make(chan error, n)
	for i, p := range phones {
		go func() {
			buf := make([]byte, 1500)
			p.SetReadDeadline(time.Now().Add(30 * time.Second))
			for k := range packets {
				h, m, err := p.ReadRTP(buf)
				if err != nil {
					recvd <- fmt.Errorf("phone %d: packet %d: %w", i, k, err)
					return
				}
				if m != 160 || buf[0] != byte(i) || h.SequenceNumber != uint16(k+1) {
					recvd <- fmt.Errorf("phone %d: packet %d arrived as call %d, seq %d", i, k, buf[0], h.SequenceNumber)
					return
				}
			}
			recvd <- nil
		}()
	}
	payload := make([]byte, 160)
	// Set-up may drop a STUN check from an agent's full queue (pion
	// retransmits it); media must lose nothing.
	before := ep.Stats()
	batchesBefore := before.WriteBatches
	for k := range packets {
		ep.Batch(func() {
			for i, gw := range gws {
				payload[0] = byte(i)
				h := media.RTPHeader{PayloadType: gw.Codec().PayloadType, SequenceNumber: uint16(k + 1), Timestamp: uint32(160 * k), SSRC: gw.SSRC()}
				if err := gw.WriteRTP(h, payload); err != nil {
					t.Fatal(err)
				}
			}
		})
		for i, p := range phones {
			payload[0], payload[1] = byte(i), byte(k+1)
			h := media.RTPHeader{PayloadType: p.Codec().PayloadType, SequenceNumber: uint16(k + 1), Timestamp: uint32(160 * k), SSRC: p.SSRC()}
			if err := p.WriteRTP(h, payload); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range n {
		if err := <-recvd; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		got[i].wait(t, packets)
		got[i].mu.Lock()
		for k, s := range got[i].seqs {
			if s != uint16(k+1) {
				t.Fatalf("gateway call %d received sequence numbers %v, want 1..%d", i, got[i].seqs, packets)
			}
		}
		got[i].mu.Unlock()
	}
	// With the calls' writes batched, sendmmsg moved several datagrams
	// at a time (the Endpoint's own RTCP and consent checks go alone).
	st := ep.Stats()
	if batches := st.WriteBatches - batchesBefore; batches*4 > uint64(packets*n) {
		t.Errorf("%d sendmmsg calls for %d RTP packets written in Batch: not batched", batches, packets*n)
	}
	if st.QueueDrops != before.QueueDrops {
		t.Errorf("%d datagrams dropped while media flowed; endpoint stats %+v", st.QueueDrops-before.QueueDrops, st)
	}
}

// connectCalls makes two calls from ca and cb and connects them, without
// testing.T, for tests that set up many at once.
func connectCalls(ctx context.Context, ca, cb securecall.Config) (a, b *securecall.Call, err error) {
	if a, err = securecall.New(ca); err != nil {
		return nil, nil, err
	}
	if b, err = securecall.New(cb); err != nil {
		a.Close()
		return nil, nil, err
	}
	fail := func(e error) (*securecall.Call, *securecall.Call, error) {
		a.Close()
		b.Close()
		return nil, nil, e
	}
	offer, err := a.Offer(ctx)
	if err != nil {
		return fail(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		return fail(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		return fail(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Connect(ctx) }()
	if err := errors.Join(a.Connect(ctx), <-errc); err != nil {
		return fail(err)
	}
	return a, b, nil
}

// Calls with push delivery closed while media flows both ways, on an
// Endpoint that both ends of each call share (so media is handed over in
// the process) and then closed itself: no deadlock, no OnRTP after its
// call's Close returned, nothing left running.
func TestCallPushCloseUnderLoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ep, shared := sharedEndpoint(t)
	defer ep.Close()
	const n = 10
	type end struct {
		c      *securecall.Call
		closed atomic.Bool
		late   atomic.Bool // OnRTP ran after Close returned
	}
	ends := make([]*end, 2*n)
	for i := range ends {
		ends[i] = &end{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		var cfgs [2]securecall.Config
		for k := range cfgs {
			e := ends[2*i+k]
			cfgs[k] = securecall.Config{ICE: shared, Keying: sdp.KeyingDTLS}
			cfgs[k].Media.OnRTP = func(h media.RTPHeader, payload []byte) {
				if e.closed.Load() {
					e.late.Store(true)
				}
				if h.SequenceNumber%2 == 0 && e.c != nil {
					e.c.WriteRTP(media.RTPHeader{PayloadType: h.PayloadType, SequenceNumber: h.SequenceNumber + 1, SSRC: e.c.SSRC() + 1}, payload)
				}
			}
		}
		a, b, err := connectCalls(ctx, cfgs[0], cfgs[1])
		if err != nil {
			t.Fatal(err)
		}
		ends[2*i].c, ends[2*i+1].c = a, b
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, e := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 160)
			for seq := uint16(0); ; seq += 2 {
				select {
				case <-stop:
					return
				default:
				}
				if e.c.WriteRTP(media.RTPHeader{PayloadType: e.c.Codec().PayloadType, SequenceNumber: seq, SSRC: e.c.SSRC()}, payload) != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	for i, e := range ends {
		if i%3 == 0 {
			e.c.Close()
			e.closed.Store(true)
		}
	}
	time.Sleep(50 * time.Millisecond)
	ep.Close()
	close(stop)
	wg.Wait()
	for _, e := range ends {
		e.c.Close()
		e.closed.Store(true)
	}
	for i, e := range ends {
		if e.late.Load() {
			t.Errorf("end %d: OnRTP ran after its call's Close returned", i)
		}
	}
}
