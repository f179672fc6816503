package kms_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// crashDirEnv, when set, turns the test binary into the child of
// TestDurabilityAfterKill: a KMS that rotates a call's key until killed.
const crashDirEnv = "SECURECALL_KMS_CRASH_CHILD_DIR"

func runCrashChild() bool {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return false
	}
	if err := crashChild(dir); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	os.Exit(0)
	return true
}

// crashChild rotates a call's key as fast as it can and prints, after each
// rotation has returned (so is committed), the version and a hash of its
// key. It stops by itself after 2,000 rotations or a minute.
func crashChild(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env, err := devkms.StartWith(ctx, dir, devkms.Options{Server: hammering}, "alice")
	if err != nil {
		return err
	}
	defer env.Close()
	alice, err := env.Client("alice")
	if err != nil {
		return err
	}
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		return err
	}
	fmt.Println("call", uri)
	for range 2000 {
		v, err := alice.Rotate(ctx, uri)
		if err != nil {
			return err
		}
		k, err := alice.FetchVersion(ctx, uri, v)
		if err != nil {
			return err
		}
		h := sha256.Sum256(k.Key)
		fmt.Println("v", v, hex.EncodeToString(h[:]))
	}
	return nil
}

func keyHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// reopen starts a KMS on dir at the address of uri, so that the key URIs
// made before stay valid.
func reopen(t *testing.T, dir, uri string) *devkms.Env {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	env, err := devkms.StartWith(context.Background(), dir, devkms.Options{Addr: u.Host}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

func exportAudit(t *testing.T, env *devkms.Env) ([]byte, kmsserver.AuditHead) {
	t.Helper()
	var buf bytes.Buffer
	if err := env.Server.ExportAuditLog(ctxT(t), &buf); err != nil {
		t.Fatal(err)
	}
	head, err := kmsserver.VerifyAuditLog(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("audit chain after restart: %v", err)
	}
	return buf.Bytes(), head
}

func TestDurabilityAfterKill(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var uri string
	committed := map[uint32]string{}
	sc := bufio.NewScanner(out)
	for len(committed) < 25 && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "call":
			uri = f[1]
		case len(f) == 3 && f[0] == "v":
			v, _ := strconv.ParseUint(f[1], 10, 32)
			committed[uint32(v)] = f[2]
		default:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %q", sc.Text())
		}
	}
	// Kill it mid-rotation, by PID, with SIGKILL: no shutdown runs.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if uri == "" || len(committed) < 25 {
		t.Fatalf("child reported %d versions of %q", len(committed), uri)
	}

	env := reopen(t, dir, uri)
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	for v, want := range committed {
		k, err := alice.FetchVersion(ctx, uri, v)
		if err != nil {
			t.Fatalf("committed version %d lost: %v", v, err)
		}
		if keyHash(k.Key) != want {
			t.Fatalf("version %d has another key after the crash", v)
		}
	}
	log, _ := exportAudit(t, env)
	rotations := bytes.Count(log, []byte(`"action":"rotate","actor":"alice"`))
	if rotations < len(committed) {
		t.Fatalf("audit has %d rotations, %d were committed", rotations, len(committed))
	}
	if _, err := os.Stat(filepath.Join(dir, devkms.StoreFile)); err != nil {
		t.Fatal(err)
	}
}

func TestDurabilityCloseReopen(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := env.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := alice.Rotate(ctx, uri); err != nil {
			t.Fatal(err)
		}
	}
	before, err := alice.Fetch(ctx, uri)
	if err != nil || len(before) != 4 {
		t.Fatalf("%v %v", before, err)
	}
	log1, head1 := exportAudit(t, env)
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}

	env2 := reopen(t, dir, uri)
	alice2 := mustClient(t, env2, "alice")
	after, err := alice2.Fetch(ctx, uri)
	if err != nil || len(after) != len(before) {
		t.Fatalf("after reopen: %v, %v", after, err)
	}
	for i := range before {
		if after[i].Version != before[i].Version || string(after[i].Key) != string(before[i].Key) ||
			!after[i].ActivateAt.Equal(before[i].ActivateAt) || !after[i].ExpiresAt.Equal(before[i].ExpiresAt) {
			t.Fatalf("version %d changed across restart", before[i].Version)
		}
	}
	log2, head2 := exportAudit(t, env2)
	if head2.Seq <= head1.Seq || !bytes.HasPrefix(log2, log1) {
		t.Fatalf("audit log lost entries across restart: %d then %d", head1.Seq, head2.Seq)
	}
	// The key material is sealed under the KEK: it is not in the file.
	raw, err := os.ReadFile(filepath.Join(dir, devkms.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range after {
		if bytes.Contains(raw, k.Key) || bytes.Contains(raw, []byte(hex.EncodeToString(k.Key))) {
			t.Fatalf("version %d's key is in the store file in the clear", k.Version)
		}
	}
}

func TestWrongKEKRefused(t *testing.T) {
	dir := t.TempDir()
	env, err := devkms.Start(context.Background(), dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := env.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateCall(ctxT(t), kms.CallOptions{Participants: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	env.Close()
	store, err := kmsserver.OpenFileStore(filepath.Join(dir, devkms.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if s, err := kmsserver.New(kmsserver.Config{Store: store, KEK: make([]byte, 32)}); err == nil {
		s.Close()
		t.Fatal("the server opened the store with the wrong KEK")
	}
}
