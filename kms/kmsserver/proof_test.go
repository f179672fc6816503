package kmsserver

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
