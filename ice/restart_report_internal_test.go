package ice

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

// recorder keeps what a Transport reported, in order.
type recorder struct {
	mu     sync.Mutex
	events []string // "up", "down", "path", "failed"
	errs   []error
	ch     chan struct{} // a token per report
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 64)} }

func (r *recorder) add(ev string, err error) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	if err != nil {
		r.errs = append(r.errs, err)
	}
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) config(cfg Config) Config {
	cfg.OnConnectivity = func(up bool) {
		if up {
			r.add("up", nil)
		} else {
			r.add("down", nil)
		}
	}
	cfg.OnPathChange = func(Path) { r.add("path", nil) }
	cfg.OnFailed = func(err error) { r.add("failed", err) }
	return cfg
}

func (r *recorder) snapshot() ([]string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...), append([]error(nil), r.errs...)
}

// since returns the events from the n-th on.
func (r *recorder) since(n int) []string {
	ev, _ := r.snapshot()
	if n > len(ev) {
		return nil
	}
	return ev[n:]
}

// waitFor waits until the events from the n-th on contain want.
func (r *recorder) waitFor(t *testing.T, n int, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, ev := range r.since(n) {
			if ev == want {
				return
			}
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no %q reported within 10 s; reports since: %v", want, r.since(n))
		}
	}
}

