package ice

import (
	"net/netip"
	"testing"

	pice "github.com/pion/ice/v3"

	"github.com/securecall/securecall/sdp"
)

// TestAddRemoteCandidateInAgentOnReturn: a remote candidate is in the
// agent's check list when AddRemoteCandidate returns. pion adds it on a
// goroutine of its own; before the Transport waited for it, the peer's
// first check could arrive first, and the signalled host candidate was
// learnt as prflx instead (the ice Example then printed "host -> prflx").
func TestAddRemoteCandidateInAgentOnReturn(t *testing.T) {
	tr, err := NewTransport(Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") },
		Networks:        []Network{UDP4},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := range 20 {
		c := sdp.Candidate{
			Foundation: "1",
			Component:  1,
			Transport:  "udp",
			Priority:   2130706431,
			Address:    "127.0.0.1",
			Port:       uint16(40000 + i),
			Type:       sdp.CandidateHost,
		}
		if err := tr.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
		cs, err := tr.ag().GetRemoteCandidates()
		if err != nil {
			t.Fatal(err)
		}
		if !hasCandidate(cs, c) {
			t.Fatalf("candidate %d (%s) is not in the agent when AddRemoteCandidate returns; it has %d", i, c, len(cs))
		}
	}
}

func hasCandidate(cs []pice.Candidate, c sdp.Candidate) bool {
	for _, pc := range cs {
		if pc.Address() == c.Address && pc.Port() == int(c.Port) && pc.Type() == pice.CandidateTypeHost {
			return true
		}
	}
	return false
}
