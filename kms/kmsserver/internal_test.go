package kmsserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/kms/internal/wire"
)

// memStore is an in-memory Store for tests that need no file.
type memStore struct {
	mu      sync.Mutex
	m       map[string]map[string][]byte
	commits int // what a file store would fsync
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
	s.commits++
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

// size returns the bytes held in bucket and the number of commits so far.
func (s *memStore) size(bucket string) (bytes, commits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.m[bucket] {
		bytes += len(v)
	}
	return bytes, s.commits
}

func TestServerDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	for name, got := range map[string][2]time.Duration{
		"ActivationDelay":   {c.ActivationDelay, DefaultActivationDelay},
		"Grace":             {c.Grace, DefaultGrace},
		"KeyLifetime":       {c.KeyLifetime, DefaultKeyLifetime},
		"FreshnessWindow":   {c.FreshnessWindow, DefaultFreshnessWindow},
		"MaxWatchWait":      {c.MaxWatchWait, DefaultMaxWatchWait},
		"MaxCallLifetime":   {c.MaxCallLifetime, DefaultMaxCallLifetime},
		"EndedRetention":    {c.EndedRetention, DefaultEndedRetention},
		"MinRotateEvery":    {c.MinRotateEvery, DefaultMinRotateEvery},
		"MaxClockSkew":      {c.MaxClockSkew, DefaultMaxClockSkew},
		"DenialInterval":    {c.DenialInterval, DefaultDenialInterval},
		"ReadHeaderTimeout": {c.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		"ReadTimeout":       {c.ReadTimeout, DefaultReadTimeout},
		"WriteTimeout":      {c.WriteTimeout, DefaultWriteTimeout},
		"IdleTimeout":       {c.IdleTimeout, DefaultIdleTimeout},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaults to %v, documented %v", name, got[0], got[1])
		}
	}
	for name, got := range map[string][2]int{
		"RequestBurst":        {c.RequestBurst, DefaultRequestBurst},
		"MaxCallsPerDevice":   {c.MaxCallsPerDevice, DefaultMaxCallsPerDevice},
		"MaxWatchesPerDevice": {c.MaxWatchesPerDevice, DefaultMaxWatchesPerDevice},
		"RotationsPerMinute":  {c.RotationsPerMinute, DefaultRotationsPerMinute},
		"MaxKeysPerResponse":  {c.MaxKeysPerResponse, DefaultMaxKeysPerResponse},
		"MaxNonces":           {c.MaxNonces, DefaultMaxNonces},
		"MaxRevokedDevices":   {c.MaxRevokedDevices, DefaultMaxRevokedDevices},
		"MaxConns":            {c.MaxConns, DefaultMaxConns},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaults to %v, documented %v", name, got[0], got[1])
		}
	}
	if c.RequestRate != DefaultRequestRate || c.FailedAuthRate != DefaultFailedAuthRate {
		t.Errorf("RequestRate and FailedAuthRate default to %v and %v, documented %v and %v", c.RequestRate, c.FailedAuthRate, DefaultRequestRate, DefaultFailedAuthRate)
	}
	if c.Clock == nil || c.WakeAt == nil || c.Logger == nil {
		t.Error("nil Clock, WakeAt or Logger not defaulted")
	}
	if d := (Config{EndedRetention: -1}).withDefaults().EndedRetention; d != 0 {
		t.Errorf("negative EndedRetention gives %v, documented at once", d)
	}
	srv := (&Server{cfg: c}).HTTPServer(tls.Certificate{})
	if srv.ReadHeaderTimeout != c.ReadHeaderTimeout || srv.ReadTimeout != c.ReadTimeout || srv.WriteTimeout != c.WriteTimeout || srv.IdleTimeout != c.IdleTimeout {
		t.Errorf("HTTPServer does not carry the configured timeouts: %+v", srv)
	}
	if d := (Config{ActivationDelay: -1}).withDefaults().ActivationDelay; d != 0 {
		t.Errorf("negative ActivationDelay gives %v, documented at once", d)
	}
}

func TestConfigsNotMutated(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	cfg := Config{Store: newMemStore(), KEK: kek}
	before := fmt.Sprintf("%#v", cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kek[0] = 0 // the server keeps its own copy
	if after := fmt.Sprintf("%#v", cfg); strings.Replace(after, "0x0,", "0x7,", 1) != before {
		t.Fatalf("New changed the caller's config")
	}
	if s.cfg.KEK[0] != 7 {
		t.Fatal("the server shares the caller's KEK slice")
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := New(Config{Store: newMemStore(), KEK: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("second server Close: %v", err)
	}
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
		// Every line of a verified log is one entry of the chain, which
		// starts at 1 or, in a compacted log, after its checkpoint.
		n := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			n++
		}
		if n == 0 {
			if h.Seq != 0 {
				t.Fatalf("head %d from an empty log", h.Seq)
			}
			return
		}
		first, _, _ := bytes.Cut(data, []byte("\n"))
		var e struct{ Seq uint64 }
		if err := json.Unmarshal(first, &e); err != nil {
			t.Fatalf("verified log whose first line is no entry: %v", err)
		}
		if h.Seq != e.Seq+uint64(n)-1 {
			t.Fatalf("head %d from %d lines starting at %d", h.Seq, n, e.Seq)
		}
	})
}