// restartOnto restarts a, and b unless it is nil, and connects a's new
// generation with b (a fresh Transport of cfgB when b is nil): b
// controlled, a controlling. It returns b.
func restartOnto(t *testing.T, a, b *Transport, cfgB Config) *Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := a.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh := b == nil
	var cb Credentials
	if fresh {
		b, err = NewTransport(onLoopback(cfgB))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		cb = b.LocalCredentials()
	} else if cb, err = b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var ac, bc []sdp.Candidate
	if err := a.Gather(ctx, func(c sdp.Candidate) { ac = append(ac, c) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Gather(ctx, func(c sdp.Candidate) { bc = append(bc, c) }); err != nil {
		t.Fatal(err)
	}
	for _, c := range bc {
		if err := a.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range ac {
		if err := b.AddRemoteCandidate(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetRemote(Peer{Ufrag: cb.Ufrag, Pwd: cb.Pwd}); err != nil {
		t.Fatal(err)
	}
	if fresh {
		if _, err := b.Connect(ctx, Peer{Ufrag: ca.Ufrag, Pwd: ca.Pwd}, false); err != nil {
			t.Fatal(err)
		}
	} else if err := b.SetRemote(Peer{Ufrag: ca.Ufrag, Pwd: ca.Pwd}); err != nil {
		t.Fatal(err)
	}
	return b
}

// onEndpointCfg is a Config for a Transport on e, parked once connected.
func onEndpointCfg(e *Endpoint, cfg Config) Config {
	cfg.Endpoint = e
	return cfg
}

// When a Restart drops the selected path, the application is told that
// connectivity went down (OnConnectivity(false)) and, once the restart's
// new pair is selected, that it is back (OnConnectivity(true)), with its
// own sockets and parked on an Endpoint alike.
func TestRestartReportsPathDown(t *testing.T) {
	for _, onEP := range []bool{false, true} {
		name := map[bool]string{false: "own sockets", true: "parked on an Endpoint"}[onEP]
		t.Run(name, func(t *testing.T) {
			rec := newRecorder()
			cfgA := rec.config(Config{})
			var e *Endpoint
			if onEP {
				e = newLoopbackEndpoint(t)
				defer e.Close()
				cfgA = onEndpointCfg(e, cfgA)
			}
			a, b := connectedPairOf(t, cfgA, Config{})
			defer a.Close()
			if onEP && !waitFor(5*time.Second, func() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.parked }) {
				t.Fatal("the Transport on the Endpoint did not park")
			}
			n := len(rec.since(0))
			restartOnto(t, a, b, Config{})
			rec.waitFor(t, n, "down")
			rec.waitFor(t, n, "up")
			got := rec.since(n)
			down, up := -1, -1
			for i, ev := range got {
				switch {
				case ev == "down" && down < 0:
					down = i
				case ev == "up" && up < 0:
					up = i
				}
			}
			if down < 0 || down > up {
				t.Fatalf("reports after a Restart that dropped the path: %v, want \"down\" before \"up\"", got)
			}
		})
	}
}

// late reports s as if pion's notifier (or the consent goroutine) of the
// generation before a's last Restart delivered it now.
func late(a *Transport, ag *pice.Agent, s pice.ConnectionState) {
	a.agentState(ag, s)
}

// A report that the previous generation makes after a Restart (pion's
// notifier runs on its own goroutine, and the consent goroutine may have
// passed its check before Restart retired the session) is no report of
// the new generation: it neither fails the Transport nor tells the
// application the path is up or down again.
func TestRestartIgnoresOldPathReports(t *testing.T) {
	t.Run("own sockets", func(t *testing.T) {
		rec := newRecorder()
		a, _ := connectedPairOf(t, rec.config(Config{}), Config{})
		ctx := context.Background()
		ag := a.ag()
		n := len(rec.since(0))
		if _, err := a.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range []pice.ConnectionState{pice.ConnectionStateDisconnected, pice.ConnectionStateConnected, pice.ConnectionStateFailed} {
			late(a, ag, s)
		}
		time.Sleep(100 * time.Millisecond) // reports run on their own goroutine
		for _, ev := range rec.since(n) {
			if ev == "failed" || ev == "up" {
				_, errs := rec.snapshot()
				t.Fatalf("reports after a Restart and the old agent's late Disconnected, Connected, Failed: %v (%v), want no up or failed", rec.since(n), errs)
			}
		}
	})
	t.Run("parked on an Endpoint", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		e := newLoopbackEndpoint(t)
		defer e.Close()
		rec := newRecorder()
		a, b := connectedPairOf(t, onEndpointCfg(e, rec.config(Config{})), Config{})
		defer b.Close()
		defer a.Close()
		if !waitFor(5*time.Second, func() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.consent != nil }) {
			t.Fatal("the Transport on the Endpoint did not park")
		}
		a.mu.Lock()
		old := a.consent
		a.mu.Unlock()
		n := len(rec.since(0))
		if _, err := a.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The old session's report, which passed its check before
		// Restart retired it.
		old.report(pice.ConnectionStateFailed)
		time.Sleep(100 * time.Millisecond)
		for _, ev := range rec.since(n) {
			if ev == "failed" {
				_, errs := rec.snapshot()
				t.Fatalf("the retired consent session's late Failed failed the restarted Transport: %v", errs)
			}
		}
	})
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// pion's state notifier may run behind: here the Disconnected that the
// application's OnConnectivity(false) is still handling holds it while
// pion has failed the old path, the application restarts and the new
// pair is selected. The Failed queued behind the report belongs to the
// path before the restart and must not fail the Transport, which is
// connected on its new path.
func TestRestartOvertakesSelection(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rec := newRecorder()
	cfgA := rec.config(Config{
		KeepaliveInterval:   50 * time.Millisecond,
		DisconnectedTimeout: 300 * time.Millisecond,
		FailedTimeout:       300 * time.Millisecond,
	})
	onConn := cfgA.OnConnectivity
	cfgA.OnConnectivity = func(up bool) {
		onConn(up)
		if !up {
			once.Do(func() { close(entered); <-release })
		}
	}
	a, b := connectedPairOf(t, cfgA, Config{})
	defer a.Close()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	b.Close() // a's path goes silent
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnConnectivity(false) within 10 s of the peer going away")
	}
	// pion fails the silent path (and forgets its pair) while its
	// notifier is held in the report of the disconnection.
	if !waitFor(10*time.Second, func() bool {
		p, err := a.ag().GetSelectedCandidatePair()
		return err == nil && p == nil
	}) {
		t.Fatal("pion did not fail the silent path within 10 s")
	}
	c := restartOnto(t, a, nil, Config{})
	if !waitFor(10*time.Second, func() bool { return a.Path().Local.Type != "" }) {
		t.Fatal("no new path selected within 10 s of the restart")
	}
	n := len(rec.since(0))
	close(release)
	released = true
	rec.waitFor(t, n, "up")
	time.Sleep(200 * time.Millisecond) // whatever else pion's notifier had queued
	if ev, errs := rec.snapshot(); len(errs) > 0 {
		t.Fatalf("reports %v: OnFailed(%v) after the restart's new pair was selected", ev, errs[0])
	}
	cp := c.LocalCredentials()
	if got := a.Path().Remote.Address; got == (netip.AddrPort{}) || a.remote.Ufrag != cp.Ufrag {
		t.Fatalf("path %+v after the restart, want one to the new peer", a.Path())
	}
}

// fakeTimers replaces a Transport's clock seam: it records the timers
// armed and fires them on demand.
type fakeTimers struct {
	mu     sync.Mutex
	armed  []time.Duration
	fns    []func()
	stops  int
	active []bool
}

func (f *fakeTimers) afterFunc(d time.Duration, fn func()) func() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := len(f.fns)
	f.armed = append(f.armed, d)
	f.fns = append(f.fns, fn)
	f.active = append(f.active, true)
	return func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.stops++
		was := f.active[i]
		f.active[i] = false
		return was
	}
}

