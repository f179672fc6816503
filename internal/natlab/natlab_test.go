package natlab

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestNATRules(t *testing.T) {
	if r := natRules(Cone); !strings.Contains(r, "masquerade\n") || strings.Contains(r, "fully-random") {
		t.Errorf("cone rules:\n%s", r)
	}
	if r := natRules(Symmetric); !strings.Contains(r, "masquerade fully-random") {
		t.Errorf("symmetric rules:\n%s", r)
	}
	for _, n := range []NAT{Cone, Symmetric} {
		if r := natRules(n); !strings.Contains(r, `iifname "wan" ct state new drop`) {
			t.Errorf("%s rules do not drop unsolicited inbound:\n%s", n, r)
		}
	}
}

// A Lab builds its namespaces and removes all of them on Close.
func TestNATLabCleanup(t *testing.T) {
	if err := Available(); err != nil {
		if os.Getenv("SECURECALL_INTEROP") == "1" {
			t.Fatal(err)
		}
		t.Skipf("skipped: %v", err)
	}
	l, err := Start(context.Background(), Options{A: Cone, B: Symmetric, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if !strings.Contains(string(out), l.HostA) || !strings.Contains(string(out), l.Public) {
		t.Errorf("namespaces missing:\n%s", out)
	}
	p, err := l.StartProcess(l.Command(context.Background(), l.HostA, "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	out, _ = exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), l.prefix) {
		t.Errorf("namespaces left behind:\n%s", out)
	}
	if err := l.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if _, err := Start(context.Background(), Options{A: "full-cone"}); err == nil {
		t.Error("unknown NAT accepted")
	}
}
