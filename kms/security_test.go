package kms_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// transport returns a TLS transport to env presenting cert, closed at the
// end of the test.
func transport(t testing.TB, env *devkms.Env, cert tls.Certificate) *http.Transport {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.RootCAs(), MinVersion: tls.VersionTLS13}}
	if len(cert.Certificate) > 0 {
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// clientWith makes and registers a client for identity whose transport is
// wrapped by wrap.
func clientWith(t testing.TB, env *devkms.Env, identity string, wrap func(http.RoundTripper) http.RoundTripper) (*kms.Client, kms.Config) {
	t.Helper()
	cfg, err := env.ClientConfig(identity)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = &http.Client{Transport: wrap(transport(t, env, cfg.Certificate))}
	c, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return c, cfg
}

func serverCode(err error) string {
	var se *kms.ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

func auditEntries(t testing.TB, env *devkms.Env) []kmsserver.AuditEntry {
	t.Helper()
	var buf bytes.Buffer
	if err := env.Server.ExportAuditLog(ctxT(t), &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := kmsserver.VerifyAuditLog(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	var out []kmsserver.AuditEntry
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e kmsserver.AuditEntry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func hasEntry(entries []kmsserver.AuditEntry, action, actor, outcome, detail string) bool {
	for _, e := range entries {
		// Denials are aggregated: "forbidden", or "forbidden x3 since ...".
		if e.Action == action && e.Actor == actor && e.Outcome == outcome && (detail == "" || e.Detail == detail || strings.HasPrefix(e.Detail, detail+" x")) {
			return true
		}
	}
	return false
}

func TestNonParticipantDeniedAndAudited(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob", "mallory")
	alice := mustClient(t, env, "alice")
	var body []byte
	mallory, _ := clientWith(t, env, "mallory", func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && r.Method == http.MethodGet {
				body, _ = io.ReadAll(resp.Body)
				resp.Body = io.NopCloser(bytes.NewReader(body))
			}
			return resp, err
		})
	})
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := mallory.Fetch(ctx, uri)
	if !errors.Is(err, kms.ErrForbidden) || keys != nil {
		t.Fatalf("non-participant fetch: %v, %v; want ErrForbidden and nothing", keys, err)
	}
	if string(body) != `{"error":"forbidden"}` {
		t.Fatalf("403 body %q says more than forbidden", body)
	}
	if _, err := mallory.Rotate(ctx, uri); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("non-participant rotate: %v", err)
	}
	if err := mallory.Watch(ctx, uri, func(media.CallKey) {}); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("non-participant watch: %v", err)
	}
	entries := auditEntries(t, env)
	if !hasEntry(entries, "fetch", "mallory", "denied", "forbidden") || !hasEntry(entries, "rotate", "mallory", "denied", "forbidden") {
		t.Fatalf("denials not audited: %+v", entries)
	}
}

func TestRemovedParticipantCannotFetchNewVersion(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob", "carol")
	alice, bob, carol := mustClient(t, env, "alice"), mustClient(t, env, "bob"), mustClient(t, env, "carol")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Fetch(ctx, uri); err != nil {
		t.Fatal(err)
	}
	watchErr := make(chan error, 1)
	watched := make(chan uint32, 8)
	go func() {
		watchErr <- carol.Watch(ctx, uri, func(k media.CallKey) { watched <- k.Version })
	}()
	if v := <-watched; v != 1 {
		t.Fatalf("carol watched %d first", v)
	}
	if err := bob.RemoveParticipant(ctx, uri, "carol"); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("a non-creator removed a participant: %v", err)
	}
	if err := alice.RemoveParticipant(ctx, uri, "carol"); err != nil {
		t.Fatal(err)
	}
	// The removal rotated at once: bob gets v2, carol gets nothing.
	keys, err := bob.Fetch(ctx, uri)
	if err != nil || versions(keys)[len(keys)-1] != 2 {
		t.Fatalf("bob after removal: %v, %v", keys, err)
	}
	if keys, err := carol.Fetch(ctx, uri); !errors.Is(err, kms.ErrForbidden) || keys != nil {
		t.Fatalf("removed carol fetched %v, %v", keys, err)
	}
	if _, err := carol.FetchVersion(ctx, uri, 2); !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("removed carol fetched v2: %v", err)
	}
	if err := <-watchErr; !errors.Is(err, kms.ErrForbidden) {
		t.Fatalf("carol's watch ended with %v, want ErrForbidden", err)
	}
	select {
	case v := <-watched:
		t.Fatalf("removed carol watched version %d", v)
	default:
	}
	if !hasEntry(auditEntries(t, env), "rotate", "alice", "ok", "removed carol") {
		t.Fatal("removal not audited")
	}
}

func TestReplayedRequestRefused(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	type saved struct {
		method, url string
		header      http.Header
		body        []byte
	}
	var mu sync.Mutex
	var reqs []saved
	alice, cfg := clientWith(t, env, "alice", func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			var body []byte
			if r.Body != nil {
				body, _ = io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			mu.Lock()
			reqs = append(reqs, saved{r.Method, r.URL.String(), r.Header.Clone(), body})
			mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: transport(t, env, cfg.Certificate)}
	send := func(s saved, url string) string {
		req, _ := http.NewRequestWithContext(ctx, s.method, url, bytes.NewReader(s.body))
		req.Header = s.header.Clone()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b)
	}
	mu.Lock()
	create, rotate := reqs[1], reqs[2]
	mu.Unlock()
	if !strings.HasSuffix(rotate.url, "/rotate") || !strings.HasSuffix(create.url, "/v1/calls") {
		t.Fatalf("recorded %v %v", create.url, rotate.url)
	}
	for _, s := range []saved{create, rotate} {
		if got := send(s, s.url); got != `401 Unauthorized {"error":"replayed"}` {
			t.Fatalf("replayed %s %s: %s", s.method, s.url, got)
		}
	}
	// A proof is bound to its request: the rotate proof does not remove.
	removeURL := strings.TrimSuffix(rotate.url, "/rotate") + "/participants/alice"
	if got := send(saved{http.MethodDelete, removeURL, rotate.header, nil}, removeURL); got != `401 Unauthorized {"error":"bad_proof"}` {
		t.Fatalf("proof reused on another request: %s", got)
	}
	keys, err := alice.Fetch(ctx, uri)
	if err != nil || len(keys) != 2 {
		t.Fatalf("state changed by a replay: %v, %v", keys, err)
	}
	if !hasEntry(auditEntries(t, env), "rotate", "alice", "denied", "replayed") {
		t.Fatal("replay not audited")
	}
	var se error = &kms.ServerError{Status: 401, Code: "replayed"}
	if !errors.Is(se, kms.ErrReplayed) || errors.Is(se, kms.ErrUnauthorized) {
		t.Fatal("a replayed response must map to ErrReplayed only")
	}
}
