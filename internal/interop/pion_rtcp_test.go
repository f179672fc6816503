package interop

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
)

// TestInteropPionWebRTCReports: in a call with a pion/webrtc/v4
// PeerConnection (default interceptors, which send pion's own reports),
// pion's RTCP reader (RTPSender.ReadRTCP) parses the Call's compound
// reports and finds a report block about the stream pion sends, and the
// Call reads pion's reports about its stream and measures the round trip
// from them.
func TestInteropPionWebRTCReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	pc, err := newPionEndpoint(pionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	call, err := newCallEndpoint(securecall.Config{ICE: loopbackICE(), RTCP: media.RTCPConfig{Interval: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	if err := connectPair(ctx, call, pc); err != nil {
		t.Fatal(err)
	}
	senders := pc.pc.GetSenders()
	if len(senders) != 1 {
		t.Fatalf("pion has %d senders", len(senders))
	}
	pionSSRC := uint32(senders[0].GetParameters().Encodings[0].SSRC)

	receivers := pc.pc.GetReceivers()
	if len(receivers) != 1 {
		t.Fatalf("pion has %d receivers", len(receivers))
	}

	// pion hands each packet of a compound to the reader of the SSRC it
	// is about: report blocks on our stream to its sender, our SR and
	// SDES to its receiver.
	var mu sync.Mutex
	var block *rtcp.ReceptionReport
	var cname string
	var sr *rtcp.SenderReport
	var readers sync.WaitGroup
	read := func(readRTCP func() ([]rtcp.Packet, error)) {
		defer readers.Done()
		for {
			pkts, err := readRTCP()
			if err != nil {
				return
			}
			mu.Lock()
			for _, p := range pkts {
				var reports []rtcp.ReceptionReport
				switch r := p.(type) {
				case *rtcp.ReceiverReport:
					reports = r.Reports
				case *rtcp.SenderReport:
					reports = r.Reports
					if r.SSRC == call.SSRC() {
						sr = r
					}
				case *rtcp.SourceDescription:
					for _, c := range r.Chunks {
						for _, it := range c.Items {
							if it.Type == rtcp.SDESCNAME && c.Source == call.SSRC() {
								cname = it.Text
							}
						}
					}
				}
				for i := range reports {
					if reports[i].SSRC == pionSSRC {
						block = &reports[i]
					}
				}
			}
			mu.Unlock()
		}
	}
	readers.Add(2)
	go read(func() ([]rtcp.Packet, error) { p, _, err := senders[0].ReadRTCP(); return p, err })
	go read(func() ([]rtcp.Packet, error) { p, _, err := receivers[0].ReadRTCP(); return p, err })
	callRecv, pionRecv := startReceiver(ctx, call), startReceiver(ctx, pc)
	for _, e := range []endpoint{call, pc} {
		s := startSender(e)
		defer s.close()
	}
	if err := callRecv.wait(ctx, pionPackets); err != nil {
		t.Fatal(err)
	}
	if err := pionRecv.wait(ctx, pionPackets); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		mu.Lock()
		b, name, ourSR := block, cname, sr
		mu.Unlock()
		q := call.Stats().Quality
		if b != nil && b.LastSenderReport != 0 && ourSR != nil && name != "" && q.RTT > 0 && !q.Remote.At.IsZero() {
			t.Logf("pion read our block %+v, SR %+v, CNAME %q; the Call read pion's: %+v, RTT %v", *b, ourSR, name, q.Remote, q.RTT)
			if b.TotalLost != 0 || ourSR.PacketCount == 0 || q.Remote.Lost != 0 || q.RTT > 50*time.Millisecond {
				t.Errorf("on loopback: block %+v CNAME %q, Call quality %+v", *b, name, q)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no report exchange: pion's block %v, SR %v, CNAME %q; Call quality %+v", b, ourSR, name, q)
		case <-tick.C:
		}
	}
	pc.Close()
	readers.Wait()
}
