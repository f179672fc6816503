package media

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

func TestRotationRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t, 1)
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingKMS, keys)
		reqs := make(chan RotationRequest, 10)
		a.MaxPackets = 10
		a.OnRotationNeeded = func(r RotationRequest) { reqs <- r }
		sa, sb := mustPair(t, ca, cb, a, b)

		for i := range 25 {
			writeSeq(t, sa, uint16(i))
			readSeq(t, sb)
		}
		select {
		case r := <-reqs:
			if r.Reason != RotationPacketBudget || r.Version != 1 || r.RTPPackets != 10 || r.Keying != sdp.KeyingKMS {
				t.Fatalf("request %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no rotation request after the packet budget")
		}
		keys.Publish(t, 2, time.Time{})
		for give := time.Now().Add(5 * time.Second); sa.Stats().SendKeyVersion != 2; {
			if time.Now().After(give) {
				t.Fatal("version 2 not activated")
			}
			time.Sleep(time.Millisecond)
		}
		for i := 25; i < 35; i++ {
			writeSeq(t, sa, uint16(i))
			readSeq(t, sb)
		}
		select {
		case r := <-reqs:
			if r.Version != 2 || r.RTPPackets != 10 {
				t.Fatalf("second request %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no rotation request for version 2")
		}
		if len(reqs) != 0 {
			t.Fatalf("%d extra requests", len(reqs))
		}
	})
}

func TestRotationRequestLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingSDES, nil)
		reqs := make(chan RotationRequest, 10)
		a.KeyLifetime = 30 * time.Millisecond
		a.OnRotationNeeded = func(r RotationRequest) { reqs <- r }
		sa, _ := mustPair(t, ca, cb, a, b)
		writeSeq(t, sa, 1)
		time.Sleep(40 * time.Millisecond)
		writeSeq(t, sa, 2)
		select {
		case r := <-reqs:
			if r.Reason != RotationLifetime || r.Keying != sdp.KeyingSDES {
				t.Fatalf("request %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no rotation request after the key lifetime")
		}
	})
}

func TestNeverEncryptPastLimits(t *testing.T) {
	ca, cb := memPair()
	a, b := pairConfigs(t, sdp.KeyingSDES, nil)
	sa, _ := mustPair(t, ca, cb, a, b)
	sa.sendMu.Lock()
	sa.sendKey.rtp = maxSRTPPackets
	sa.sendKey.rtcp = maxSRTCPPackets
	sa.sendMu.Unlock()
	if err := sa.WriteRTP(RTPHeader{SSRC: 1}, []byte{1}); !errors.Is(err, ErrKeyExhausted) {
		t.Fatalf("WriteRTP past the SRTP limit: %v", err)
	}
	if err := sa.WriteRTCP(rtcpRR(1)); !errors.Is(err, ErrKeyExhausted) {
		t.Fatalf("WriteRTCP past the SRTCP limit: %v", err)
	}
	if err := sa.InstallKey(CallKey{}); !errors.Is(err, ErrNoRotation) {
		t.Fatalf("InstallKey in sdes keying: %v", err)
	}
}

func TestExpiredKeyNotUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := newFakeKeys(t)
		keys.Publish(t, 1, time.Time{})
		keys.mu.Lock()
		keys.versions[0].ExpiresAt = time.Now().Add(50 * time.Millisecond)
		keys.mu.Unlock()
		ca, cb := memPair()
		a, b := pairConfigs(t, sdp.KeyingKMS, keys)
		sa, _ := mustPair(t, ca, cb, a, b)
		writeSeq(t, sa, 1)
		time.Sleep(60 * time.Millisecond)
		if err := sa.WriteRTP(RTPHeader{SSRC: 1}, []byte{1}); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("WriteRTP with an expired key: %v", err)
		}
	})
}
