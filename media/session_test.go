package media

import (
	"context"
	"net"
	"testing"
	"time"

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

// TestHandshakeSurvivesLateServer starts the DTLS client while nothing
// listens at the server's port, so that its connected UDP socket reads
// ICMP port-unreachable errors, then starts the server: the handshake must
// still complete by retransmission.
func TestHandshakeSurvivesLateServer(t *testing.T) {
	ca, cb := udpPair(t)
	serverAddr := cb.LocalAddr().(*net.UDPAddr)
	clientAddr := ca.LocalAddr().(*net.UDPAddr)
	cb.Close()
	a, b := pairConfigs(t, sdp.KeyingDTLS, nil)
	type result struct {
		s   *Session
		err error
	}
	client := make(chan result, 1)
	go func() {
		s, err := NewSession(context.Background(), ca, a)
		client <- result{s, err}
	}()
	time.Sleep(300 * time.Millisecond) // ClientHello meets a closed port
	cb2, err := net.DialUDP("udp", serverAddr, clientAddr)
	if err != nil {
		t.Skipf("could not rebind the server port: %v", err)
	}
	sb, err := NewSession(context.Background(), cb2, b)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	r := <-client
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.s.Close()
	exchange(t, r.s, sb, 1, 1)
	exchange(t, sb, r.s, 2, 1)
}
