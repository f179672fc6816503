package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// NAT is a router's NAT behaviour.
type NAT string

// The NAT behaviours a router can have.
const (
	// Cone is a port-restricted cone NAT: one mapping per internal
	// address and port, inbound only from addresses the inside has sent to.
	Cone NAT = "cone"
	// Symmetric maps each destination to its own random port.
	Symmetric NAT = "symmetric"
)

// Addresses of the Lab's network.
const (
	PublicServerIP = "203.0.113.1" // coturn
	HostAIP        = "10.10.1.2"
	HostBIP        = "10.10.2.2"
	// HostInterface is the name of each host's only non-loopback interface.
	HostInterface = "eth0"
)

// Available reports why a Lab cannot run here, or nil if it can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("natlab: needs root (network namespaces and nftables)")
	}
	for _, tool := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("natlab: needs %s (iproute2, nftables, procps): %w", tool, err)
		}
	}
	return nil
}

// Options configure a Lab.
type Options struct {
	// A and B are the NAT behaviours of host A's and host B's routers.
	A, B NAT
	// Dir is a directory for the Lab's files (coturn's config and log).
	Dir string
}

// Lab is a running NAT network.
type Lab struct {
	// HostA and HostB are the namespaces of the two hosts.
	HostA, HostB string
	// Public is the namespace of the public network and coturn.
	Public string

	prefix string
	names  []string
	closed atomic.Bool
	mu     sync.Mutex
	procs  []*Process
}

var labSeq atomic.Uint32

// Start builds the namespaces, links and NAT rules. On error, whatever
// was built is removed.
func Start(ctx context.Context, opt Options) (l *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	for _, n := range []NAT{opt.A, opt.B} {
		if n != Cone && n != Symmetric {
			return nil, fmt.Errorf("natlab: unknown NAT %q", n)
		}
	}
	prefix := fmt.Sprintf("scnl%d-%d-", os.Getpid(), labSeq.Add(1))
	l = &Lab{prefix: prefix, Public: prefix + "pub", HostA: prefix + "ha", HostB: prefix + "hb"}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	ra, rb := prefix+"ra", prefix+"rb"
	for _, ns := range []string{l.Public, ra, rb, l.HostA, l.HostB} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		l.names = append(l.names, ns)
		if err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
	}
	pub := l.Public
	steps := [][]string{
		{"ip", "-n", pub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", pub, "addr", "add", PublicServerIP + "/24", "dev", "br0"},
		{"ip", "-n", pub, "addr", "add", "203.0.113.2/24", "dev", "br0"},
		{"ip", "-n", pub, "link", "set", "br0", "up"},
		{"ip", "-n", pub, "route", "add", "blackhole", "default"},
	}
	for _, r := range []struct {
		ns, host, wan, lanNet string
		nat                   NAT
		side                  string
	}{
		{ra, l.HostA, "203.0.113.10", "10.10.1", opt.A, "a"},
		{rb, l.HostB, "203.0.113.20", "10.10.2", opt.B, "b"},
	} {
		steps = append(steps,
			[]string{"ip", "-n", r.ns, "link", "add", "wan", "type", "veth", "peer", "name", "v" + r.side, "netns", pub},
			[]string{"ip", "-n", pub, "link", "set", "v" + r.side, "master", "br0"},
			[]string{"ip", "-n", pub, "link", "set", "v" + r.side, "up"},
			[]string{"ip", "-n", r.ns, "addr", "add", r.wan + "/24", "dev", "wan"},
			[]string{"ip", "-n", r.ns, "link", "set", "wan", "up"},
			[]string{"ip", "-n", r.ns, "link", "add", "lan", "type", "veth", "peer", "name", HostInterface, "netns", r.host},
			[]string{"ip", "-n", r.ns, "addr", "add", r.lanNet + ".1/24", "dev", "lan"},
			[]string{"ip", "-n", r.ns, "link", "set", "lan", "up"},
			[]string{"ip", "-n", r.host, "addr", "add", r.lanNet + ".2/24", "dev", HostInterface},
			[]string{"ip", "-n", r.host, "link", "set", HostInterface, "up"},
			[]string{"ip", "-n", r.host, "route", "add", "default", "via", r.lanNet + ".1"},
			[]string{"ip", "netns", "exec", r.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	for _, r := range []struct {
		ns  string
		nat NAT
	}{{ra, opt.A}, {rb, opt.B}} {
		if err := runInput(ctx, natRules(r.nat), "ip", "netns", "exec", r.ns, "nft", "-f", "-"); err != nil {
			return nil, err
		}
	}
	// veth links come up asynchronously.
	for _, w := range []struct{ ns, dev string }{
		{pub, "va"}, {pub, "vb"}, {ra, "wan"}, {rb, "wan"}, {ra, "lan"}, {rb, "lan"},
		{l.HostA, HostInterface}, {l.HostB, HostInterface},
	} {
		if err := waitUp(ctx, w.ns, w.dev); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// natRules returns the nftables ruleset of a router.
func natRules(n NAT) string {
	masq := "masquerade"
	if n == Symmetric {
		masq = "masquerade fully-random"
	}
	return `table ip natlab {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" ` + masq + `
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state new drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wan" ct state new drop
	}
}
`
}

func waitUp(ctx context.Context, ns, dev string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "link", "show", dev).Output()
		if err == nil && bytes.Contains(out, []byte("LOWER_UP")) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natlab: %s in %s did not come up: %w", dev, ns, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func run(ctx context.Context, name string, args ...string) error {
	return runInput(ctx, "", name, args...)
}

func runInput(ctx context.Context, input, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs name inside namespace ns. Start it
// with l.StartProcess so that Close stops it.
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Process is a process started by StartProcess.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// kill kills the process by its PID unless it has exited, and waits.
func (p *Process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// StartProcess starts cmd (ip netns exec execs the program itself, so the
// PID is the program's) and has Close kill it if it is still running.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("natlab: start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartProcess starts cmd and has Close kill it (by PID) if it is still
// running then.
func (l *Lab) StartProcess(cmd *exec.Cmd) (*Process, error) {
	p, err := StartProcess(cmd)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// Close kills the Lab's processes by PID, waits for them, and deletes its
// namespaces.
func (l *Lab) Close() error {
	if l.closed.Swap(true) {
		return fmt.Errorf("natlab: close: %w", net.ErrClosed)
	}
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	var errs []error
	for i := len(l.names) - 1; i >= 0; i-- {
		if err := run(context.Background(), "ip", "netns", "del", l.names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
