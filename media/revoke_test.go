package media

import (
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// withheldPair starts a pair in mode keyed by keys whose sessions keep a
// replaced version for grace; a's packet 1 reaches b, its packet 2 an
// attacker holds back and returns, for b's conn, cb, to inject later.
func withheldPair(t *testing.T, mode sdp.Keying, keys *fakeKeys, grace time.Duration) (sa, sb *Session, cb *memConn, held []byte) {
	t.Helper()
	ca, cb := memPair()
	cap := &capture{}
	ca.setTap(cap.tap)
	a, b := pairConfigs(t, mode, keys)
	a.RotationGrace, b.RotationGrace = grace, grace
	sa, sb = mustPair(t, ca, cb, a, b)
	writeSeq(t, sa, 1)
	readSeq(t, sb)
	cap.setDrop(true)
	writeSeq(t, sa, 2)
	cap.setDrop(false)
	return sa, sb, cb, cap.last()
}

// refusedHeld injects held, a packet under a version sb no longer has,
// into sb's conn cb, then sends seq from sa: sb must read seq, not held,
// and count held as its one unknown-MKI drop.
func refusedHeld(t *testing.T, sa, sb *Session, cb *memConn, held []byte, seq uint16) {
	t.Helper()
	cb.inject(held)
	writeSeq(t, sa, seq)
	if got := readSeq(t, sb); got != seq {
		t.Fatalf("packet under a withdrawn version delivered: seq %d", got)
	}
	if st := sb.Stats(); st.UnknownMKIDrops != 1 {
		t.Fatalf("stats %+v: want 1 unknown-MKI drop", st)
	}
}

// A version the key source revokes after the peer moved on is refused at
// once, not after RotationGrace: a packet forged under it, or an old one
// an attacker held back, is dropped, and its MKI starts no fetch.
func TestRevokeReplacedVersionAtOnce(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				keys := newFakeKeys(t, 1)
				sa, sb, cb, old := withheldPair(t, mode, keys, time.Hour) // old: under version 1

				keys.Publish(t, 2, time.Now())
				waitUntil(t, func() bool { return sa.Stats().SendKeyVersion == 2 && hasRecvKey(sb, 2) })
				writeSeq(t, sa, 3)
				readSeq(t, sb)
				if !hasRecvKey(sb, 1) {
					t.Fatal("version 1 gone before its grace: the test shows nothing")
				}
				keys.Revoke(1)
				waitUntil(t, func() bool { return !hasRecvKey(sb, 1) && !hasRecvKey(sa, 1) })
				refusedHeld(t, sa, sb, cb, old, 4)
			})
		})
	}
}

// Revoking the version a session sends with moves it at once to the next
// installed one, though that one is not active yet; the peer receives
// under it.
func TestRevokeSendingVersionSwitches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t, 1)
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingKMS, keys)
		sa, sb := mustPair(t, ca, cb, a, b)
		keys.Publish(t, 2, time.Now().Add(time.Hour))
		waitUntil(t, func() bool { return hasRecvKey(sa, 2) && hasRecvKey(sb, 2) })
		if v := sa.Stats().SendKeyVersion; v != 1 {
			t.Fatalf("sending under %d before the revocation, want 1", v)
		}
		keys.Revoke(1)
		waitUntil(t, func() bool {
			return sa.Stats().SendKeyVersion == 2 && sb.Stats().SendKeyVersion == 2
		})
		writeSeq(t, sa, 1)
		if got := readSeq(t, sb); got != 1 {
			t.Fatalf("read seq %d", got)
		}
		writeSeq(t, sb, 7)
		if got := readSeq(t, sa); got != 7 {
			t.Fatalf("read seq %d", got)
		}
	})
}

