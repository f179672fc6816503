package securecall_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/cfgcheck"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/internal/stunturn"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// loopbackICE keeps every test on 127.0.0.1.
func loopbackICE() ice.Config {
	return ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
}

// kmsEnv starts a reference KMS with the given devices.
func kmsEnv(t testing.TB, ids ...string) *devkms.Env {
	t.Helper()
	env, err := devkms.Start(context.Background(), t.TempDir(), ids...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

func kmsClient(t testing.TB, env *devkms.Env, id string) *kms.Client {
	t.Helper()
	c, err := env.Client(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pair makes two calls, exchanges offer and answer, waits until both are
// connected, and closes them when the test ends.
func pair(t *testing.T, ca, cb securecall.Config) (a, b *securecall.Call) {
	t.Helper()
	a, b = connectPair(t, ca, cb)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// connectPair is pair for callers that close the calls themselves, such as
// benchmarks that make many. On failure it closes what it made.
func connectPair(tb testing.TB, ca, cb securecall.Config) (a, b *securecall.Call) {
	tb.Helper()
	return connectPairVia(tb, ca, cb, nil, nil)
}

// connectPairVia is connectPair with a signaling path: carry, if set,
// passes each description on (toCallee says which way) and may rewrite it;
// onFail, if set, runs before a failure is reported.
func connectPairVia(tb testing.TB, ca, cb securecall.Config, carry func(desc string, toCallee bool) string, onFail func()) (a, b *securecall.Call) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if carry == nil {
		carry = func(desc string, _ bool) string { return desc }
	}
	fail := func(format string, args ...any) {
		tb.Helper()
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		if onFail != nil {
			onFail()
		}
		tb.Fatalf(format, args...)
	}
	var err error
	if a, err = securecall.New(ca); err != nil {
		fail("caller New: %v", err)
	}
	if b, err = securecall.New(cb); err != nil {
		fail("callee New: %v", err)
	}
	offer, err := a.Offer(ctx)
	if err != nil {
		fail("Offer: %v", err)
	}
	answer, err := b.Answer(ctx, carry(offer, true))
	if err != nil {
		fail("Answer: %v", err)
	}
	if err := a.SetAnswer(ctx, carry(answer, false)); err != nil {
		fail("SetAnswer: %v", err)
	}
	if err := a.Connect(ctx); err != nil {
		fail("caller Connect: %v", err)
	}
	if err := b.Connect(ctx); err != nil {
		fail("callee Connect: %v", err)
	}
	return a, b
}

// sendRecv sends n RTP packets from a to b and checks that b reads them
// all, in order, with their payloads.
func sendRecv(t *testing.T, a, b *securecall.Call, n int) {
	t.Helper()
	pt := a.Codec().PayloadType
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for i := 0; i < n; i++ {
			h, m, err := b.ReadRTP(buf)
			if err != nil {
				errc <- err
				return
			}
			if h.PayloadType != pt || m != 160 || buf[0] != byte(i) {
				errc <- errors.New("packet arrived altered")
				return
			}
		}
		errc <- nil
	}()
	payload := make([]byte, 160)
	// Continue the sequence from earlier calls: SRTP drops a repeated index
	// as a replay.
	base := uint16(a.Stats().RTPPacketsSent) + 100
	for i := 0; i < n; i++ {
		payload[0] = byte(i)
		h := media.RTPHeader{PayloadType: pt, SequenceNumber: base + uint16(i), Timestamp: uint32(160 * i), SSRC: a.SSRC()}
		if err := a.WriteRTP(h, payload); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // loopback UDP drops bursts past the socket buffer
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("packets did not arrive")
	}
}

// rtcpBothWays checks that compound RTCP crosses in both directions,
// within 10 s each way: a report that is not read within 250 ms is sent
// again, since an ICE component 2 that restarted drops RTCP, as a network
// without a route would, until its checks select a pair again (see
// ice.Transport.Restart); the test's own Path wait sees component 1 only.
func rtcpBothWays(t *testing.T, a, b *securecall.Call) {
	t.Helper()
	const resend = 250 * time.Millisecond
	for _, p := range [][2]*securecall.Call{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		// A receiver report with no report blocks: V=2, PT=201, length 1.
		rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 0}
		ssrc := from.SSRC()
		rr[4], rr[5], rr[6], rr[7] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
		buf := make([]byte, 1500)
		sent := 0
		var other []byte // the last RTCP read that was not the report
		for end := time.Now().Add(10 * time.Second); ; {
			if !time.Now().Before(end) {
				t.Fatalf("no RTCP report crossed in 10 s (%d sent; the last other RTCP read: %x)", sent, other)
			}
			if err := from.WriteRTCP(rr); err != nil {
				t.Fatal(err)
			}
			sent++
			if readReport(t, to, buf, rr, time.Now().Add(resend), &other) {
				break
			}
		}
		if sent > 1 {
			t.Logf("RTCP crossed after %d reports", sent)
			// A copy sent earlier may still come: read it now, or a later
			// check would take it for a report of its own.
			readReport(t, to, buf, rr, time.Now().Add(resend), &other)
		}
		if err := to.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
}

// readReport reads RTCP on c until the report rr arrives (true) or until
// the deadline (false), skipping the Call's own reports; the last packet it
// skips is kept in other.
func readReport(t *testing.T, c *securecall.Call, buf, rr []byte, deadline time.Time, other *[]byte) bool {
	t.Helper()
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := c.ReadRTCP(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) == string(rr) {
			return true
		}
		*other = append((*other)[:0], buf[:n]...)
	}
}

func TestCallKeyingModes(t *testing.T) {
	for _, keying := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(keying), func(t *testing.T) {
			ca := securecall.Config{ICE: loopbackICE(), Keying: keying}
			cb := ca
			if keying != sdp.KeyingDTLS {
				env := kmsEnv(t, "alice", "bob")
				alice := kmsClient(t, env, "alice")
				uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
				if err != nil {
					t.Fatal(err)
				}
				ca.KeySource, ca.KeyURI = alice, uri
				cb.KeySource = kmsClient(t, env, "bob")
			}
			a, b := pair(t, ca, cb)
			if a.Keying() != keying || b.Keying() != keying {
				t.Fatalf("keying = %s/%s, want %s", a.Keying(), b.Keying(), keying)
			}
			if a.State() != securecall.StateConnected {
				t.Fatalf("state = %s, want connected", a.State())
			}
			sendRecv(t, a, b, 50)
			sendRecv(t, b, a, 50)
			rtcpBothWays(t, a, b)
			st := b.Stats()
			if st.RTPPacketsReceived < 50 || st.AuthFailures != 0 || st.Keying != keying {
				t.Fatalf("callee stats %+v", st)
			}
			if keying != sdp.KeyingDTLS && st.SendKeyVersion == 0 {
				t.Fatal("kms keying but no key version in use")
			}
			// The far end may be learned as peer-reflexive when its first
			// check arrives before its answer: still the direct path.
			if p := a.Path(); p.Local.Type != sdp.CandidateHost || !p.Direct() {
				t.Fatalf("loopback call took path %+v, want a direct one from a host candidate", p)
			}
		})
	}
}

