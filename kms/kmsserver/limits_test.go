package kmsserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
)

// Denials cannot grow the store or drive fsyncs: 2,000 requests with a
// 60 KB call id (half unauthenticated, half from a registered device) end
// up as a few bounded, aggregated entries, and the audit log still
// verifies.
func TestSecurityAuditBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{})
		defer func() { h.s.Close() }()
		h.register("alice")
		h.s.Flush(t.Context())
		before, commitsBefore := h.store.size(bucketAudit)
		long := strings.Repeat("A", 60_000)
		for i := range 1000 {
			r := httptest.NewRequest("GET", wire.PathCalls+"/"+long+strconv.Itoa(i)+"/keys", nil)
			h.s.ServeHTTP(httptest.NewRecorder(), r) // no credentials
			h.do("alice", "GET", wire.PathCalls+"/"+long+strconv.Itoa(i)+"/keys", nil, false)
		}
		time.Sleep(DefaultDenialInterval)
		synctest.Wait()
		if err := h.s.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		after, commitsAfter := h.store.size(bucketAudit)
		if grown, commits := after-before, commitsAfter-commitsBefore; grown > 16<<10 || commits > 5 {
			t.Fatalf("2,000 denials grew the audit log by %d bytes in %d commits", grown, commits)
		}
		var buf bytes.Buffer
		if err := h.s.ExportAuditLog(t.Context(), &buf); err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyAuditLog(bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatalf("the log the server wrote does not verify: %v", err)
		}
		var total int
		for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
			if len(line) > 2048 {
				t.Fatalf("an audit entry of %d bytes", len(line))
			}
			var e AuditEntry
			json.Unmarshal(line, &e)
			if e.Outcome == "denied" {
				n := 1
				if _, c, ok := strings.Cut(e.Detail, " x"); ok {
					n, _ = strconv.Atoi(strings.Fields(c)[0])
				}
				total += n
			}
		}
		if total != 2000 {
			t.Fatalf("the aggregated entries count %d denials, want 2000", total)
		}
	})
}

