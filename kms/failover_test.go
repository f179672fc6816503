package kms_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/kms"
)

// fakeReplica is a TLS server with the dev CA's certificate for
// 127.0.0.1 that answers every request with handler, counting them.
func fakeReplica(t *testing.T, env *devkms.Env, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	cert, err := env.CA.Server(testpki.Validity{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		handler(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func failoverClient(t *testing.T, env *devkms.Env, identity, first string, more ...string) *kms.Client {
	t.Helper()
	cfg, err := env.ClientConfig(identity)
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.URLs = first, more
	c, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A client whose first KMS address refuses connections uses the next.
func TestClientFailoverConnectionRefused(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	c := failoverClient(t, env, "alice", dead, env.URL)
	ctx := ctxT(t)
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	uri, err := c.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Rotate(ctx, uri); err != nil || v != 2 {
		t.Fatalf("rotate: %d, %v", v, err)
	}
	if keys, err := c.Fetch(ctx, uri); err != nil || len(keys) != 2 {
		t.Fatalf("fetch: %v, %v", keys, err)
	}
}

// A 5xx from one replica sends the request to the next; once one answers,
// the client stays with it.
func TestClientFailoverServerError(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	sick, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
	})
	c := failoverClient(t, env, "alice", sick.URL, env.URL)
	ctx := ctxT(t)
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	uri, err := c.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Fetch(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the failing replica saw %d requests, want 1 (the client stays on the one that answered)", n)
	}
}

// A state change that may have reached a replica (the connection broke
// after the request was sent) is not repeated at another: it could be
// done twice.
func TestClientFailoverNoRepeatAfterSend(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	broken, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	c := failoverClient(t, env, "alice", broken.URL, env.URL)
	if _, err := c.Rotate(ctx, uri); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("rotate through a replica that dropped the connection: %v, want ErrUnavailable", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("broken replica saw %d requests", hits.Load())
	}
	keys, err := alice.Fetch(ctx, uri)
	if err != nil || len(keys) != 1 {
		t.Fatalf("after the dropped rotate the call has %v (%v), want version 1 only: repeated elsewhere", keys, err)
	}
	// A read is repeated.
	if keys, err := c.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("fetch fails over: %v, %v", keys, err)
	}
}

// The client never sends anything to a host outside its configured set,
// whatever a key URI names.
func TestClientFailoverStaysInSet(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	other, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {})
	c := failoverClient(t, env, "alice", env.URL)
	ctx := ctxT(t)
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, other.URL+"/v1/calls/abc"); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("fetch of a URI at another host: %v, want ErrNotFound", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the client contacted a host outside its configuration")
	}
	if _, err := kms.NewClient(kms.Config{URL: env.URL, URLs: []string{"http://127.0.0.1:1"}}); err == nil {
		t.Fatal("an http failover address was accepted")
	}
}

// A key URI comes from the signaling path: a call id that no KMS makes
// (a dot segment, which the URL path rules would resolve into another
// resource, a control character, a space, anything outside the
// unreserved characters) is refused before any request is sent.
func TestClientRefusesMalformedCallID(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	fake, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	c := failoverClient(t, env, "alice", fake.URL)
	ctx := ctxT(t)
	for _, id := range []string{".", "..", "a\x00b", "a b", "a\x7f", "caf\u00e9", "a\tb", "a\\b", "a;b", "a\"b"} {
		before := hits.Load()
		if _, err := c.Fetch(ctx, fake.URL+"/v1/calls/"+id); !errors.Is(err, kms.ErrNotFound) {
			t.Errorf("fetch of call id %q: %v, want ErrNotFound", id, err)
		}
		if hits.Load() != before {
			t.Errorf("fetch of call id %q reached the KMS", id)
		}
	}
}

// TestClientInvalidKeyURIError: a key URI the client refuses before
// sending anything (it comes from the signaling path: another KMS, a
// malformed call id, a megabyte of junk) fails with ErrInvalidKeyURI,
// which is still ErrNotFound for callers that test for that, and the
// error quotes a bounded prefix of the URI, not all of it: an attacker
// on the signaling must not make every log line that records the error
// a megabyte long.
func TestClientInvalidKeyURIError(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	fake, hits := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	c := failoverClient(t, env, "alice", fake.URL)
	ctx := ctxT(t)
	huge := fake.URL + "/v1/calls/" + strings.Repeat("a\x00", 1<<19)
	for _, uri := range []string{"https://elsewhere.example/v1/calls/abc", fake.URL + "/v1/calls/..", huge} {
		_, err := c.Fetch(ctx, uri)
		if !errors.Is(err, kms.ErrInvalidKeyURI) || !errors.Is(err, kms.ErrNotFound) {
			t.Errorf("fetch of %.60q: %v, want ErrInvalidKeyURI and ErrNotFound", uri, err)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("fetch of a %d-byte URI: a %d-byte error, want at most 400", len(uri), len(err.Error()))
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d refused URIs reached the KMS", hits.Load())
	}
}
