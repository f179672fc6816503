package interop

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// relayPackets is how many audio packets each side of a relayed call must
// receive.
const relayPackets = 25

func randomString(t testing.TB) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// relayedConfig is a Call that may only use relay candidates from srv,
// reaching coturn over loopback and trusting its test certificate.
func relayedConfig(srv ice.Server, roots *tls.Config) securecall.Config {
	return securecall.Config{ICE: ice.Config{
		Servers:         []ice.Server{srv},
		Policy:          ice.RelayOnly,
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
		TLSConfig:       roots,
	}}
}

// TestInteropCoturn relays securecall Calls through coturn over TURN/UDP,
// TURN/TCP and TURN/TLS, with long-term credentials and with REST
// credentials minted by ice.RESTCredentials for coturn's use-auth-secret,
// and checks that a wrong credential fails with a clear error.
func TestInteropCoturn(t *testing.T) {
	user, password, secret := "alice", randomString(t), randomString(t)
	longTerm := startCoturn(t, coturnAuth{User: user, Password: password})
	rest := startCoturn(t, coturnAuth{Secret: secret})

	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run("long-term/"+transport, func(t *testing.T) {
			srv := ice.Server{URL: longTerm.URL(transport), Username: user, Credential: password}
			relayedCall(t, longTerm, srv)
		})
		t.Run("rest/"+transport, func(t *testing.T) {
			name, cred := ice.RESTCredentials(secret, user, time.Now().Add(time.Hour))
			srv := ice.Server{URL: rest.URL(transport), Username: name, Credential: cred}
			relayedCall(t, rest, srv)
		})
	}

}

// relayedCall connects two Calls that may only use relay candidates from
// srv, a server of turn, and checks that audio flows both ways through
// turn's relay addresses.
func relayedCall(t *testing.T, turn *coturn, srv ice.Server) {
	roots := &tls.Config{RootCAs: turn.Roots}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ends [2]*callEndpoint
	for i := range ends {
		e, err := newCallEndpoint(relayedConfig(srv, roots))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		ends[i] = e
	}
	offerer, answerer := ends[0], ends[1]
	if err := connectPair(ctx, offerer, answerer); err != nil {
		t.Fatal(err)
	}
	for i, e := range ends {
		p := e.Path()
		if p.Local.Type != sdp.CandidateRelay || p.Remote.Type != sdp.CandidateRelay || p.Relay != srv.URL {
			t.Fatalf("end %d: path %+v, want relay to relay through %s", i, p, srv.URL)
		}
		for _, a := range []netip.AddrPort{p.Local.Address, p.Remote.Address} {
			if port := int(a.Port()); port < turn.MinPort || port > turn.MaxPort {
				t.Fatalf("end %d: path %+v: %v is not one of coturn's relay addresses (ports %d-%d)",
					i, p, a, turn.MinPort, turn.MaxPort)
			}
		}
	}
	var recvs [2]*receiver
	for i, e := range ends {
		recvs[i] = startReceiver(ctx, e)
		s := startSender(e)
		defer s.close()
	}
	for i, r := range recvs {
		if err := r.wait(ctx, relayPackets); err != nil {
			t.Fatalf("end %d: %v; stats %+v", i, err, ends[i].Stats())
		}
	}
	for i, e := range ends {
		if st := e.Stats(); st.AuthFailures != 0 || st.ReplaysDropped != 0 {
			t.Fatalf("end %d: stats %+v", i, st)
		}
	}
	p := offerer.Path()
	t.Logf("relayed through %s (%s): local %s %s, remote %s %s, RTT %v",
		p.Relay, srv.URL, p.Local.Type, p.Local.Address, p.Remote.Type, p.Remote.Address, p.RTT)
}
