package kmsserver

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
)

// sendProof sends a create request of alice's with the proof she signs for
// audience (wire.SignProof) to host, and returns the error code.
func (h *harness) sendProof(audience, host string) string {
	body, _ := json.Marshal(wire.CreateRequest{Participants: []string{"token:alice"}})
	r := httptest.NewRequest("POST", wire.PathCalls, bytes.NewReader(body))
	r.Host = host
	r.Header.Set("Authorization", "Bearer "+h.token("alice"))
	p, err := wire.SignProof(h.devs["alice"], audience, "POST", wire.PathCalls, body, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	r.Header.Set(wire.ProofHeader, p)
	w := httptest.NewRecorder()
	h.s.ServeHTTP(w, r)
	return code(w)
}

// The audience a proof may name: BaseURL or an alias (in any spelling of
// the same origin), or without a BaseURL the Host asked for; nothing else.
// A proof without audience, an older client's, passes unless the server
// requires one.
func TestProofAudience(t *testing.T) {
	named := newHarness(t, Config{BaseURL: "https://kms.example.com", Aliases: []string{"https://replica-2.example.com:8443"}})
	defer func() { named.s.Close() }()
	named.register("alice")
	for _, c := range []struct{ aud, host, want string }{
		{"https://kms.example.com", "kms.example.com", ""},
		{"https://KMS.example.com:443/", "other.example", ""},
		{"https://replica-2.example.com:8443", "replica-2.example.com:8443", ""},
		{"https://replica-2.example.com", "replica-2.example.com", wire.CodeBadProof},
		{"https://evil.example", "evil.example", wire.CodeBadProof}, // the Host does not count with a BaseURL
		{"http://kms.example.com", "kms.example.com", wire.CodeBadProof},
		{"https://kms.example.com/v1", "kms.example.com", wire.CodeBadProof},
		{"", "kms.example.com", ""},
	} {
		if got := named.sendProof(c.aud, c.host); got != c.want {
			t.Errorf("BaseURL set: audience %q to %q: %q, want %q", c.aud, c.host, got, c.want)
		}
	}

	unnamed := newHarness(t, Config{RequireProofAudience: true})
	defer func() { unnamed.s.Close() }()
	unnamed.register("alice")
	for _, c := range []struct{ aud, host, want string }{
		{"https://a.example:8443", "a.example:8443", ""},
		{"https://a.example:8443", "b.example:8443", wire.CodeBadProof},
		{"", "a.example:8443", wire.CodeBadProof},
	} {
		if got := unnamed.sendProof(c.aud, c.host); got != c.want {
			t.Errorf("no BaseURL: audience %q to %q: %q, want %q", c.aud, c.host, got, c.want)
		}
	}
	if n := len(unnamed.entries("create", "ok")); n != 1 {
		t.Fatalf("%d calls created, want 1", n)
	}
}

// The audience is a protected header parameter (wire.HdrProofAudience):
// the signature covers it, it must be a string, and the unreleased form
// that carried it as a claim is refused like any unknown claim.
func TestProofAudienceInHeader(t *testing.T) {
	h := newHarness(t, Config{BaseURL: "https://kms.example.com"})
	defer func() { h.s.Close() }()
	h.register("alice")
	body, _ := json.Marshal(wire.CreateRequest{Participants: []string{"token:alice"}})
	sign := func(claims map[string]any, hdr map[string]any) string {
		opts := &jose.SignerOptions{}
		for k, v := range hdr {
			opts.WithHeader(jose.HeaderKey(k), v)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: h.devs["alice"]}, opts)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(claims)
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jws.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	claims := func() map[string]any {
		return map[string]any{"htm": "POST", "htu": wire.PathCalls, "bh": wire.BodyHash(body),
			"jti": base64.RawURLEncoding.EncodeToString([]byte(rand.Text())), "iat": time.Now().UnixMilli()}
	}
	// The header of a proof for kms.example.com, swapped for one naming
	// another KMS, with the signature kept.
	good := h.proof("alice", "POST", wire.PathCalls, body)
	parts := strings.Split(good, ".")
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(raw, &hdr); err != nil || hdr[wire.HdrProofAudience] != "https://kms.example.com" {
		t.Fatalf("proof header %s: want %s naming the BaseURL", raw, wire.HdrProofAudience)
	}
	hdr[wire.HdrProofAudience] = "https://other.example"
	raw, _ = json.Marshal(hdr)
	swapped := base64.RawURLEncoding.EncodeToString(raw) + "." + parts[1] + "." + parts[2]

	claimForm := claims()
	claimForm["aud"] = "https://kms.example.com"
	for _, c := range []struct {
		name, proof string
	}{
		{"audience header swapped under the signature", swapped},
		{"audience header a number", sign(claims(), map[string]any{wire.HdrProofAudience: 443})},
		{"audience header empty", sign(claims(), map[string]any{wire.HdrProofAudience: ""})},
		{"audience as a claim", sign(claimForm, nil)},
	} {
		if got := h.sendWith("alice", "POST", wire.PathCalls, body, c.proof); got != wire.CodeBadProof {
			t.Errorf("%s: %q, want %q", c.name, got, wire.CodeBadProof)
		}
	}
	if n := len(h.entries("create", "ok")); n != 0 {
		t.Fatalf("%d calls created from refused proofs", n)
	}
	if got := h.sendWith("alice", "POST", wire.PathCalls, body, good); got != "" {
		t.Fatalf("the genuine proof: %q", got)
	}
}

func TestBaseURLChecked(t *testing.T) {
	for _, cfg := range []Config{
		{BaseURL: "http://kms.example.com"},
		{BaseURL: "https://kms.example.com/kms"},
		{BaseURL: "https://kms.example.com", Aliases: []string{"kms2.example.com"}},
	} {
		cfg.Store, cfg.KEK = newMemStore(), make([]byte, 32)
		s, err := New(cfg)
		if err == nil {
			s.Close()
			t.Fatalf("New accepted BaseURL %q, Aliases %q", cfg.BaseURL, cfg.Aliases)
		}
		if !strings.Contains(err.Error(), "https URL without path") {
			t.Fatalf("New: %v", err)
		}
	}
}

// proof signs a proof of identity's for one request, as the client does.
func (h *harness) proof(identity, method, path string, body []byte) string {
	p, err := wire.SignProof(h.devs[identity], h.aud, method, path, body, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// sendWith sends a request of identity's with the given proof and returns
// the error code ("" for a 2xx).
func (h *harness) sendWith(identity, method, path string, body []byte, proof string) string {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+h.token(identity))
	r.Header.Set(wire.ProofHeader, proof)
	w := httptest.NewRecorder()
	h.s.ServeHTTP(w, r)
	return code(w)
}

// Devices that fill the replay memory hold back no other device's state
// changes: the device holding the most proofs loses its oldest, and its
// proofs dated at or before them are refused as stale from then on, so
// that none of them can be replayed, before or after a restart. The memory
// stays within its bound.
func TestSecurityNonceMemoryFairness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bound = 40
		h := newHarness(t, Config{MaxNonces: bound, RequestRate: 1000, RequestBurst: 1000, MaxCallsPerDevice: 1000})
		defer func() { h.s.Close() }()
		flooders := []string{"f1", "f2", "f3", "f4"}
		for _, d := range append(flooders, "victim") {
			h.register(d)
		}
		create := func(d string) (string, []byte) {
			body, _ := json.Marshal(wire.CreateRequest{Participants: []string{"token:" + d}})
			return h.proof(d, "POST", wire.PathCalls, body), body
		}
		var first string
		var firstBody []byte
		for i := range 2 * bound {
			time.Sleep(time.Millisecond)
			d := flooders[i%len(flooders)]
			p, body := create(d)
			if i == 0 {
				first, firstBody = p, body
			}
			if got := h.sendWith(d, "POST", wire.PathCalls, body, p); got != "" && i < bound-len(flooders)-1 {
				t.Fatalf("flooder's state change %d: %q", i, got)
			}
		}
		time.Sleep(time.Millisecond)
		p, body := create("victim")
		if got := h.sendWith("victim", "POST", wire.PathCalls, body, p); got != "" {
			t.Fatalf("a device's state change with the replay memory full of other devices' proofs: %q, want success", got)
		}
		// f1 floods on its own: it loses its own oldest proofs, never
		// the victim's or anyone's ability to change state.
		for range 2 * bound {
			time.Sleep(time.Millisecond)
			p, body := create("f1")
			if got := h.sendWith("f1", "POST", wire.PathCalls, body, p); got != "" {
				t.Fatalf("the flooding device's own fresh proof: %q", got)
			}
		}
		time.Sleep(time.Millisecond)
		for _, d := range []string{"victim", "f2"} {
			p, body := create(d)
			if got := h.sendWith(d, "POST", wire.PathCalls, body, p); got != "" {
				t.Fatalf("%s's state change while f1 floods: %q", d, got)
			}
		}
		if got := h.sendWith("f1", "POST", wire.PathCalls, firstBody, first); got != wire.CodeStaleProof {
			t.Fatalf("replay of f1's evicted proof: %q, want %q", got, wire.CodeStaleProof)
		}
		if n := h.s.replay.len(); n > bound {
			t.Fatalf("%d nonces remembered, bound %d", n, bound)
		}
		h.s.Flush(t.Context())
		h.restart()
		if n := h.s.replay.len(); n > bound {
			t.Fatalf("after a restart: %d nonces remembered, bound %d", n, bound)
		}
		if got := h.sendWith("f1", "POST", wire.PathCalls, firstBody, first); got != wire.CodeStaleProof && got != wire.CodeReplayed {
			t.Fatalf("replay of f1's evicted proof after a restart: %q, want refused", got)
		}
		if got := h.sendWith("victim", "POST", wire.PathCalls, body, p); got != wire.CodeReplayed && got != wire.CodeStaleProof {
			t.Fatalf("replay of the victim's proof after a restart: %q, want refused", got)
		}
		time.Sleep(time.Millisecond)
		p, body = create("victim")
		if got := h.sendWith("victim", "POST", wire.PathCalls, body, p); got != "" {
			t.Fatalf("victim after a restart: %q", got)
		}
		// Every proof expires with the window: memory and store drain.
		time.Sleep(DefaultFreshnessWindow + nonceSweepEvery + 2*time.Second)
		p, body = create("victim")
		if got := h.sendWith("victim", "POST", wire.PathCalls, body, p); got != "" {
			t.Fatalf("victim after the window: %q", got)
		}
		h.s.Flush(t.Context())
		if n := h.s.replay.len(); n > 1 {
			t.Fatalf("%d nonces remembered after the window", n)
		}
		if n, _ := h.store.size(bucketNonces); n > 2*(2*recordHeader+64+16) {
			t.Fatalf("expired nonces stay in the store: %d bytes", n)
		}
	})
}
