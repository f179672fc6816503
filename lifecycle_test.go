package securecall_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// fastFailICE is loopbackICE with timeouts short enough for a test: down
// after 300 ms of silence, failed 500 ms later.
func fastFailICE() ice.Config {
	cfg := loopbackICE()
	cfg.KeepaliveInterval = 50 * time.Millisecond
	cfg.DisconnectedTimeout = 300 * time.Millisecond
	cfg.FailedTimeout = 500 * time.Millisecond
	return cfg
}

// stateLog records the states a call reports.
type stateLog struct {
	mu     sync.Mutex
	states []securecall.State
}

func (l *stateLog) add(s securecall.State) {
	l.mu.Lock()
	l.states = append(l.states, s)
	l.mu.Unlock()
}

func (l *stateLog) get() []securecall.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]securecall.State(nil), l.states...)
}

// A connected call whose peer vanishes goes disconnected and then, past
// the failed timeout, fails for good: Context is cancelled with a cause
// wrapping ice.ErrNoPath, and reads and writes return it.
func TestCallFailsWhenPeerVanishes(t *testing.T) {
	var log stateLog
	ca := securecall.Config{ICE: fastFailICE(), OnStateChange: log.add}
	a, b := pair(t, ca, securecall.Config{ICE: fastFailICE()})
	sendRecv(t, a, b, 3)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := a.ReadRTP(buf); err != nil {
				readErr <- err
				return
			}
		}
	}()
	b.Close() // the far end goes silent, as after SIGKILL
	select {
	case <-a.Context().Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("the call did not fail; state %s", a.State())
	}
	cause := context.Cause(a.Context())
	if !errors.Is(cause, ice.ErrNoPath) {
		t.Fatalf("Context cause %v, want ice.ErrNoPath", cause)
	}
	waitFor(t, 5*time.Second, func() bool { return a.State() == securecall.StateFailed })
	if got := log.get(); len(got) < 4 || got[2] != securecall.StateDisconnected || got[len(got)-1] != securecall.StateFailed {
		t.Fatalf("states reported: %v, want connecting, connected, disconnected, failed", got)
	}
	if err := a.WriteRTP(media.RTPHeader{SSRC: a.SSRC()}, make([]byte, 10)); !errors.Is(err, ice.ErrNoPath) {
		t.Fatalf("WriteRTP on a failed call: %v, want ice.ErrNoPath", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, ice.ErrNoPath) {
			t.Fatalf("ReadRTP on a failed call: %v, want ice.ErrNoPath", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked ReadRTP did not return when the call failed")
	}
	if _, err := a.Restart(context.Background()); err == nil {
		t.Fatal("a failed call restarted")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close of a failed call: %v", err)
	}
	if a.State() != securecall.StateClosed {
		t.Fatalf("after Close: %s", a.State())
	}
}

// layerPrefix matches a package prefix such as "ice: " or "ICE: ".
var layerPrefix = regexp.MustCompile(`(?i)\b(securecall|ice|media|kms|sdp): `)

// checkOnePrefix fails when an error names one layer twice, as
// "securecall: ICE: ice: no working path" did.
func checkOnePrefix(t *testing.T, err error) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range layerPrefix.FindAllStringSubmatch(err.Error(), -1) {
		l := strings.ToLower(m[1])
		if seen[l] {
			t.Errorf("error names the %s layer twice: %q", l, err)
		}
		seen[l] = true
	}
}

// One prefix per layer in the errors a failed connect and a failed path
// produce.
func TestErrorPrefixOnce(t *testing.T) {
	ctx := context.Background()
	cfg := securecall.Config{ICE: loopbackICE()}
	cfg.ICE.ConnectTimeout = 300 * time.Millisecond
	// A call that cannot reach its peer.
	c, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := d.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := c.Answer(ctx, offer); err != nil {
		t.Fatal(err)
	}
	err = c.Connect(ctx)
	if !errors.Is(err, ice.ErrNoPath) {
		t.Fatalf("Connect to a vanished peer: %v, want ice.ErrNoPath", err)
	}
	checkOnePrefix(t, err)
	checkOnePrefix(t, context.Cause(c.Context()))
}