func TestCallForcedRelay(t *testing.T) {
	srv, err := stunturn.Start(context.Background(), stunturn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := securecall.Config{ICE: loopbackICE()}
	cfg.ICE.Servers = srv.Servers()
	cfg.ICE.Policy = ice.RelayOnly
	a, b := pair(t, cfg, cfg)
	if p := a.Path(); p.Local.Type != sdp.CandidateRelay || p.Relay == "" {
		t.Fatalf("relay-only call took path %+v", p)
	}
	sendRecv(t, a, b, 20)
	sendRecv(t, b, a, 20)
}

// Keys rotate eight times while 50 packets a second flow both ways: nothing
// may fail to decrypt and nothing may be lost. The KMS, both kms.Clients
// and both calls share one fake clock, so each rotation happens when the
// test moves the clock to its scheduled time, and each new version must be
// used for sending from exactly its activation time: not a millisecond
// before, and on the first packet at it. Media flows on real time.
func TestCallRotationUnderLoad(t *testing.T) {
	clk := fakeclock.New(time.Now())
	env := clockKMS(t, clk, t.TempDir(), "alice", "bob")
	alice := watched(clockClient(t, env, clk, "alice", kms.Backoff{}))
	bob := watched(clockClient(t, env, clk, "bob", kms.Backoff{}))
	const every, delay, rotations = time.Minute, kmsserver.DefaultActivationDelay, 8
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	ca := securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri, Media: securecall.MediaConfig{Clock: clk.Now}}
	cb := securecall.Config{ICE: loopbackICE(), KeySource: bob, Media: securecall.MediaConfig{Clock: clk.Now}}
	a, b := pair(t, ca, cb)
	ab, ba := startStream(a, b), startStream(b, a)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(ab.stop)
			close(ba.stop)
		}
	}
	defer stop()
	waitParked(t, clk)
	waitFlow(t, 10, ab, ba)

	versions := map[uint32]bool{a.Stats().SendKeyVersion: true}
	for r := range rotations {
		v := uint32(r + 2)
		if r == 0 {
			clk.Advance(every) // to the first scheduled rotation
		} else {
			clk.Advance(every - delay)
		}
		waitParked(t, clk)
		alice.waitSeen(t, v, 10*time.Second)
		bob.waitSeen(t, v, 10*time.Second)
		clk.Advance(delay - time.Millisecond)
		waitFlow(t, 5, ab, ba)
		if va, vb := a.Stats().SendKeyVersion, b.Stats().SendKeyVersion; va != v-1 || vb != v-1 {
			t.Fatalf("a millisecond before version %d activates, the calls send with %d and %d", v, va, vb)
		}
		clk.Advance(time.Millisecond)
		waitFor(t, 10*time.Second, func() bool { return a.Stats().SendKeyVersion == v && b.Stats().SendKeyVersion == v })
		waitFlow(t, 5, ab, ba)
		versions[a.Stats().SendKeyVersion] = true
	}
	stop()
	settleStreams(ab, ba)
	for name, s := range map[string]*stream{"caller to callee": ab, "callee to caller": ba} {
		if lost, sent := s.lost(); lost != 0 {
			t.Errorf("%s: received %d of %d packets", name, sent-lost, sent)
		}
	}
	a.Close()
	b.Close()
	ab.wg.Wait()
	ba.wg.Wait()
	for _, s := range []*stream{ab, ba} {
		select {
		case err := <-s.errs:
			t.Errorf("media error: %v", err)
		default:
		}
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.AuthFailures+sb.AuthFailures+sa.UnknownMKIDrops+sb.UnknownMKIDrops+sa.ReplaysDropped+sb.ReplaysDropped != 0 {
		t.Errorf("decrypt failures: caller %+v, callee %+v", sa.Stats, sb.Stats)
	}
	if len(versions) != rotations+1 {
		t.Errorf("sent with %d key versions over %d rotations", len(versions), rotations)
	}
}

