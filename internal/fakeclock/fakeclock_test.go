package fakeclock

import (
	"context"
	"testing"
	"time"
)

func TestWakeAt(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	fired, stop := c.WakeAt(start.Add(time.Second))
	defer stop()
	released, release := c.WakeAt(start.Add(time.Second))
	release()
	c.Advance(999 * time.Millisecond)
	select {
	case <-fired:
		t.Fatal("fired before its time")
	default:
	}
	if n := c.Armed(); n != 1 {
		t.Fatalf("%d wake-ups armed, want 1 (one released)", n)
	}
	c.Advance(time.Millisecond)
	select {
	case at := <-fired:
		if !at.Equal(start.Add(time.Second)) {
			t.Fatalf("fired with %v", at)
		}
	default:
		t.Fatal("did not fire at its time")
	}
	select {
	case <-released:
		t.Fatal("a released wake-up fired")
	default:
	}
	past, _ := c.WakeAt(start)
	select {
	case <-past:
	default:
		t.Fatal("a wake-up already due did not fire at once")
	}
	if !c.Now().Equal(start.Add(time.Second)) || c.Armed() != 0 {
		t.Fatalf("now %v, %d armed", c.Now(), c.Armed())
	}
}

func TestWaitArmed(t *testing.T) {
	c := New(time.Unix(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitArmed(ctx, 1); err == nil {
		t.Fatal("WaitArmed returned with nothing armed")
	}
	done := make(chan error, 1)
	go func() { done <- c.WaitArmed(context.Background(), 2) }()
	_, stop := c.WakeAt(c.Now().Add(time.Second))
	defer stop()
	_, stop2 := c.WakeAt(c.Now().Add(time.Second))
	defer stop2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