// Revoking the only version stops sending with ErrKeyRevoked and
// receiving under it, until a new version comes, which is used at once.
// The revoked version is never installed again.
func TestRevokeOnlyVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t, 1)
		sa, sb, cb, old := withheldPair(t, sdp.KeyingKMS, keys, DefaultRotationGrace)

		if err := sb.RevokeKey(1); err != nil {
			t.Fatal(err)
		}
		if err := sa.RevokeKey(1); err != nil {
			t.Fatal(err)
		}
		if hasRecvKey(sb, 1) {
			t.Fatal("revoked version 1 still installed")
		}
		err := sa.WriteRTP(RTPHeader{SequenceNumber: 3, SSRC: 42}, make([]byte, 160))
		if !errors.Is(err, ErrKeyRevoked) {
			t.Fatalf("WriteRTP under the only, revoked, version: %v, want ErrKeyRevoked", err)
		}
		if err := sa.WriteRTCP(rtcpRR(42)); !errors.Is(err, ErrKeyRevoked) {
			t.Fatalf("WriteRTCP under the only, revoked, version: %v, want ErrKeyRevoked", err)
		}
		cb.inject(old)
		sb.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := sb.ReadRTP(make([]byte, 1500)); err == nil {
			t.Fatal("a packet under the revoked version was read")
		}
		if st := sb.Stats(); st.UnknownMKIDrops != 1 || st.RTPPacketsReceived != 1 {
			t.Fatalf("stats %+v: want the packet under the revoked version dropped as 1 unknown-MKI drop", st)
		}
		keys.mu.Lock()
		v1 := keys.versions[0]
		keys.mu.Unlock()
		if err := sb.InstallKey(v1); !errors.Is(err, ErrKeyRevoked) {
			t.Fatalf("InstallKey of a revoked version: %v, want ErrKeyRevoked", err)
		}

		keys.Publish(t, 3, time.Now().Add(time.Hour))
		waitUntil(t, func() bool { return sa.Stats().SendKeyVersion == 3 && hasRecvKey(sb, 3) })
		writeSeq(t, sa, 4)
		if got := readSeq(t, sb); got != 4 {
			t.Fatalf("read seq %d", got)
		}
		sb.recvMu.Lock()
		sel := sb.recvSelect
		sb.recvMu.Unlock()
		if sel != 3 {
			t.Fatalf("receiving context selects version %d, want 3 in place of the placeholder", sel)
		}
	})
}

// Raising the minimum withdraws every version below it.
func TestRevokeBelowMinimum(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t, 1, 2, 3)
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingKMS, keys)
		a.RotationGrace, b.RotationGrace = time.Hour, time.Hour
		sa, sb := mustPair(t, ca, cb, a, b)
		if !hasRecvKey(sb, 1) || !hasRecvKey(sb, 2) {
			t.Fatal("versions 1 and 2 not installed")
		}
		keys.Raise(3)
		waitUntil(t, func() bool {
			return !hasRecvKey(sb, 1) && !hasRecvKey(sb, 2) && hasRecvKey(sb, 3)
		})
		writeSeq(t, sa, 1)
		if got := readSeq(t, sb); got != 1 {
			t.Fatalf("read seq %d", got)
		}
		keys.mu.Lock()
		v2 := keys.versions[1]
		keys.mu.Unlock()
		if err := sa.InstallKey(v2); !errors.Is(err, ErrKeyRevoked) {
			t.Fatalf("InstallKey below the minimum: %v, want ErrKeyRevoked", err)
		}
	})
}

// RevokeKey refuses what it cannot do, clearly.
func TestRevokeKeyErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingSDES, nil)
		sa, _ := mustPair(t, ca, cb, a, b)
		if err := sa.RevokeKey(1); !errors.Is(err, ErrNoRotation) {
			t.Fatalf("RevokeKey in sdes keying: %v, want ErrNoRotation", err)
		}
		keys := newFakeKeys(t, 1)
		cc, cd := memPair()
		c, d := pairConfigs(t, sdp.KeyingKMS, keys)
		sc, _ := mustPair(t, cc, cd, c, d)
		if err := sc.RevokeKey(0); err == nil {
			t.Fatal("RevokeKey(0) accepted")
		}
		sc.Close()
		if err := sc.RevokeKey(1); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("RevokeKey after Close: %v, want net.ErrClosed", err)
		}
	})
}