// After a participant is removed the KMS rotates at once; the removed
// device cannot fetch the new version, so once senders switch to it the
// removed side decrypts nothing more, while the remaining side carries on.
// The KMS, the clients and the calls share a fake clock: the caller keeps
// the old version until the test moves the clock to the new one's
// activation, and switches then.
func TestCallParticipantRemoval(t *testing.T) {
	clk := fakeclock.New(time.Now())
	env := clockKMS(t, clk, t.TempDir(), "alice", "bob")
	alice := watched(clockClient(t, env, clk, "alice", kms.Backoff{}))
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pair(t,
		securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri, Media: securecall.MediaConfig{Clock: clk.Now}},
		securecall.Config{ICE: loopbackICE(), KeySource: clockClient(t, env, clk, "bob", kms.Backoff{}), Media: securecall.MediaConfig{Clock: clk.Now}})
	sendRecv(t, a, b, 10)
	before := a.Stats().SendKeyVersion

	if err := alice.RemoveParticipant(context.Background(), uri, "bob"); err != nil {
		t.Fatal(err)
	}
	// The version made at the removal reaches the caller; until its
	// activation time the caller still sends with the old one, which the
	// removed participant still decrypts.
	alice.waitSeen(t, before+1, 10*time.Second)
	clk.Advance(kmsserver.DefaultActivationDelay - time.Millisecond)
	sendRecv(t, a, b, 5)
	if v := a.Stats().SendKeyVersion; v != before {
		t.Fatalf("the caller sends with version %d a millisecond before the removal's version activates", v)
	}
	clk.Advance(time.Millisecond)

	// Bob keeps reading; every packet he can decrypt is recorded by its
	// sequence number.
	var mu sync.Mutex
	var delivered []uint16
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			h, _, err := b.ReadRTP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			delivered = append(delivered, h.SequenceNumber)
			mu.Unlock()
		}
	}()
	// Alice sends until she has switched to the version made at the
	// removal (the switch happens on the send path, the clock being at its
	// activation time), then 20 packets more. She must switch on her
	// first packet.
	h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SSRC: a.SSRC(), SequenceNumber: 500}
	var first uint16 // the first sequence number under the new version
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; sent < 20; {
		if err := a.WriteRTP(h, make([]byte, 160)); err != nil {
			t.Fatalf("the remaining participant can no longer send: %v", err)
		}
		if a.Stats().SendKeyVersion > before {
			if sent == 0 {
				first = h.SequenceNumber
				if first != 500 {
					t.Fatalf("the caller switched on packet %d, not on the first one at the activation time", first)
				}
			}
			sent++
		} else if time.Now().After(deadline) {
			t.Fatal("the caller never switched to the version made at the removal")
		}
		h.SequenceNumber++
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 5*time.Second, func() bool { return b.Stats().UnknownMKIDrops+b.Stats().AuthFailures >= 20 })
	b.Close()
	<-done
	for _, seq := range delivered {
		if seq >= first {
			t.Fatalf("the removed participant decrypted packet %d, sent under the new key (first %d)", seq, first)
		}
	}
	if a.State() != securecall.StateConnected {
		t.Fatalf("the remaining participant's call is %s", a.State())
	}
}

