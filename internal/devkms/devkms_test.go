package devkms

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/kms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A second Start in the same directory reuses the PKI, the KEK and the
// store; Close joins everything and is idempotent.
func TestStartReusesDir(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	env, err := Start(ctx, dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := env.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range []string{"ca.pem", "server.pem", "device-alice.pem", KEKFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	if fi, _ := os.Stat(filepath.Join(dir, KEKFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %v", fi.Mode().Perm())
	}
	addr := env.URL[len("https://"):]
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if err := env.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}

	env2, err := StartWith(ctx, dir, Options{Addr: addr}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer env2.Close()
	for f, b := range files {
		if got, _ := os.ReadFile(filepath.Join(dir, f)); !bytes.Equal(got, b) {
			t.Fatalf("%s was recreated", f)
		}
	}
	alice2, err := env2.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := alice2.Fetch(ctx, uri); err != nil || len(keys) != 1 {
		t.Fatalf("call lost across restart: %v %v", keys, err)
	}
}

func TestDeviceCertificateRejectsPaths(t *testing.T) {
	env, err := Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	for _, id := range []string{"", "../x", "a/b", ".hidden"} {
		if _, err := env.Client(id); err == nil {
			t.Errorf("identity %q accepted", id)
		}
	}
}
