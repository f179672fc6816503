package ice

import (
	"net"
	"net/netip"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"go.uber.org/goleak"
)

// A parked Transport whose peer never answers keeps sending consent
// checks until it fails: the transactions the Endpoint remembers for them
// stay within its bound.
func TestEndpointConsentPendingBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A peer that never reads: no answer, no ICMP error.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := &consentSession{
		use: u, localUfrag: "local", localPwd: "localpasswordlocalpassword",
		remoteUfrag: "remote", remotePwd: "remotepasswordremotepassword",
		remote:   silent.LocalAddr().(*net.UDPAddr).AddrPort(),
		interval: 0, disc: time.Hour, fail: time.Hour,
		report: func(pice.ConnectionState) {},
	}
	e.startConsent(cs)
	now := time.Now()
	for i := range 1000 {
		e.consentStep(cs, now.Add(time.Duration(i)*time.Millisecond))
	}
	e.mu.Lock()
	n, limit := len(e.pending), maxPendingTx*(len(e.uses)+1)
	e.mu.Unlock()
	if n == 0 || n > limit {
		t.Fatalf("%d transactions remembered after 1,000 unanswered checks, want 1..%d", n, limit)
	}
	e.stopConsent(cs)
	e.detach(u)
}
