package ice

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall/sdp"
)

// TestRestartWaitsForRTCPComponentGathering: a Gather cut short by its ctx
// while the RTCP component (ICE component 2) still gathers leaves that
// gathering running, as it does on component 1; Restart must wait for it
// on both agents. Before, Restart waited for component 1's only and
// restarted component 2's agent under its running gathering, which ended
// after the restart and left that agent refusing to gather again: the
// next Gather failed with "attempting to gather candidates during
// gathering state".
func TestRestartWaitsForRTCPComponentGathering(t *testing.T) {
	// A STUN server that never answers keeps each gathering running for
	// the STUN gather timeout after its host candidates.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tr, err := NewTransport(Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") },
		Networks:        []Network{UDP4},
		Servers:         []Server{{URL: "stun:" + silent.LocalAddr().String()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.EnableRTCPComponent(); err != nil {
		t.Fatal(err)
	}
	sib := tr.comp.get()

	// Cut the first Gather short once component 2 has a candidate: its
	// agent is then still waiting for the STUN server.
	cut, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	_ = tr.Gather(cut, func(c sdp.Candidate) {
		if c.Component == 2 {
			stop()
		}
	})
	if cut.Err() != context.Canceled {
		t.Fatal("the first Gather ended without a component-2 candidate")
	}
	sib.mu.Lock()
	running := sib.gatherEnd
	sib.mu.Unlock()
	if running == nil {
		t.Fatal("component 2 reports its gathering ended before the STUN timeout")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := tr.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	// Whatever Restart did, the old gathering of component 2 has ended
	// before the next Gather starts.
	select {
	case <-running:
	case <-ctx.Done():
		t.Fatal("component 2's first gathering never ended")
	}
	var comp2 int
	if err := tr.Gather(ctx, func(c sdp.Candidate) {
		if c.Component == 2 {
			comp2++
		}
	}); err != nil {
		t.Fatalf("Gather after Restart: %v", err)
	}
	if comp2 == 0 {
		t.Fatal("Gather after Restart found no component-2 candidate")
	}
}