// A restart offer that no answer meets rolls back by itself after
// RestartTimeout; Rollback does so at once. Either way the call can
// restart again, and the peer's answer to the new offer connects it.
func TestRestartUnanswered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca := securecall.Config{ICE: loopbackICE(), RestartTimeout: 200 * time.Millisecond}
	a, b := pair(t, ca, securecall.Config{ICE: loopbackICE()})
	sendRecv(t, a, b, 3)

	lost, err := a.Restart(ctx) // lost on the way: never reaches b
	if err != nil {
		t.Fatal(err)
	}
	if s := a.SignalingState(); s != securecall.SignalingHaveLocalOffer {
		t.Fatalf("after Restart: %s", s)
	}
	waitFor(t, 5*time.Second, func() bool { return a.SignalingState() == securecall.SignalingStable })

	second, err := a.Restart(ctx)
	if err != nil {
		t.Fatalf("Restart after an unanswered one timed out: %v", err)
	}
	if err := a.Rollback(); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if err := a.Rollback(); err == nil {
		t.Fatal("a second Rollback with nothing pending was accepted")
	}
	// An answer to a rolled-back offer is refused.
	late, err := b.Answer(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	var se *securecall.StateError
	if err := a.SetAnswer(ctx, late); !errors.As(err, &se) {
		t.Fatalf("SetAnswer to a rolled-back offer: %v, want a StateError", err)
	}

	offer, err := a.Restart(ctx)
	if err != nil {
		t.Fatalf("Restart after Rollback: %v", err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
	sendRecv(t, a, b, 5)
	sendRecv(t, b, a, 5)
	_ = lost
}

// signal is one message of the test's signaling channel.
type signal struct {
	offer  bool
	text   string
	sender string
}

// Both ends follow the Config advice literally and restart at once: the
// glare is resolved (the call's original offerer wins, the other end
// rolls back and answers) and media flows again both ways.
func TestRestartGlare(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, securecall.Config{ICE: loopbackICE()}, securecall.Config{ICE: loopbackICE()})
	sendRecv(t, a, b, 3)

	calls := map[string]*securecall.Call{"a": a, "b": b}
	peer := map[string]string{"a": "b", "b": "a"}
	inbox := map[string]chan signal{"a": make(chan signal, 4), "b": make(chan signal, 4)}
	var mu sync.Mutex
	var glareCount int
	// Each end's application: on "disconnected" restart and send the
	// offer; answer offers; take answers. Glare refusals are dropped.
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 8)
	for name, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			offer, err := c.Restart(ctx)
			if err != nil {
				errs <- err
				return
			}
			inbox[peer[name]] <- signal{offer: true, text: offer, sender: name}
			for {
				select {
				case m := <-inbox[name]:
					if m.offer {
						answer, err := c.Answer(ctx, m.text)
						if errors.Is(err, securecall.ErrGlare) {
							mu.Lock()
							glareCount++
							mu.Unlock()
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						inbox[m.sender] <- signal{text: answer, sender: name}
						continue
					}
					if err := c.SetAnswer(ctx, m.text); err != nil {
						errs <- err
					}
					return
				case <-time.After(3 * time.Second):
					// The loser answered and has no answer of its own to
					// wait for.
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("restart at both ends: %v", err)
	}
	if glareCount != 1 {
		t.Fatalf("%d glare refusals, want exactly 1 (by the winning end)", glareCount)
	}
	for _, c := range calls {
		if s := c.SignalingState(); s != securecall.SignalingStable {
			t.Fatalf("after the glare: signaling %s", s)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
	sendRecv(t, a, b, 5)
	sendRecv(t, b, a, 5)
}

// Glare before the call has started: both ends offer at once, and the one
// with the larger session id wins on both sides.
func TestOfferGlare(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	oa, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := b.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ansA, errA := a.Answer(ctx, ob)
	ansB, errB := b.Answer(ctx, oa)
	if errors.Is(errA, securecall.ErrGlare) == errors.Is(errB, securecall.ErrGlare) {
		t.Fatalf("glare: a %v, b %v; want exactly one ErrGlare", errA, errB)
	}
	winner, loser, answer := a, b, ansB
	if errA == nil {
		winner, loser, answer = b, a, ansA
	} else if errB != nil {
		t.Fatalf("the loser failed to answer: %v", errB)
	}
	if err := winner.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*securecall.Call{winner, loser} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sendRecv(t, winner, loser, 5)
	sendRecv(t, loser, winner, 5)
}

// A retransmitted offer (same o= version) gets the same answer and changes
// nothing: no ICE restart, the path stays. A restart offer sent twice is
// answered once. A new version with the same ICE credentials is no
// restart either.
func TestAnswerRetransmittedOffer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
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
	again, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("retransmitted offer: %v", err)
	}
	if again != answer {
		t.Fatal("a retransmitted offer got another answer")
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatalf("retransmitted answer: %v", err)
	}
	for _, c := range []*securecall.Call{a, b} {
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sendRecv(t, a, b, 3)
	path := b.Path()
	if again, err := b.Answer(ctx, offer); err != nil || again != answer {
		t.Fatalf("retransmitted offer after connecting: %v", err)
	}
	sendRecv(t, a, b, 3)
	if b.Path() != path {
		t.Fatalf("a retransmitted offer changed the path: %+v -> %+v", path, b.Path())
	}

	// The same offer with a new o= version and the same ICE credentials:
	// answered, no ICE restart.
	reoffer := bumpVersion(t, offer)
	ra, err := b.Answer(ctx, reoffer)
	if err != nil {
		t.Fatalf("re-offer without restart: %v", err)
	}
	if iceUfrag(t, ra) != iceUfrag(t, answer) {
		t.Fatal("a re-offer with the same ICE credentials restarted ICE")
	}
	sendRecv(t, a, b, 3)

	restart, err := a.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := b.Answer(ctx, restart)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.Answer(ctx, restart)
	if err != nil || r2 != r1 {
		t.Fatalf("retransmitted restart offer: %v, same answer %v", err, r2 == r1)
	}
	if iceUfrag(t, r1) == iceUfrag(t, answer) {
		t.Fatal("a restart offer did not restart ICE")
	}
	if err := a.SetAnswer(ctx, r1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return a.Path().Local.Type != "" && b.Path().Local.Type != "" })
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}

func iceUfrag(t *testing.T, desc string) string {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range d.Media {
		if m.ICE.Ufrag != "" {
			return m.ICE.Ufrag
		}
	}
	t.Fatal("description without ICE credentials")
	return ""
}

func bumpVersion(t *testing.T, desc string) string {
	t.Helper()
	d, err := sdp.Unmarshal([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	d.Origin.SessionVersion++
	out, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Media silence is reported when the peer stops sending though the path
// is alive, and the end of the silence when it sends again.
func TestMediaSilence(t *testing.T) {
	reports := make(chan bool, 4)
	ca := securecall.Config{ICE: loopbackICE()}
	ca.Media.SilenceTimeout = 200 * time.Millisecond
	ca.Media.OnSilence = func(silent bool) { reports <- silent }
	a, b := pair(t, ca, securecall.Config{ICE: loopbackICE()})
	select {
	case s := <-reports:
		if !s {
			t.Fatal("first report is not silence")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no silence report")
	}
	sendRecv(t, b, a, 3)
	select {
	case s := <-reports:
		if s {
			t.Fatal("media resumed but silence reported")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report of media resuming")
	}
	if a.State() != securecall.StateConnected {
		t.Fatalf("silence changed the state: %s", a.State())
	}
}

// A sender that reaches its key's packet budget asks the KMS for a
// rotation itself (kms.Client is a media.KeyRotator), and both ends move
// to the new version without the application doing anything but
// configuring the budget. The KMS, the clients and the calls share a fake
// clock: the new version is used from its activation time, when the test
// moves the clock there, not before.
func TestKeyBudgetRotates(t *testing.T) {
	clk := fakeclock.New(time.Now())
	env := clockKMS(t, clk, t.TempDir(), "alice", "bob")
	alice := watched(clockClient(t, env, clk, "alice", kms.Backoff{}))
	bob := watched(clockClient(t, env, clk, "bob", kms.Backoff{}))
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan media.RotationRequest, 4)
	ca := securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri}
	ca.Media.MaxPackets = 20
	ca.Media.OnRotationNeeded = func(r media.RotationRequest) { asked <- r }
	ca.Media.Clock = clk.Now
	a, b := pair(t, ca, securecall.Config{ICE: loopbackICE(), KeySource: bob, Media: securecall.MediaConfig{Clock: clk.Now}})
	v1 := a.Stats().SendKeyVersion
	sendRecv(t, a, b, 25)
	select {
	case r := <-asked:
		if r.Reason != media.RotationPacketBudget || r.Version != v1 {
			t.Fatalf("rotation request %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no rotation request at the packet budget")
	}
	// The KMS's new version reaches both ends and activates after the
	// activation delay: the sender keeps the old one until then.
	alice.waitSeen(t, v1+1, 10*time.Second)
	bob.waitSeen(t, v1+1, 10*time.Second)
	clk.Advance(kmsserver.DefaultActivationDelay - time.Millisecond)
	sendRecv(t, a, b, 5)
	if v := a.Stats().SendKeyVersion; v != v1 {
		t.Fatalf("the sender moved to version %d a millisecond before its activation", v)
	}
	clk.Advance(time.Millisecond)
	sendRecv(t, a, b, 5)
	if v := a.Stats().SendKeyVersion; v != v1+1 {
		t.Fatalf("the sender sends with version %d at the activation of version %d", v, v1+1)
	}
	sendRecv(t, a, b, 10)
	if st := b.Stats(); st.AuthFailures != 0 || st.UnknownMKIDrops != 0 {
		t.Fatalf("receiver drops across the budget rotation: %+v", st)
	}
}

// Every documented default of Config and MediaConfig names the constant
// it uses, and the constants are those of the packages underneath.
func TestConfigDocumentedDefaults(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	for _, w := range strings.Fields(string(src)) {
		if w != "//" {
			words = append(words, w)
		}
	}
	doc := strings.Join(words, " ")
	for _, want := range []string{
		"defaults to DefaultRestartTimeout (10 s)",
		"defaults to media.DefaultMaxPackets (2^30)",
		"defaults to media.DefaultRotationGrace (5 s)",
		"defaults to media.DefaultReplayWindow (128)",
		"defaults to media.DefaultHandshakeTimeout (15 s)",
		"KeyLifetime time.Duration",
		"If zero, defaults to off",
		"so that a rotation needs no wall-time wait. If nil, defaults to time.Now. Clock func() time.Time",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("config.go does not say %q", want)
		}
	}
	if securecall.DefaultRestartTimeout != 10*time.Second || media.DefaultMaxPackets != 1<<30 ||
		media.DefaultRotationGrace != 5*time.Second || media.DefaultReplayWindow != 128 ||
		media.DefaultHandshakeTimeout != 15*time.Second {
		t.Error("a default constant disagrees with its documentation")
	}
	// A replay window the media session cannot use is refused by New.
	for _, w := range []uint{1, media.HeldPacketLimit, 1<<15 + 1} {
		cfg := securecall.Config{}
		cfg.Media.ReplayWindow = w
		if c, err := securecall.New(cfg); err == nil {
			c.Close()
			t.Errorf("New took a replay window of %d", w)
		}
	}
}

// An offer retransmitted while the first copy is still being answered
// gets the same answer once that is done, not an error or a second ICE
// session.
func TestAnswerRetransmittedWhileAnswering(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := securecall.New(securecall.Config{ICE: loopbackICE()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan string, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			ans, err := b.Answer(ctx, offer)
			answers <- ans
			errs <- err
		}()
	}
	first, second := <-answers, <-answers
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent copies of one offer: %v", err)
		}
	}
	if first != second {
		t.Fatal("two copies of one offer got different answers")
	}
	if err := a.SetAnswer(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sendRecv(t, a, b, 3)
}
