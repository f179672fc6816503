package ice

import (
	"encoding/binary"
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
	e := newLoopbackEndpoint(t)
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
	now := time.Now()
	stepOnly(cs, now)
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

// stopConsent, which a parked Transport's Close calls, waits for a report
// in progress and none runs after it returned: the Transport's
// OnConnectivity and OnFailed are not called once Close has returned, as
// with pion's agent (whose GracefulClose waits for its notifier). A
// session that fails stops itself and still reports the failure.
func TestEndpointConsentNoReportAfterStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.detach(u)
	entered, release := make(chan struct{}), make(chan struct{})
	var reports []pice.ConnectionState
	var stopReturned bool
	newSession := func(ufrag string, report func(pice.ConnectionState)) *consentSession {
		return &consentSession{
			use: u, localUfrag: ufrag, localPwd: "localpasswordlocalpassword",
			remoteUfrag: "remote", remotePwd: "remotepasswordremotepassword",
			remote: netip.MustParseAddrPort("127.0.0.1:9"), lite: true,
			disc: time.Second, fail: time.Second, report: report,
		}
	}
	cs := newSession("a", func(s pice.ConnectionState) {
		reports = append(reports, s)
		if stopReturned {
			t.Errorf("report %v after stopConsent returned", s)
		}
		if len(reports) == 1 {
			close(entered)
			<-release
		}
	})
	now := time.Now()
	stepOnly(cs, now)
	stepped := make(chan struct{})
	go func() {
		defer close(stepped)
		e.consentStep(cs, now.Add(1500*time.Millisecond)) // Disconnected
	}()
	<-entered
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.stopConsent(cs)
	}()
	select {
	case <-stopped:
		t.Error("stopConsent returned while a report was in progress")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-stepped
	<-stopped
	stopReturned = true
	e.consentStep(cs, now.Add(time.Hour)) // would report Failed
	if len(reports) != 1 || reports[0] != pice.ConnectionStateDisconnected {
		t.Errorf("reports %v, want only Disconnected", reports)
	}

	// A session whose peer stays silent fails: it stops itself and the
	// failure is still reported, once.
	var failed []pice.ConnectionState
	fs := newSession("b", func(s pice.ConnectionState) { failed = append(failed, s) })
	stepOnly(fs, now)
	e.consentStep(fs, now.Add(1500*time.Millisecond))
	e.consentStep(fs, now.Add(3*time.Second))
	e.consentStep(fs, now.Add(4*time.Second))
	if len(failed) != 2 || failed[1] != pice.ConnectionStateFailed {
		t.Errorf("reports %v, want Disconnected then Failed, once", failed)
	}
	e.stopConsent(fs)
}

// stepOnly readies cs, as startConsent does, for a test that steps it
// itself: the Endpoint does not hold it, so that its consent goroutine,
// which steps the sessions it holds every consentTick, does not step cs
// at the same time (and at the real time).
func stepOnly(cs *consentSession, now time.Time) {
	cs.heard.Store(now.UnixNano())
	cs.next = now
}

// One call's unanswered STUN requests (a peer that offers many candidates
// and answers none) cost that call its own oldest transactions, never
// another call's: the Endpoint remembers at most maxPendingTx per call.
func TestEndpointPendingBoundedPerCall(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	request := func(u *endpointUse, i int) [12]byte {
		var id [12]byte
		binary.BigEndian.PutUint64(id[:], uint64(i))
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:2], 0x0001) // Binding request
		binary.BigEndian.PutUint32(b[4:8], 0x2112a442)
		copy(b[8:], id[:])
		e.notePending(u.currentSTUN(), b)
		return id
	}
	quiet, _ := e.attach(nil, nil, nil)
	quiet.GetConn("quiet", nil)
	noisy, _ := e.attach(nil, nil, nil)
	noisy.GetConn("noisy", nil)
	mine := request(quiet, 1<<40)
	for i := range 20 * maxPendingTx {
		request(noisy, i)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.pending[mine]; !ok {
		t.Fatal("another call's unanswered requests made the Endpoint forget this call's transaction")
	}
	if n := len(e.pending); n > 2*maxPendingTx {
		t.Fatalf("%d transactions remembered for 2 calls, want at most %d", n, 2*maxPendingTx)
	}
}

// A parked Transport's consent checks MESSAGE-INTEGRITY once per STUN
// message: the Endpoint verifies a request (with the local password) and
// a response (with the peer's) before it hands either to the session,
// which must not verify it again (one HMAC-SHA1, about 1 µs, per check).
func TestEndpointConsentVerifiesOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	var macs int
	e.macChecked = func() { macs++ } // the reader sees no traffic: only this goroutine dispatches
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.detach(u)
	peer := silentPeer(t)
	var heard int
	cs := &consentSession{
		use: u, localUfrag: "local", localPwd: "localpasswordlocalpassword",
		remoteUfrag: "peer", remotePwd: "remotepasswordremotepassword",
		remote: peer, lite: true, disc: time.Hour, fail: time.Hour,
		report: func(pice.ConnectionState) { heard++ },
	}
	e.startConsent(cs)
	defer e.stopConsent(cs)

	cs.heard.Store(0)
	e.dispatchSTUN(nominatingRequest(t, [12]byte{1}, cs.localUfrag, cs.localPwd), peer)
	if cs.heard.Load() == 0 {
		t.Fatal("the peer's signed request did not count as consent")
	}
	if macs != 1 {
		t.Errorf("%d MESSAGE-INTEGRITY verifications for one consent request, want 1", macs)
	}

	macs = 0
	cs.heard.Store(0)
	id := [12]byte{2}
	e.mu.Lock()
	e.addPendingLocked(id, pendingTx{cs: cs})
	e.mu.Unlock()
	e.dispatchSTUN(bindingSuccess(t, id, peer, cs.remotePwd), peer)
	if cs.heard.Load() == 0 {
		t.Fatal("the peer's signed response did not count as consent")
	}
	if macs != 1 {
		t.Errorf("%d MESSAGE-INTEGRITY verifications for one consent response, want 1", macs)
	}
}

