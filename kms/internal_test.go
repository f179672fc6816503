package kms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/internal/cfgcheck"
	"github.com/securecall/securecall/kms/internal/wire"
	"github.com/securecall/securecall/media"
)

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
	if c.Clock == nil {
		t.Error("nil Clock not replaced by time.Now")
	} else if d := time.Since(c.Clock()); d < 0 || d > time.Minute {
		t.Errorf("the default Clock is %v away from time.Now", d)
	}
	if c.MaxCachedCalls != DefaultMaxCachedCalls {
		t.Errorf("MaxCachedCalls defaults to %d, documented %d", c.MaxCachedCalls, DefaultMaxCachedCalls)
	}
}

func TestClientConfigNotMutated(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ccfg := Config{URL: "https://127.0.0.1:1", URLs: []string{"https://127.0.0.2:1", "https://127.0.0.3:1"},
		Token: "secret-token", DeviceKey: key, KMSKeys: testKMSKeys}
	before := cfgcheck.Snapshot(ccfg)
	c, err := NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := cfgcheck.Diff(before, ccfg); d != "" {
		t.Fatalf("NewClient changed the caller's config at %s", d)
	}
}

func TestCloseIdempotent(t *testing.T) {
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
	kid, _ := wire.KeyID(&priv.PublicKey)
	sig, err := wire.NewDeliverySigner(priv, kid)
	if err != nil {
		panic(err)
	}
	return []crypto.PublicKey{&priv.PublicKey}, sig, map[string]*ecdsa.PublicKey{kid: &priv.PublicKey}
}()

// delivery builds a valid keys response for fuzz seeds.
func delivery(t testing.TB, priv *ecdsa.PrivateKey) (body []byte, jwe string) {
	kid, _ := wire.KeyID(&priv.PublicKey)
	now := time.Now()
	jwe, err := wire.WrapKey(&priv.PublicKey, kid, wire.Binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1, ActivateAt: now, ExpiresAt: now.Add(time.Hour)}, bytes.Repeat([]byte{1}, media.CallKeySize), testSigner)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = json.Marshal(wire.KeysResponse{URI: "https://kms/v1/calls/c1", CallID: "c1", MinVersion: 1, Latest: 1, Keys: []wire.Key{{Version: 1, State: "active", JWE: jwe}}})
	return body, jwe
}

// A keys answer whose list of revoked versions the KMS would not send is
// refused as malformed, and nothing in it is handed on or cached.
func TestParseKeysResponseRevokedList(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := wire.KeyID(&priv.PublicKey)
	_, jwe := delivery(t, priv)
	long := make([]uint32, wire.MaxRevokedListed+1)
	for i := range long {
		long[i] = uint32(i + 2)
	}
	for name, tc := range map[string]struct {
		revoked   []uint32
		min       uint32
		withdrawn uint64
		ok        bool
	}{
		"none":          {nil, 1, 1, true},
		"listed":        {[]uint32{2, 5}, 1, 3, true},
		"old server":    {nil, 1, 0, true},
		"too many":      {long, 1, 100, false},
		"out of order":  {[]uint32{5, 2}, 1, 3, false},
		"repeated":      {[]uint32{2, 2}, 1, 3, false},
		"below minimum": {[]uint32{2}, 3, 4, false},
		"above latest":  {[]uint32{70}, 1, 2, false},
		"zero":          {[]uint32{0}, 0, 1, false},
	} {
		delivered := []wire.Key{{Version: 1, State: "active", JWE: jwe}}
		if tc.min > 1 {
			delivered = nil // version 1 is below the minimum
		}
		body, _ := json.Marshal(wire.KeysResponse{URI: "https://kms/v1/calls/c1", CallID: "c1", MinVersion: tc.min, Latest: 66,
			Keys: delivered, Revoked: tc.revoked, Withdrawn: tc.withdrawn})
		_, keys, _, err := parseKeysResponse(body, "https://kms/v1/calls/c1", "c1", 0, priv, kid, testSigners, nil)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", name, err)
		case !tc.ok && (!errors.Is(err, ErrMalformed) || keys != nil):
			t.Errorf("%s: %v, %d keys; want ErrMalformed and none", name, err, len(keys))
		}
	}
}