func TestAnswerUnauthorized(t *testing.T) {
	env := kmsEnv(t, "alice", "bob", "mallory")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := securecall.New(securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m, err := securecall.New(securecall.Config{ICE: loopbackICE(), KeySource: kmsClient(t, env, "mallory")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Answer(ctx, offer)
	if !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("Answer by a non-participant: %v, want kms.ErrForbidden", err)
	}
	if m.State() != securecall.StateNew {
		t.Fatalf("a failed Answer left the call %s", m.State())
	}
}

// The documented defaults of Config: dtls keying without a key source and
// hybrid with one, AEAD_AES_128_GCM first, Opus first, a generated
// certificate, and the caller's Config left as it was.
func TestConfigDefaults(t *testing.T) {
	c, err := securecall.New(securecall.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Keying() != sdp.KeyingDTLS {
		t.Errorf("zero Config keying = %s, want dtls", c.Keying())
	}
	env := kmsEnv(t, "alice")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := securecall.Config{KeySource: alice, KeyURI: uri, ICE: loopbackICE(),
		Profiles: []media.Profile{media.ProfileAES128CMHMACSHA1_80, media.ProfileAEADAES128GCM}, Codecs: sdp.DefaultCodecs()}
	before := cfgcheck.Snapshot(cfg)
	h, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Keying() != sdp.KeyingHybrid {
		t.Errorf("keying with a KeySource = %s, want hybrid", h.Keying())
	}
	if _, err := h.Offer(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A deep snapshot: a copy made with := would share the slices.
	if d := cfgcheck.Diff(before, cfg); d != "" {
		t.Errorf("New or Offer modified the caller's Config: %s", d)
	}
	a, b := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()})
	if got := a.Codec().Name; got != "opus" {
		t.Errorf("default codec = %q, want opus first", got)
	}
	if got := b.Stats().Profile; got != media.ProfileAEADAES128GCM {
		t.Errorf("default profile = %s, want AEAD_AES_128_GCM", got)
	}
}

func TestCallBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := securecall.New(securecall.Config{Keying: sdp.KeyingKMS}); err == nil {
		t.Error("kms keying without a KeySource was accepted")
	}
	if _, err := securecall.New(securecall.Config{Keying: "rot13"}); err == nil {
		t.Error("unknown keying was accepted")
	}
	c, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Answer(ctx, "v=0\r\nnot sdp"); err == nil {
		t.Error("Answer took garbage")
	}
	var se *securecall.StateError
	if err := c.SetAnswer(ctx, validOffer(t)); !errors.As(err, &se) {
		t.Errorf("SetAnswer without an offer: %v, want a StateError", err)
	}
	if err := c.Connect(ctx); !errors.As(err, &se) {
		t.Errorf("Connect before any exchange: %v, want a StateError", err)
	}
	if err := c.WriteRTP(media.RTPHeader{}, nil); !errors.Is(err, securecall.ErrNotConnected) {
		t.Errorf("WriteRTP before connecting: %v", err)
	}
	if c.State() != securecall.StateNew {
		t.Errorf("bad input moved the call to %s", c.State())
	}
	// The call is still usable after all that.
	if _, err := c.Answer(ctx, validOffer(t)); err != nil {
		t.Errorf("Answer after bad input: %v", err)
	}
}

func validOffer(t *testing.T) string {
	t.Helper()
	o, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	offer, err := o.Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return offer
}

func TestCloseIdempotent(t *testing.T) {
	a, _ := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()})
	if err := a.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := a.Close(); !errors.Is(err, securecall.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if cause := context.Cause(a.Context()); !errors.Is(cause, securecall.ErrClosed) {
		t.Fatalf("Context cause after Close: %v", cause)
	}
	if _, _, err := a.ReadRTP(make([]byte, 10)); !errors.Is(err, securecall.ErrClosed) {
		t.Fatalf("ReadRTP after Close: %v", err)
	}
	if a.State() != securecall.StateClosed {
		t.Fatalf("state after Close: %s", a.State())
	}
}

