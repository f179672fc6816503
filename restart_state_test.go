package securecall_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
)

// stateReports passes a call's OnStateChange reports on to the test.
type stateReports chan securecall.State

func newStateReports() stateReports { return make(stateReports, 64) }

func (r stateReports) add(s securecall.State) { r <- s }

// next returns the next report, within 10 s.
func (r stateReports) next(t *testing.T) securecall.State {
	t.Helper()
	select {
	case s := <-r:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no state reported within 10 s")
	}
	return 0
}

// await reads reports until want, within 10 s; a report of failed or
// closed before it fails the test.
func (r stateReports) await(t *testing.T, want securecall.State) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-r:
			if s == want {
				return
			}
			if s == securecall.StateFailed || s == securecall.StateClosed {
				t.Fatalf("reported %s while waiting for %s", s, want)
			}
		case <-timeout:
			t.Fatalf("%s not reported within 10 s", want)
		}
	}
}

// From the moment its ICE restarts, for its own Restart or for its Answer
// to the peer's restart offer, a call has no path (the old credentials and
// pair are gone): it says StateDisconnected, and reports it, until the new
// pair is selected, and then StateConnected again. On its own sockets and
// on a shared Endpoint (where a restart replaces the parked Transport's
// consent session with a new agent).
func TestRestartDisconnectedUntilNewPath(t *testing.T) {
	_, shared := sharedEndpoint(t)
	cases := append([]endpointCase{{"own sockets", loopbackICE(), loopbackICE()}}, endpointCases(shared)...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ra, rb := newStateReports(), newStateReports()
			a, b := pair(t, securecall.Config{ICE: tc.ca, OnStateChange: ra.add}, securecall.Config{ICE: tc.cb, OnStateChange: rb.add})
			reports := map[*securecall.Call]stateReports{a: ra, b: rb}
			ra.await(t, securecall.StateConnected)
			rb.await(t, securecall.StateConnected)
			sendRecv(t, a, b, 3)
			for _, p := range [][2]*securecall.Call{{a, b}, {b, a}} {
				from, to := p[0], p[1]
				offer, err := from.Restart(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if s := from.State(); s != securecall.StateDisconnected {
					t.Fatalf("State after Restart restarted ICE: %s, want disconnected (no path until the new one is selected)", s)
				}
				reports[from].await(t, securecall.StateDisconnected)
				answer, err := to.Answer(ctx, offer)
				if err != nil {
					t.Fatal(err)
				}
				if s := to.State(); s != securecall.StateDisconnected {
					t.Fatalf("State after Answer to a restart offer restarted ICE: %s, want disconnected", s)
				}
				reports[to].await(t, securecall.StateDisconnected)
				if err := from.SetAnswer(ctx, answer); err != nil {
					t.Fatal(err)
				}
				reports[from].await(t, securecall.StateConnected)
				reports[to].await(t, securecall.StateConnected)
				for _, c := range []*securecall.Call{from, to} {
					if s, p := c.State(), c.Path(); s != securecall.StateConnected || p.Local.Type == "" {
						t.Fatalf("after the new path was reported: state %s, path %+v", s, p)
					}
				}
				sendRecv(t, from, to, 3)
				sendRecv(t, to, from, 3)
			}
		})
	}
}

// An application may restart from inside OnStateChange: the restart's
// change to StateDisconnected is reported once the report it runs in has
// returned, in order, instead of by a call that waits for itself. Here
// the call restarts on its first StateConnected, which the call's own
// connect goroutine reports.
func TestRestartFromOnStateChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		once    sync.Once
		caller  = make(chan *securecall.Call, 1)
		offers  = make(chan string, 1)
		reports = newStateReports()
	)
	ca := securecall.Config{ICE: loopbackICE(), OnStateChange: func(s securecall.State) {
		reports.add(s)
		if s != securecall.StateConnected {
			return
		}
		once.Do(func() {
			offer, err := (<-caller).Restart(ctx)
			if err != nil {
				t.Errorf("Restart from OnStateChange: %v", err)
			}
			offers <- offer
		})
	}}
	a, err := securecall.New(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	caller <- a
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
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	var restart string
	select {
	case restart = <-offers:
	case <-ctx.Done():
		t.Fatal("Restart from inside OnStateChange did not return")
	}
	for _, want := range []securecall.State{securecall.StateConnecting, securecall.StateConnected, securecall.StateDisconnected} {
		if s := reports.next(t); s != want {
			t.Fatalf("reported %s, want %s (connecting, connected, then the restart's disconnected)", s, want)
		}
	}
	if s := a.State(); s != securecall.StateDisconnected {
		t.Fatalf("State after the restart from OnStateChange: %s, want disconnected", s)
	}
	answer, err = b.Answer(ctx, restart)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	reports.await(t, securecall.StateConnected)
	if err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sendRecv(t, a, b, 3)
	sendRecv(t, b, a, 3)
}
