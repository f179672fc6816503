package ice

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

// endpointTransport makes a Transport on e that has gathered, so that
// pion's agent holds a connection for its ufrag on e.
func endpointTransport(t testing.TB, e *Endpoint) *Transport {
	t.Helper()
	tr, err := NewTransport(Config{
		Endpoint: e,
		IPFilter: func(netip.Addr) bool { return true },
		Networks: []Network{UDP4},
	})
	if err != nil {
		t.Fatal(err)
	}
	gatherAll(t, tr)
	return tr
}

func gatherAll(t testing.TB, tr *Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Gather(ctx, func(sdp.Candidate) {}); err != nil {
		t.Fatal(err)
	}
}

// silentPeer is a loopback socket that never reads: where the Endpoint's
// answers go, with no ICMP error.
func silentPeer(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// nominatingRequest is a controlling peer's check with USE-CANDIDATE to
// ufrag, signed with pwd (the receiver's password when genuine).
func nominatingRequest(t testing.TB, id [12]byte, ufrag, pwd string) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingRequest,
		stun.NewUsername(ufrag+":peer"), pice.UseCandidate(), pice.AttrControlling(1),
		pice.PriorityAttr(1), stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// bindingSuccess is a success response to the request with id, signed
// with pwd (when genuine, the password the request was signed with: the
// answering agent's).
func bindingSuccess(t testing.TB, id [12]byte, to netip.AddrPort, pwd string) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: to.Addr().AsSlice(), Port: int(to.Port())},
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func (e *Endpoint) routeOf(src netip.AddrPort) *endpointUse {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.byTuple[src]; c != nil {
		return c.use
	}
	return nil
}

func (e *Endpoint) stunFor(ufrag string) *stunConn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byUfrag[ufrag]
}

// Requests with USE-CANDIDATE that fail MESSAGE-INTEGRITY (anyone who read
// the SDP knows the ufrag) do not push the peer's genuine nomination out:
// when pion answers it, the peer's address is claimed at once, before
// pion reports the selected pair. After an ICE restart the Endpoint
// checks nominations with the new password.
func TestEndpointSpoofedNominationsKeepGenuine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	tr := endpointTransport(t, e)
	defer tr.Close()
	peer, spoofer := silentPeer(t), silentPeer(t)

	nominateThenFlood := func(creds Credentials, idByte byte, floodPwd string) {
		t.Helper()
		s := e.stunFor(creds.Ufrag)
		if s == nil {
			t.Fatalf("no connection for ufrag %q on the Endpoint", creds.Ufrag)
		}
		genuine := [12]byte{idByte}
		e.dispatchSTUN(nominatingRequest(t, genuine, creds.Ufrag, creds.Pwd), peer)
		for i := range 4 * len(s.noms) {
			e.dispatchSTUN(nominatingRequest(t, [12]byte{idByte, 1, byte(i)}, creds.Ufrag, floodPwd), spoofer)
		}
		// pion answers the genuine request (pion's agent has no peer
		// yet and answers nothing itself, so the test writes its answer).
		resp := bindingSuccess(t, genuine, peer, creds.Pwd)
		if _, err := s.WriteTo(resp, net.UDPAddrFromAddrPort(peer)); err != nil {
			t.Fatal(err)
		}
		if got := e.routeOf(peer); got != tr.ep {
			t.Fatalf("after %d forged nominations, pion's answer to the genuine one routed the peer's address to %p, want the call %p",
				4*len(s.noms), got, tr.ep)
		}
		if got := e.routeOf(spoofer); got != nil {
			t.Fatalf("the spoofer's address is routed to %p", got)
		}
	}
	nominateThenFlood(tr.LocalCredentials(), 1, "not the password, but long enough")

	old := tr.LocalCredentials()
	if _, err := tr.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	gatherAll(t, tr)
	// The old password no longer nominates.
	nominateThenFlood(tr.LocalCredentials(), 2, old.Pwd)
}

