// Package storetest checks that a [kmsserver.Store] behaves as the server
// needs: the conformance tests every store (the embedded file store, a
// database store) runs with its own constructor.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) kmsserver.Store { ... })
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/securecall/securecall/kms/kmsserver"
)

// Open returns a new, empty store for one test; the test closes it.
type Open func(t *testing.T) kmsserver.Store

// Run runs every conformance test against stores made by open.
func Run(t *testing.T, open Open) {
	t.Run("GetMissing", func(t *testing.T) { testGetMissing(t, open(t)) })
	t.Run("CommitAndRead", func(t *testing.T) { testCommitAndRead(t, open(t)) })
	t.Run("ForEachOrder", func(t *testing.T) { testForEachOrder(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("ValueNotAliased", func(t *testing.T) { testValueNotAliased(t, open(t)) })
	t.Run("ForEachStops", func(t *testing.T) { testForEachStops(t, open(t)) })
	t.Run("CloseTwice", func(t *testing.T) { testCloseTwice(t, open(t)) })
	t.Run("EveryBucket", func(t *testing.T) { testEveryBucket(t, open(t)) })
}

// Buckets are every bucket the server writes.
var Buckets = []string{"devices", "calls", "revoked", "audit", "meta", "nonces"}

// testEveryBucket writes, reads and lists a key in each bucket the server
// uses, the revocations' included.
func testEveryBucket(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	var ws []kmsserver.Write
	for _, b := range Buckets {
		ws = append(ws, kmsserver.Write{Bucket: b, Key: "k", Value: []byte(b)})
	}
	commit(t, s, ws...)
	for _, b := range Buckets {
		if v := get(t, s, b, "k"); string(v) != b {
			t.Errorf("%s/k = %q, want %q", b, v, b)
		}
		n := 0
		s.ForEach(context.Background(), b, func(k string, v []byte) error { n++; return nil })
		if n != 1 {
			t.Errorf("ForEach of bucket %s saw %d keys, want 1", b, n)
		}
	}
}

func commit(t *testing.T, s kmsserver.Store, ws ...kmsserver.Write) {
	t.Helper()
	if err := s.Commit(context.Background(), ws); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s kmsserver.Store, bucket, key string) []byte {
	t.Helper()
	v, err := s.Get(context.Background(), bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testGetMissing(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	if v := get(t, s, "calls", "nope"); v != nil {
		t.Fatalf("missing key: %q", v)
	}
	if v := get(t, s, "no-such-bucket", "nope"); v != nil {
		t.Fatalf("missing bucket: %q", v)
	}
}

func testCommitAndRead(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	commit(t, s, kmsserver.Write{Bucket: "calls", Key: "a", Value: []byte("1")},
		kmsserver.Write{Bucket: "devices", Key: "a", Value: []byte("2")},
		kmsserver.Write{Bucket: "calls", Key: "a", Value: []byte("3")}) // the last write of a key wins
	if v := get(t, s, "calls", "a"); string(v) != "3" {
		t.Fatalf("calls/a = %q, want 3", v)
	}
	if v := get(t, s, "devices", "a"); string(v) != "2" {
		t.Fatalf("devices/a = %q, want 2", v)
	}
}

func testForEachOrder(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	keys := []string{"b", "a", "0000000000000010", "0000000000000002", "c/d", "A"}
	var ws []kmsserver.Write
	for _, k := range keys {
		ws = append(ws, kmsserver.Write{Bucket: "audit", Key: k, Value: []byte("v" + k)})
	}
	commit(t, s, ws...)
	var got []string
	err := s.ForEach(context.Background(), "audit", func(k string, v []byte) error {
		if string(v) != "v"+k {
			return fmt.Errorf("value of %q is %q", k, v)
		}
		got = append(got, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ForEach order %q, want %q (ascending bytes)", got, want)
	}
}

func testDelete(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	commit(t, s, kmsserver.Write{Bucket: "calls", Key: "a", Value: []byte("1")})
	commit(t, s, kmsserver.Write{Bucket: "calls", Key: "a"}, kmsserver.Write{Bucket: "calls", Key: "never-there"})
	if v := get(t, s, "calls", "a"); v != nil {
		t.Fatalf("deleted key reads %q", v)
	}
	n := 0
	s.ForEach(context.Background(), "calls", func(string, []byte) error { n++; return nil })
	if n != 0 {
		t.Fatalf("ForEach after delete saw %d keys", n)
	}
}

func testValueNotAliased(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	val := []byte("value")
	commit(t, s, kmsserver.Write{Bucket: "calls", Key: "a", Value: val})
	val[0] = 'X'
	got := get(t, s, "calls", "a")
	if string(got) != "value" {
		t.Fatalf("the store kept the caller's slice: %q", got)
	}
	got[0] = 'Y'
	if again := get(t, s, "calls", "a"); !bytes.Equal(again, []byte("value")) {
		t.Fatalf("Get returned the store's own memory: %q", again)
	}
}

func testForEachStops(t *testing.T, s kmsserver.Store) {
	defer s.Close()
	commit(t, s, kmsserver.Write{Bucket: "calls", Key: "a", Value: []byte("1")}, kmsserver.Write{Bucket: "calls", Key: "b", Value: []byte("2")})
	stop := errors.New("stop")
	n := 0
	err := s.ForEach(context.Background(), "calls", func(string, []byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ForEach after fn failed: %v after %d calls, want stop after 1", err, n)
	}
}

func testCloseTwice(t *testing.T, s kmsserver.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want net.ErrClosed", err)
	}
}
