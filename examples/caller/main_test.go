package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTwoProcesses runs the documented three-process set-up: the KMS
// server, the callee and the caller, built from their sources, calling in
// hybrid keying over loopback; then a call whose key the answering device
// is not a participant of, which must be refused.
func TestTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three programs; skipped with -short")
	}
	bin := t.TempDir()
	for _, p := range []string{"kms-server", "callee", "caller"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, p), "../"+p).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", p, err, out)
		}
	}
	kmsDir := filepath.Join(t.TempDir(), "kms")
	kms := start(t, filepath.Join(bin, "kms-server"), "-dir", kmsDir, "-addr", freeAddr(t))
	kms.waitFor(t, "kms-server: listening on")

	// The call bob is a participant of.
	sig := freeAddr(t)
	callee := start(t, filepath.Join(bin, "callee"), "-listen", sig, "-kms-dir", kmsDir,
		"-out", filepath.Join(t.TempDir(), "rx.wav"), "-timeout", "30s")
	callee.waitFor(t, "waiting for a call")
	out, err := exec.Command(filepath.Join(bin, "caller"), "-callee", "http://"+sig, "-kms-dir", kmsDir,
		"-duration", "2500ms", "-rotate", "1s").CombinedOutput()
	if err != nil {
		t.Fatalf("caller: %v\n%s", err, out)
	}
	for _, want := range []string{"keying hybrid", "sending under key version 2", "sent 125 packets"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("caller output lacks %q:\n%s", want, out)
		}
	}
	if err := callee.cmd.Wait(); err != nil {
		t.Fatalf("callee: %v\n%s", err, callee.output())
	}
	if !strings.Contains(callee.output(), "received 125 packets (125 decrypted), auth failures 0, replays 0, unknown key 0") {
		t.Errorf("callee output:\n%s", callee.output())
	}

	// A call whose key carol, not bob, may fetch.
	sig = freeAddr(t)
	callee = start(t, filepath.Join(bin, "callee"), "-listen", sig, "-kms-dir", kmsDir, "-timeout", "5s")
	callee.waitFor(t, "waiting for a call")
	out, err = exec.Command(filepath.Join(bin, "caller"), "-callee", "http://"+sig, "-kms-dir", kmsDir,
		"-peer", "carol", "-duration", "500ms").CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("403 Forbidden")) {
		t.Fatalf("a call bob may not fetch the key of was not refused: %v\n%s", err, out)
	}
}

type proc struct {
	cmd   *exec.Cmd
	lines chan string
	buf   bytes.Buffer
}

// start runs a program, collecting its output, and stops it (by its PID)
// when the test ends.
func start(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(path, args...), lines: make(chan string, 100)}
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			select {
			case p.lines <- s.Text():
			default:
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = p.cmd.Process.Kill()
				<-done
			}
		}
		w.Close()
	})
	return p
}

// waitFor reads output lines until one contains s.
func (p *proc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s exited before printing %q:\n%s", p.cmd.Path, s, p.output())
			}
			p.buf.WriteString(line + "\n")
			if strings.Contains(line, s) {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not print %q:\n%s", p.cmd.Path, s, p.output())
		}
	}
}

// output returns what the program printed so far.
func (p *proc) output() string {
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return p.buf.String()
			}
			p.buf.WriteString(line + "\n")
		case <-time.After(100 * time.Millisecond):
			return p.buf.String()
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