// The limits a device meets, each at its edge: the request bucket (429 with
// Retry-After, then allowed again), running calls, concurrent watches,
// on-demand rotations of a call, the shortest rotation schedule, the
// versions per response, the nonce size and the nonce memory.
func TestSecurityQuotas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{RequestRate: 10, RequestBurst: 20, MaxCallsPerDevice: 3, MaxWatchesPerDevice: 2,
			RotationsPerMinute: 60, MaxKeysPerResponse: 4, MaxNonces: 40, ActivationDelay: -1})
		defer func() { h.s.Close() }()
		h.register("alice")
		h.register("bob")

		// Requests: a burst of 20, then 429 with Retry-After.
		var limited *httptest.ResponseRecorder
		for range 25 {
			if w := h.do("bob", "GET", wire.PathCalls+"/AAAAAAAAAAAAAAAAAAAAAA/keys", nil, false); w.Code == http.StatusTooManyRequests {
				limited = w
				break
			}
		}
		if limited == nil || code(limited) != wire.CodeRateLimited || limited.Header().Get("Retry-After") == "" {
			t.Fatalf("no 429 with Retry-After after a burst: %v", limited)
		}
		ra, _ := strconv.Atoi(limited.Header().Get("Retry-After"))
		time.Sleep(time.Duration(ra) * time.Second)
		if w := h.do("bob", "GET", wire.PathCalls+"/AAAAAAAAAAAAAAAAAAAAAA/keys", nil, false); w.Code == http.StatusTooManyRequests {
			t.Fatal("still limited after Retry-After")
		}
		time.Sleep(3 * time.Second) // refill

		// Running calls: 3, then quota; ending one frees a place.
		var ids []string
		for range 3 {
			ids = append(ids, h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:bob"}}))
		}
		body, _ := json.Marshal(wire.CreateRequest{Participants: []string{"token:alice"}})
		if got := code(h.do("alice", "POST", wire.PathCalls, body, true)); got != wire.CodeQuota {
			t.Fatalf("fourth running call: %q, want %q", got, wire.CodeQuota)
		}
		if got := code(h.do("alice", "POST", wire.PathCalls+"/"+ids[2]+"/end", nil, true)); got != "" {
			t.Fatal(got)
		}
		ids[2] = h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:bob"}})

		// Shortest schedule.
		body, _ = json.Marshal(wire.CreateRequest{Participants: []string{"token:alice"}, RotateEveryMS: 999})
		if got := code(h.do("alice", "POST", wire.PathCalls, body, true)); got != wire.CodeBadRequest {
			t.Fatalf("RotateEvery below the minimum: %q", got)
		}

		// Watches: two hold, the third is refused.
		keys := wire.PathCalls + "/" + ids[0] + "/keys?after=1&wait=20000"
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { h.do("bob", "GET", keys, nil, false) })
		}
		synctest.Wait()
		if got := code(h.do("bob", "GET", keys, nil, false)); got != wire.CodeTooManyWatches {
			t.Fatalf("third watch: %q", got)
		}

		// Rotations of one call: a burst of 6, then 429.
		rotated, refused := 0, ""
		for range 10 {
			w := h.do("alice", "POST", wire.PathCalls+"/"+ids[1]+"/rotate", nil, true)
			if w.Code != 200 {
				refused = code(w)
				break
			}
			rotated++
		}
		if rotated != 6 || refused != wire.CodeRotationLimited {
			t.Fatalf("%d rotations then %q; want 6 then %q", rotated, refused, wire.CodeRotationLimited)
		}
		wg.Wait() // the two watches time out (nothing new on their call)
		time.Sleep(time.Second)

		// Versions per response: the newest 4 of 7.
		var kr wire.KeysResponse
		json.Unmarshal(h.do("bob", "GET", wire.PathCalls+"/"+ids[1]+"/keys", nil, false).Body.Bytes(), &kr)
		if len(kr.Keys) != 4 || kr.Keys[3].Version != 7 {
			t.Fatalf("keys response has %d versions, newest %v; want the 4 newest of 7", len(kr.Keys), kr.Keys)
		}

		// Nonces: at most 64 bytes; at most MaxNonces remembered.
		r := httptest.NewRequest("POST", wire.PathCalls+"/"+ids[1]+"/rotate", nil)
		r.Header.Set("Authorization", "Bearer "+h.token("alice"))
		r.Header.Set(wire.ProofHeader, bigNonceProof(t, h, "/v1/calls/"+ids[1]+"/rotate"))
		w := httptest.NewRecorder()
		h.s.ServeHTTP(w, r)
		if code(w) != wire.CodeBadProof {
			t.Fatalf("a 2.4 KB nonce: %q", code(w))
		}
		// A device past the bound pushes out its own oldest proofs: its
		// proofs go on being accepted (the request is then refused for
		// its body), the memory stays within the bound.
		for i := range 50 {
			time.Sleep(100 * time.Millisecond) // within the request rate
			if got := code(h.do("alice", "POST", wire.PathCalls, body, true)); got != wire.CodeBadRequest || h.s.replay.len() > 40 {
				t.Fatalf("proof %d: %q with %d nonces, bound 40", i, got, h.s.replay.len())
			}
		}
	})
}

// bigNonceProof is a valid proof of alice's whose nonce is 2,400 bytes.
func bigNonceProof(t *testing.T, h *harness, path string) string {
	payload, _ := json.Marshal(wire.ProofClaims{Method: "POST", Path: path, BodyHash: wire.BodyHash(nil),
		Nonce: strings.Repeat("n", 2400), IssuedMS: time.Now().UnixMilli()})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: h.devs["alice"]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, _ := signer.Sign(payload)
	out, _ := jws.CompactSerialize()
	return out
}