func FuzzParseCreateRequest(f *testing.F) {
	f.Add([]byte(`{"participants":["alice","bob"],"rotate_every_ms":1000}`))
	f.Add([]byte(`{"participants":[]}`))
	f.Add([]byte(`{"participants":["a","a"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCreateRequest(body, DefaultMinRotateEvery)
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
	p, err := wire.SignProof(priv, testAudience, "POST", "/v1/calls", []byte("{}"), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		claims, _, err := verifyProof(raw, &priv.PublicKey)
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
		pub, err := wire.ParsePublicJWK(raw)
		if err != nil {
			return
		}
		if _, err := pub.ECDH(); pub.Curve != elliptic.P256() || err != nil {
			t.Fatal("accepted a key that is not a valid P-256 point")
		}
	})
}

// BenchmarkWrapKey is the server's cost of one fresh delivery (an ES256
// signature, then ECDH-ES key agreement with an ephemeral key, A256KW,
// A256GCM): what a fetch costs when the wrapped-key cache misses.
func BenchmarkWrapKey(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, _ := wire.KeyID(&priv.PublicKey)
	key := make([]byte, 32)
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	skid, _ := wire.KeyID(&sk.PublicKey)
	signer, err := wire.NewDeliverySigner(sk, skid)
	if err != nil {
		b.Fatal(err)
	}
	bd := wire.Binding{URI: "https://kms/v1/calls/c1", CallID: "c1", Version: 1, ActivateAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	for b.Loop() {
		if _, err := wire.WrapKey(&priv.PublicKey, kid, bd, key, signer); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzServerRequest sends arbitrary requests, from an authenticated and
// registered device, through the whole handler: routing, query and body
// parsing, proofs. No input may crash it or get a 500.
func FuzzServerRequest(f *testing.F) {
	issuer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := New(Config{Store: newMemStore(), KEK: make([]byte, 32), TokenKeys: []crypto.PublicKey{issuer.Public()}, MaxWatchWait: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: issuer}, nil)
	tok, _ := jwt.Signed(signer).Claims(jwt.Claims{Subject: "alice", Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	dev, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serve := func(method, target string, body []byte, proof string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		if proof != "" {
			r.Header.Set(wire.ProofHeader, proof)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: &dev.PublicKey})
	reg, _ := json.Marshal(wire.RegisterRequest{Key: jwk})
	p, _ := wire.SignProof(dev, testAudience, "POST", wire.PathDevices, reg, time.Now())
	if w := serve("POST", wire.PathDevices, reg, p); w.Code != 200 {
		f.Fatalf("register: %d %s", w.Code, w.Body)
	}
	create := []byte(`{"participants":["token:alice"]}`)
	p, _ = wire.SignProof(dev, testAudience, "POST", wire.PathCalls, create, time.Now())
	w := serve("POST", wire.PathCalls, create, p)
	var cr wire.CreateResponse
	if err := json.Unmarshal(w.Body.Bytes(), &cr); err != nil || cr.CallID == "" {
		f.Fatalf("create: %d %s", w.Code, w.Body)
	}
	base := wire.PathCalls + "/" + cr.CallID
	f.Add("GET", base+"/keys", []byte(nil), false)
	f.Add("GET", base+"/keys?after=1&wait=5", []byte(nil), false)
	f.Add("GET", base+"/keys?version=99999999999", []byte(nil), false)
	f.Add("POST", base+"/rotate", []byte(nil), true)
	f.Add("DELETE", base+"/participants/bob", []byte(nil), true)
	f.Add("POST", wire.PathCalls, []byte(`{"participants":["a","b"],"rotate_every_ms":5}`), true)
	f.Add("POST", wire.PathDevices, []byte(`{"key":{"kty":"EC"}}`), true)
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
			proof, _ = wire.SignProof(dev, testAudience, method, path, body, time.Now())
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

// LimitListener accepts MaxConns connections, and the next only when one
// of them closes.
func TestLimitListener(t *testing.T) {
	s := &Server{cfg: Config{MaxConns: 2}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := s.LimitListener(ln)
	defer l.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	a, b := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection accepted beyond MaxConns 2")
	case <-time.After(100 * time.Millisecond):
	}
	a.Close()
	third := <-accepted
	third.Close()
	b.Close()
}

func FuzzOpenRecord(f *testing.F) {
	s := &Server{}
	s.macKey, _ = deriveMACKey(make([]byte, 32))
	good := s.sealRecord("calls", "k", 7, []byte(`{"id":"k"}`))
	f.Add(good)
	f.Add([]byte("scr1"))
	f.Add(append([]byte(nil), good[:recordHeader]...))
	f.Fuzz(func(t *testing.T, stored []byte) {
		seq, v, err := s.openRecord("calls", "k", stored)
		if err != nil {
			return
		}
		if !bytes.Equal(s.sealRecord("calls", "k", seq, v), stored) {
			t.Fatal("accepted a record its own MAC does not produce")
		}
	})
}

// The default WakeAt is a real timer on the Clock's time: it fires when
// the Clock reaches the time asked, not before, and at once for a time
// already past.
func TestDefaultWakeAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := Config{}.withDefaults()
		start := time.Now()
		fired, stop := c.WakeAt(start.Add(time.Hour))
		defer stop()
		at := <-fired
		if d := at.Sub(start); d != time.Hour {
			t.Errorf("fired after %v, want 1h", d)
		}
		past, stop2 := c.WakeAt(time.Now().Add(-time.Minute))
		defer stop2()
		synctest.Wait()
		select {
		case <-past:
		default:
			t.Error("a wake-up time already past did not fire at once")
		}
		// A skewed Clock moves the wake-up with it.
		skewed := Config{Clock: func() time.Time { return time.Now().Add(time.Minute) }}.withDefaults()
		start = time.Now()
		fired, stop3 := skewed.WakeAt(skewed.Clock().Add(time.Second))
		defer stop3()
		if at := <-fired; at.Sub(start) != time.Second {
			t.Errorf("on a skewed clock fired after %v, want 1s", at.Sub(start))
		}
	})
}
