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
// is a relay. Connect fails with the policy error naming the relay, the
// call fails, and it never carries media.
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
			a, b := offerAnswer(t, ca, cb)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- b.Connect(ctx) }()
			errA := a.Connect(ctx)
			if err := <-errc; err != nil {
				t.Fatalf("the relayed peer did not connect: %v", err)
			}
			relay := b.Path().Local
			if relay.Type != sdp.CandidateRelay {
				t.Fatalf("the relayed peer's path is %+v, want its relay", b.Path())
			}
			if errA == nil {
				t.Fatalf("the DirectOnly call connected to a peer behind a relay: path %+v", a.Path())
			}
			var pe *ice.PolicyError
			if !errors.Is(errA, ice.ErrPolicy) || !errors.As(errA, &pe) || pe.Type != sdp.CandidateRelay || pe.Address != relay.Address {
				t.Fatalf("Connect = %v, want the policy error naming the peer's relay %v", errA, relay.Address)
			}
			if a.State() != securecall.StateFailed {
				t.Errorf("state = %s, want failed", a.State())
			}
			if cause := context.Cause(a.Context()); !errors.Is(cause, ice.ErrPolicy) {
				t.Errorf("the call's context ended with %v, want the policy error", cause)
			}
			h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SSRC: a.SSRC()}
			if err := a.WriteRTP(h, make([]byte, 160)); err == nil {
				t.Error("WriteRTP succeeded on the refused call")
			}
			if _, _, err := a.ReadRTP(make([]byte, 1500)); err == nil {
				t.Error("ReadRTP delivered media on the refused call")
			}
		})
	}
}

// offerAnswer makes two calls and exchanges offer and answer, without
// waiting for them to connect; they are closed when the test ends.
func offerAnswer(t *testing.T, ca, cb securecall.Config) (a, b *securecall.Call) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := securecall.New(ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = securecall.New(cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	offer, err := a.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := b.Answer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetAnswer(ctx, answer); err != nil {
		t.Fatal(err)
	}
	return a, b
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
