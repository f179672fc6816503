package interop

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// Call, pion PeerConnection and helper is closed and joined by its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
