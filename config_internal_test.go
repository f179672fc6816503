package securecall

import (
	"testing"
	"time"
)

// TestMediaConfigClock: a zero MediaConfig leaves the media session's Clock
// nil (the media package then uses time.Now, which its own defaults test
// checks), and a set Clock reaches the media session unchanged.
func TestMediaConfigClock(t *testing.T) {
	if (MediaConfig{}).session().Clock != nil {
		t.Error("a zero MediaConfig set a media Clock")
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	got := (MediaConfig{Clock: func() time.Time { return at }}).session().Clock
	if got == nil || !got().Equal(at) {
		t.Error("MediaConfig.Clock did not reach the media session")
	}
}
