package media

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/sdp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestKeyingModesOverLoopback(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingDTLS, sdp.KeyingHybrid, sdp.KeyingSDES} {
		t.Run(string(mode), func(t *testing.T) {
			keys := newFakeKeys(t, 1)
			ca, cb := udpPair(t)
			a, b := pairConfigs(t, mode, keys)
			sa, sb := mustPair(t, ca, cb, a, b)
			exchange(t, sa, sb, 0xa, 20)
			exchange(t, sb, sa, 0xb, 20)
			for _, s := range []*Session{sa, sb} {
				st := s.Stats()
				if st.Keying != mode || st.RTPPacketsSent != 20 || st.RTPPacketsReceived != 20 ||
					st.RTCPPacketsSent != 1 || st.RTCPPacketsReceived != 1 || st.AuthFailures != 0 {
					t.Errorf("stats %+v", st)
				}
				wantProfile := ProfileAEADAES128GCM
				if st.Profile != wantProfile {
					t.Errorf("profile %s, want %s", st.Profile, wantProfile)
				}
				wantVersion := uint32(0)
				if mode == sdp.KeyingKMS || mode == sdp.KeyingHybrid {
					wantVersion = 1
				}
				if st.SendKeyVersion != wantVersion {
					t.Errorf("send version %d, want %d", st.SendKeyVersion, wantVersion)
				}
			}
		})
	}
}
