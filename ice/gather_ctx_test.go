package ice_test

import (
	"context"
	"errors"
	"testing"

	"github.com/securecall/securecall/sdp"
)

// A Gather whose ctx ends while it runs returns ctx's error every time,
// never success: even when the next candidate, or the end of the
// gathering, is ready at the same moment as ctx's end. A Call's Restart
// relies on it to roll back (its ctx ended while it gathered).
func TestGatherEndedCtxWins(t *testing.T) {
	for _, when := range []string{"before", "at the first candidate"} {
		t.Run(when, func(t *testing.T) {
			for i := range 100 {
				tr := newSide(t, loopback()).t
				ctx, cancel := context.WithCancel(context.Background())
				if when == "before" {
					cancel()
				}
				err := tr.Gather(ctx, func(sdp.Candidate) { cancel() })
				cancel()
				tr.Close()
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("run %d: Gather whose ctx ended %s: %v, want context.Canceled", i, when, err)
				}
			}
		})
	}
}
