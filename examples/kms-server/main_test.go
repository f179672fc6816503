package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestKMSServer builds the program, runs it on a free loopback port, does a
// client fetch against it with the credentials it printed, and interrupts
// it.
func TestKMSServer(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "kms-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "state")
	cmd := exec.Command(bin, "-dir", dir, "-addr", "127.0.0.1:0", "-devices", "alice,bob")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var url string
	var printed []string
	timeout := time.After(60 * time.Second)
	for url == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kms-server exited: %q", printed)
			}
			printed = append(printed, l)
			if u, ok := strings.CutPrefix(l, "kms-server: listening on "); ok {
				url = u
			}
		case <-timeout:
			t.Fatal("kms-server printed no address")
		}
	}
	// Read the rest of the banner: it names every credential.
	var banner strings.Builder
	for l := range lines {
		banner.WriteString(l + "\n")
		if strings.HasPrefix(l, "Ctrl-C") {
			break
		}
	}
	certPath, keyPath := devkms.DevicePaths(dir, "bob")
	for _, p := range []string{filepath.Join(dir, "ca.pem"), certPath, keyPath} {
		if !strings.Contains(banner.String(), p) {
			t.Fatalf("banner does not name %s:\n%s", p, banner.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := func(id string) *kms.Client {
		cp, kp := devkms.DevicePaths(dir, id)
		cert, err := tls.LoadX509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := os.ReadFile(filepath.Join(dir, devkms.KMSKeysFile))
		if err != nil {
			t.Fatal(err)
		}
		kmsKeys, err := kms.ParseKMSKeys(jwks)
		if err != nil {
			t.Fatal(err)
		}
		c, err := kms.NewClient(kms.Config{URL: url, Certificate: cert, RootCAs: roots, KMSKeys: kmsKeys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := client("alice"), client("bob")
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bob.Fetch(ctx, uri)
	if err != nil || len(keys) != 1 || len(keys[0].Key) != 32 {
		t.Fatalf("fetch from kms-server: %v, %v", keys, err)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kms-server did not exit cleanly on interrupt: %v", err)
	}
}