// TestConsentQueueStepsOnlyDue checks that the consent goroutine's queue
// steps a parked Transport only when it has a check or a silence due, not
// at every tick, while checks still go out every KeepaliveInterval and a
// silent peer is still reported at the first tick past
// DisconnectedTimeout (and Failed past FailedTimeout more), as when every
// session was stepped at every tick. 200 sessions over 10.2 s of ticks
// (simulated time), 190 of whose peers answer each check at once.
func TestConsentQueueStepsOnlyDue(t *testing.T) {
	e := newLoopbackEndpoint(t)
	defer e.Close()
	e.out = discardBatch{} // the checks go nowhere
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.detach(u)
	const sessions, silentN, ticks = 200, 10, 102
	const interval, disc, fail = 2 * time.Second, 5 * time.Second, 5 * time.Second
	start := time.Now()
	type report struct {
		s  pice.ConnectionState
		at time.Duration
	}
	var now time.Time
	reports := make([][]report, sessions)
	var q consentQueue
	all := make([]*consentSession, sessions)
	for i := range all {
		cs := &consentSession{
			use: u, localUfrag: "local", localPwd: "localpasswordlocalpassword",
			remoteUfrag: "remote", remotePwd: "remotepasswordremotepassword",
			remote:   netip.MustParseAddrPort("127.0.0.1:9"),
			interval: interval, disc: disc, fail: fail,
			report: func(s pice.ConnectionState) { reports[i] = append(reports[i], report{s, now.Sub(start)}) },
		}
		stepOnly(cs, start)
		cs.next = start.Add(jitter(interval))
		q.add(cs)
		all[i] = cs
	}
	steps := 0
	for k := 1; k <= ticks; k++ {
		now = start.Add(time.Duration(k) * consentTick)
		sentBefore := e.Stats().Sent
		steps += q.run(now, e.consentStep)
		if e.Stats().Sent > sentBefore {
			// The answering peers answer at once: consent heard now.
			for _, cs := range all[silentN:] {
				cs.heard.Store(now.UnixNano())
			}
		}
	}
	// About a check per 2 s for each session, and the silent ones at every
	// tick once disconnected: some 1,500 steps, against 20,400 for a step
	// of every session at every tick.
	t.Logf("%d steps, %d checks sent", steps, e.Stats().Sent)
	if steps > sessions*ticks/5 {
		t.Fatalf("%d steps for %d sessions over %d ticks, want at most %d", steps, sessions, ticks, sessions*ticks/5)
	}
	if sent, want := e.Stats().Sent, uint64(sessions*4); sent < want {
		t.Fatalf("%d checks sent by %d sessions in %v, want at least %d (one per %v)", sent, sessions, ticks*consentTick, want, interval)
	}
	for i, rs := range reports {
		if i >= silentN {
			if len(rs) != 0 {
				t.Fatalf("session %d, whose peer answers, reported %v", i, rs)
			}
			continue
		}
		want := []report{{pice.ConnectionStateDisconnected, disc + consentTick}, {pice.ConnectionStateFailed, disc + fail + consentTick}}
		if len(rs) != 2 || rs[0] != want[0] || rs[1] != want[1] {
			t.Fatalf("silent session %d reported %v, want %v", i, rs, want)
		}
	}
	if len(q.h) != sessions-silentN {
		t.Fatalf("%d sessions queued, want the %d that did not fail", len(q.h), sessions-silentN)
	}
}

// TestConsentWakeIsWallClock: every wake time the consent queue orders by
// has no monotonic reading (the silence deadline, from heard, has none), so
// that time.Before compares every pair of sessions by the same clock and
// the heap's order holds even when the wall clock is stepped.
func TestConsentWakeIsWallClock(t *testing.T) {
	now := time.Now() // with a monotonic reading
	cs := &consentSession{interval: 2 * time.Second, disc: 5 * time.Second, fail: 5 * time.Second}
	cs.heard.Store(now.UnixNano())
	check := func(what string, w time.Time) {
		t.Helper()
		if w != w.Round(0) {
			t.Errorf("%s: wake %v carries a monotonic reading", what, w)
		}
		if !w.After(now) {
			t.Errorf("%s: wake %v is not after the step at %v", what, w, now)
		}
	}
	cs.next = now.Add(time.Second)
	check("next check first", cs.nextWake(now))
	cs.next = now.Add(time.Hour)
	check("silence first", cs.nextWake(now))
	cs.heard.Store(now.Add(-time.Hour).UnixNano())
	cs.next = now.Add(-time.Second)
	check("both past", cs.nextWake(now))
	cs.down = true
	check("disconnected", cs.nextWake(now))
}
