package kms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"

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

// prevReleaseProofClaims is wire.ProofClaims as the previous release (the
// one before the audience, 3807d35) has it.
type prevReleaseProofClaims struct {
	Method   string `json:"htm"`
	Path     string `json:"htu"`
	BodyHash string `json:"bh"`
	Nonce    string `json:"jti"`
	IssuedMS int64  `json:"iat"`
}

// prevReleaseCheckProof is the previous release's (3807d35) verifyProof
// and decodeStrict, copied from kmsserver/server.go, followed by the
// checks of its checkProof that do not depend on its replay memory or
// clock: what a KMS not yet upgraded does with a proof.
func prevReleaseCheckProof(raw string, pub *ecdsa.PublicKey, method, path string, body []byte) error {
	var c prevReleaseProofClaims
	if len(raw) > 4096 {
		return errors.New("proof too long")
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	h := sha256.Sum256(body)
	if c.Method != method || c.Path != path || c.BodyHash != base64.RawURLEncoding.EncodeToString(h[:]) ||
		len(c.Nonce) < 16 || len(c.Nonce) > 64 {
		return fmt.Errorf("claims %+v do not match %s %s", c, method, path)
	}
	return nil
}

// Devices upgrade before their KMS does: every state change of this
// client carries a proof that the previous release's KMS accepts, while
// this release's KMS still checks the audience in it.
func TestProofAcceptedByPreviousRelease(t *testing.T) {
	env := startEnv(t, devkms.Options{}, "alice", "bob")
	var mu sync.Mutex
	var reqs []recorded
	alice, cfg := clientWith(t, env, "alice", recorder(&mu, &reqs))
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := alice.RemoveParticipant(ctx, uri, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := alice.EndCall(ctx, uri); err != nil {
		t.Fatal(err)
	}
	pub := &cfg.Certificate.PrivateKey.(*ecdsa.PrivateKey).PublicKey
	mu.Lock()
	defer mu.Unlock()
	var checked []string
	for _, r := range reqs {
		p := r.header.Get("Securecall-Proof")
		if p == "" {
			continue
		}
		u, err := url.Parse(r.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := prevReleaseCheckProof(p, pub, r.method, u.Path, r.body); err != nil {
			t.Errorf("%s %s: the previous release's KMS refuses the proof (401 bad_proof): %v", r.method, u.Path, err)
		}
		checked = append(checked, r.method+" "+u.Path)
	}
	if len(checked) != 5 {
		t.Fatalf("checked the proofs of %q, want register, create, rotate, remove and end", checked)
	}
}
