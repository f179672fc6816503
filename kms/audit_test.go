package kms_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// auditLog makes a server, runs a few decisions through it and returns the
// exported audit log and the store's directory.
func auditLog(t *testing.T) ([]byte, string) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice", "mallory")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	alice, mallory := mustClient(t, env, "alice"), mustClient(t, env, "mallory")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	alice.Rotate(ctx, uri)
	alice.Fetch(ctx, uri)
	mallory.Fetch(ctx, uri)
	var buf bytes.Buffer
	if err := env.Server.ExportAuditLog(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), dir
}

func TestAuditLogDetectsTampering(t *testing.T) {
	log, _ := auditLog(t)
	head, err := kmsserver.VerifyAuditLog(bytes.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(log), []byte("\n"))
	if int(head.Seq) != len(lines) || len(lines) < 6 {
		t.Fatalf("head %d, %d lines", head.Seq, len(lines))
	}
	join := func(ls [][]byte) []byte { return append(bytes.Join(ls, []byte("\n")), '\n') }
	edit := func(i int, old, new string) []byte {
		ls := make([][]byte, len(lines))
		copy(ls, lines)
		ls[i] = bytes.Replace(ls[i], []byte(old), []byte(new), 1)
		if bytes.Equal(ls[i], lines[i]) {
			t.Fatalf("line %d has no %q", i, old)
		}
		return join(ls)
	}
	tests := map[string][]byte{
		"actor changed":             edit(len(lines)-1, `"actor":"mallory"`, `"actor":"alice"`),
		"outcome changed":           edit(len(lines)-1, `"outcome":"denied"`, `"outcome":"ok"`),
		"hash recomputed elsewhere": edit(2, `"hash":"`, `"hash":"00`),
		"entry removed":             join(append(append([][]byte{}, lines[:2]...), lines[3:]...)),
		"entries swapped":           join(append(append([][]byte{}, lines[0], lines[2], lines[1]), lines[3:]...)),
		"entry repeated":            join(append(append([][]byte{}, lines[:3]...), lines[2:]...)),
		"not JSON":                  join(append(append([][]byte{}, lines[:1]...), []byte("{"))),
		"unknown field":             edit(1, `{"seq"`, `{"extra":1,"seq"`),
	}
	for name, bad := range tests {
		if _, err := kmsserver.VerifyAuditLog(bytes.NewReader(bad)); !errors.Is(err, kmsserver.ErrAuditChain) {
			t.Errorf("%s: verifier said %v", name, err)
		}
	}
}

// An entry rewritten inside the store file is caught too.
func TestAuditLogTamperedInStore(t *testing.T) {
	log, dir := auditLog(t)
	first := bytes.SplitN(log, []byte("\n"), 2)[0]
	store, err := kmsserver.OpenFileStore(filepath.Join(dir, devkms.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	forged := bytes.Replace(first, []byte(`"outcome":"ok"`), []byte(`"outcome":"denied"`), 1)
	if bytes.Equal(forged, first) {
		t.Fatalf("first entry %s has no outcome to forge", first)
	}
	if err := store.Commit(context.Background(), []kmsserver.Write{{Bucket: "audit", Key: "0000000000000001", Value: forged}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := kmsserver.ExportAuditLog(context.Background(), store, &buf); err != nil {
		t.Fatal(err)
	}
	var ae *kmsserver.AuditError
	if _, err := kmsserver.VerifyAuditLog(&buf); !errors.As(err, &ae) || ae.Line != 1 {
		t.Fatalf("forged first entry: %v", err)
	}
}
