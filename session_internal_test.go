package securecall

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/securecall/securecall/sdp"
)

// TestLeftSessionsBounded: however often the peer's session id changes, a
// call remembers at most maxLeftSessions sessions it left, the latest ones,
// each with the last o= version taken from it: a late copy of one of them
// is refused, a newer version is taken.
func TestLeftSessionsBounded(t *testing.T) {
	c := &Call{log: slog.New(slog.DiscardHandler), keying: sdp.KeyingSDES, remoteSID: 1}
	for sid := uint64(1); sid <= 10; sid++ {
		c.mu.Lock()
		c.takeSessionLocked(sid)
		c.lastOffer, c.lastAnswer = 3, "answer" // the call answered version 3 of sid
		c.mu.Unlock()
	}
	if n := len(c.leftSessions); n != maxLeftSessions {
		t.Fatalf("%d sessions remembered after 9 changes, want %d", n, maxLeftSessions)
	}
	var se *StateError
	if err := c.otherSessionLocked("Answer", 9, 3); !errors.As(err, &se) {
		t.Errorf("a late copy of the session left last: %v, want a *StateError", err)
	}
	if err := c.otherSessionLocked("Answer", 9, 4); err != nil {
		t.Errorf("a newer version of the session left last: %v", err)
	}
	if err := c.otherSessionLocked("Answer", 2, 1); err != nil {
		t.Errorf("a session no longer remembered: %v", err)
	}
	c.keying = sdp.KeyingKMS
	var sc *SessionChangedError
	if err := c.otherSessionLocked("Answer", 11, 1); !errors.As(err, &sc) || sc.Session != 10 || sc.Got != 11 {
		t.Errorf("kms keying: %v, want a *SessionChangedError from 10 to 11", err)
	}
}
