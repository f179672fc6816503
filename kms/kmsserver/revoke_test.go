package kmsserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
)

// Operator input that cannot name a device changes nothing and says so;
// so does a revocation beyond MaxRevokedDevices.
func TestRevokeDeviceRefusesBadInput(t *testing.T) {
	h := newHarness(t, Config{MaxRevokedDevices: 2})
	defer h.s.Close()
	ctx := t.Context()
	for _, id := range []string{"", strings.Repeat("a", maxIdentity+1), "a:b", "token:", "\xff"} {
		if err := h.s.RevokeDevice(ctx, id); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("RevokeDevice(%q): %v, want ErrInvalidIdentity", id, err)
		}
		if err := h.s.RestoreDevice(ctx, id); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("RestoreDevice(%q): %v, want ErrInvalidIdentity", id, err)
		}
	}
	if err := h.s.RevokeDevice(ctx, strings.Repeat("a", maxIdentity)); err != nil {
		t.Fatalf("an identity of %d bytes: %v", maxIdentity, err)
	}
	if err := h.s.RevokeDevice(ctx, "token:bob"); err != nil {
		t.Fatal(err)
	}
	h.register("carol")
	if err := h.s.RevokeDevice(ctx, "token:carol"); !errors.Is(err, ErrTooManyRevoked) {
		t.Fatalf("a third revocation with MaxRevokedDevices 2: %v, want ErrTooManyRevoked", err)
	}
	if w := h.do("carol", "POST", wire.PathCalls, []byte(`{"participants":["token:carol"]}`), true); w.Code != http.StatusCreated {
		t.Fatalf("the device a refused revocation named: %d %s, want served", w.Code, w.Body)
	}
	if v, _ := h.store.Get(ctx, bucketRevoked, "token:carol"); v != nil {
		t.Fatal("a refused revocation was stored")
	}
	if err := h.s.RestoreDevice(ctx, "token:bob"); err != nil {
		t.Fatal(err)
	}
	if err := h.s.RestoreDevice(ctx, "token:bob"); err != nil {
		t.Fatalf("restoring a device that is not revoked: %v, want nil", err)
	}
	if err := h.s.RevokeDevice(ctx, "token:carol"); err != nil {
		t.Fatalf("below the bound again: %v", err)
	}
	if n := len(h.entries("revoke", "ok")); n != 3 {
		t.Fatalf("%d revoke entries, want 3 (the refused ones write none)", n)
	}
	if n := len(h.entries("restore", "ok")); n != 1 {
		t.Fatalf("%d restore entries, want 1 (a no-op writes none)", n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.s.RevokeDevice(cctx, "token:dave"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// A revocation is a store record like any other: checked at start
// against the audit log, after a compaction too. Someone with the store
// file and without the KEK cannot lift it (delete the record), nor put a
// lifted one back.
func TestRevokeDeviceRecordChecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{AuditRetention: 2 * time.Hour})
		defer func() { h.s.Close() }()
		ctx := t.Context()
		h.register("bob")
		if err := h.s.RevokeDevice(ctx, "token:bob"); err != nil {
			t.Fatal(err)
		}
		rec, _ := h.store.Get(ctx, bucketRevoked, "token:bob")
		if rec == nil {
			t.Fatal("no revocation record")
		}
		time.Sleep(3 * time.Hour) // hourly compactions remove the revoke entry
		synctest.Wait()
		h.s.Flush(ctx)
		if n := len(h.entries("revoke", "ok")); n != 0 || len(h.entries("compact", "ok")) == 0 {
			t.Fatalf("%d revoke entries after the compaction, want it compacted away", n)
		}
		h.restart()
		if w := h.do("bob", "GET", wire.PathCalls+"/AAAAAAAAAAAAAAAAAAAAAA/keys", nil, false); code(w) != wire.CodeDeviceRevoked {
			t.Fatalf("after compaction and restart: %d %s, want device_revoked", w.Code, w.Body)
		}
		h.s.Close()
		var re *RecordError
		h.store.Commit(ctx, []Write{{Bucket: bucketRevoked, Key: "token:bob"}})
		if _, err := New(h.cfg); !errors.As(err, &re) || re.Bucket != bucketRevoked {
			t.Fatalf("a revocation deleted without the KEK (the checkpoint vouches for it): %v", err)
		}
		h.store.Commit(ctx, []Write{{Bucket: bucketRevoked, Key: "token:bob", Value: rec}})
		h.start()
		if err := h.s.RestoreDevice(ctx, "token:bob"); err != nil {
			t.Fatal(err)
		}
		h.s.Close()
		h.store.Commit(ctx, []Write{{Bucket: bucketRevoked, Key: "token:bob", Value: rec}})
		if _, err := New(h.cfg); !errors.As(err, &re) || re.Bucket != bucketRevoked {
			t.Fatalf("a lifted revocation put back: %v", err)
		}
		h.store.Commit(ctx, []Write{{Bucket: bucketRevoked, Key: "token:bob"}})
		h.start()
		h.register("bob")
		if err := h.s.RevokeDevice(ctx, "token:bob"); err != nil {
			t.Fatal(err)
		}
		h.s.Close()
		cur, _ := h.store.Get(ctx, bucketRevoked, "token:bob")
		h.store.Commit(ctx, []Write{{Bucket: bucketRevoked, Key: "token:bob", Value: append(cur, ' ')}})
		if _, err := New(h.cfg); !errors.As(err, &re) || re.Bucket != bucketRevoked {
			t.Fatalf("a revocation changed without the KEK: %v", err)
		}
		h.s, _ = New(Config{Store: newMemStore(), KEK: h.cfg.KEK}) // for the deferred Close
	})
}

