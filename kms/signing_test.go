package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

const deliveryType = "securecall-key+jws" // the typ of a delivery's JWS

func thumbprint(pub *ecdsa.PublicKey) string {
	tp, _ := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	return b64(tp)
}

// jweHeader decodes a compact JWE's protected header.
func jweHeader(t *testing.T, jwe string) map[string]any {
	var h map[string]any
	if err := json.Unmarshal(unb64(t, strings.Split(jwe, ".")[0]), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// openJWE decrypts a delivery with a device key, as a hop holding that
// device's key (or the device itself) can: it yields the KMS's JWS.
func openJWE(t *testing.T, jwe string, dev *ecdsa.PrivateKey) []byte {
	obj, err := jose.ParseEncryptedCompact(jwe, []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := obj.Decrypt(dev)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// sealTo encrypts payload to the device key dev with the binding headers h
// (the envelope), as the KMS would.
func sealTo(t *testing.T, payload []byte, dev *ecdsa.PublicKey, h map[string]any) string {
	opts := (&jose.EncrypterOptions{}).WithContentType(deliveryType)
	for _, k := range []string{"sc-uri", "sc-call", "sc-ver", "sc-act", "sc-exp"} {
		if v, ok := h[k]; ok {
			opts.WithHeader(jose.HeaderKey(k), v)
		}
	}
	e, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: dev, KeyID: thumbprint(dev)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := e.Encrypt(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signAs signs delivery claims for the envelope h with key, naming kid.
func signAs(t *testing.T, key *ecdsa.PrivateKey, kid string, h map[string]any, rcpt string) []byte {
	claims, _ := json.Marshal(map[string]any{
		"uri": h["sc-uri"], "call": h["sc-call"], "ver": h["sc-ver"], "act": h["sc-act"], "exp": h["sc-exp"],
		"rcpt": rcpt, "key": make([]byte, media.CallKeySize),
	})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(deliveryType))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return []byte(out)
}

// rewriteKeys returns a client for identity whose keys responses pass
// through edit (the JSON body, decoded).
func rewriteKeys(t *testing.T, env *devkms.Env, identity string, edit func(m map[string]any)) *kms.Client {
	c, _ := clientWith(t, env, identity, func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err != nil || r.Method != http.MethodGet || resp.StatusCode != 200 {
				return resp, err
			}
			body, _ := io.ReadAll(resp.Body)
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Error(err)
			}
			edit(m)
			body, _ = json.Marshal(m)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			return resp, nil
		})
	})
	return c
}

func deviceKey(t *testing.T, env *devkms.Env, identity string) *ecdsa.PrivateKey {
	cfg, err := env.ClientConfig(identity)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Certificate.PrivateKey.(*ecdsa.PrivateKey)
}

// Every way of handing a device a key the KMS did not sign for it is
// refused with its own reason: a bare key re-wrapped to the device, a key
// signed by another key (under its own kid or the KMS's), and the KMS's
// genuine signature moved to another envelope (another call, version,
// activation, expiry, or recipient device).
func TestSecurityForgedDeliveryReasons(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob", "mallory")
	alice := mustClient(t, env, "alice")
	mustClient(t, env, "bob")
	mustClient(t, env, "mallory")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob", "mallory"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	bobKey, malKey := deviceKey(t, env, "bob"), deviceKey(t, env, "mallory")
	kmsKid := thumbprint(env.Server.SigningKeys()[0].(*ecdsa.PublicKey))
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	// Genuine signed deliveries, as a holder of bob's or mallory's device
	// key can read them.
	rawKeys := func(identity, u string) []map[string]any {
		var out []map[string]any
		cc := rewriteKeys(t, env, identity, func(m map[string]any) {
			for _, k := range m["keys"].([]any) {
				out = append(out, k.(map[string]any))
			}
		})
		if _, err := cc.Fetch(ctx, u); err != nil {
			t.Fatal(err)
		}
		return out
	}
	malV1 := openJWE(t, rawKeys("mallory", uri)[0]["jwe"].(string), malKey)
	bobOther := openJWE(t, rawKeys("bob", other)[0]["jwe"].(string), bobKey)
	bobV1 := openJWE(t, rawKeys("bob", uri)[0]["jwe"].(string), bobKey)

	tests := []struct {
		name string
		// forge returns the JWE to put in place of version v's, given its
		// envelope h.
		forge func(t *testing.T, v int, h map[string]any) string
		want  error
	}{
		{"bare key re-wrapped", func(t *testing.T, v int, h map[string]any) string {
			return sealTo(t, make([]byte, media.CallKeySize), &bobKey.PublicKey, h)
		}, kms.ErrUnsigned},
		{"JWS of another type", func(t *testing.T, v int, h map[string]any) string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: attacker}, nil)
			jws, _ := s.Sign([]byte(`{}`))
			out, _ := jws.CompactSerialize()
			return sealTo(t, []byte(out), &bobKey.PublicKey, h)
		}, kms.ErrUnsigned},
		{"signed by another key", func(t *testing.T, v int, h map[string]any) string {
			return sealTo(t, signAs(t, attacker, thumbprint(&attacker.PublicKey), h, thumbprint(&bobKey.PublicKey)), &bobKey.PublicKey, h)
		}, kms.ErrSigner},
		{"signed by another key under the KMS's kid", func(t *testing.T, v int, h map[string]any) string {
			return sealTo(t, signAs(t, attacker, kmsKid, h, thumbprint(&bobKey.PublicKey)), &bobKey.PublicKey, h)
		}, kms.ErrSigner},
		{"another recipient's signed delivery", func(t *testing.T, v int, h map[string]any) string {
			return sealTo(t, malV1, &bobKey.PublicKey, h)
		}, kms.ErrSignedClaims},
		{"another call's signed delivery", func(t *testing.T, v int, h map[string]any) string {
			return sealTo(t, bobOther, &bobKey.PublicKey, h)
		}, kms.ErrSignedClaims},
		{"another version's signed delivery", func(t *testing.T, v int, h map[string]any) string {
			if v == 1 {
				return "" // keep version 1; replace version 2 with it
			}
			return sealTo(t, bobV1, &bobKey.PublicKey, h)
		}, kms.ErrSignedClaims},
		{"activation moved", func(t *testing.T, v int, h map[string]any) string {
			if v == 2 {
				return ""
			}
			h["sc-act"] = h["sc-act"].(float64) + 1000
			return sealTo(t, bobV1, &bobKey.PublicKey, h)
		}, kms.ErrSignedClaims},
		{"expiry extended", func(t *testing.T, v int, h map[string]any) string {
			if v == 2 {
				return ""
			}
			h["sc-exp"] = h["sc-exp"].(float64) + 1e9
			return sealTo(t, bobV1, &bobKey.PublicKey, h)
		}, kms.ErrSignedClaims},
		{"untouched", nil, nil},
	}
	reasons := []error{kms.ErrUnsigned, kms.ErrSigner, kms.ErrSignedClaims, kms.ErrTampered, kms.ErrBinding, kms.ErrMalformed}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bob := rewriteKeys(t, env, "bob", func(m map[string]any) {
				if tt.forge == nil {
					return
				}
				for i, k := range m["keys"].([]any) {
					k := k.(map[string]any)
					if jwe := tt.forge(t, i+1, jweHeader(t, k["jwe"].(string))); jwe != "" {
						k["jwe"] = jwe
					}
				}
			})
			keys, err := bob.Fetch(ctx, uri)
			if tt.want == nil {
				if err != nil || len(keys) != 2 {
					t.Fatalf("untouched delivery: %v, %v", keys, err)
				}
				return
			}
			var de *kms.DeliveryError
			if !errors.Is(err, tt.want) || !errors.Is(err, kms.ErrInvalidDelivery) || !errors.As(err, &de) || de.Reason != tt.want || keys != nil {
				t.Fatalf("got %v, %v; want %v", keys, err, tt.want)
			}
			for _, r := range reasons {
				if r != tt.want && errors.Is(err, r) {
					t.Fatalf("error %v also matches %v", err, r)
				}
			}
		})
	}
}

