package kms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/media"
)

// memStore is an in-memory Store for tests that need no file.
type memStore struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

func newMemStore() *memStore { return &memStore{m: map[string]map[string][]byte{}} }

func (s *memStore) Get(_ context.Context, bucket, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.m[bucket][key]), nil
}

func (s *memStore) ForEach(_ context.Context, bucket string, fn func(string, []byte) error) error {
	s.mu.Lock()
	b := maps.Clone(s.m[bucket])
	s.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if err := fn(k, b[k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Commit(_ context.Context, writes []Write) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range writes {
		if s.m[w.Bucket] == nil {
			s.m[w.Bucket] = map[string][]byte{}
		}
		if w.Value == nil {
			delete(s.m[w.Bucket], w.Key)
		} else {
			s.m[w.Bucket][w.Key] = bytes.Clone(w.Value)
		}
	}
	return nil
}

func (s *memStore) Close() error { return nil }

func TestClientDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	for name, got := range map[string][2]time.Duration{
		"Backoff.Initial": {c.Backoff.Initial, DefaultInitialBackoff},
		"Backoff.Max":     {c.Backoff.Max, DefaultMaxBackoff},
		"RequestTimeout":  {c.RequestTimeout, DefaultRequestTimeout},
		"WatchWait":       {c.WatchWait, DefaultWatchWait},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaults to %v, documented %v", name, got[0], got[1])
		}
	}
	if c.Logger == nil {
		t.Error("nil Logger not replaced by a silent one")
	}
}

func TestServerDefaults(t *testing.T) {
	c := ServerConfig{}.withDefaults()
	for name, got := range map[string][2]time.Duration{
		"ActivationDelay": {c.ActivationDelay, DefaultActivationDelay},
		"Grace":           {c.Grace, DefaultGrace},
		"KeyLifetime":     {c.KeyLifetime, DefaultKeyLifetime},
		"FreshnessWindow": {c.FreshnessWindow, DefaultFreshnessWindow},
		"MaxWatchWait":    {c.MaxWatchWait, DefaultMaxWatchWait},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaults to %v, documented %v", name, got[0], got[1])
		}
	}
	if c.Clock == nil || c.Logger == nil {
		t.Error("nil Clock or Logger not defaulted")
	}
	if d := (ServerConfig{ActivationDelay: -1}).withDefaults().ActivationDelay; d != 0 {
		t.Errorf("negative ActivationDelay gives %v, documented at once", d)
	}
}