// A server that stopped between committing a revocation and rotating the
// device's calls rotates them when it starts again.
func TestRevokeDeviceRotatesAfterRestart(t *testing.T) {
	h := newHarness(t, Config{})
	defer func() { h.s.Close() }()
	h.register("alice")
	id := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:bob"}})
	other := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice"}})
	h.s.revokeMu.Lock()
	_, err := h.s.setRevokedLocked("token:bob", true) // the commit alone, as if the server stopped then
	h.s.revokeMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if h.versions(id) != 1 {
		t.Fatal("rotated already")
	}
	h.restart()
	if n := h.versions(id); n != 2 {
		t.Fatalf("the revoked device's call has %d versions after the restart, want 2", n)
	}
	if n := h.versions(other); n != 1 {
		t.Fatalf("another call has %d versions, want 1", n)
	}
	h.restart()
	if n := h.versions(id); n != 2 {
		t.Fatalf("rotated again at the next start: %d versions", n)
	}
}

// firstWrite is a ResponseWriter that records whether RevokeDevice had
// returned when the response was written.
type firstWrite struct {
	*httptest.ResponseRecorder
	revoked *atomic.Bool
	late    atomic.Bool
}

func (w *firstWrite) WriteHeader(status int) {
	if status/100 == 2 && w.revoked.Load() {
		w.late.Store(true)
	}
	w.ResponseRecorder.WriteHeader(status)
}

// A request that passed the revocation check does not complete after
// RevokeDevice returned: neither a fetch (no key is delivered after it)
// nor a rotation (no state change is committed after it). The test hook
// holds each request of bob's just after its check until RevokeDevice
// has been called.
func TestRevokeDeviceRace(t *testing.T) {
	h := newHarness(t, Config{RequestRate: 1e6, RequestBurst: 1 << 20, RotationsPerMinute: 1 << 20})
	defer h.s.Close()
	h.register("alice")
	h.register("bob")
	id := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:bob"}})
	revoking := make(chan struct{})
	var revoked atomic.Bool
	h.s.admitted = func(identity string) {
		if identity == "token:bob" {
			<-revoking
			time.Sleep(20 * time.Millisecond) // RevokeDevice gets as far as it can meanwhile
		}
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			method, target, proof := "GET", wire.PathCalls+"/"+id+"/keys", false
			if i%2 == 1 {
				method, target, proof = "POST", wire.PathCalls+"/"+id+"/rotate", true
			}
			r := httptest.NewRequest(method, target, nil)
			r.Header.Set("Authorization", "Bearer "+h.token("bob"))
			if proof {
				p, err := wire.SignProof(h.devs["bob"], h.aud, method, target, nil, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				r.Header.Set(wire.ProofHeader, p)
			}
			w := &firstWrite{ResponseRecorder: httptest.NewRecorder(), revoked: &revoked}
			h.s.ServeHTTP(w, r)
			if w.late.Load() {
				t.Errorf("%s %s answered %d after RevokeDevice returned", method, target, w.Code)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // the requests are past their check, held by the hook
	close(revoking)
	if err := h.s.RevokeDevice(t.Context(), "token:bob"); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	wg.Wait()
	// The audit log agrees: nothing of bob's was granted after the
	// revocation.
	var buf strings.Builder
	h.s.Flush(t.Context())
	after := false
	for _, e := range h.allEntries() {
		if e.Action == "revoke" {
			after = true
		}
		if after && e.Actor == "token:bob" && e.Outcome == "ok" {
			t.Errorf("granted after the revocation: %+v", e)
		}
		buf.WriteString(e.Action + " ")
	}
	if !after {
		t.Fatalf("no revoke entry in %s", buf.String())
	}
}

// allEntries returns the whole audit log, verified.
func (h *harness) allEntries() []AuditEntry {
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
		if err := json.Unmarshal(line, &e); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
