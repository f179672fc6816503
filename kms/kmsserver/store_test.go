package kmsserver_test

import (
	"path/filepath"
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