// A proof dated 45 s ahead is refused (the forward skew is 5 s); one within
// the skew is accepted once, and refused as a replay after a restart too.
func TestSecurityProofFromFuture(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{})
		defer func() { h.s.Close() }()
		h.register("alice")
		path := wire.PathCalls
		body, _ := json.Marshal(wire.CreateRequest{Participants: []string{"token:alice"}})
		send := func(proof string) string {
			r := httptest.NewRequest("POST", path, bytes.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+h.token("alice"))
			r.Header.Set(wire.ProofHeader, proof)
			w := httptest.NewRecorder()
			h.s.ServeHTTP(w, r)
			return code(w)
		}
		future, _ := wire.SignProof(h.devs["alice"], testAudience, "POST", path, body, time.Now().Add(45*time.Second))
		if got := send(future); got != wire.CodeStaleProof {
			t.Fatalf("a proof 45 s ahead: %q, want %q", got, wire.CodeStaleProof)
		}
		time.Sleep(time.Second)
		ahead, _ := wire.SignProof(h.devs["alice"], testAudience, "POST", path, body, time.Now().Add(4*time.Second))
		if got := send(ahead); got != "" {
			t.Fatalf("a proof 4 s ahead: %q", got)
		}
		if got := send(ahead); got != wire.CodeReplayed {
			t.Fatalf("replayed: %q", got)
		}
		h.restart()
		if got := send(ahead); got != wire.CodeReplayed {
			t.Fatalf("replayed after a restart: %q, want %q", got, wire.CodeReplayed)
		}
		// After the window the nonce is forgotten, in memory and in the store.
		time.Sleep(DefaultFreshnessWindow + 10*time.Second)
		fresh, _ := wire.SignProof(h.devs["alice"], testAudience, "POST", path, body, time.Now())
		if got := send(fresh); got != "" {
			t.Fatal(got)
		}
		h.s.Flush(t.Context())
		if n, _ := h.store.size(bucketNonces); n > 2*recordHeader+64 {
			t.Fatalf("expired nonces stay in the store: %d bytes", n)
		}
	})
}

// A flood of bad credentials from one address stops costing signature and
// chain verifications: past its bucket the server answers 429 without
// verifying, while a device from the same address whose credentials were
// verified before keeps working.
func TestSecurityFailedAuthFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{FailedAuthRate: 2})
		defer func() { h.s.Close() }()
		h.register("alice")
		good := h.token("alice")
		send := func(tok string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("GET", wire.PathCalls+"/AAAAAAAAAAAAAAAAAAAAAA/keys", nil)
			r.RemoteAddr = "192.0.2.7:40000"
			r.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			h.s.ServeHTTP(w, r)
			return w
		}
		if w := send(good); w.Code != http.StatusNotFound {
			t.Fatalf("alice: %d", w.Code)
		}
		forged := good[:len(good)-4] + "AAAA" // a bad signature
		var codes []int
		for range 20 {
			codes = append(codes, send(forged).Code)
		}
		if codes[0] != http.StatusUnauthorized || codes[len(codes)-1] != http.StatusTooManyRequests {
			t.Fatalf("bad tokens: %v; want 401s, then 429 once the address's bucket (burst 10) is used up", codes)
		}
		if w := send(good); w.Code != http.StatusNotFound {
			t.Fatalf("alice's verified token from the flooding address: %d", w.Code)
		}
		time.Sleep(5 * time.Second)
		if w := send(forged); w.Code != http.StatusUnauthorized {
			t.Fatalf("after the bucket refilled: %d", w.Code)
		}
	})
}

// A participant cannot keep itself in a call by draining the call's
// on-demand rotation bucket: the creator's removal of it is not refused
// for rotations others asked for, and the removed device cannot fetch the
// version the removal made.
func TestSecurityRemovalNotStarvedByRotations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{ActivationDelay: -1})
		defer func() { h.s.Close() }()
		h.register("alice")
		h.register("mallory")
		id := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:mallory"}})

		// mallory, about to be removed, uses up the call's rotations.
		for range 20 {
			if w := h.do("mallory", "POST", wire.PathCalls+"/"+id+"/rotate", nil, true); w.Code != 200 {
				if code(w) != wire.CodeRotationLimited {
					t.Fatalf("mallory's rotation: %d %s", w.Code, w.Body)
				}
				break
			}
		}
		w := h.do("alice", "DELETE", wire.PathCalls+"/"+id+"/participants/token:mallory", nil, true)
		if w.Code != 200 {
			t.Fatalf("the creator's removal of mallory after mallory's rotations: %d %s, want 200", w.Code, w.Body)
		}
		var rr wire.RotateResponse
		json.Unmarshal(w.Body.Bytes(), &rr)
		if got := code(h.do("mallory", "GET", wire.PathCalls+"/"+id+"/keys?version="+strconv.Itoa(int(rr.Version)), nil, false)); got != wire.CodeForbidden {
			t.Fatalf("removed mallory fetching the new version %d: %q, want %q", rr.Version, got, wire.CodeForbidden)
		}
	})
}