// A retransmitted nomination (the same transaction) takes no other slot:
// the peer's earlier nomination on another pair is still claimed when
// pion answers it.
func TestEndpointNominationRetransmitKeepsSlot(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	tr := endpointTransport(t, e)
	defer tr.Close()
	creds := tr.LocalCredentials()
	s := e.stunFor(creds.Ufrag)
	first, second := silentPeer(t), silentPeer(t)
	a, b := [12]byte{'a'}, [12]byte{'b'}
	e.dispatchSTUN(nominatingRequest(t, a, creds.Ufrag, creds.Pwd), first)
	for range 2 * len(s.noms) {
		e.dispatchSTUN(nominatingRequest(t, b, creds.Ufrag, creds.Pwd), second)
	}
	if _, err := s.WriteTo(bindingSuccess(t, a, first, creds.Pwd), net.UDPAddrFromAddrPort(first)); err != nil {
		t.Fatal(err)
	}
	if got := e.routeOf(first); got != tr.ep {
		t.Fatalf("retransmissions of one nomination pushed out another: the answer to it routed %v to %p, want %p", first, got, tr.ep)
	}
}

// A response that fails MESSAGE-INTEGRITY (forged by someone who saw the
// transaction ID) neither consumes the pending transaction nor claims its
// source: the genuine response that follows still reaches its Transport.
func TestEndpointForgedResponseKeepsPending(t *testing.T) {
	const remotePwd = "the peer's password, 22+ chars"
	forgeries := func(t *testing.T, id [12]byte, to netip.AddrPort) map[string][]byte {
		bare := make([]byte, 20) // a Binding success with no attributes
		copy(bare, []byte{1, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
		copy(bare[8:], id[:])
		return map[string][]byte{
			"no integrity": bare,
			"wrong key":    bindingSuccess(t, id, to, "a guess at the peer's password"),
		}
	}

	t.Run("agent", func(t *testing.T) {
		for name, forged := range forgeries(t, [12]byte{'n'}, netip.MustParseAddrPort("127.0.0.1:1")) {
			t.Run(name, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				e := newLoopbackEndpoint(t)
				defer e.Close()
				tr := endpointTransport(t, e)
				defer tr.Close()
				if err := tr.SetRemote(Peer{Ufrag: "peer", Pwd: remotePwd}); err != nil {
					t.Fatal(err)
				}
				peer, forger := silentPeer(t), silentPeer(t)
				id := [12]byte{'n'}
				e.mu.Lock()
				e.addPendingLocked(id, pendingTx{to: tr.ep.currentSTUN(), use: true}) // pion's nominating request
				e.mu.Unlock()
				e.dispatchSTUN(forged, forger)
				if got := e.routeOf(forger); got != nil {
					t.Errorf("a forged success response to a nomination routed the forger's %v to %p", forger, got)
				}
				e.dispatchSTUN(bindingSuccess(t, id, peer, remotePwd), peer)
				if got := e.routeOf(peer); got != tr.ep {
					t.Fatalf("after a forged response, the genuine one routed %v to %p, want the call %p (Unrouted %d)",
						peer, got, tr.ep, e.Stats().Unrouted)
				}
			})
		}
	})

	t.Run("consent", func(t *testing.T) {
		for name, forged := range forgeries(t, [12]byte{'c'}, netip.MustParseAddrPort("127.0.0.1:1")) {
			t.Run(name, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				e := newLoopbackEndpoint(t)
				defer e.Close()
				u, err := e.attach(nil, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer e.detach(u)
				peer := silentPeer(t)
				cs := &consentSession{
					use: u, localUfrag: "local", localPwd: "localpasswordlocalpassword",
					remoteUfrag: "peer", remotePwd: remotePwd, remote: peer,
					lite: true, disc: time.Hour, fail: time.Hour,
					report: func(pice.ConnectionState) {},
				}
				e.startConsent(cs)
				defer e.stopConsent(cs)
				cs.heard.Store(0)
				id := [12]byte{'c'}
				e.mu.Lock()
				e.addPendingLocked(id, pendingTx{cs: cs})
				e.mu.Unlock()
				e.dispatchSTUN(forged, peer) // its source spoofed
				if cs.heard.Load() != 0 {
					t.Fatal("a forged consent response counted as the peer's consent")
				}
				e.dispatchSTUN(bindingSuccess(t, id, peer, remotePwd), peer)
				if cs.heard.Load() == 0 {
					t.Fatalf("after a forged response, the genuine consent response was not taken (Unrouted %d)", e.Stats().Unrouted)
				}
			})
		}
	})
}

// bindingCheck is a controlling peer's connectivity check to ufrag
// without USE-CANDIDATE, signed with pwd (the receiver's password when
// genuine).
func bindingCheck(t testing.TB, id [12]byte, ufrag, pwd string) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingRequest,
		stun.NewUsername(ufrag+":peer"), pice.AttrControlling(1), pice.PriorityAttr(1),
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// awaitSTUN reads c until a STUN message that want accepts arrives, and
// reports whether one did within d.
func awaitSTUN(t *testing.T, c *net.UDPConn, d time.Duration, want func(*stun.Message) bool) bool {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() == nil && want(m) {
			return true
		}
	}
}

