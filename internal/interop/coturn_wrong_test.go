package interop

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
)

// TestInteropCoturnWrongCredential checks that a Call whose TURN credential
// coturn refuses, under RelayOnly, fails with an error that says so (the
// server's 401), without revealing the credential: for a wrong long-term
// password, a REST credential under the wrong secret, and an expired REST
// credential. The answering Call has a valid credential.
func TestInteropCoturnWrongCredential(t *testing.T) {
	user, password, secret := "alice", randomString(t), randomString(t)
	longTerm := startCoturn(t, coturnAuth{User: user, Password: password})
	rest := startCoturn(t, coturnAuth{Secret: secret})
	restCred := func(secret string, expiry time.Time) ice.Server {
		name, cred := ice.RESTCredentials(secret, user, expiry)
		return ice.Server{URL: rest.URL("udp"), Username: name, Credential: cred}
	}
	good := map[*coturn]ice.Server{
		longTerm: {URL: longTerm.URL("udp"), Username: user, Credential: password},
		rest:     restCred(secret, time.Now().Add(time.Hour)),
	}
	cases := []struct {
		name   string
		server *coturn
		wrong  ice.Server
	}{
		{"long-term/wrong-password", longTerm, ice.Server{URL: longTerm.URL("udp"), Username: user, Credential: password + "x"}},
		{"rest/wrong-secret", rest, restCred(secret+"x", time.Now().Add(time.Hour))},
		{"rest/expired", rest, restCred(secret, time.Now().Add(-time.Minute))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := relayedConfig(tc.wrong, nil)
			// Bound the wait for a path that cannot come, should the
			// refusal only show at Connect.
			cfg.ICE.ConnectTimeout = 3 * time.Second
			bad, err := newCallEndpoint(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			peer, err := newCallEndpoint(relayedConfig(good[tc.server], nil))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			err = connectBad(ctx, bad, peer)
			if err == nil {
				t.Fatalf("a call with a refused TURN credential connected: path %+v", bad.Path())
			}
			// The error must say what went wrong, that the TURN server
			// refused the credential, not merely that no path was found.
			msg := strings.ToLower(err.Error())
			if !strings.Contains(msg, "turn") || !(strings.Contains(msg, "401") || strings.Contains(msg, "unauthorized") || strings.Contains(msg, "credential")) {
				t.Fatalf("the call failed without saying that the TURN server refused the credential: %v", err)
			}
			if strings.Contains(err.Error(), tc.wrong.Credential) {
				t.Fatalf("the error reveals the TURN credential: %v", err)
			}
			t.Logf("refused credential: %v", err)
		})
	}
}

// connectBad offers from bad to peer and returns the first error on
// bad's side: from Offer, or else from Connect.
func connectBad(ctx context.Context, bad, peer endpoint) error {
	offer, err := bad.Offer(ctx)
	if err != nil {
		return err
	}
	answer, err := peer.Answer(ctx, offer)
	if err != nil {
		return fmt.Errorf("the peer's Answer failed instead: %w", err)
	}
	if err := bad.SetAnswer(ctx, answer); err != nil {
		return err
	}
	return bad.Connect(ctx)
}
