package pgstore_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/pgtest"
	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/kms/kmsserver/pgstore"
	"github.com/securecall/securecall/media"
)

// envReplica makes the test binary run one KMS replica (see runReplica)
// instead of the tests.
const envReplica = "SECURECALL_PGSTORE_REPLICA"

type replicaSpec struct {
	DSN, Dir, Addr, BaseURL string
}

// faultLimits lets one test device run 100 calls and their watches.
var faultLimits = kmsserver.Config{
	MaxCallsPerDevice: 1000, MaxWatchesPerDevice: 1000,
	RequestRate: 100_000, RequestBurst: 100_000, RotationsPerMinute: 100_000,
}

// runReplica serves one replica until its stdin closes or it is killed.
func runReplica() bool {
	raw := os.Getenv(envReplica)
	if raw == "" {
		return false
	}
	var spec replicaSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	store, err := pgstore.Open(ctx, spec.DSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	scfg := faultLimits
	scfg.BaseURL = spec.BaseURL
	env, err := devkms.StartWith(ctx, spec.Dir, devkms.Options{Addr: spec.Addr, Store: store, Server: scfg}, "alice", "bob")
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	fmt.Printf("URL %s\n", env.URL)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	<-ctx.Done()
	env.Close()
	store.Close()
	return true
}

// replicaProc is a replica in its own process.
type replicaProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
}

func startReplicaProc(t *testing.T, spec replicaSpec) *replicaProc {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envReplica+"="+string(raw))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &replicaProc{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { p.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "URL ") {
		t.Fatalf("replica did not start: %q %v", line, err)
	}
	p.url = strings.TrimSpace(strings.TrimPrefix(line, "URL "))
	go io.Copy(io.Discard, out)
	return p
}

// kill SIGKILLs the replica by its PID and reaps it.
func (p *replicaProc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// stop asks the replica to shut down and waits for it.
func (p *replicaProc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.stdin.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

type seen struct {
	key []byte
	at  time.Time
}

// Three replicas as processes on one database, 100 calls rotating every
// second: one replica is SIGKILLed mid-rotation, then PostgreSQL itself is
// restarted (fast shutdown). Every version any device was told about
// exists exactly once, the audit chain verifies, and every device keeps
// fetching and watching through the replicas left.
func TestInteropPostgresFaultReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: a 15 s fault test")
	}
	c := pgtest.Start(t)
	dsn := newDB(t, c)
	dir := t.TempDir()
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	base := "https://" + addrs[0]
	var procs []*replicaProc
	for _, a := range addrs {
		procs = append(procs, startReplicaProc(t, replicaSpec{DSN: dsn, Dir: dir, Addr: a, BaseURL: base}))
	}
	urls := []string{procs[0].url, procs[1].url, procs[2].url}
	client := func(identity string, first int) *kms.Client {
		ca, err := testpki.LoadOrCreateCA(dir, "securecall development CA")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := devkms.DeviceCertificate(ca, dir, identity)
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := os.ReadFile(filepath.Join(dir, devkms.KMSKeysFile))
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kms.ParseKMSKeys(jwks)
		if err != nil {
			t.Fatal(err)
		}
		cfg := kms.Config{URL: urls[first], Certificate: cert, RootCAs: ca.Pool(), KMSKeys: keys,
			Backoff: kms.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}}
		for i, u := range urls {
			if i != first {
				cfg.URLs = append(cfg.URLs, u)
			}
		}
		cl, err := kms.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		if err := cl.Register(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	alice, bob := client("alice", 0), client("bob", 1)
	ctx := ctxT(t)
	const calls = 100
	uris := make([]string, calls)
	for i := range uris {
		uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		uris[i] = uri
	}

	// bob watches every call (through replica 1 first); whatever he is
	// told is recorded, and a version told twice must be the same key.
	var mu sync.Mutex
	told := make([]map[uint32]seen, calls)
	var violations []string
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, uri := range uris {
		told[i] = map[uint32]seen{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			bob.Watch(wctx, uri, func(k media.CallKey) {
				mu.Lock()
				defer mu.Unlock()
				if old, ok := told[i][k.Version]; ok && !bytes.Equal(old.key, k.Key) {
					violations = append(violations, fmt.Sprintf("call %d version %d told with two different keys", i, k.Version))
				}
				told[i][k.Version] = seen{key: bytes.Clone(k.Key), at: time.Now()}
			})
		}()
	}
	stopWatch := func() { cancel(); wg.Wait() }
	defer stopWatch()

	time.Sleep(2500 * time.Millisecond)
	// Replica 1 (the one bob watches through) dies mid-rotation: with 100
	// calls a second it is always in one.
	procs[1].kill()
	killedAt := time.Now()
	time.Sleep(2500 * time.Millisecond)
	c.Restart(t)
	restartedAt := time.Now()
	time.Sleep(4 * time.Second)

	// Devices keep fetching through the replicas left (alice through
	// replica 0, failing over if need be).
	for i, uri := range uris {
		if _, err := alice.Fetch(ctx, uri); err != nil {
			t.Errorf("call %d: fetch after the faults: %v", i, err)
		}
	}
	stopWatch()
	for _, p := range procs {
		p.stop()
	}

	// Check the database with a fresh server: New authenticates every
	// record against the audit chain.
	kek, err := os.ReadFile(filepath.Join(dir, devkms.KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	kekb, err := hex.DecodeString(strings.TrimSpace(string(kek)))
	if err != nil {
		t.Fatal(err)
	}
	st := open(t, dsn)
	defer st.Close()
	srv, err := kmsserver.New(kmsserver.Config{Store: st, KEK: kekb, BaseURL: base})
	if err != nil {
		t.Fatalf("the store after the faults: %v", err)
	}
	defer srv.Close()
	var buf bytes.Buffer
	if err := srv.ExportAuditLog(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := kmsserver.VerifyAuditLog(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("audit chain after the faults: %v", err)
	}
	created := map[string]map[uint32]int{}
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e kmsserver.AuditEntry
		json.Unmarshal(line, &e)
		if (e.Action == "rotate" || e.Action == "create") && e.Outcome == "ok" {
			if created[e.Call] == nil {
				created[e.Call] = map[uint32]int{}
			}
			created[e.Call][e.Version]++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	total, afterKill, afterRestart := 0, 0, 0
	for i, uri := range uris {
		id := path.Base(uri)
		for v, n := range created[id] {
			if n != 1 {
				t.Errorf("call %d version %d created %d times", i, v, n)
			}
		}
		for v := uint32(1); v <= uint32(len(created[id])); v++ {
			if created[id][v] != 1 {
				t.Errorf("call %d: versions %v are not 1..%d", i, created[id], len(created[id]))
				break
			}
		}
		gotAfterRestart := false
		for v, s := range told[i] {
			total++
			if created[id][v] != 1 {
				t.Errorf("call %d: bob was told version %d, which the store does not hold once", i, v)
			}
			if s.at.After(killedAt) {
				afterKill++
			}
			if s.at.After(restartedAt) {
				afterRestart++
				gotAfterRestart = true
			}
		}
		if !gotAfterRestart {
			t.Errorf("call %d: bob's watch saw no version after PostgreSQL restarted (%d versions before)", i, len(told[i]))
		}
	}
	t.Logf("bob was told %d versions of %d calls: %d after the replica was killed, %d after PostgreSQL restarted", total, calls, afterKill, afterRestart)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	// The replica listens on it moments later; a clash fails loudly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