// Binding requests that fail MESSAGE-INTEGRITY (anyone who saw the
// ufrag, which every check carries in clear, can send them) do not reach
// pion's agent, whose STUN queue holds only endpointSTUNQueue: a flood of
// forged checks while the agent is behind (its reader held) leaves room
// for the peer's genuine check, which the agent answers, and the
// forgeries are counted Unrouted.
func TestEndpointForgedChecksKeepGenuine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	tr := endpointTransport(t, e)
	defer tr.Close()
	creds := tr.LocalCredentials()
	const peerPwd = "the peer's password, 22+ chars"
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	spoofer := silentPeer(t)
	if err := tr.AddRemoteCandidate(sdp.Candidate{Foundation: "1", Component: 1, Transport: "udp", Priority: 1,
		Address: "127.0.0.1", Port: peerAddr.Port(), Type: sdp.CandidateHost}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan error, 1)
	go func() {
		_, err := tr.Connect(ctx, Peer{Ufrag: "peer", Pwd: peerPwd}, false)
		connected <- err
	}()
	defer func() { cancel(); <-connected }()
	// The agent's own check to the peer says its checks run: it answers
	// the peer's from now on.
	if !awaitSTUN(t, peer, 5*time.Second, func(m *stun.Message) bool { return m.Type == stun.BindingRequest }) {
		t.Fatal("the agent sent no check to the peer within 5 s")
	}

	s := e.stunFor(creds.Ufrag)
	before := e.Stats()
	flood := 2 * endpointSTUNQueue
	genuine := [12]byte{'g'}
	// pion's reader, back for its next datagram, waits here (it takes at
	// most the one it waits for already): the agent falls behind.
	s.dlMu.Lock()
	for i := range flood {
		e.dispatchSTUN(bindingCheck(t, [12]byte{'f', byte(i)}, creds.Ufrag, "a guess at the local password"), spoofer)
	}
	e.dispatchSTUN(bindingCheck(t, genuine, creds.Ufrag, creds.Pwd), peerAddr)
	s.dlMu.Unlock()
	answered := awaitSTUN(t, peer, 5*time.Second, func(m *stun.Message) bool {
		return m.Type == stun.BindingSuccess && m.TransactionID == genuine
	})
	after := e.Stats()
	if !answered {
		t.Fatalf("the genuine check after %d forged ones was not answered within 5 s (QueueDrops +%d, Unrouted +%d)",
			flood, after.QueueDrops-before.QueueDrops, after.Unrouted-before.Unrouted)
	}
	if n := after.Unrouted - before.Unrouted; n != uint64(flood) {
		t.Errorf("Unrouted +%d for %d forged checks, want +%d", n, flood, flood)
	}
}

