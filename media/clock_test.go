package media

import (
	"testing"
	"time"

	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/sdp"
)

// TestClockDrivesKeySchedule runs a session pair on a fake Config.Clock
// while packets flow on real time: a version published to activate an hour
// later is not used for sending a millisecond before, is used at its time,
// and the version the peer moved on from is removed exactly RotationGrace
// (by the fake clock) after the first packet under the new one.
func TestClockDrivesKeySchedule(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	keys := newFakeKeys(t, 1)
	ca, cb := memPair()
	a, b := pairConfigs(t, sdp.KeyingKMS, keys)
	a.Clock, b.Clock = clk.Now, clk.Now
	a.RotationGrace, b.RotationGrace = time.Hour, time.Hour
	sa, sb := mustPair(t, ca, cb, a, b)

	buf := make([]byte, 1500)
	seq := uint16(0)
	send := func() {
		t.Helper()
		seq++
		if err := sa.WriteRTP(RTPHeader{SequenceNumber: seq, SSRC: 7}, []byte("payload")); err != nil {
			t.Fatal(err)
		}
		sb.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := sb.ReadRTP(buf); err != nil {
			t.Fatal(err)
		}
	}
	activate := clk.Now().Add(time.Hour)
	keys.Publish(t, 2, activate)
	for give := time.Now().Add(10 * time.Second); !hasRecvKey(sa, 2) || !hasRecvKey(sb, 2); {
		if time.Now().After(give) {
			t.Fatal("version 2 was not installed")
		}
		time.Sleep(time.Millisecond)
	}
	clk.Advance(time.Hour - time.Millisecond)
	send()
	if v := sa.Stats().SendKeyVersion; v != 1 {
		t.Fatalf("sending with version %d a millisecond before version 2 activates", v)
	}
	clk.Advance(time.Millisecond)
	send()
	if v := sa.Stats().SendKeyVersion; v != 2 {
		t.Fatalf("sending with version %d once version 2 is active", v)
	}
	clk.Advance(time.Hour - time.Millisecond)
	send()
	if !hasRecvKey(sb, 1) {
		t.Fatal("version 1 removed before the grace period was over")
	}
	clk.Advance(time.Millisecond)
	send()
	if hasRecvKey(sb, 1) {
		t.Fatal("version 1 still installed after the grace period")
	}
}
