package ice

import (
	"runtime"
	"testing"
)

// BenchmarkEndpointHandoff is the per-datagram cost of handing a call's
// datagram from the Endpoint's reader to the call's reader (the media
// session's ReadRTP goroutine), as the Endpoint does it: deliver on one
// goroutine, Read on another. stream: the reader drains a queue that the
// sender keeps full; pingpong: one datagram at a time, the reader blocked
// each time, so every datagram pays a wake-up (as at 20 ms per call).
func BenchmarkEndpointHandoff(b *testing.B) {
	pkt := make([]byte, 200)
	b.Run("stream", func(b *testing.B) {
		c := newEndpointConn(&endpointUse{})
		done := make(chan struct{})
		b.ReportAllocs()
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for range b.N {
				if _, err := c.Read(buf); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		for range b.N {
			for !c.deliver(pkt) {
				runtime.Gosched()
			}
		}
		<-done
	})
	b.Run("pingpong", func(b *testing.B) {
		c := newEndpointConn(&endpointUse{})
		ack := make(chan struct{})
		done := make(chan struct{})
		b.ReportAllocs()
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for range b.N {
				if _, err := c.Read(buf); err != nil {
					b.Error(err)
					return
				}
				ack <- struct{}{}
			}
		}()
		for range b.N {
			c.deliver(pkt)
			<-ack
		}
		<-done
	})
}
