package interop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envRequired names the variable that turns a missing tool, root or
// namespace into a failure instead of a skip. CI sets it after installing
// the peers.
const envRequired = "SECURECALL_INTEROP"

func interopRequired() bool { return os.Getenv(envRequired) == "1" }

// unavailable skips t because something it needs is missing, or fails it
// when SECURECALL_INTEROP=1 says that everything must be there.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if interopRequired() {
		t.Fatalf("%s, and %s=1 requires it", msg, envRequired)
	}
	t.Skipf("skipped: %s (set %s=1 to make this a failure)", msg, envRequired)
}

// needTool returns the path of the program name, installed by the Debian
// package pkg, or skips (or fails) t without it.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, "%s not found: install the Debian package %s", name, pkg)
	}
	return path
}

// needRoot skips (or fails) t unless the test runs as root, which network
// namespaces need.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root to create network namespaces")
	}
}

// logBuffer collects a process's output for the failure message of a test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a peer program started by a test. It is stopped by its PID
// (and its process group, for programs such as Chromium that start their
// own children), never by name.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{}
	err  error // valid after done is closed
}

// startProcess starts path with args in its own process group, collecting
// its output, and registers a cleanup that stops it.
func startProcess(t testing.TB, path string, args ...string) *process {
	t.Helper()
	p := &process{name: path, out: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, lastLines(p.out.String(), 60))
		}
	})
	return p
}

// signal sends sig to the process itself.
func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits until the process exits or ctx is done.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%s still running: %w", p.name, ctx.Err())
	}
}

// stop ends the process: SIGTERM to it, then SIGKILL to its whole process
// group if it has not exited within a few seconds. Children left in the
// group after the leader exits are killed too.
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	// The group id is the leader's PID (Setpgid); this reaches the
	// children this process started and nothing else.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// holdUDPPort binds a free loopback UDP port and keeps it until release
// (also at cleanup), so that the test's own sockets, bound meanwhile, do
// not get it: the kernel may hand a port that was just freed to the next
// bind (TestInteropFFmpegSendsSRTP once connected its socket from the
// port it had picked for ffmpeg). Release it right before the peer binds.
func holdUDPPort(t testing.TB) (port int, release func()) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { c.Close() }) }
	t.Cleanup(release)
	return c.LocalAddr().(*net.UDPAddr).Port, release
}

// freePort returns a loopback port that was free a moment ago for network
// ("udp" or "tcp"). The small window before the peer binds it is accepted:
// the peers here take their ports on the command line.
func freePort(t testing.TB, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// udpBound reports whether some socket in this network namespace is bound
// to UDP port port, from /proc/net/udp (and udp6), so that a test can wait
// for a peer to be ready to receive instead of sleeping.
func udpBound(port int) bool {
	needle := fmt.Sprintf(":%04X ", port)
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 1 && strings.HasSuffix(fields[1]+" ", needle) {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}

// waitFor polls cond every 10 ms until it holds or ctx is done.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