func TestReadDeadline(t *testing.T) {
	a, _ := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()})
	if err := a.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.ReadRTP(make([]byte, 1500)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadRTP past its deadline: %v", err)
	}
}

func TestTrickle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var toA, toB = make(chan sdp.Candidate, 16), make(chan sdp.Candidate, 16)
	ca := securecall.Config{ICE: loopbackICE(), OnCandidate: func(c sdp.Candidate) { toB <- c }}
	cb := securecall.Config{ICE: loopbackICE(), OnCandidate: func(c sdp.Candidate) { toA <- c }}
	a, err := securecall.New(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(cb)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	connected := make(chan error, 2)
	go func() { connected <- a.Connect(ctx) }()
	go func() { connected <- b.Connect(ctx) }()
	for n := 0; n < 2; {
		select {
		case c := <-toA:
			if err := a.AddRemoteCandidate(c.String()); err != nil {
				t.Fatal(err)
			}
		case c := <-toB:
			if err := b.AddRemoteCandidate(c.String()); err != nil {
				t.Fatal(err)
			}
		case err := <-connected:
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	sendRecv(t, a, b, 10)
}

// An ICE restart from either side keeps the call, its keys and its media
// session: packets flow again once the new path is selected.
func TestCallRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()})
	sendRecv(t, a, b, 5)
	for _, p := range [][2]*securecall.Call{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		offer, err := from.Restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := from.Restart(ctx); err == nil {
			t.Fatal("a second Restart while the first awaits its answer was accepted")
		}
		answer, err := to.Answer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		if err := from.SetAnswer(ctx, answer); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() bool { return from.Path().Local.Type != "" && to.Path().Local.Type != "" })
		sendRecv(t, from, to, 5)
		sendRecv(t, to, from, 5)
	}
	if a.State() != securecall.StateConnected || b.State() != securecall.StateConnected {
		t.Fatalf("after restarts: %s and %s", a.State(), b.State())
	}
	// An offer of another party (another session and certificate) is not
	// a restart of this call: the call keeps its DTLS association.
	if _, err := b.Answer(ctx, validOffer(t)); !errors.Is(err, sdp.ErrNegotiation) {
		t.Fatalf("a started call's Answer to another party's offer: %v, want ErrNegotiation", err)
	}
}

// A gateway on the premises runs ICE-Lite; a full endpoint calls it and is
// called by it, and the full side always controls.
func TestCallLite(t *testing.T) {
	full := securecall.Config{ICE: loopbackICE()}
	lite := securecall.Config{ICE: loopbackICE()}
	lite.ICE.Lite = true
	for _, tt := range []struct {
		name       string
		caller, cb securecall.Config
	}{{"full calls lite", full, lite}, {"lite calls full", lite, full}} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t, tt.caller, tt.cb)
			sendRecv(t, a, b, 10)
			sendRecv(t, b, a, 10)
		})
	}
}

// When the path stops answering, a connected call says so, so that the
// application can restart ICE; the call itself is kept.
func TestCallDisconnected(t *testing.T) {
	cfg := securecall.Config{ICE: loopbackICE()}
	cfg.ICE.KeepaliveInterval = 50 * time.Millisecond
	cfg.ICE.DisconnectedTimeout = 300 * time.Millisecond
	var mu sync.Mutex
	var states []securecall.State
	ca := cfg
	ca.OnStateChange = func(s securecall.State) {
		mu.Lock()
		states = append(states, s)
		mu.Unlock()
	}
	a, b := pair(t, ca, cfg)
	sendRecv(t, a, b, 3)
	b.Close() // the far end goes silent
	waitFor(t, 10*time.Second, func() bool { return a.State() == securecall.StateDisconnected })
	mu.Lock()
	got := append([]securecall.State(nil), states...)
	mu.Unlock()
	want := []securecall.State{securecall.StateConnecting, securecall.StateConnected, securecall.StateDisconnected}
	if len(got) < len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("states reported: %v, want %v", got, want)
	}
	if err := a.WriteRTP(media.RTPHeader{SSRC: a.SSRC()}, make([]byte, 10)); err != nil {
		t.Fatalf("a disconnected call refused a write: %v", err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
