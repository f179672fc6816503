package main

// The helpers of the Chromium test, after internal/interop's (a nested
// module, whose test helpers this module cannot import): a skip that
// SECURECALL_INTEROP=1 turns into a failure, a network namespace with a
// veth pair that the test re-executes itself in, and a process stopped by
// its PID and process group.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envRequired names the variable that turns a missing tool, root or
// namespace into a failure instead of a skip. CI sets it.
const envRequired = "SECURECALL_INTEROP"

// unavailable skips t because something it needs is missing, or fails it
// when SECURECALL_INTEROP=1 says that everything must be there.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(envRequired) == "1" {
		t.Fatalf("%s, and %s=1 requires it", msg, envRequired)
	}
	t.Skipf("skipped: %s (set %s=1 to make this a failure)", msg, envRequired)
}

// needTool returns the path of the program name, from the Debian package
// pkg, or skips (or fails) t without it.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, "%s not found: install the Debian package %s", name, pkg)
	}
	return path
}

// The namespace of the browser test: one veth pair with both ends inside
// it, as Chromium gathers no candidate on loopback alone. TEST-NET-2
// addresses that exist only inside the namespace.
const (
	netnsVethA = "scbveth0"
	netnsVethB = "scbveth1"
	netnsAddrA = "198.51.100.1"
	netnsAddrB = "198.51.100.2"
)

// envInNetns tells a re-executed test binary that it runs inside the
// namespace its parent made.
const envInNetns = "SECURECALL_BROWSER_NETNS"

type netns struct {
	name string
	ip   string
}

// newNetns creates a namespace named after this process with lo up and
// the veth pair addressed and up; its cleanup removes it.
func newNetns(t testing.TB) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root to create a network namespace")
	}
	ns := &netns{name: fmt.Sprintf("scbrowser%d", os.Getpid()), ip: needTool(t, "ip", "iproute2")}
	if err := ns.run("netns", "add", ns.name); err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.run("netns", "del", ns.name); err != nil {
			t.Errorf("remove network namespace %s: %v", ns.name, err)
		}
	})
	for _, s := range [][]string{
		{"-n", ns.name, "link", "set", "lo", "up"},
		{"-n", ns.name, "link", "add", netnsVethA, "type", "veth", "peer", "name", netnsVethB},
		{"-n", ns.name, "addr", "add", netnsAddrA + "/24", "dev", netnsVethA},
		{"-n", ns.name, "addr", "add", netnsAddrB + "/24", "dev", netnsVethB},
		{"-n", ns.name, "link", "set", netnsVethA, "up"},
		{"-n", ns.name, "link", "set", netnsVethB, "up"},
	} {
		if err := ns.run(s...); err != nil {
			t.Fatalf("set up network namespace: %v", err)
		}
	}
	// veth links come up asynchronously: at most 10 s, every 10 ms.
	for _, link := range []string{netnsVethA, netnsVethB} {
		for i := 0; ; i++ {
			out, err := exec.Command(ns.ip, "-n", ns.name, "-o", "link", "show", link).Output()
			if err == nil && strings.Contains(string(out), "state UP") {
				break
			}
			if i == 1000 {
				t.Fatalf("%s did not come up", link)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return ns
}

func (ns *netns) run(args ...string) error {
	out, err := exec.Command(ns.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runTestInNetns re-executes this test binary inside ns for the tests that
// pattern selects, relays its output and fails t if the child failed,
// skipped or ran nothing.
func (ns *netns) runTestInNetns(t *testing.T, pattern string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, ns.ip, "netns", "exec", ns.name, self,
		"-test.run", pattern, "-test.v", "-test.count=1", "-test.timeout", timeout.String())
	cmd.Env = append(os.Environ(), envInNetns+"="+ns.name)
	out, err := cmd.CombinedOutput()
	t.Logf("inside network namespace %s:\n%s", ns.name, strings.TrimRight(string(out), "\n"))
	switch {
	case err != nil:
		t.Fatalf("test inside the namespace failed: %v", err)
	case strings.Contains(string(out), "--- SKIP"):
		t.Fatal("test inside the namespace skipped")
	case !strings.Contains(string(out), "--- PASS"):
		t.Fatal("test inside the namespace ran nothing")
	}
}

// logBuffer collects a process's output for a failure message.
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

// process is a program the test started in its own process group. It is
// stopped by its PID and group, never by name.
type process struct {
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// startProcess starts cmd in its own process group, collecting its
// output; the cleanup stops it and, on failure, logs the output's end.
func startProcess(t testing.TB, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, out: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			lines := strings.Split(strings.TrimRight(p.out.String(), "\n"), "\n")
			t.Logf("output of %s (last lines):\n%s", cmd.Path, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

// stop sends SIGTERM, waits up to 5 s, then kills the process group (the
// group id is the leader's PID: this reaches its children and nothing
// else).
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
}