func TestConfigsNotMutated(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	cfg := ServerConfig{Store: newMemStore(), KEK: kek}
	before := fmt.Sprintf("%#v", cfg)
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kek[0] = 0 // the server keeps its own copy
	if after := fmt.Sprintf("%#v", cfg); strings.Replace(after, "0x0,", "0x7,", 1) != before {
		t.Fatalf("NewServer changed the caller's config")
	}
	if s.cfg.KEK[0] != 7 {
		t.Fatal("the server shares the caller's KEK slice")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ccfg := Config{URL: "https://127.0.0.1:1", Token: "secret-token", DeviceKey: key, KMSKeys: testKMSKeys}
	cb := ccfg
	c, err := NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ccfg.Logger != cb.Logger || ccfg.Backoff != cb.Backoff || ccfg.WatchWait != cb.WatchWait {
		t.Fatal("NewClient changed the caller's config")
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := NewServer(ServerConfig{Store: newMemStore(), KEK: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("second server Close: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := NewClient(Config{URL: "https://127.0.0.1:1", Token: "t", DeviceKey: key, KMSKeys: testKMSKeys})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Close(); err == nil {
		t.Fatal("second client Close returned nil")
	}
	if _, err := c.Fetch(context.Background(), "https://127.0.0.1:1/v1/calls/x"); err == nil {
		t.Fatal("Fetch after Close succeeded")
	}
}

func TestSecretsRedacted(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cfg := Config{URL: "https://127.0.0.1:1", Token: "secret-token-value", DeviceKey: key, KMSKeys: testKMSKeys}
	var logged bytes.Buffer
	l := slog.New(slog.NewTextHandler(&logged, nil))
	l.Info("cfg", "config", cfg)
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, c), logged.String()} {
		if strings.Contains(s, "secret-token-value") || strings.Contains(s, key.D.String()) || strings.Contains(s, fmt.Sprintf("%x", key.D.Bytes())) {
			t.Fatalf("secret printed: %s", s)
		}
	}
}

func TestNewClientChecksConfig(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, cfg := range map[string]Config{
		"http":          {URL: "http://127.0.0.1:1", Token: "t", DeviceKey: key, KMSKeys: testKMSKeys},
		"path":          {URL: "https://127.0.0.1:1/kms", Token: "t", DeviceKey: key, KMSKeys: testKMSKeys},
		"no credential": {URL: "https://127.0.0.1:1", DeviceKey: key, KMSKeys: testKMSKeys},
		"no device key": {URL: "https://127.0.0.1:1", Token: "t"},
		"P-384":         {URL: "https://127.0.0.1:1", Token: "t", DeviceKey: p384, KMSKeys: testKMSKeys},
		"no KMS keys":   {URL: "https://127.0.0.1:1", Token: "t", DeviceKey: key},
		"P-384 KMS key": {URL: "https://127.0.0.1:1", Token: "t", DeviceKey: key, KMSKeys: []crypto.PublicKey{&p384.PublicKey}},
	} {
		if c, err := NewClient(cfg); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	c, _ := NewClient(Config{URL: "https://127.0.0.1:1", Token: "t", DeviceKey: key, KMSKeys: testKMSKeys})
	defer c.Close()
	for _, uri := range []string{"https://evil.example/v1/calls/x", "https://127.0.0.1:1/v1/calls/", "https://127.0.0.1:1/v1/calls/a/b"} {
		if _, err := c.Fetch(context.Background(), uri); err == nil {
			t.Errorf("fetch %q: accepted a URI of another KMS", uri)
		}
	}
}

// testSigner signs deliveries built by hand with a KMS key that
// testKMSKeys and testSigners pin.
var testKMSKeys, testSigner, testSigners = func() ([]crypto.PublicKey, jose.Signer, map[string]*ecdsa.PublicKey) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := keyID(&priv.PublicKey)
	sig, err := newDeliverySigner(priv, kid)
	if err != nil {
		panic(err)
	}
	return []crypto.PublicKey{&priv.PublicKey}, sig, map[string]*ecdsa.PublicKey{kid: &priv.PublicKey}
}()

// delivery builds a valid keys response for fuzz seeds.
func delivery(t testing.TB, priv *ecdsa.PrivateKey) (body []byte, jwe string) {
	kid, _ := keyID(&priv.PublicKey)
	now := time.Now()
	jwe, err := wrapKey(&priv.PublicKey, kid, binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1, ActivateAt: now, ExpiresAt: now.Add(time.Hour)}, bytes.Repeat([]byte{1}, media.CallKeySize), testSigner)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = json.Marshal(keysResponse{URI: "https://kms/v1/calls/c1", CallID: "c1", MinVersion: 1, Latest: 1, Keys: []wireKey{{Version: 1, State: "active", JWE: jwe}}})
	return body, jwe
}

func FuzzParseKeysResponse(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := keyID(&priv.PublicKey)
	body, _ := delivery(f, priv)
	f.Add(body, uint32(0))
	f.Add([]byte(`{"uri":"https://kms/v1/calls/c1","call_id":"c1","keys":[{"version":1,"jwe":"a.b.c.d.e"}]}`), uint32(0))
	f.Add([]byte(`{"keys":null}`), uint32(3))
	f.Fuzz(func(t *testing.T, body []byte, after uint32) {
		_, keys, _, err := parseKeysResponse(body, "https://kms/v1/calls/c1", "c1", after, priv, kid, testSigners, nil)
		if err != nil {
			if keys != nil {
				t.Fatal("keys returned with an error")
			}
			return
		}
		prev := after
		for _, k := range keys {
			if len(k.Key) != media.CallKeySize || k.Version <= prev || k.URI != "https://kms/v1/calls/c1" {
				t.Fatalf("accepted a bad key %v", k)
			}
			prev = k.Version
		}
	})
}

func FuzzUnwrapKey(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := keyID(&priv.PublicKey)
	_, jwe := delivery(f, priv)
	f.Add(jwe)
	parts := strings.Split(jwe, ".")
	f.Add(strings.Join(parts[:4], "."))
	f.Add("eyJhbGciOiJub25lIn0.....")
	f.Fuzz(func(t *testing.T, jwe string) {
		want := binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1}
		k, err := unwrapKey(jwe, priv, kid, testSigners, want)
		if err == nil && (len(k.Key) != media.CallKeySize || k.Version != 1 || k.CallID != "c1" || k.ActivateAt.IsZero()) {
			t.Fatalf("accepted %v", k)
		}
	})
}

func FuzzVerifyAuditLog(f *testing.F) {
	var log bytes.Buffer
	head := AuditHead{Hash: genesisHash}
	for i := range 3 {
		e := AuditEntry{Time: time.Unix(int64(i), 0).UTC(), Action: "fetch", Actor: "a", Outcome: "ok"}
		b, _ := e.seal(head)
		head = AuditHead{Seq: e.Seq, Hash: e.Hash}
		log.Write(append(b, '\n'))
	}
	f.Add(log.Bytes())
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"seq":1,"prev":"zz"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := VerifyAuditLog(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Every line of a verified log is one entry of the chain.
		n := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			n++
		}
		if h.Seq != uint64(n) {
			t.Fatalf("head %d from %d lines", h.Seq, n)
		}
	})
}

