package kms_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// Certificate and token identities are two namespaces: a JWT whose subject
// is "alice" is the device "token:alice" and cannot replace the key of the
// mTLS device "alice". SPIFFE-style identities (with "/") are one path
// segment: their removal works.
func TestSecurityIdentityNamespaces(t *testing.T) {
	issuer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{TokenKeys: []crypto.PublicKey{issuer.Public()}}}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	tokenClient := func(sub string) *kms.Client {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: issuer}, nil)
		tok, _ := jwt.Signed(s).Claims(jwt.Claims{Subject: sub, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c, err := kms.NewClient(kms.Config{URL: env.URL, RootCAs: env.RootCAs(), KMSKeys: env.Server.SigningKeys(), Token: tok, DeviceKey: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	impostor := tokenClient("alice")
	spiffe := "spiffe://example.org/ns/prod/bob"
	bob := tokenClient(spiffe)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "token:" + spiffe}})
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := alice.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("the mTLS device after a token registered as its subject: %v, %v", keys, err)
	}
	if _, err := impostor.Fetch(ctx, uri); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("a token with sub=alice fetched alice's call: %v", err)
	}
	if _, err := bob.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := alice.RemoveParticipant(ctx, uri, "token:"+spiffe); err != nil {
		t.Fatalf("remove %q: %v", spiffe, err)
	}
	if _, err := bob.Fetch(ctx, uri); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("the removed SPIFFE identity still fetches: %v", err)
	}
	if !hasEntry(auditEntries(t, env), "register", "token:alice", "ok", "") {
		t.Fatal("the token device's registration is not audited under its own identity")
	}
}

// After a 429 the client sends nothing before the Retry-After has passed.
func TestSecurityClientHonoursRetryAfter(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":"rate_limited"}`))
	}))
	defer srv.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := kms.NewClient(kms.Config{URL: srv.URL, Token: "t", DeviceKey: key, KMSKeys: []crypto.PublicKey{&key.PublicKey},
		HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uri := srv.URL + "/v1/calls/AAAAAAAAAAAAAAAAAAAAAA"
	if _, err := c.Fetch(ctxT(t), uri); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("429: %v, want ErrUnavailable", err)
	}
	ctx, cancel := contextWithTimeout(200 * time.Millisecond)
	defer cancel()
	if _, err := c.Fetch(ctx, uri); err == nil {
		t.Fatal("a fetch during Retry-After succeeded")
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("the KMS saw %d requests; the second came before Retry-After", n)
	}
}

// The Retry-After of one call's exhausted rotation bucket holds back that
// call's rotations, not the device's other requests: a participant of one
// call who rotates it as often as the KMS allows does not stall another
// participant's fetches of other calls.
func TestSecurityCallRotationLimitIsPerCall(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{RotationsPerMinute: 6}}, "alice", "bob")
	ctx := ctxT(t)
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	shared, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Rotate(ctx, shared); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, shared); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("a rotation beyond the call's bucket: %v, want ErrUnavailable", err)
	}
	fctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if _, err := alice.Fetch(fctx, other); err != nil {
		t.Fatalf("a fetch of another call after the shared call's rotation limit: %v", err)
	}
}

// A full replay memory on the KMS holds back no other device: the device
// that filled it loses its own oldest proofs, and another device's state
// change and fetch go through at once.
func TestSecurityNonceMemoryFullHoldsNoOtherDevice(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{MaxNonces: 4, RotationsPerMinute: 600}}, "alice", "bob")
	ctx := ctxT(t)
	alice, bob := mustClient(t, env, "alice"), mustClient(t, env, "bob")
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := bob.Rotate(ctx, uri); err != nil {
			t.Fatalf("bob's rotation %d past the replay memory: %v", i, err)
		}
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatalf("a state change with the replay memory full of another device's proofs: %v", err)
	}
	fctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if _, err := alice.Fetch(fctx, uri); err != nil {
		t.Fatalf("a fetch after the replay memory filled: %v", err)
	}
}
