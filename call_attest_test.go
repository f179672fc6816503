package securecall_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/stunturn"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// kmsConfigs returns caller and callee configs in keying (kms or hybrid)
// with a fresh call key both may fetch.
func kmsConfigs(t *testing.T, keying sdp.Keying, ca, cb securecall.Config) (securecall.Config, securecall.Config) {
	t.Helper()
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	ca.Keying, ca.KeySource, ca.KeyURI = keying, alice, uri
	cb.Keying, cb.KeySource = keying, kmsClient(t, env, "bob")
	return ca, cb
}

// A DirectOnly call whose peer relays through a TURN server inside the
// site: the relay's address passes the site filter (127.0.0.2 is loopback,
// on the default site), but the peer attests, inside SRTCP, that its end
// is a relay. The call fails with the policy error before a single media
// packet is delivered, and no more media is written on that path.
func TestSecurityDirectOnlyPeerAttestsRelay(t *testing.T) {
	srv, err := stunturn.Start(context.Background(), stunturn.Config{RelayAddress: netip.MustParseAddr("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, keying := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(keying), func(t *testing.T) {
			direct := securecall.Config{ICE: loopbackICE()}
			direct.ICE.Policy = ice.DirectOnly
			relayed := securecall.Config{ICE: loopbackICE()}
			relayed.ICE.Servers = srv.Servers()
			relayed.ICE.Policy = ice.RelayOnly
			ca, cb := kmsConfigs(t, keying, direct, relayed)
			a, b := pair(t, ca, cb)
			if p := b.Path(); p.Local.Type != sdp.CandidateRelay {
				t.Fatalf("the relayed peer's path is %+v, want its relay", p)
			}
			// The relayed peer sends media; the DirectOnly side reads.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				payload := make([]byte, 160)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					h := media.RTPHeader{PayloadType: b.Codec().PayloadType, SequenceNumber: uint16(i), Timestamp: uint32(160 * i), SSRC: b.SSRC()}
					if b.WriteRTP(h, payload) != nil {
						return
					}
				}
			}()
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			var delivered int
			for {
				_, _, err = a.ReadRTP(buf)
				if err != nil {
					break
				}
				delivered++
			}
			if !errors.Is(err, ice.ErrPolicy) {
				t.Fatalf("ReadRTP on the DirectOnly side = %v after %d packets, want the policy error (path %+v)", err, delivered, a.Path())
			}
			var pe *ice.PolicyError
			if !errors.As(err, &pe) || pe.Type != sdp.CandidateRelay || pe.Address != b.Path().Local.Address {
				t.Errorf("policy error %v, want one naming the peer's relay %v", err, b.Path().Local.Address)
			}
			if delivered != 0 {
				t.Errorf("%d media packets from the relayed peer were delivered before the refusal", delivered)
			}
			waitFor(t, 5*time.Second, func() bool { return a.State() == securecall.StateFailed })
			if cause := context.Cause(a.Context()); !errors.Is(cause, ice.ErrPolicy) {
				t.Errorf("the call's context ended with %v, want the policy error", cause)
			}
			h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SSRC: a.SSRC()}
			if err := a.WriteRTP(h, make([]byte, 160)); !errors.Is(err, ice.ErrPolicy) {
				t.Errorf("WriteRTP after the refusal = %v, want the policy error", err)
			}
		})
	}
}

// In kms and hybrid keying each end reports what the other attested:
// on loopback the peer's host address, which is the remote address seen.
func TestCallPathAttestation(t *testing.T) {
	for _, keying := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(keying), func(t *testing.T) {
			cfg := securecall.Config{ICE: loopbackICE()}
			cfg.ICE.Policy = ice.DirectOnly
			ca, cb := kmsConfigs(t, keying, cfg, cfg)
			a, b := pair(t, ca, cb)
			// Attestations are taken as media is read.
			sendRecv(t, a, b, 5)
			sendRecv(t, b, a, 5)
			for _, c := range []struct {
				name       string
				self, peer *securecall.Call
			}{{"caller", a, b}, {"callee", b, a}} {
				p := c.self.Path()
				want := c.peer.Path().Local
				if !p.PeerAttested || p.PeerLocal != want || !p.AttestationMatches {
					t.Errorf("%s: path %+v, want the peer's attested %+v matching the remote address", c.name, p, want)
				}
				if st := c.self.Stats(); !st.Path.PeerAttested {
					t.Errorf("%s: Stats().Path has no attestation", c.name)
				}
			}
		})
	}
}

// A dtls-keyed peer attests nothing (its SRTCP keys are only as good as
// the signaling): the path is reported unattested, and the call works.
func TestCallPathUnattestedInDTLS(t *testing.T) {
	cfg := securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS}
	cfg.ICE.Policy = ice.DirectOnly
	a, b := pair(t, cfg, cfg)
	sendRecv(t, a, b, 5)
	sendRecv(t, b, a, 5)
	for _, c := range []*securecall.Call{a, b} {
		if p := c.Path(); p.PeerAttested || p.AttestationMatches || p.PeerLocal != (ice.CandidateInfo{}) || p.Local.Type == "" {
			t.Errorf("dtls path %+v, want a path without attestation", p)
		}
	}
}
