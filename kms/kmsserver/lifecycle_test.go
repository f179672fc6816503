package kmsserver

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
)

// A call's key resource ends: by its creator (audited), after which
// rotation stops, no key is delivered and the record is purged after the
// retention; a call nobody ends is ended at the maximum lifetime. Both
// hold across a restart.
func TestSecurityCallsEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{MaxCallLifetime: time.Hour, EndedRetention: 10 * time.Minute})
		defer func() { h.s.Close() }()
		h.register("alice")
		h.register("bob")
		id := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice", "token:bob"}, RotateEveryMS: 1000})
		orphan := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice"}})
		keys := wire.PathCalls + "/" + id + "/keys"

		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		if n := h.versions(id); n < 3 {
			t.Fatalf("%d versions after 3.5 s of rotation every second", n)
		}
		if got := code(h.do("bob", "POST", wire.PathCalls+"/"+id+"/end", nil, true)); got != wire.CodeForbidden {
			t.Fatalf("a participant who is not the creator ended the call: %q", got)
		}
		if got := code(h.do("alice", "POST", wire.PathCalls+"/"+id+"/end", nil, true)); got != "" {
			t.Fatalf("end: %q", got)
		}
		if got := code(h.do("alice", "POST", wire.PathCalls+"/"+id+"/end", nil, true)); got != "" {
			t.Fatalf("ending an ended call: %q", got)
		}
		n := h.versions(id)
		h.restart()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if got := h.versions(id); got != n {
			t.Fatalf("an ended call went on rotating: %d versions, then %d", n, got)
		}
		for _, target := range []string{keys, keys + "?version=1", keys + "?after=0&wait=1000"} {
			if got := code(h.do("bob", "GET", target, nil, false)); got != wire.CodeEnded {
				t.Errorf("GET %s on an ended call: %q, want %q", target, got, wire.CodeEnded)
			}
		}
		if got := code(h.do("alice", "POST", wire.PathCalls+"/"+id+"/rotate", nil, true)); got != wire.CodeEnded {
			t.Errorf("rotate of an ended call: %q", got)
		}
		if len(h.entries("end", "ok")) != 1 {
			t.Error("the end is not audited once")
		}

		// The retention destroys the ended call; the orphan ends at its
		// maximum lifetime, and is purged in its turn.
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if h.versions(id) != -1 {
			t.Fatal("the ended call outlived its retention")
		}
		if v, _ := h.store.Get(t.Context(), bucketCalls, id); v != nil {
			t.Fatal("the ended call's record is still in the store")
		}
		if got := code(h.do("bob", "GET", keys, nil, false)); got != wire.CodeNotFound {
			t.Errorf("GET after purge: %q", got)
		}
		time.Sleep(50 * time.Minute) // an hour and 33 s after the start
		synctest.Wait()
		h.s.mu.RLock()
		c := h.s.calls[orphan]
		ended := c != nil && c.rec.ended()
		h.s.mu.RUnlock()
		if !ended {
			t.Fatalf("a call nobody ended outlived the maximum lifetime (%v, %d versions, now %v)", c != nil, h.versions(orphan), time.Now())
		}
		if e := h.entries("end", "ok"); len(e) != 2 || e[1].Actor != "scheduler" {
			t.Fatalf("the maximum lifetime's end is not audited: %+v", e)
		}
		time.Sleep(11 * time.Minute)
		synctest.Wait()
		if h.versions(orphan) != -1 {
			t.Fatal("the orphan was not purged")
		}
		if len(h.entries("purge", "ok")) != 2 {
			t.Error("purges not audited")
		}
		// The store still opens: purged records are accounted for.
		h.restart()
	})
}

// The audit log stays bounded: entries older than the retention are
// compacted away, hourly, leaving a checkpoint from which the rest of the
// chain verifies, both by VerifyAuditLog and by the server at start; the
// records the removed entries wrote are still vouched for (an older copy
// of one is still refused).
func TestSecurityAuditCompaction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config{AuditRetention: 2 * time.Hour})
		defer func() { h.s.Close() }()
		h.register("alice")
		id := h.create("alice", wire.CreateRequest{Participants: []string{"token:alice"}})
		old, _ := h.store.Get(t.Context(), bucketCalls, id)
		h.do("alice", "POST", wire.PathCalls+"/"+id+"/rotate", nil, true)
		for range 50 {
			h.do("alice", "GET", wire.PathCalls+"/"+id+"/keys", nil, false)
		}
		h.s.Flush(t.Context())
		before := len(h.entries("fetch", "ok"))
		time.Sleep(3 * time.Hour) // hourly compactions run meanwhile
		synctest.Wait()
		h.do("alice", "GET", wire.PathCalls+"/"+id+"/keys", nil, false)
		h.s.Flush(t.Context())
		if after := len(h.entries("fetch", "ok")); before < 50 || after != 1 {
			t.Fatalf("fetch entries: %d before, %d after compaction; want the old ones gone", before, after)
		}
		if len(h.entries("compact", "ok")) == 0 {
			t.Fatal("the compaction is not audited")
		}
		h.restart() // the chain from the checkpoint verifies at start
		if w := h.do("alice", "GET", wire.PathCalls+"/"+id+"/keys", nil, false); w.Code != 200 {
			t.Fatalf("after compaction and restart: %d", w.Code)
		}
		h.s.Close()
		h.store.Commit(t.Context(), []Write{{Bucket: bucketCalls, Key: id, Value: old}}) // an older copy of the call
		_, err := New(h.cfg)
		var re *RecordError
		if !errors.As(err, &re) || re.Key != id {
			t.Fatalf("an older copy of a record written before the checkpoint: %v", err)
		}
		h.store.Commit(t.Context(), []Write{{Bucket: bucketCalls, Key: id}})
		if _, err := New(h.cfg); !errors.As(err, &re) || re.Key != id {
			t.Fatalf("a record deleted after the checkpoint vouched for it: %v", err)
		}
		h.s, _ = New(Config{Store: newMemStore(), KEK: h.cfg.KEK}) // for the deferred Close
	})
}