// The signing key is sealed in the store and survives a restart; after a
// rotation, devices that pinned the published keys keep verifying, and
// after a second one only devices given the new keys do.
func TestSigningKeyRotation(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := env.Server.SigningKeysJWKS()
	if err != nil {
		t.Fatal(err)
	}
	env.Close()
	env = reopen(t, dir, env.URL)
	if again, _ := env.Server.SigningKeysJWKS(); !bytes.Equal(again, jwks) {
		t.Fatalf("signing keys changed across a restart:\n%s\n%s", jwks, again)
	}
	pinned, err := kms.ParseKMSKeys(jwks)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	clientPinning := func(keys []crypto.PublicKey) *kms.Client {
		cfg, err := env.ClientConfig("alice")
		if err != nil {
			t.Fatal(err)
		}
		cfg.KMSKeys = keys
		c, err := kms.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := clientPinning(pinned)
	uri, err := old.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := env.Server.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Rotate(ctx, uri); err != nil { // a version it has not opened yet
		t.Fatal(err)
	}
	if _, err := clientPinning(pinned).Fetch(ctx, uri); err != nil {
		t.Fatalf("after one rotation, the keys pinned before it: %v", err)
	}
	second := env.Server.SigningKeys()
	if err := env.Server.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := clientPinning(pinned).Fetch(ctx, uri); !errors.Is(err, kms.ErrSigner) {
		t.Fatalf("after two rotations, the first keys pinned: %v, want ErrSigner", err)
	}
	if _, err := clientPinning(second).Fetch(ctx, uri); err != nil {
		t.Fatalf("after two rotations, the keys published between them: %v", err)
	}
	if !hasEntry(auditEntries(t, env), "signing-key", "operator", "ok", "") {
		t.Error("signing key rotation not audited")
	}
}

// The client never follows a redirect: a 3xx from the KMS URL is a
// *RedirectError naming the location, and the host it points to never
// sees a request, a certificate, a token or a proof.
func TestSecurityKMSRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer other.Close()
	target := other.URL + "/steal"
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	redirector.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	redirector.StartTLS()
	defer redirector.Close()

	env := startEnv(t, devkms.Options{}, "alice")
	cfg, err := env.ClientConfig("alice")
	if err != nil {
		t.Fatal(err)
	}
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// Both ways of building the client: its own transport, and a caller's
	// http.Client (whose CheckRedirect would follow).
	pool := redirector.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	pool.AddCert(other.Certificate())
	own := kms.Config{URL: redirector.URL, RootCAs: pool, Certificate: cfg.Certificate, Token: "secret", KMSKeys: cfg.KMSKeys}
	given := kms.Config{URL: redirector.URL, Token: "secret", DeviceKey: devKey, KMSKeys: cfg.KMSKeys, HTTPClient: &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cfg.Certificate}}},
	}}
	for name, cfg := range map[string]kms.Config{"own transport": own, "caller's http.Client": given} {
		t.Run(name, func(t *testing.T) {
			c, err := kms.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			uri := redirector.URL + "/v1/calls/abc"
			ctx := func() context.Context { return ctxT(t) }
			ops := map[string]func() error{
				"register": func() error { return c.Register(ctx()) },
				"create": func() error {
					_, err := c.CreateCall(ctx(), kms.CallOptions{Participants: []string{"alice"}})
					return err
				},
				"fetch":  func() error { _, err := c.Fetch(ctx(), uri); return err },
				"rotate": func() error { _, err := c.Rotate(ctx(), uri); return err },
				"remove": func() error { return c.RemoveParticipant(ctx(), uri, "bob") },
				"watch":  func() error { return c.Watch(ctx(), uri, func(media.CallKey) {}) },
			}
			for op, f := range ops {
				err := f()
				var re *kms.RedirectError
				if !errors.Is(err, kms.ErrRedirect) || !errors.As(err, &re) || !strings.HasPrefix(re.Location, target) || re.Status != http.StatusTemporaryRedirect {
					t.Errorf("%s: %v, want a RedirectError to %s", op, err, target)
				}
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target received %d requests", n)
	}
}
