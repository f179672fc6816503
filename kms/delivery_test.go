package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// tamper rewrites the JWE of the first key of a delivery.
type tamper func(t *testing.T, jwe string, devKey *ecdsa.PrivateKey) string

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flipPart flips a bit of one part of a compact JWE.
func flipPart(i int) tamper {
	return func(t *testing.T, jwe string, _ *ecdsa.PrivateKey) string {
		parts := strings.Split(jwe, ".")
		b := unb64(t, parts[i])
		b[len(b)/2] ^= 0x01
		parts[i] = b64(b)
		return strings.Join(parts, ".")
	}
}

// rewrap wraps a fresh key to key with the binding headers of jwe (after
// edit), using alg and enc; kid "" keeps jwe's kid.
func rewrap(t *testing.T, jwe string, key *ecdsa.PublicKey, alg jose.KeyAlgorithm, enc jose.ContentEncryption, kid string, edit func(map[string]any)) string {
	var h map[string]any
	if err := json.Unmarshal(unb64(t, strings.Split(jwe, ".")[0]), &h); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(h)
	}
	opts := &jose.EncrypterOptions{}
	for _, k := range []string{"sc-uri", "sc-call", "sc-ver", "sc-act", "sc-exp"} {
		if v, ok := h[k]; ok {
			opts.WithHeader(jose.HeaderKey(k), v)
		}
	}
	if kid == "" {
		kid, _ = h["kid"].(string)
	}
	e, err := jose.NewEncrypter(enc, jose.Recipient{Algorithm: alg, Key: key, KeyID: kid}, opts)
	if err != nil {
		t.Fatal(err)
	}
	k := make([]byte, 32)
	rand.Read(k)
	obj, err := e.Encrypt(k)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTamperedDeliveryRejected(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tp, _ := (&jose.JSONWebKey{Key: &other.PublicKey}).Thumbprint(crypto.SHA256)
	otherKid := b64(tp)
	tests := []struct {
		name   string
		tamper tamper
		min    uint32
		want   error
	}{
		{"header", func(t *testing.T, jwe string, _ *ecdsa.PrivateKey) string {
			parts := strings.Split(jwe, ".")
			var h map[string]any
			if err := json.Unmarshal(unb64(t, parts[0]), &h); err != nil {
				t.Fatal(err)
			}
			h["sc-exp"] = h["sc-exp"].(float64) + 1e9 // extend the expiry
			b, _ := json.Marshal(h)
			parts[0] = b64(b)
			return strings.Join(parts, ".")
		}, 0, kms.ErrTampered},
		{"encrypted key", flipPart(1), 0, kms.ErrTampered},
		{"iv", flipPart(2), 0, kms.ErrTampered},
		{"ciphertext", flipPart(3), 0, kms.ErrTampered},
		{"tag", flipPart(4), 0, kms.ErrTampered},
		{"wrong device key", func(t *testing.T, jwe string, _ *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &other.PublicKey, jose.ECDH_ES_A256KW, jose.A256GCM, otherKid, nil)
		}, 0, kms.ErrWrongRecipient},
		{"wrong device key, forged kid", func(t *testing.T, jwe string, _ *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &other.PublicKey, jose.ECDH_ES_A256KW, jose.A256GCM, "", nil)
		}, 0, kms.ErrTampered},
		{"alg ECDH-ES direct", func(t *testing.T, jwe string, k *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &k.PublicKey, jose.ECDH_ES, jose.A256GCM, "", nil)
		}, 0, kms.ErrAlgorithm},
		{"enc A128GCM", func(t *testing.T, jwe string, k *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &k.PublicKey, jose.ECDH_ES_A128KW, jose.A128GCM, "", nil)
		}, 0, kms.ErrAlgorithm},
		{"binds another call", func(t *testing.T, jwe string, k *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &k.PublicKey, jose.ECDH_ES_A256KW, jose.A256GCM, "", func(h map[string]any) { h["sc-call"] = "another" })
		}, 0, kms.ErrBinding},
		{"binds another version", func(t *testing.T, jwe string, k *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &k.PublicKey, jose.ECDH_ES_A256KW, jose.A256GCM, "", func(h map[string]any) { h["sc-ver"] = 7 })
		}, 0, kms.ErrBinding},
		{"no expiry binding", func(t *testing.T, jwe string, k *ecdsa.PrivateKey) string {
			return rewrap(t, jwe, &k.PublicKey, jose.ECDH_ES_A256KW, jose.A256GCM, "", func(h map[string]any) { delete(h, "sc-exp") })
		}, 0, kms.ErrBinding},
		{"below minimum", nil, 2, kms.ErrBelowMinimum},
		{"untouched", nil, 0, nil},
	}
	reasons := []error{kms.ErrTampered, kms.ErrWrongRecipient, kms.ErrAlgorithm, kms.ErrBinding, kms.ErrBelowMinimum}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var devKey *ecdsa.PrivateKey
			bob, cfg := clientWith(t, env, "bob", func(rt http.RoundTripper) http.RoundTripper {
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
					k0 := m["keys"].([]any)[0].(map[string]any)
					if tt.tamper != nil {
						k0["jwe"] = tt.tamper(t, k0["jwe"].(string), devKey)
					}
					if tt.min != 0 {
						m["min_version"] = tt.min
					}
					body, _ = json.Marshal(m)
					resp.Body = io.NopCloser(bytes.NewReader(body))
					resp.ContentLength = int64(len(body))
					return resp, nil
				})
			})
			devKey = cfg.Certificate.PrivateKey.(*ecdsa.PrivateKey)
			keys, err := bob.Fetch(ctx, uri)
			if tt.want == nil {
				if err != nil || len(keys) != 1 {
					t.Fatalf("untouched delivery: %v, %v", keys, err)
				}
				return
			}
			var de *kms.DeliveryError
			if !errors.Is(err, tt.want) || !errors.Is(err, kms.ErrInvalidDelivery) || !errors.As(err, &de) || keys != nil {
				t.Fatalf("got %v, %v; want %v", keys, err, tt.want)
			}
			for _, other := range reasons {
				if other != tt.want && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestKeyStatesAndMinimum(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := alice.Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := alice.Fetch(ctx, uri)
	if err != nil || len(keys) != 4 {
		t.Fatalf("%v %v", keys, err)
	}
	id := keys[0].CallID
	if err := env.Server.SetKeyState(ctx, id, 3, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	if err := env.Server.SetKeyState(ctx, id, 4, kmsserver.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	if err := env.Server.SetKeyState(ctx, id, 4, kmsserver.StateCompromised); err == nil {
		t.Fatal("a destroyed key changed state")
	}
	if err := env.Server.SetMinVersion(ctx, id, 2); err != nil {
		t.Fatal(err)
	}
	// Destroying version 4, the newest, made version 5 in its place:
	// live calls have a version to move to. Compromising 3 did not, as 4
	// was newer.
	keys, err = alice.Fetch(ctx, uri)
	if err != nil || len(keys) != 2 || keys[0].Version != 2 || keys[1].Version != 5 {
		t.Fatalf("usable after compromise/destroy/min: %v, %v; want v2 and v5", versions(keys), err)
	}
	for _, tt := range []struct {
		v    uint32
		want error
		code string
	}{
		{1, kms.ErrBelowMinimum, "below_minimum"},
		{3, kms.ErrRevoked, "compromised"},
		{4, kms.ErrRevoked, "destroyed"},
		{6, kms.ErrNotFound, "not_found"},
	} {
		k, err := alice.FetchVersion(ctx, uri, tt.v)
		if !errors.Is(err, tt.want) || serverCode(err) != tt.code || k.Key != nil {
			t.Errorf("version %d: %v, %v; want %v (%s)", tt.v, k, err, tt.want, tt.code)
		}
	}
	if k, err := alice.FetchVersion(ctx, uri, 2); err != nil || k.Version != 2 {
		t.Fatalf("v2: %v %v", k, err)
	}
	entries := auditEntries(t, env)
	if !hasEntry(entries, "state", "operator", "ok", "compromised") || !hasEntry(entries, "state", "operator", "ok", "destroyed") {
		t.Fatal("state changes not audited")
	}
	if !hasEntry(entries, "rotate", "operator", "ok", "version 4 destroyed") || hasEntry(entries, "rotate", "operator", "ok", "version 3 compromised") {
		t.Fatal("want one rotation audited, for the newest version destroyed")
	}
}

func TestAuthenticationFailures(t *testing.T) {
	issuer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{TokenKeys: []crypto.PublicKey{issuer.Public()}}}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "token:dave"}})
	if err != nil {
		t.Fatal(err)
	}
	token := func(signer *ecdsa.PrivateKey, sub string, exp time.Time) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signer}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(jwt.Claims{Subject: sub, Expiry: jwt.NewNumericDate(exp)}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	daveKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokenClient := func(tok string) *kms.Client {
		c, err := kms.NewClient(kms.Config{URL: env.URL, RootCAs: env.RootCAs(), KMSKeys: env.Server.SigningKeys(), Token: tok, DeviceKey: daveKey})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// A valid token works end to end.
	dave := tokenClient(token(issuer, "dave", time.Now().Add(time.Hour)))
	if err := dave.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if keys, err := dave.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("token fetch: %v %v", keys, err)
	}

	otherCA, err := testpki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := otherCA.Device(testpki.Validity{}, "alice")
	expired, _ := env.CA.Device(testpki.Validity{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, "alice")
	certClient := func(cert tls.Certificate) *kms.Client {
		c, err := kms.NewClient(kms.Config{URL: env.URL, RootCAs: env.RootCAs(), KMSKeys: env.Server.SigningKeys(), Certificate: cert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	mallory, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tt := range []struct {
		name string
		c    *kms.Client
		code string
	}{
		{"expired token", tokenClient(token(issuer, "dave", time.Now().Add(-time.Hour))), "token_expired"},
		{"token from another issuer", tokenClient(token(mallory, "dave", time.Now().Add(time.Hour))), "bad_token"},
		{"expired certificate", certClient(expired), "certificate_expired"},
		{"certificate from another CA", certClient(foreign), "unknown_authority"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, ferr := tt.c.Fetch(ctx, uri)
			for op, err := range map[string]error{"register": tt.c.Register(ctx), "fetch": ferr} {
				if !errors.Is(err, kms.ErrUnauthorized) || serverCode(err) != tt.code {
					t.Fatalf("%s: %v; want ErrUnauthorized %s", op, err, tt.code)
				}
			}
		})
	}
	entries := auditEntries(t, env)
	for _, code := range []string{"token_expired", "bad_token", "certificate_expired", "unknown_authority"} {
		if !hasEntry(entries, "fetch", "", "denied", code) {
			t.Errorf("%s not audited", code)
		}
	}
}

func TestTokenSourceAndAudience(t *testing.T) {
	issuer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{TokenKeys: []crypto.PublicKey{issuer.Public()}, TokenAudience: "securecall-kms"}})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: issuer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(aud ...string) string {
		tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: "erin", Audience: aud, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var minted int
	var aud []string
	errSource := errors.New("no token today")
	var fail bool
	c, err := kms.NewClient(kms.Config{URL: env.URL, RootCAs: env.RootCAs(), KMSKeys: env.Server.SigningKeys(), DeviceKey: devKey,
		TokenSource: func(context.Context) (string, error) {
			if fail {
				return "", errSource
			}
			minted++
			return mint(aud...), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Register(ctx); !errors.Is(err, kms.ErrUnauthorized) || serverCode(err) != "bad_token" {
		t.Fatalf("token without the audience: %v", err)
	}
	aud = []string{"securecall-kms"}
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	uri, err := c.CreateCall(ctx, kms.CallOptions{Participants: []string{"token:erin"}})
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := c.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("%v %v", keys, err)
	}
	if minted != 4 {
		t.Fatalf("TokenSource called %d times for 4 requests", minted)
	}
	fail = true
	if _, err := c.Rotate(ctx, uri); !errors.Is(err, errSource) {
		t.Fatalf("TokenSource error not returned: %v", err)
	}
}

// A KMS without a BaseURL names its keys by the host a request used. One
// device that reaches it by two names (its certificate is for both) gets
// each delivery bound to the name it asked under: a delivery the server
// wrapped for the other name is not served again under this one.
func TestDeliveryBindsTheHostAskedFor(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	ctx := ctxT(t)
	alice := mustClient(t, env, "alice")
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	byIP := mustClient(t, env, "bob")
	if _, err := byIP.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	cfg, err := env.ClientConfig("bob")
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = strings.Replace(env.URL, "127.0.0.1", "localhost", 1)
	byName, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer byName.Close()
	named := strings.Replace(uri, "127.0.0.1", "localhost", 1)
	keys, err := byName.Fetch(ctx, named)
	if err != nil {
		t.Fatalf("fetch of %s after a fetch of %s: %v", named, uri, err)
	}
	if len(keys) != 1 || keys[0].URI != named {
		t.Fatalf("got %v, want version 1 of %s", keys, named)
	}
}
