package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The namespace of a browser test: one veth pair with both ends inside it,
// so that Chromium sees non-loopback interfaces to gather candidates on.
// The addresses are TEST-NET-2 and exist only inside the namespace.
const (
	netnsVethA = "scveth0"
	netnsVethB = "scveth1"
	netnsAddrA = "198.51.100.1"
	netnsAddrB = "198.51.100.2"
)

// envInNetns tells a re-executed test binary that it already runs inside
// the namespace its parent made, and which one.
const envInNetns = "SECURECALL_INTEROP_NETNS"

// netns is a network namespace that a test made and removes in cleanup.
type netns struct {
	name string
	ip   string // path of the ip program
}

// newNetns creates a namespace with lo up and the veth pair addressed and
// up, and waits until both links report carrier.
func newNetns(t testing.TB) *netns {
	t.Helper()
	needRoot(t)
	ns := &netns{name: fmt.Sprintf("scinterop%d", os.Getpid()), ip: needTool(t, "ip", "iproute2")}
	if err := ns.run("netns", "add", ns.name); err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.run("netns", "del", ns.name); err != nil {
			t.Errorf("remove network namespace %s: %v", ns.name, err)
		}
	})
	steps := [][]string{
		{"-n", ns.name, "link", "set", "lo", "up"},
		{"-n", ns.name, "link", "add", netnsVethA, "type", "veth", "peer", "name", netnsVethB},
		{"-n", ns.name, "addr", "add", netnsAddrA + "/24", "dev", netnsVethA},
		{"-n", ns.name, "addr", "add", netnsAddrB + "/24", "dev", netnsVethB},
		{"-n", ns.name, "link", "set", netnsVethA, "up"},
		{"-n", ns.name, "link", "set", netnsVethB, "up"},
	}
	for _, s := range steps {
		if err := ns.run(s...); err != nil {
			t.Fatalf("set up network namespace: %v", err)
		}
	}
	// veth links come up asynchronously.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, link := range []string{netnsVethA, netnsVethB} {
		up := func() bool {
			out, err := exec.Command(ns.ip, "-n", ns.name, "-o", "link", "show", link).Output()
			return err == nil && strings.Contains(string(out), "state UP")
		}
		if err := waitFor(ctx, link+" to come up", up); err != nil {
			t.Fatal(err)
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
// pattern selects, relays its output to t's log and fails t if the child
// failed, skipped or ran nothing.
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
