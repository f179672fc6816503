package kms_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// copyDir copies the files of a devkms directory (CA, certificates, KEK,
// store) to a new temporary directory.
func copyDir(t *testing.T, src string) string {
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// editStore changes the store file of dir directly, as someone with the
// file and without the KEK can.
func editStore(t *testing.T, dir string, edit func(s *kmsserver.FileStore)) {
	s, err := kmsserver.OpenFileStore(filepath.Join(dir, devkms.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	edit(s)
}

func getRaw(t *testing.T, s kmsserver.Store, bucket, key string) []byte {
	v, err := s.Get(context.Background(), bucket, key)
	if err != nil || v == nil {
		t.Fatalf("%s/%s: %q, %v", bucket, key, v, err)
	}
	return v
}

func putRaw(t *testing.T, s kmsserver.Store, bucket, key string, v []byte) {
	if err := s.Commit(context.Background(), []kmsserver.Write{{Bucket: bucket, Key: key, Value: v}}); err != nil {
		t.Fatal(err)
	}
}

// replaceJSON edits the JSON inside a stored value, leaving whatever
// precedes it as it was.
func replaceJSON(t *testing.T, v []byte, old, new string) []byte {
	i := bytes.IndexByte(v, '{')
	if i < 0 || !bytes.Contains(v[i:], []byte(old)) {
		t.Fatalf("no %q in %q", old, v)
	}
	out := append([]byte(nil), v[:i]...)
	return append(out, bytes.Replace(v[i:], []byte(old), []byte(new), 1)...)
}

// Someone with the store file but not the KEK adds a participant, clears
// the state of a compromised version, puts back an older copy of a call
// (from before the compromise), deletes a call, or moves a record to
// another key. The server refuses to start, naming the record, instead of
// handing out keys the store never granted.
func TestSecurityStoreRecordsAuthenticated(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice", "bob", "mallory")
	if err != nil {
		t.Fatal(err)
	}
	alice := mustClient(t, env, "alice")
	mustClient(t, env, "mallory")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	id := uri[strings.LastIndex(uri, "/")+1:]
	otherID := other[strings.LastIndex(other, "/")+1:]
	var beforeCompromise []byte
	env.Close()
	editStore(t, dir, func(s *kmsserver.FileStore) { beforeCompromise = getRaw(t, s, "calls", id) })
	env, err = devkms.Start(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Server.SetKeyState(ctx, id, 1, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	env.Close()

	tests := map[string]struct {
		edit        func(t *testing.T, s *kmsserver.FileStore)
		bucket, key string
	}{
		"participant added": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "calls", id, replaceJSON(t, getRaw(t, s, "calls", id), `"participants":["alice","bob"]`, `"participants":["alice","bob","mallory"]`))
		}, "calls", id},
		"compromised state cleared": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "calls", id, replaceJSON(t, getRaw(t, s, "calls", id), `"state":"compromised",`, ``))
		}, "calls", id},
		"older copy put back": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "calls", id, beforeCompromise)
		}, "calls", id},
		"call deleted": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "calls", otherID, nil)
		}, "calls", otherID},
		"record moved to another key": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "calls", otherID, getRaw(t, s, "calls", id))
		}, "calls", otherID},
		"device key replaced": {func(t *testing.T, s *kmsserver.FileStore) {
			putRaw(t, s, "devices", "bob", getRaw(t, s, "devices", "mallory"))
		}, "devices", "bob"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			d := copyDir(t, dir)
			editStore(t, d, func(s *kmsserver.FileStore) { tt.edit(t, s) })
			env, err := devkms.Start(context.Background(), d)
			if err == nil {
				env.Close()
				t.Fatal("the server started on a store changed without the KEK")
			}
			var re *kmsserver.RecordError
			if !errors.As(err, &re) || !errors.Is(err, kmsserver.ErrRecord) || re.Bucket != tt.bucket || re.Key != tt.key {
				t.Fatalf("got %v, want a RecordError naming %s/%s", err, tt.bucket, tt.key)
			}
		})
	}
	// The untouched store still opens.
	env, err = devkms.Start(context.Background(), copyDir(t, dir))
	if err != nil {
		t.Fatalf("untouched store: %v", err)
	}
	env.Close()
}

// openDamaged opens a store file and a server on it with the KEK of dir,
// closing both if they open.
func openDamaged(t *testing.T, dir string) error {
	kekHex, err := os.ReadFile(filepath.Join(dir, devkms.KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := hex.DecodeString(strings.TrimSpace(string(kekHex)))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, devkms.StoreFile)
	store, err := kmsserver.OpenFileStore(path)
	if err != nil {
		if !strings.Contains(err.Error(), path) {
			t.Errorf("the error does not name the file: %v", err)
		}
		return err
	}
	defer store.Close()
	srv, err := kmsserver.New(kmsserver.Config{Store: store, KEK: kek})
	if err != nil {
		return err
	}
	return srv.Close()
}

// A store truncated anywhere, or with any single page altered, fails to
// open with an error naming the file (or, for a page whose damage only
// the records' MACs see, the record), and never panics or faults the
// process.
func TestSecurityCorruptStore(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	alice := mustClient(t, env, "alice")
	mustClient(t, env, "bob")
	ctx := ctxT(t)
	for range 40 {
		uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	env.Close()
	orig, err := os.ReadFile(filepath.Join(dir, devkms.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	pages := len(orig) / page
	t.Logf("store: %d bytes, %d pages", len(orig), pages)
	if pages < 10 {
		t.Fatalf("store too small to test (%d pages)", pages)
	}
	damaged := func(what string, data []byte) error {
		d := copyDir(t, dir)
		if err := os.WriteFile(filepath.Join(d, devkms.StoreFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return openDamaged(t, d)
	}
	// A truncation that only removes the unused pages past the file's
	// high-water mark leaves a whole store, which opens (and the server's
	// record and audit checks pass on it); any other is refused.
	truncRefused := 0
	for pct := 5; pct < 100; pct += 5 {
		if err := damaged("truncated", orig[:len(orig)*pct/100]); err != nil {
			truncRefused++
		}
	}
	if truncRefused == 0 {
		t.Error("no truncation was refused")
	}
	refused := 0
	for p := range pages {
		for _, off := range []int{0, 8, 11, page / 2, page - 1} { // page id, flags, count, data, end
			data := bytes.Clone(orig)
			data[p*page+off] ^= 0xff
			if err := damaged("flipped", data); err != nil {
				refused++
			}
		}
	}
	t.Logf("%d of 19 truncations and %d of %d single-byte page alterations refused; the rest opened and passed the record and audit checks", truncRefused, refused, pages*5)
	if err := openDamaged(t, copyDir(t, dir)); err != nil {
		t.Fatalf("untouched store: %v", err)
	}
}
