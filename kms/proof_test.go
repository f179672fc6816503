package kms_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// freeAddr returns a loopback address nothing listens on, for a KMS that
// must know its own name (BaseURL) before it listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// recorded is a request a client sent, as a TLS-terminating hop or a
// logging middleware sees it.
type recorded struct {
	method, url string
	header      http.Header
	body        []byte
}

func recorder(mu *sync.Mutex, out *[]recorded) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			var body []byte
			if r.Body != nil {
				body, _ = io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			mu.Lock()
			*out = append(*out, recorded{r.Method, r.URL.String(), r.Header.Clone(), body})
			mu.Unlock()
			return rt.RoundTrip(r)
		})
	}
}

// A proof of freshness names the KMS it is for: one captured on the way to
// deployment A (by a hop, a log, or A itself) is refused by deployment B,
// where the same device key is registered, whichever Host it is sent with.
func TestSecurityProofBoundToDeployment(t *testing.T) {
	dir := t.TempDir()
	envA := startEnvIn(t, dir, devkms.Options{})
	// B shares A's CA, device certificates (so alice's device key) and KEK,
	// and has its own store and signing keys: another deployment.
	storeB, err := kmsserver.OpenFileStore(filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	addrB := freeAddr(t)
	envB := startEnvIn(t, dir, devkms.Options{Store: storeB, Addr: addrB, Server: kmsserver.Config{BaseURL: "https://" + addrB}})
	t.Cleanup(func() { envB.Close(); storeB.Close() })
	aliceB := mustClient(t, envB, "alice")
	ctx := ctxT(t)

	var mu sync.Mutex
	var reqs []recorded
	aliceA, cfg := clientWith(t, envA, "alice", recorder(&mu, &reqs))
	if _, err := aliceA.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	register, create := reqs[0], reqs[1]
	mu.Unlock()
	if !strings.HasSuffix(register.url, "/v1/devices") || !strings.HasSuffix(create.url, "/v1/calls") {
		t.Fatalf("recorded %s, %s", register.url, create.url)
	}
	hc := &http.Client{Transport: transport(t, envB, cfg.Certificate)}
	send := func(s recorded, host string) string {
		req, _ := http.NewRequestWithContext(ctx, s.method, envB.URL+strings.TrimPrefix(s.url, envA.URL), bytes.NewReader(s.body))
		req.Header = s.header.Clone()
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b)
	}
	hostA := strings.TrimPrefix(envA.URL, "https://")
	for _, s := range []recorded{register, create} {
		for _, host := range []string{"", hostA} {
			if got := send(s, host); got != `401 Unauthorized {"error":"bad_proof"}` {
				t.Errorf("%s %s proved for A, replayed at B (Host %q): %s, want 401 bad_proof", s.method, s.url, host, got)
			}
		}
	}
	for _, e := range auditEntries(t, envB) {
		if e.Action == "create" && e.Outcome == "ok" {
			t.Fatalf("B created a call from A's proof: %+v", e)
		}
	}
	// The device's own proofs for B still work there.
	if _, err := aliceB.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}}); err != nil {
		t.Fatalf("create at B with a proof for B: %v", err)
	}
}

// startEnvIn starts a development KMS whose PKI, device certificates and
// KEK live in dir (shared by every KMS started in it).
func startEnvIn(t *testing.T, dir string, opts devkms.Options) *devkms.Env {
	t.Helper()
	env, err := devkms.StartWith(context.Background(), dir, opts, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

// A KMS that refuses a proof as stale (its replay memory let go of older
// proofs of this device's) gets one more request, with a fresh proof; a
// second refusal is the caller's.
func TestClientResignsStaleProof(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice")
	var mu sync.Mutex
	var proofs []string
	stale := 1
	kmsSrv, _ := fakeReplica(t, env, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		proofs = append(proofs, r.Header.Get("Securecall-Proof"))
		if len(proofs) <= stale {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"stale_proof"}`))
			return
		}
		w.Write([]byte(`{"version":2}`))
	})
	c := failoverClient(t, env, "alice", kmsSrv.URL)
	uri := kmsSrv.URL + "/v1/calls/AAAAAAAAAAAAAAAAAAAAAA"
	ctx := ctxT(t)
	if v, err := c.Rotate(ctx, uri); err != nil || v != 2 {
		t.Fatalf("rotate after one stale_proof: %v, %v; want version 2", v, err)
	}
	mu.Lock()
	if len(proofs) != 2 || proofs[0] == proofs[1] || proofs[1] == "" {
		t.Fatalf("%d requests, want 2 with different proofs", len(proofs))
	}
	proofs, stale = nil, 2
	mu.Unlock()
	if _, err := c.Rotate(ctx, uri); serverCode(err) != "stale_proof" {
		t.Fatalf("rotate after two stale_proof: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(proofs) != 2 {
		t.Fatalf("%d requests after two stale_proof, want 2", len(proofs))
	}
}