func FuzzParseKeysResponse(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := wire.KeyID(&priv.PublicKey)
	body, _ := delivery(f, priv)
	f.Add(body, uint32(0))
	f.Add([]byte(`{"uri":"https://kms/v1/calls/c1","call_id":"c1","keys":[{"version":1,"jwe":"a.b.c.d.e"}]}`), uint32(0))
	f.Add([]byte(`{"keys":null}`), uint32(3))
	f.Add([]byte(`{"uri":"https://kms/v1/calls/c1","call_id":"c1","min_version":2,"latest":9,"keys":[],"revoked":[3,5],"withdrawn":4}`), uint32(0))
	f.Fuzz(func(t *testing.T, body []byte, after uint32) {
		resp, keys, _, err := parseKeysResponse(body, "https://kms/v1/calls/c1", "c1", after, priv, kid, testSigners, nil)
		if err != nil {
			if keys != nil {
				t.Fatal("keys returned with an error")
			}
			return
		}
		if len(resp.Revoked) > wire.MaxRevokedListed || !slices.IsSorted(resp.Revoked) {
			t.Fatalf("accepted revoked versions %v", resp.Revoked)
		}
		for _, v := range resp.Revoked {
			if v < resp.MinVersion || v > resp.Latest || v == 0 {
				t.Fatalf("accepted revoked version %d outside %d..%d", v, resp.MinVersion, resp.Latest)
			}
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
	kid, _ := wire.KeyID(&priv.PublicKey)
	_, jwe := delivery(f, priv)
	f.Add(jwe)
	parts := strings.Split(jwe, ".")
	f.Add(strings.Join(parts[:4], "."))
	f.Add("eyJhbGciOiJub25lIn0.....")
	f.Fuzz(func(t *testing.T, jwe string) {
		want := wire.Binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1}
		k, err := unwrapKey(jwe, priv, kid, testSigners, want)
		if err == nil && (len(k.Key) != media.CallKeySize || k.Version != 1 || k.CallID != "c1" || k.ActivateAt.IsZero()) {
			t.Fatalf("accepted %v", k)
		}
	})
}

// BenchmarkUnwrapKey is the client's cost of checking and opening one JWE
// it has not seen before.
func BenchmarkUnwrapKey(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := wire.KeyID(&priv.PublicKey)
	_, jwe := delivery(b, priv)
	want := wire.Binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1}
	for b.Loop() {
		if _, err := unwrapKey(jwe, priv, kid, testSigners, want); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseKMSKeys(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := json.Marshal(map[string]any{"keys": []any{jose.JSONWebKey{Key: &priv.PublicKey}}})
	f.Add(b)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		keys, err := ParseKMSKeys(raw)
		if err != nil {
			return
		}
		if _, err := pinSigners(keys); err != nil {
			t.Fatalf("parsed keys that cannot be pinned: %v", err)
		}
	})
}

// The versions a cache entry remembers as revoked are bounded (the
// highest kept) and sorted, and a higher minimum lets go of those below.
func TestCacheGoneBounded(t *testing.T) {
	c := &Client{cfg: Config{MaxCachedCalls: 4}, cache: map[string]*cacheEntry{}}
	const uri = "https://kms.example/v1/calls/x"
	for v := uint32(200); v > 0; v -= 2 {
		c.learn(uri, v, ErrRevoked)
	}
	e := c.cache[uri]
	if len(e.gone) != maxGone || e.gone[0] != 200-2*(maxGone-1) || e.gone[maxGone-1] != 200 {
		t.Fatalf("gone: %d versions from %d to %d, want %d, the highest", len(e.gone), e.gone[0], e.gone[len(e.gone)-1], maxGone)
	}
	c.learn(uri, 202, ErrRevoked) // a higher one pushes out the lowest
	if len(e.gone) != maxGone || e.gone[0] != 200-2*(maxGone-2) || e.gone[maxGone-1] != 202 {
		t.Fatalf("gone after 202: %d versions from %d to %d", len(e.gone), e.gone[0], e.gone[len(e.gone)-1])
	}
	c.learn(uri, 150, ErrBelowMinimum)
	if e.min != 151 || e.gone[0] <= 150 {
		t.Fatalf("after below_minimum at 150: min %d, lowest gone %d", e.min, e.gone[0])
	}
}

// A delivery refused after some of its keys were opened wipes them: here
// a repeated delivery (opened before, handed over by known) followed by
// a version out of order.
func TestRefusedDeliveryWiped(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := wire.KeyID(&priv.PublicKey)
	const uri = "https://kms/v1/calls/c1"
	body, _ := json.Marshal(wire.KeysResponse{URI: uri, CallID: "c1", Latest: 3, Keys: []wire.Key{
		{Version: 3, JWE: "known"}, {Version: 2, JWE: "out-of-order"},
	}})
	key := bytes.Repeat([]byte{7}, media.CallKeySize)
	known := func(v uint32, jwe string) (media.CallKey, bool) {
		if v != 3 || jwe != "known" {
			return media.CallKey{}, false
		}
		return media.CallKey{URI: uri, CallID: "c1", Version: 3, Key: key}, true
	}
	_, keys, _, err := parseKeysResponse(body, uri, "c1", 0, priv, kid, testSigners, known)
	if !errors.Is(err, ErrBinding) || keys != nil {
		t.Fatalf("versions out of order: %v, %v; want ErrBinding", keys, err)
	}
	if !bytes.Equal(key, make([]byte, media.CallKeySize)) {
		t.Fatal("the key opened before the refusal was not wiped")
	}
}

// FuzzCallID: validCallID takes exactly the ids a KMS could have made (1
// to 128 of URL's unreserved characters, not a dot segment), and the
// refusal's quote of any input stays bounded.
func FuzzCallID(f *testing.F) {
	for _, s := range []string{"", ".", "..", "...", "abc", "a b", "caf\u00e9", "a\x00", strings.Repeat("a", 128), strings.Repeat("a", 129), "AZaz09-._~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		want := id != "" && len(id) <= 128 && id != "." && id != ".."
		for _, r := range id {
			if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", r) {
				want = false
			}
		}
		if got := validCallID(id); got != want {
			t.Fatalf("validCallID(%q) = %t, want %t", id, got, want)
		}
		// Quoting escapes a byte as at most 4 (\x00), plus quotes and the
		// length note.
		if q := quotePrefix(id, maxQuotedURI); len(q) > 4*maxQuotedURI+40 {
			t.Fatalf("quotePrefix of %d bytes: %d bytes", len(id), len(q))
		}
	})
}
