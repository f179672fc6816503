package ice

import (
	"net/netip"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
)

// endpointWithUses opens a loopback Endpoint with two uses attached, as
// two parked Transports' (without agents), all closed at cleanup.
func endpointWithUses(t testing.TB) (e *Endpoint, ua, ub *endpointUse) {
	t.Helper()
	e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if ua, err = e.attach(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if ub, err = e.attach(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.detach(ua); e.detach(ub) })
	return e, ua, ub
}

// consentPair is two parked Transports' consent sessions on one Endpoint,
// each the other's peer: a check that a sends is handed over in the
// process, answered by b and its response taken by a, all on the
// goroutine that steps a. a is not registered for the consent goroutine,
// which so never steps it; b is Lite (it only answers) and never fails.
func consentPair(t testing.TB) (*Endpoint, *consentSession, *consentSession) {
	t.Helper()
	e, ua, ub := endpointWithUses(t)
	const pwdA, pwdB = "a's password, 22 chars or more", "b's password, 22 chars or more"
	a := &consentSession{
		use: ua, localUfrag: "ufragA", localPwd: pwdA, remoteUfrag: "ufragB", remotePwd: pwdB,
		remote: e.addr, controlling: true, tieBreaker: 0x0102030405060708, priority: 0x7e0000ff,
		interval: time.Hour, disc: time.Hour, fail: time.Hour, report: func(pice.ConnectionState) {},
	}
	b := &consentSession{
		use: ub, localUfrag: "ufragB", localPwd: pwdB, remoteUfrag: "ufragA", remotePwd: pwdA,
		remote: e.addr, lite: true, tieBreaker: 0x0807060504030201, priority: 0x7e0000fe,
		interval: time.Hour, disc: time.Hour, fail: time.Hour, report: func(pice.ConnectionState) {},
	}
	e.startConsent(b)
	t.Cleanup(func() { e.stopConsent(b) })
	return e, a, b
}

// consentRound has a send one check and reports whether b answered it and
// a took the answer as consent.
func consentRound(e *Endpoint, a, b *consentSession) bool {
	now := time.Now()
	// Just before now, not 0: the consent goroutine steps b, which must
	// not see it silent.
	before := now.UnixNano() - 1
	a.heard.Store(before)
	b.heard.Store(before)
	a.next = now
	e.consentStep(a, now)
	return a.heard.Load() > before && b.heard.Load() > before
}

// A parked Transport's consent, a check every KeepaliveInterval from
// each of a gateway's thousands of calls and its answer, allocates
// nothing: building the check, routing it by ufrag with its
// MESSAGE-INTEGRITY checked, answering it, routing the answer by
// transaction with its MESSAGE-INTEGRITY checked, and taking it.
func TestConsentRoundZeroAllocs(t *testing.T) {
	e, a, b := consentPair(t)
	if !consentRound(e, a, b) {
		t.Fatalf("no consent round trip: %+v", e.Stats())
	}
	before := e.Stats()
	allocs := testing.AllocsPerRun(100, func() {
		if !consentRound(e, a, b) {
			t.Fatalf("no consent round trip: %+v", e.Stats())
		}
	})
	if st := e.Stats(); st.Unrouted != before.Unrouted || st.Malformed != before.Malformed {
		t.Fatalf("rounds dropped datagrams: %+v, before %+v", st, before)
	}
	if allocs > consentAllocBound {
		t.Fatalf("%.2f allocations per consent round (check and answer), want at most %v", allocs, consentAllocBound)
	}
}

// BenchmarkConsentRound is the CPU of one consent round of a parked
// Transport on an Endpoint: the check, its answer and the response, with
// the three HMAC-SHA1s and two FINGERPRINTs they carry or check, but no
// system call (both ends are in the process).
func BenchmarkConsentRound(b *testing.B) {
	e, ca, cb := consentPair(b)
	b.ReportAllocs()
	for b.Loop() {
		if !consentRound(e, ca, cb) {
			b.Fatalf("no consent round trip: %+v", e.Stats())
		}
	}
}