// A parked Transport's consent session gets only the checks signed with
// its password too: a forged one is dropped and counted Unrouted before
// the session parses it, and the peer's genuine check is answered.
func TestEndpointForgedConsentChecksUnrouted(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newLoopbackEndpoint(t)
	defer e.Close()
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.detach(u)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	const localPwd = "localpasswordlocalpassword"
	cs := &consentSession{
		use: u, localUfrag: "local", localPwd: localPwd,
		remoteUfrag: "peer", remotePwd: "the peer's password, 22+ chars", remote: peerAddr,
		lite: true, disc: time.Hour, fail: time.Hour,
		report: func(pice.ConnectionState) {},
	}
	e.startConsent(cs)
	defer e.stopConsent(cs)
	before := e.Stats()
	e.dispatchSTUN(bindingCheck(t, [12]byte{'f'}, "local", "a guess at the local password"), peerAddr)
	if st := e.Stats(); st.Unrouted-before.Unrouted != 1 || st.STUN != before.STUN {
		t.Errorf("a forged check to a parked Transport: Unrouted +%d, STUN +%d; want +1, +0",
			st.Unrouted-before.Unrouted, st.STUN-before.STUN)
	}
	genuine := [12]byte{'g'}
	e.dispatchSTUN(bindingCheck(t, genuine, "local", localPwd), peerAddr)
	if !awaitSTUN(t, peer, 5*time.Second, func(m *stun.Message) bool {
		return m.Type == stun.BindingSuccess && m.TransactionID == genuine
	}) {
		t.Fatal("the consent session did not answer the genuine check")
	}
}

// BenchmarkEndpointSTUN is the reader's cost of routing, to its
// Transport's agent, a connectivity check, a nominating one (with
// USE-CANDIDATE) and a response to a pending transaction, each of whose
// MESSAGE-INTEGRITY the Endpoint checks. No agent reads: the
// queue stays full and each delivery is dropped, so that only the routing
// is measured.
func BenchmarkEndpointSTUN(b *testing.B) {
	e, err := ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	u, err := e.attach(nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer e.detach(u)
	const remotePwd = "the peer's password, 22+ chars"
	creds := Credentials{Ufrag: "local", Pwd: "the local password, 22+ chars"}
	u.setLocal(creds)
	u.setPeer(Peer{Ufrag: "peer", Pwd: remotePwd})
	if _, err := u.GetConn(creds.Ufrag, nil); err != nil {
		b.Fatal(err)
	}
	s := u.currentSTUN()
	peer := silentPeer(b)
	check, err := stun.Build(stun.NewTransactionIDSetter([12]byte{1}), stun.BindingRequest,
		stun.NewUsername(creds.Ufrag+":peer"), pice.AttrControlling(1), pice.PriorityAttr(1),
		stun.NewShortTermIntegrity(creds.Pwd), stun.Fingerprint)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.dispatchSTUN(check.Raw, peer)
		}
	})
	b.Run("nominating", func(b *testing.B) {
		req := nominatingRequest(b, [12]byte{2}, creds.Ufrag, creds.Pwd)
		b.ReportAllocs()
		for b.Loop() {
			e.dispatchSTUN(req, peer)
		}
	})
	b.Run("response", func(b *testing.B) {
		id := [12]byte{3}
		resp := bindingSuccess(b, id, peer, remotePwd)
		b.ReportAllocs()
		for b.Loop() {
			e.mu.Lock()
			e.addPendingLocked(id, pendingTx{to: s})
			e.mu.Unlock()
			e.dispatchSTUN(resp, peer)
		}
	})
}

// BenchmarkSTUNIntegrity is the check the Endpoint adds per request and
// per response: one HMAC-SHA1 over a check-sized message, with the HMAC
// its owner keeps (kept) and with one made for the message (fresh), as
// the role-conflict check and the tests do.
func BenchmarkSTUNIntegrity(b *testing.B) {
	const pwd = "the local password, 22+ chars"
	req := nominatingRequest(b, [12]byte{1}, "local", pwd)
	b.Run("kept", func(b *testing.B) {
		var m stunMAC
		b.ReportAllocs()
		for b.Loop() {
			if !m.authentic(req, pwd) {
				b.Fatal("not authentic")
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !authentic(req, pwd) {
				b.Fatal("not authentic")
			}
		}
	})
}
