package media

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// directConn is one end of an in-process link that pushes: Write hands a
// copy of the datagram to the peer's deliver function at once, on the
// writer's goroutine, as an Endpoint's reader hands a datagram to the
// session it is routed to. It has no queue and no system call, so that a
// benchmark over it measures the sessions' own work per packet.
type directConn struct {
	net.Conn
	peer    *directConn
	deliver func([]byte)
	buf     [MaxPacketSize]byte
}

func (c *directConn) PushDatagrams(deliver func([]byte), _ func(error)) { c.deliver = deliver }

func (c *directConn) Write(p []byte) (int, error) {
	n := copy(c.buf[:], p)
	c.peer.deliver(c.buf[:n])
	return len(p), nil
}

func (*directConn) SetWriteDeadline(time.Time) error { return nil }
func (*directConn) SetReadDeadline(time.Time) error  { return nil }
func (*directConn) Close() error                     { return nil }

// BenchmarkManySessions is the cost of one RTP packet, WriteRTP on one
// side to OnRTP on the other, when a process carries many calls: each
// operation is the next call's packet, so that, as in a gateway, it meets
// its sessions' state (the Session, its SRTP contexts and ciphers, its
// receive statistics) cold in the cache once there are more calls than
// the cache holds. pairs=1 is the same path with everything hot; the
// difference between the two is what the per-call state costs in memory
// traffic. Keying kms (with MKI) and sdes; AES-128-GCM, 160-byte payloads.
func BenchmarkManySessions(b *testing.B) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingSDES} {
		for _, n := range []int{1, 2000} {
			b.Run(fmt.Sprintf("keying=%s/pairs=%d", mode, n), func(b *testing.B) {
				benchManySessions(b, mode, n)
			})
		}
	}
}

func benchManySessions(b *testing.B, mode sdp.Keying, n int) {
	var keys KeySource
	if mode == sdp.KeyingKMS {
		keys = staticKeys{newFakeKeys(b, 1)}
	}
	type pair struct {
		a, b *Session
		h    RTPHeader
	}
	pairs := make([]pair, n)
	got := 0
	onRTP := func(RTPHeader, []byte) { got++ }
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	for i := range pairs {
		ca, cb := &directConn{}, &directConn{}
		ca.peer, cb.peer = cb, ca
		a, c := pairConfigs(b, mode, keys)
		a.OnRTP, c.OnRTP = onRTP, onRTP
		if mode == sdp.KeyingSDES {
			a.SDES.Profile, c.SDES.Profile = ProfileAEADAES128GCM, ProfileAEADAES128GCM
		} else {
			a.Profiles, c.Profiles = []Profile{ProfileAEADAES128GCM}, []Profile{ProfileAEADAES128GCM}
		}
		sa, err := NewSession(ctx, ca, a)
		if err != nil {
			b.Fatal(err)
		}
		sb, err := NewSession(ctx, cb, c)
		if err != nil {
			b.Fatal(err)
		}
		pairs[i] = pair{a: sa, b: sb, h: RTPHeader{SSRC: uint32(i + 1)}}
	}
	defer func() {
		for _, p := range pairs {
			p.a.Close()
			p.b.Close()
		}
	}()
	payload := make([]byte, 160)
	runtime.GC()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	i := 0
	sent := 0
	for b.Loop() {
		p := &pairs[i]
		if err := p.a.WriteRTP(p.h, payload); err != nil {
			b.Fatal(err)
		}
		sent++
		p.h.SequenceNumber++
		p.h.Timestamp += 160
		if i++; i == n {
			i = 0
		}
	}
	b.StopTimer()
	if got != sent {
		b.Fatalf("OnRTP got %d of %d packets: %+v", got, sent, pairs[0].b.Stats())
	}
}
