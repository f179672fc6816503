package securecall

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestHoldRefusedAfterFailureOrLostICE: Hold and Resume on a failed call,
// and on one whose own Restart failed after ICE restarted (it has no ICE
// session to keep), are refused with a *StateError and change nothing;
// once a restart succeeds, Hold works again.
func TestHoldRefusedAfterFailureOrLostICE(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, _ := restartPair(ctx, t)
	flows(t, a, b)
	failRestart(t, a)
	var se *StateError
	for _, f := range []func(context.Context) (string, error){a.Hold, a.Resume} {
		if _, err := f(ctx); !errors.As(err, &se) {
			t.Fatalf("after a failed restart: %v, want a StateError", err)
		}
	}
	if s := a.SignalingState(); s != SignalingStable {
		t.Fatalf("signaling %s after the refusal", s)
	}
	offer, err := a.Restart(ctx)
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
	if _, err := a.Hold(ctx); err != nil {
		t.Fatalf("Hold after a restart succeeded: %v", err)
	}
	if err := a.Rollback(); err != nil {
		t.Fatal(err)
	}

	b.fail(errors.New("securecall: test failure"))
	for _, f := range []func(context.Context) (string, error){b.Hold, b.Resume} {
		if _, err := f(ctx); !errors.As(err, &se) {
			t.Fatalf("after the call failed: %v, want a StateError", err)
		}
	}
}
