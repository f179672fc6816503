package ice_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/natlab"
	"github.com/securecall/securecall/sdp"
)

// requireInterop skips a test whose environment is missing, or fails it
// when SECURECALL_INTEROP=1 says the environment must be there.
func requireInterop(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("SECURECALL_INTEROP") == "1" {
		t.Fatalf("SECURECALL_INTEROP=1 but: %v", err)
	}
	t.Skipf("skipped: %v (install iproute2, nftables and coturn and run as root; SECURECALL_INTEROP=1 makes this a failure)", err)
}

// agentEnv names the environment of a NAT matrix agent process.
const agentEnv = "SECURECALL_NATLAB_AGENT"

// agentHello is what an agent tells the coordinator, and what the
// coordinator forwards to the other agent.
type agentHello struct {
	Ufrag, Pwd string
	Candidates []string
}

// agentResult is an agent's report.
type agentResult struct {
	Err        string
	NoPath     bool
	LocalType  string
	RemoteType string
	Relay      string
	ConnectMs  float64
}

// TestNATMatrix connects two agents through real Linux NAT for each pair
// of NAT behaviours, with STUN only and with TURN (coturn), and checks
// the outcome and the path type.
func TestNATMatrix(t *testing.T) {
	requireInterop(t, natlab.Available())
	requireInterop(t, natlab.CoturnAvailable())
	if testing.Short() {
		t.Skip("NAT matrix skipped with -short")
	}
	for _, turn := range []bool{false, true} {
		for _, na := range []natlab.NAT{natlab.Cone, natlab.Symmetric} {
			for _, nb := range []natlab.NAT{natlab.Cone, natlab.Symmetric} {
				servers := "stun"
				if turn {
					servers = "turn"
				}
				t.Run(fmt.Sprintf("%s-%s-%s", na, nb, servers), func(t *testing.T) {
					natCell(t, na, nb, turn)
				})
			}
		}
	}
}

