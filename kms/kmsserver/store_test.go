package kmsserver_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/kms/kmsserver/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFileStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) kmsserver.Store {
		s, err := kmsserver.OpenFileStore(filepath.Join(t.TempDir(), "kms.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A second server on the same store file (another process, or another
// FileStore in this one) is told that the file is locked, not just
// "timeout".
func TestFileStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	first, err := kmsserver.OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = kmsserver.OpenFileStore(path)
	if !errors.Is(err, kmsserver.ErrStoreLocked) {
		t.Fatalf("second open: %v, want ErrStoreLocked", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked by another") {
		t.Fatalf("second open: %q does not say the file is locked by another process", err)
	}
}

// The conformance suite's list of buckets is the server's.
func TestBucketsListed(t *testing.T) {
	if !slices.Equal(slices.Sorted(slices.Values(kmsserver.ServerBuckets)), slices.Sorted(slices.Values(storetest.Buckets))) {
		t.Fatalf("server buckets %q, conformance suite %q", kmsserver.ServerBuckets, storetest.Buckets)
	}
}
