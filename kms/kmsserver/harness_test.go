package kmsserver

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/kms/internal/wire"
)

// testAudience is the origin of httptest.NewRequest's requests (Host
// example.com), which proofs name.
const testAudience = "https://example.com"

// harness drives a Server through its handler, in-process, with bearer
// tokens and proofs of freshness made as the client makes them. It runs
// inside a synctest bubble as well as outside one.
type harness struct {
	t      testing.TB
	s      *Server
	store  *memStore
	issuer *ecdsa.PrivateKey
	cfg    Config
	devs   map[string]*ecdsa.PrivateKey
	aud    string // the audience proofs name: BaseURL, or testAudience
}

func newHarness(t testing.TB, cfg Config) *harness {
	h := &harness{t: t, store: newMemStore(), devs: map[string]*ecdsa.PrivateKey{}}
	h.issuer, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if cfg.Store == nil {
		cfg.Store = h.store
	}
	if cfg.KEK == nil {
		cfg.KEK = make([]byte, 32)
	}
	cfg.TokenKeys = []crypto.PublicKey{&h.issuer.PublicKey}
	h.cfg = cfg
	h.aud = defaultString(cfg.BaseURL, testAudience)
	h.start()
	return h
}

func (h *harness) start() {
	s, err := New(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.s = s
}

// restart closes the server and opens a new one on the same store.
func (h *harness) restart() {
	h.s.Close()
	h.start()
}

func (h *harness) token(identity string) string {
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: h.issuer}, nil)
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: identity, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// do sends one request as identity (with a proof if proof is set) and
// returns the recorder.
func (h *harness) do(identity, method, target string, body []byte, proof bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+h.token(identity))
	if proof {
		path, _, _ := strings.Cut(target, "?")
		p, err := wire.SignProof(h.devs[identity], h.aud, method, path, body, time.Now())
		if err != nil {
			h.t.Fatal(err)
		}
		r.Header.Set(wire.ProofHeader, p)
	}
	w := httptest.NewRecorder()
	h.s.ServeHTTP(w, r)
	return w
}

func (h *harness) register(identity string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h.devs[identity] = key
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: &key.PublicKey})
	reg, _ := json.Marshal(wire.RegisterRequest{Key: jwk})
	if w := h.do(identity, "POST", wire.PathDevices, reg, true); w.Code != 200 {
		h.t.Fatalf("register %s: %d %s", identity, w.Code, w.Body)
	}
}

func (h *harness) create(identity string, req wire.CreateRequest) string {
	body, _ := json.Marshal(req)
	w := h.do(identity, "POST", wire.PathCalls, body, true)
	var cr wire.CreateResponse
	if err := json.Unmarshal(w.Body.Bytes(), &cr); err != nil || cr.CallID == "" {
		h.t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	return cr.CallID
}

// code returns the error code of a response, "" for a 2xx.
func code(w *httptest.ResponseRecorder) string {
	if w.Code/100 == 2 {
		return ""
	}
	var e wire.ErrorResponse
	json.Unmarshal(w.Body.Bytes(), &e)
	return e.Error
}

// versions returns how many versions call id has.
func (h *harness) versions(id string) int {
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	c := h.s.calls[id]
	if c == nil {
		return -1
	}
	return len(c.rec.Versions)
}

// entries returns the audit entries with action and outcome.
func (h *harness) entries(action, outcome string) []AuditEntry {
	var buf bytes.Buffer
	if err := h.s.ExportAuditLog(h.t.Context(), &buf); err != nil {
		h.t.Fatal(err)
	}
	if _, err := VerifyAuditLog(bytes.NewReader(buf.Bytes())); err != nil {
		h.t.Fatal(err)
	}
	var out []AuditEntry
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e AuditEntry
		json.Unmarshal(line, &e)
		if e.Action == action && e.Outcome == outcome {
			out = append(out, e)
		}
	}
	return out
}