func natCell(t *testing.T, na, nb natlab.NAT, turn bool) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lab, err := natlab.Start(ctx, natlab.Options{A: na, B: nb, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	coturn, err := lab.StartCoturn(ctx, dir, "lab", "labpass")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "signal.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	servers := fmt.Sprintf("stun:%s:3478", natlab.PublicServerIP)
	if turn {
		servers += fmt.Sprintf(",turn:%s:3478?transport=udp", natlab.PublicServerIP)
	}
	var procs []*natlab.Process
	for i, ns := range []string{lab.HostA, lab.HostB} {
		cmd := lab.Command(ctx, ns, os.Args[0])
		cmd.Env = append(os.Environ(), agentEnv+"=1",
			"NATLAB_SOCK="+sock, "NATLAB_SERVERS="+servers,
			fmt.Sprintf("NATLAB_CONTROLLING=%t", i == 0))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		p, err := lab.StartProcess(cmd)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent %d output:\n%s", i, out.String())
			}
		})
	}

	// Coordinate: take both hellos, forward each to the other, then take
	// both results and release the agents.
	conns := make([]net.Conn, 2)
	hellos := make([][]byte, 2)
	for i := range 2 {
		if d, ok := ctx.Deadline(); ok {
			ln.(*net.UnixListener).SetDeadline(d)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("agent did not connect: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		// The first line says which agent it is.
		var role struct{ Controlling bool }
		json.Unmarshal(line, &role)
		idx := i
		if role.Controlling {
			idx = 0
		} else {
			idx = 1
		}
		conns[idx] = c
		hellos[idx] = line
	}
	readers := []*bufio.Reader{bufio.NewReader(conns[0]), bufio.NewReader(conns[1])}
	for i := range 2 {
		if _, err := conns[i].Write(hellos[1-i]); err != nil {
			t.Fatal(err)
		}
	}
	var results [2]agentResult
	for i := range 2 {
		line, err := readers[i].ReadBytes('\n')
		if err != nil {
			t.Fatalf("agent %d result: %v", i, err)
		}
		if err := json.Unmarshal(line, &results[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		conns[i].Write([]byte("done\n"))
	}
	for i, p := range procs {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("agent %d did not exit", i)
		}
	}

	a, b := results[0], results[1]
	symmetric := na == natlab.Symmetric || nb == natlab.Symmetric
	t.Logf("%s/%s turn=%t: A %s->%s %.1f ms %s | B %s->%s %.1f ms %s",
		na, nb, turn, a.LocalType, a.RemoteType, a.ConnectMs, a.Err, b.LocalType, b.RemoteType, b.ConnectMs, b.Err)
	switch {
	case !symmetric:
		// Cone to cone: direct through the NAT mappings. pion names the
		// local end of a pair by its base (host) and learns the peer's
		// mapping as server-reflexive (signaled) or peer-reflexive (seen
		// in its checks); either way no relay.
		for i, r := range results {
			switch {
			case r.Err != "":
				t.Errorf("agent %d: %s", i, r.Err)
			case r.LocalType == "relay" || r.RemoteType == "relay" || r.Relay != "":
				t.Errorf("agent %d: path %s->%s via %q, want direct through the NATs", i, r.LocalType, r.RemoteType, r.Relay)
			case r.RemoteType != "srflx" && r.RemoteType != "prflx":
				t.Errorf("agent %d: remote end %s, want the peer's NAT mapping (srflx or prflx)", i, r.RemoteType)
			}
		}
	case turn:
		for i, r := range results {
			if r.Err != "" {
				t.Errorf("agent %d: %s", i, r.Err)
			}
		}
		for i, r := range results {
			if r.LocalType != "relay" && r.RemoteType != "relay" {
				t.Errorf("agent %d: path %s->%s, want relayed", i, r.LocalType, r.RemoteType)
			}
			if r.LocalType == "relay" && r.Relay == "" {
				t.Errorf("agent %d: relayed path without the relay's URL", i)
			}
		}
	default:
		// Without TURN a symmetric NAT leaves no path: both fail cleanly.
		for i, r := range results {
			if !r.NoPath {
				t.Errorf("agent %d: got %+v, want ErrNoPath", i, r)
			}
		}
	}
	if t.Failed() {
		t.Logf("coturn log:\n%s", coturn.Log())
	}
}

// agentT is what natMatrixAgent needs of a *testing.T.
type agentT interface {
	Fatal(args ...any)
	Logf(format string, args ...any)
}

// agentLog stands in for a *testing.T in the agent process, where the
// coordinator reads the output only when a cell fails.
type agentLog struct{}

func (agentLog) Fatal(args ...any) {
	fmt.Println(args...)
	os.Exit(1)
}

func (agentLog) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// natMatrixAgent is one side of a NAT matrix cell. TestNATMatrix starts
// this test binary inside a host namespace with agentEnv set, and TestMain
// then runs this instead of the tests.
func natMatrixAgent(t agentT) {
	controlling := os.Getenv("NATLAB_CONTROLLING") == "true"
	cfg := ice.Config{
		InterfaceFilter: func(name string) bool { return name == natlab.HostInterface },
		Networks:        []ice.Network{ice.UDP4},
		ConnectTimeout:  3 * time.Second,
	}
	for _, u := range strings.Split(os.Getenv("NATLAB_SERVERS"), ",") {
		s := ice.Server{URL: u}
		if strings.HasPrefix(u, "turn:") {
			s.Username, s.Credential = "lab", "labpass"
		}
		cfg.Servers = append(cfg.Servers, s)
	}
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cands []string
	if err := tr.Gather(ctx, func(c sdp.Candidate) { cands = append(cands, c.String()) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("local candidates: %v", cands)
	sig, err := net.Dial("unix", os.Getenv("NATLAB_SOCK"))
	if err != nil {
		t.Fatal(err)
	}
	defer sig.Close()
	creds := tr.LocalCredentials()
	hello, _ := json.Marshal(struct {
		Controlling bool
		agentHello
	}{controlling, agentHello{Ufrag: creds.Ufrag, Pwd: creds.Pwd, Candidates: cands}})
	if _, err := sig.Write(append(hello, '\n')); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(sig)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var peer agentHello
	if err := json.Unmarshal(line, &peer); err != nil {
		t.Fatal(err)
	}
	for _, s := range peer.Candidates {
		c, err := sdp.ParseCandidate(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.AddRemoteCandidate(c); err != nil {
			t.Logf("remote candidate %s: %v", s, err)
		}
	}
	var res agentResult
	start := time.Now()
	conn, err := tr.Connect(ctx, ice.Peer{Ufrag: peer.Ufrag, Pwd: peer.Pwd}, controlling)
	res.ConnectMs = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		res.Err = err.Error()
		res.NoPath = errors.Is(err, ice.ErrNoPath)
	} else {
		p := tr.Path()
		res.LocalType, res.RemoteType, res.Relay = string(p.Local.Type), string(p.Remote.Type), p.Relay
		if err := echo(conn, controlling); err != nil {
			res.Err = "path selected but no data: " + err.Error()
		}
	}
	out, _ := json.Marshal(res)
	if _, err := sig.Write(append(out, '\n')); err != nil {
		t.Fatal(err)
	}
	// Stay up until the coordinator has both results.
	sig.SetReadDeadline(time.Now().Add(20 * time.Second))
	rd.ReadBytes('\n')
}

// echo sends a packet and waits for the peer's, resending while waiting;
// then keeps answering for a moment so that the peer gets one too.
func echo(c net.Conn, controlling bool) error {
	me, want := "from-b", "from-a"
	if controlling {
		me, want = want, me
	}
	buf := make([]byte, 1500)
	got := false
	for i := 0; i < 60; i++ {
		c.Write([]byte(me))
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == want {
			got = true
		}
		if got && i >= 10 {
			return nil
		}
	}
	if !got {
		return errors.New("nothing received over the selected path")
	}
	return nil
}
