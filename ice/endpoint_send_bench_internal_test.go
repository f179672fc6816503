package ice

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv4"
)

// discardBatch stands in for an Endpoint's socket on the send side and
// sends nothing, so that a benchmark over it measures the Endpoint's own
// work per datagram.
type discardBatch struct{ batchConn }

func (discardBatch) WriteBatch(ms []ipv4.Message, _ int) (int, error) { return len(ms), nil }

// BenchmarkEndpointSendQueue is the cost per datagram of an Endpoint's send
// queue when a process writes to many Endpoints in turn, as a gateway's
// media loop writes a tick's frames to each Endpoint in one Batch: each
// operation is one datagram of 172 bytes (a 20 ms PCMU frame in SRTP),
// queued and sent (to a socket stand-in that sends nothing) in a Batch of
// 24 per Endpoint. With endpoints=1 the queue stays in the cache; with
// many, an Endpoint's queue is cold unless the Endpoints share their
// queue memory.
func BenchmarkEndpointSendQueue(b *testing.B) {
	for _, n := range []int{1, 512} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			const perBatch = 24
			eps := make([]*Endpoint, n)
			for i := range eps {
				e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
				if err != nil {
					b.Fatal(err)
				}
				e.out = discardBatch{}
				eps[i] = e
				defer e.Close()
			}
			pkt := make([]byte, 172)
			dsts := make([]netip.AddrPort, perBatch)
			for i := range dsts {
				dsts[i] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(20000+i))
			}
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				e := eps[(i/perBatch)%n]
				e.Batch(func() {
					for j := 0; j < perBatch && i < b.N; j++ {
						if err := e.write(pkt, dsts[j], nil); err != nil {
							b.Fatal(err)
						}
						i++
					}
				})
			}
		})
	}
}