// fire runs the i-th timer's function, whether or not it was stopped (a
// timer that fired as Stop was called).
func (f *fakeTimers) fire(i int) {
	f.mu.Lock()
	fn := f.fns[i]
	f.active[i] = false
	f.mu.Unlock()
	fn()
}

func (f *fakeTimers) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.fns)
}

// parkedOnEndpoint connects a Transport on a fresh Endpoint with one of
// its own and waits until the first is parked.
func parkedOnEndpoint(t *testing.T, cfg Config) (a, b *Transport, e *Endpoint) {
	t.Helper()
	e = newLoopbackEndpoint(t)
	t.Cleanup(func() { e.Close() })
	a, b = connectedPairOf(t, onEndpointCfg(e, cfg), Config{})
	if !waitFor(5*time.Second, func() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.parked }) {
		t.Fatal("the Transport on the Endpoint did not park")
	}
	return a, b, e
}

// A Restart on a parked Transport that is never answered (the
// application rolled its offer back, or the answer never came) leaves
// a pion agent that runs no checks until SetRemote: it must not stay
// disconnected forever. A timer armed by Restart fails it after
// DisconnectedTimeout plus FailedTimeout, with a RestartTimeoutError.
func TestRestartUnansweredFails(t *testing.T) {
	rec := newRecorder()
	a, b, _ := parkedOnEndpoint(t, rec.config(Config{DisconnectedTimeout: 2 * time.Second, FailedTimeout: 3 * time.Second}))
	defer b.Close()
	defer a.Close()
	timers := &fakeTimers{}
	a.afterFunc = timers.afterFunc
	if _, err := a.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	gatherAll(t, a)
	if timers.count() != 1 {
		t.Fatalf("Restart armed %d timers, want 1", timers.count())
	}
	if d := timers.armed[0]; d != 5*time.Second {
		t.Errorf("restart timer of %v, want DisconnectedTimeout+FailedTimeout = 5s", d)
	}
	n := len(rec.since(0))
	timers.fire(0)
	rec.waitFor(t, n, "failed")
	_, errs := rec.snapshot()
	var rte *RestartTimeoutError
	if len(errs) != 1 || !errors.As(errs[0], &rte) || !errors.Is(errs[0], ErrNoPath) {
		t.Fatalf("OnFailed(%v), want one *RestartTimeoutError wrapping ErrNoPath", errs)
	}
	if rte.Timeout != 5*time.Second || rte.Answered {
		t.Errorf("%+v, want Timeout 5s, Answered false", *rte)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close after the restart failed: %v", err)
	}
}

// The restart timer is disarmed when the restart's new pair is selected
// and when another Restart replaces the restart; a timer that fires all
// the same (its Stop lost the race) reports nothing. A restart that gets
// its answer but no path fails with Answered set.
func TestRestartTimeoutRollsBack(t *testing.T) {
	rec := newRecorder()
	a, b, _ := parkedOnEndpoint(t, rec.config(Config{}))
	defer b.Close()
	defer a.Close()
	timers := &fakeTimers{}
	a.afterFunc = timers.afterFunc
	ctx := context.Background()

	// Replaced by another Restart: the first timer is stopped.
	if _, err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	gatherAll(t, a)
	if timers.count() != 1 {
		t.Fatalf("Restart armed %d timers, want 1", timers.count())
	}
	n := len(rec.since(0))
	restartOnto(t, a, b, Config{})
	if timers.count() != 2 {
		t.Fatalf("two Restarts armed %d timers, want 2", timers.count())
	}
	rec.waitFor(t, n, "up")
	if !waitFor(5*time.Second, func() bool { timers.mu.Lock(); defer timers.mu.Unlock(); return !timers.active[0] && !timers.active[1] }) {
		t.Fatalf("restart timers still armed after a second Restart and its new path: %v", timers.active)
	}
	timers.fire(0)
	timers.fire(1)
	time.Sleep(100 * time.Millisecond)
	if _, errs := rec.snapshot(); len(errs) > 0 {
		t.Fatalf("a disarmed restart timer that fired late failed the Transport: %v", errs)
	}
}
