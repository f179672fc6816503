package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCalleeNoticesVanishedCaller runs the callee and a caller in dtls
// keying, SIGKILLs the caller mid-call and expects the callee to notice
// (the call fails) and exit non-zero, saying why. Before that, a bad offer
// is refused with a message on the callee's console.
func TestCalleeNoticesVanishedCaller(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two programs; skipped with -short")
	}
	bin := t.TempDir()
	for _, p := range []string{"callee", "caller"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, p), "../"+p).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", p, err, out)
		}
	}
	sig := freeAddr(t)
	callee := start(t, filepath.Join(bin, "callee"), "-listen", sig, "-out", filepath.Join(t.TempDir(), "rx.wav"),
		"-timeout", "60s", "-failed-after", "3s")
	callee.waitFor(t, "waiting for a call")

	resp, err := http.Post("http://"+sig+"/call", "application/sdp", strings.NewReader("v=0\r\nnot an offer\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a malformed offer got HTTP %d, want 400", resp.StatusCode)
	}
	callee.waitFor(t, "callee: refused a call (400")

	caller := start(t, filepath.Join(bin, "caller"), "-callee", "http://"+sig, "-keying", "dtls", "-duration", "60s")
	callee.waitFor(t, "connected:")
	time.Sleep(500 * time.Millisecond)
	if err := caller.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = caller.cmd.Wait()
	exited := make(chan error, 1)
	go func() { exited <- callee.cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if err == nil || !asExit(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("callee exit after its caller vanished: %v, want a non-zero status\n%s", err, callee.output())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the callee did not notice its caller vanished:\n%s", callee.output())
	}
	if out := callee.output(); !strings.Contains(out, "the call failed") || !strings.Contains(out, "no working path") {
		t.Errorf("the callee did not say why it ended:\n%s", out)
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
				t.Fatalf("%s exited before printing %q:\n%s", p.cmd.Path, s, p.buf.String())
			}
			p.buf.WriteString(line + "\n")
			if strings.Contains(line, s) {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not print %q:\n%s", p.cmd.Path, s, p.buf.String())
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
		case <-time.After(200 * time.Millisecond):
			return p.buf.String()
		}
	}
}
