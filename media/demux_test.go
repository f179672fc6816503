package media

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		pkt  []byte
		want packetKind
	}{
		{nil, kindOther},
		{[]byte{0, 1}, kindOther},     // STUN
		{[]byte{20, 0}, kindDTLS},     // change_cipher_spec
		{[]byte{22, 0}, kindDTLS},     // handshake
		{[]byte{63, 0}, kindDTLS},     // top of the DTLS range
		{[]byte{64, 0}, kindOther},    // TURN channel
		{[]byte{0x80, 0}, kindRTP},    // PT 0
		{[]byte{0x80, 0xe0}, kindRTP}, // marker + PT 96
		{[]byte{0x80, 200}, kindRTCP}, // SR
		{[]byte{0x81, 201}, kindRTCP}, // RR
		{[]byte{0x80, 223}, kindRTCP}, // top of the RTCP range
		{[]byte{0x80, 224}, kindRTP},  // marker + PT 96 again
		{[]byte{0x80}, kindOther},     // too short to tell
		{[]byte{192, 200}, kindOther}, // version 3
	}
	for _, tt := range tests {
		if got := classify(tt.pkt); got != tt.want {
			t.Errorf("classify(%x) = %d, want %d", tt.pkt, got, tt.want)
		}
	}
}

// TestCrossKindQueues checks that RTCP read by ReadRTP reaches ReadRTCP and
// RTP read by ReadRTCP reaches ReadRTP, in order.
func TestCrossKindQueues(t *testing.T) {
	ca, cb := memPair()
	a, b := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
	sa, sb := mustPair(t, ca, cb, a, b)

	writeSeq(t, sa, 1)
	if err := sa.WriteRTCP(rtcpRR(7)); err != nil {
		t.Fatal(err)
	}
	writeSeq(t, sa, 2)
	if readSeq(t, sb) != 1 || readSeq(t, sb) != 2 {
		t.Fatal("RTP out of order")
	}
	buf := make([]byte, 100)
	n, err := sb.ReadRTCP(buf) // queued while ReadRTP read the transport
	if err != nil || !bytes.Equal(buf[:n], rtcpRR(7)) {
		t.Fatalf("queued RTCP: %x, %v", buf[:n], err)
	}

	writeSeq(t, sa, 3)
	if err := sa.WriteRTCP(rtcpRR(8)); err != nil {
		t.Fatal(err)
	}
	sb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err = sb.ReadRTCP(buf); err != nil || !bytes.Equal(buf[:n], rtcpRR(8)) {
		t.Fatalf("RTCP: %x, %v", buf[:n], err)
	}
	if readSeq(t, sb) != 3 { // queued while ReadRTCP read the transport
		t.Fatal("queued RTP lost")
	}
}

// TestConcurrentReadersAndWriters runs ReadRTP and ReadRTCP on their own
// goroutines on both sides while RTP and RTCP flow both ways (under -race).
func TestConcurrentReadersAndWriters(t *testing.T) {
	ca, cb := udpPair(t)
	a, b := pairConfigs(t, sdp.KeyingHybrid, newFakeKeys(t, 1))
	sa, sb := mustPair(t, ca, cb, a, b)
	const rtpN, rtcpN = 200, 20
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, pair := range [][2]*Session{{sa, sb}, {sb, sa}} {
		src, dst := pair[0], pair[1]
		dst.SetReadDeadline(time.Now().Add(10 * time.Second))
		wg.Add(4)
		go func() {
			defer wg.Done()
			for i := range rtpN {
				if err := src.WriteRTP(RTPHeader{SequenceNumber: uint16(i), SSRC: 1}, make([]byte, 80)); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					time.Sleep(time.Millisecond) // stay inside the socket buffer
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range rtcpN {
				if err := src.WriteRTCP(rtcpRR(1)); err != nil {
					errs <- err
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for range rtpN {
				if _, _, err := dst.ReadRTP(buf); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for range rtcpN {
				if _, err := dst.ReadRTCP(buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v; stats %+v / %+v", err, sa.Stats(), sb.Stats())
	}
}
