package securecall_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/sdp"
)

// recordCounter is a slog.Handler at Info that counts the records it
// receives.
type recordCounter struct {
	mu   sync.Mutex
	n    int
	msgs map[string]int
}

func (h *recordCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *recordCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	if h.msgs == nil {
		h.msgs = make(map[string]int)
	}
	h.msgs[r.Message]++
	return nil
}
func (h *recordCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordCounter) WithGroup(string) slog.Handler      { return h }

func (h *recordCounter) count() (int, map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int, len(h.msgs))
	for k, v := range h.msgs {
		m[k] = v
	}
	return h.n, m
}

// About one Info record per unauthenticated datagram reached the
// application's logger. A connected call gets 900 datagrams from a sender
// that knows its address but not its ICE password: binding requests with
// a bad MESSAGE-INTEGRITY, random bytes, and SRTP-looking packets with a
// bad tag. The application's Info logger sees a bounded number of
// records, and the call still works.
func TestSecurityLogFlooding(t *testing.T) {
	const each = 300
	h := &recordCounter{}
	cfg := securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS, Logger: slog.New(h)}
	a, b := pair(t, cfg, cfg)
	before, _ := h.count()
	target := net.UDPAddrFromAddrPort(a.Path().Local.Address)
	c, err := net.DialUDP("udp4", nil, target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range each {
		bad := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("attacker:guess"),
			stun.NewShortTermIntegrity("not-the-password"), stun.Fingerprint)
		garbage := make([]byte, 100)
		_, _ = rand.Read(garbage)
		srtp := make([]byte, 172)
		_, _ = rand.Read(srtp)
		srtp[0], srtp[1] = 0x80, 0x00
		for _, d := range [][]byte{bad.Raw, garbage, srtp} {
			if _, err := c.Write(d); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 49 {
			time.Sleep(10 * time.Millisecond) // let the receiver keep up
		}
	}
	// The datagrams are handled within a few milliseconds on loopback;
	// the exchange below goes after them in the same socket buffers.
	time.Sleep(100 * time.Millisecond)
	sendRecv(t, a, b, 10)
	after, msgs := h.count()
	// pionlog lets at most 10 records per minute through (and a summary),
	// per Transport.
	if n := after - before; n > 11 {
		t.Errorf("%d datagrams from an unauthenticated sender made %d Info records; by message: %v", 3*each, n, msgs)
	}
}

// What the ICE transport refused shows in the call's Stats.
func TestStatsReportICEDrops(t *testing.T) {
	cfg := securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS}
	ca := cfg
	ca.ICE.MaxRemoteCandidates = 1 // the peer's one host candidate
	a, _ := pair(t, ca, cfg)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a.Path().Local.Address))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A binding indication whose only attribute is an empty legacy
	// XOR-MAPPED-ADDRESS.
	bad := []byte{0x00, 0x11, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x80, 0x20, 0x00, 0x00}
	waitFor(t, 2*time.Second, func() bool {
		_, _ = c.Write(bad)
		return a.Stats().ICE.STUNDropped > 0
	})
	// A trickled candidate beyond the limit is dropped without an error.
	if err := a.AddRemoteCandidate("candidate:9 1 udp 1 127.0.0.1 9 typ host"); err != nil {
		t.Fatal(err)
	}
	if got := a.Stats().ICE.CandidatesDropped; got != 1 {
		t.Errorf("CandidatesDropped = %d, want 1", got)
	}
}