func FuzzParseCreateRequest(f *testing.F) {
	f.Add([]byte(`{"participants":["alice","bob"],"rotate_every_ms":1000}`))
	f.Add([]byte(`{"participants":[]}`))
	f.Add([]byte(`{"participants":["a","a"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCreateRequest(body)
		if err != nil {
			return
		}
		if len(req.Participants) == 0 || req.RotateEveryMS < 0 || req.LifetimeMS < 0 {
			t.Fatalf("accepted %+v", req)
		}
		seen := map[string]bool{}
		for _, p := range req.Participants {
			if p == "" || seen[p] {
				t.Fatalf("accepted participants %q", req.Participants)
			}
			seen[p] = true
		}
	})
}

func FuzzVerifyProof(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &Client{key: priv}
	p, err := c.proof("POST", "/v1/calls", []byte("{}"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := verifyProof(raw, &priv.PublicKey)
		if err == nil && raw != p && claims.Nonce == "" {
			t.Fatalf("accepted a proof without nonce: %q", raw)
		}
	})
}

func FuzzParsePublicJWK(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := json.Marshal(jose.JSONWebKey{Key: &priv.PublicKey})
	f.Add(b)
	pb, _ := json.Marshal(jose.JSONWebKey{Key: priv})
	f.Add(pb)
	f.Fuzz(func(t *testing.T, raw []byte) {
		pub, err := parsePublicJWK(raw)
		if err != nil {
			return
		}
		if _, err := pub.ECDH(); pub.Curve != elliptic.P256() || err != nil {
			t.Fatal("accepted a key that is not a valid P-256 point")
		}
	})
}

// BenchmarkWrapKey is the server's cost of one fresh JWE (ECDH-ES key
// agreement with an ephemeral key, A256KW, A256GCM): what a fetch costs
// when the wrapped-key cache misses.
func BenchmarkWrapKey(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := keyID(&priv.PublicKey)
	key := make([]byte, media.CallKeySize)
	bd := binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1, ActivateAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	for b.Loop() {
		if _, err := wrapKey(&priv.PublicKey, kid, bd, key, testSigner); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnwrapKey is the client's cost of checking and opening one JWE
// it has not seen before.
func BenchmarkUnwrapKey(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := keyID(&priv.PublicKey)
	_, jwe := delivery(b, priv)
	want := binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1}
	for b.Loop() {
		if _, err := unwrapKey(jwe, priv, kid, testSigners, want); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzServerRequest sends arbitrary requests, from an authenticated and
// registered device, through the whole handler: routing, query and body
// parsing, proofs. No input may crash it or get a 500.
func FuzzServerRequest(f *testing.F) {
	issuer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := NewServer(ServerConfig{Store: newMemStore(), KEK: make([]byte, 32), TokenKeys: []crypto.PublicKey{issuer.Public()}, MaxWatchWait: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: issuer}, nil)
	tok, _ := jwt.Signed(signer).Claims(jwt.Claims{Subject: "alice", Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	dev, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &Client{key: dev}
	serve := func(method, target string, body []byte, proof string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		if proof != "" {
			r.Header.Set(proofHeader, proof)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: &dev.PublicKey})
	reg, _ := json.Marshal(registerRequest{Key: jwk})
	p, _ := c.proof("POST", pathDevices, reg)
	if w := serve("POST", pathDevices, reg, p); w.Code != 200 {
		f.Fatalf("register: %d %s", w.Code, w.Body)
	}
	create := []byte(`{"participants":["alice"]}`)
	p, _ = c.proof("POST", pathCalls, create)
	w := serve("POST", pathCalls, create, p)
	var cr createResponse
	if err := json.Unmarshal(w.Body.Bytes(), &cr); err != nil || cr.CallID == "" {
		f.Fatalf("create: %d %s", w.Code, w.Body)
	}
	base := pathCalls + "/" + cr.CallID
	f.Add("GET", base+"/keys", []byte(nil), false)
	f.Add("GET", base+"/keys?after=1&wait=5", []byte(nil), false)
	f.Add("GET", base+"/keys?version=99999999999", []byte(nil), false)
	f.Add("POST", base+"/rotate", []byte(nil), true)
	f.Add("DELETE", base+"/participants/bob", []byte(nil), true)
	f.Add("POST", pathCalls, []byte(`{"participants":["a","b"],"rotate_every_ms":5}`), true)
	f.Add("POST", pathDevices, []byte(`{"key":{"kty":"EC"}}`), true)
	f.Fuzz(func(t *testing.T, method, target string, body []byte, withProof bool) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t") || len(target) > 512 {
			return
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // not a request line a server could receive
		}
		switch method {
		case "GET", "POST", "DELETE", "PUT":
		default:
			return
		}
		proof := ""
		if withProof {
			path, _, _ := strings.Cut(target, "?")
			proof, _ = c.proof(method, path, body)
		}
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("%s %s: panic %v", method, target, r)
			}
		}()
		w := serve(method, target, body, proof)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: %d %s", method, target, body, w.Code, w.Body)
		}
	})
}
