package pgstore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/internal/pgtest"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/internal/wire"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/kms/kmsserver/pgstore"
	"github.com/securecall/securecall/media"
)

// replicaSet is n KMS replicas (in-process, each with its own pgstore
// connection pool and listener) on one database, sharing one directory
// for the CA, certificates and KEK.
type replicaSet struct {
	t      *testing.T
	dir    string
	dsn    string
	envs   []*devkms.Env
	stores []*pgstore.Store
	// clock, if set, is the clients' Clock (the replicas' is in their
	// Config).
	clock func() time.Time
}

func startReplicas(t *testing.T, c *pgtest.Cluster, n int, scfg kmsserver.Config) *replicaSet {
	t.Helper()
	rs := &replicaSet{t: t, dir: t.TempDir(), dsn: newDB(t, c)}
	for i := range n {
		env := rs.add(scfg)
		if i == 0 {
			// Replicas of one KMS share its name: key URIs, and the
			// binding of every delivered key, use it whichever replica
			// answers.
			scfg.BaseURL = env.URL
		}
	}
	t.Cleanup(rs.close)
	return rs
}

func (rs *replicaSet) add(scfg kmsserver.Config) *devkms.Env {
	rs.t.Helper()
	st := open(rs.t, rs.dsn)
	env, err := devkms.StartWith(context.Background(), rs.dir, devkms.Options{Store: st, Server: scfg}, "alice", "bob", "carol")
	if err != nil {
		st.Close()
		rs.t.Fatal(err)
	}
	rs.envs = append(rs.envs, env)
	rs.stores = append(rs.stores, st)
	return env
}

// stop closes replica i (its server, then its store).
func (rs *replicaSet) stop(i int) {
	if rs.envs[i] == nil {
		return
	}
	rs.envs[i].Close()
	rs.stores[i].Close()
	rs.envs[i], rs.stores[i] = nil, nil
}

func (rs *replicaSet) close() {
	for i := range rs.envs {
		rs.stop(i)
	}
}

// client returns a registered client of identity talking to replica
// first, with the others as failover addresses.
func (rs *replicaSet) client(identity string, first int) *kms.Client {
	rs.t.Helper()
	env := rs.envs[first]
	cfg, err := env.ClientConfig(identity)
	if err != nil {
		rs.t.Fatal(err)
	}
	for i, e := range rs.envs {
		if i != first && e != nil {
			cfg.URLs = append(cfg.URLs, e.URL)
		}
	}
	cfg.Backoff = kms.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.Clock = rs.clock
	c, err := kms.NewClient(cfg)
	if err != nil {
		rs.t.Fatal(err)
	}
	rs.t.Cleanup(func() { c.Close() })
	if err := c.Register(ctxT(rs.t)); err != nil {
		rs.t.Fatal(err)
	}
	return c
}

// audit exports the shared audit log and verifies its chain.
func (rs *replicaSet) audit(srv *kmsserver.Server) []kmsserver.AuditEntry {
	rs.t.Helper()
	var buf bytes.Buffer
	if err := srv.ExportAuditLog(ctxT(rs.t), &buf); err != nil {
		rs.t.Fatal(err)
	}
	if _, err := kmsserver.VerifyAuditLog(bytes.NewReader(buf.Bytes())); err != nil {
		rs.t.Fatalf("audit chain of the replicas: %v", err)
	}
	var out []kmsserver.AuditEntry
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e kmsserver.AuditEntry
		if err := json.Unmarshal(line, &e); err != nil {
			rs.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// watchChanges runs c's WatchChanges of uri until the test ends and
// returns what it reports.
func watchChanges(t *testing.T, ctx context.Context, c *kms.Client, uri string) <-chan media.KeyChange {
	got := make(chan media.KeyChange, 16)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.WatchChanges(wctx, uri, func(c media.KeyChange) { got <- c })
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return got
}

// A watch on replica B wakes when replica A rotates (LISTEN/NOTIFY).
func TestInteropPostgresWatchAcrossReplicas(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{})
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	got := watchChanges(t, ctx, bob, uri)
	waitVersion := func(v uint32) time.Duration {
		start := time.Now()
		for {
			select {
			case c := <-got:
				if c.Key.Version == v {
					return time.Since(start)
				}
			case <-ctx.Done():
				t.Fatalf("bob's watch on replica B never saw version %d", v)
			}
		}
	}
	waitVersion(1)
	for v := uint32(2); v <= 4; v++ {
		time.Sleep(50 * time.Millisecond) // let the watch poll again
		if got, err := alice.Rotate(ctx, uri); err != nil || got != v {
			t.Fatalf("rotate on A: %d, %v; want %d", got, err, v)
		}
		d := waitVersion(v)
		t.Logf("version %d created on A reached the watch on B %v after the rotate returned (machine shared)", v, d)
	}
}

// A watch on replica B that tracks withdrawals wakes when an operator on
// replica A compromises the newest version: it reports the replacement
// made on A, then the withdrawal.
func TestInteropPostgresWithdrawalAcrossReplicas(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{})
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	got := watchChanges(t, ctx, bob, uri)
	next := func(what string) media.KeyChange {
		t.Helper()
		select {
		case c := <-got:
			return c
		case <-time.After(15 * time.Second):
			t.Fatalf("bob's watch on replica B reported no change within 15 s: want %s", what)
		}
		return media.KeyChange{}
	}
	if c := next("version 1"); c.Key.Version != 1 {
		t.Fatalf("change %+v, want version 1", c)
	}
	time.Sleep(50 * time.Millisecond) // let the watch poll again
	id := uri[len(rs.envs[0].URL+wire.PathCalls+"/"):]
	start := time.Now()
	if err := rs.envs[0].Server.SetKeyState(ctx, id, 1, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	if c := next("version 2"); c.Key.Version != 2 {
		t.Fatalf("change %+v, want version 2, made on A to replace version 1", c)
	}
	if c := next("version 1 revoked"); !slices.Equal(c.Revoked, []uint32{1}) {
		t.Fatalf("change %+v, want version 1 revoked", c)
	}
	t.Logf("the compromise on A reached the watch on B %v after it returned (machine shared)", time.Since(start))
}

// A proof used on one replica is refused on another.
func TestInteropPostgresReplayAcrossReplicas(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{})
	alice := rs.client("alice", 0)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	id := uri[len(rs.envs[0].URL+wire.PathCalls+"/"):]
	cfg, err := rs.envs[0].ClientConfig("alice")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: cfg.RootCAs, Certificates: []tls.Certificate{cfg.Certificate}, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	target := wire.PathCalls + "/" + id + "/rotate"
	proof, err := wire.SignProof(cfg.Certificate.PrivateKey.(*ecdsa.PrivateKey), rs.envs[0].URL, "POST", target, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	send := func(base string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+target, nil)
		req.Header.Set(wire.ProofHeader, proof)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e wire.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	if st, code := send(rs.envs[0].URL); st != 200 {
		t.Fatalf("first use on A: %d %s", st, code)
	}
	if st, code := send(rs.envs[1].URL); code != wire.CodeReplayed {
		t.Fatalf("the same proof on B: %d %q, want %q", st, code, wire.CodeReplayed)
	}
}

// Rotations of one call on two replicas at once: every version is given
// out once, and the audit log is one chain.
func TestInteropPostgresConcurrentWriters(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{RotationsPerMinute: 10_000, RequestRate: 10_000, RequestBurst: 10_000})
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	// bob's client must know the URI under A's address, which it has as
	// a failover address.
	var mu sync.Mutex
	var told []uint32
	var wg sync.WaitGroup
	for _, cl := range []*kms.Client{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 15 {
				v, err := cl.Rotate(ctx, uri)
				if err != nil {
					continue // a conflict is a 503: refused, not done
				}
				mu.Lock()
				told = append(told, v)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(told)
	if len(slices.Compact(slices.Clone(told))) != len(told) {
		t.Fatalf("a version was given out twice: %v", told)
	}
	if len(told) < 10 {
		t.Fatalf("only %d of 30 rotations succeeded", len(told))
	}
	entries := rs.audit(rs.envs[0].Server)
	var rotated []uint32
	for _, e := range entries {
		if e.Action == "rotate" && e.Outcome == "ok" {
			rotated = append(rotated, e.Version)
		}
	}
	slices.Sort(rotated)
	if !slices.Equal(rotated, told) {
		t.Fatalf("audited rotations %v, clients were told %v", rotated, told)
	}
	// Each replica serves the last version once it has followed the
	// other's commits (notification latency).
	for _, cl := range []*kms.Client{alice, bob} {
		if err := waitFetch(ctx, cl, uri, told[len(told)-1]); err != nil {
			t.Fatal(err)
		}
	}
}

// Scheduled rotations run once across replicas, and go on when a replica
// stops. The replicas share one fake clock, advanced a period at a time:
// each period rotates every call exactly once, whichever replicas are up.
func TestInteropPostgresScheduledOnce(t *testing.T) {
	const every, periods, stopAfter = time.Second, 5, 2
	c := pgtest.Start(t)
	clock := fakeclock.New(time.Now().Truncate(time.Millisecond))
	rs := startReplicas(t, c, 3, kmsserver.Config{Clock: clock.Now, WakeAt: clock.WakeAt})
	rs.clock = clock.Now
	alice := rs.client("alice", 0)
	ctx := ctxT(t)
	start := clock.Now()
	var uris []string
	for range 10 {
		uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}, RotateEvery: every})
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, uri)
	}
	up := 3
	for p := 1; p <= periods; p++ {
		if p == stopAfter+1 {
			rs.stop(0)
			up--
		}
		clock.Advance(every)
		// Every replica up has done what was due and parked again.
		if err := clock.WaitArmed(ctx, up); err != nil {
			t.Fatalf("period %d: the schedulers did not park: %v", p, err)
		}
	}
	entries := rs.audit(rs.envs[1].Server)
	perCall := map[string][]kmsserver.AuditEntry{}
	for _, e := range entries {
		if e.Action == "rotate" && e.Outcome == "ok" {
			perCall[e.Call] = append(perCall[e.Call], e)
		}
	}
	for _, uri := range uris {
		id := path.Base(uri)
		rot := perCall[id]
		// A double rotation would make more, a missed one (after
		// replica A stopped) fewer.
		if len(rot) != periods {
			t.Errorf("call %s: %d scheduled rotations in %d periods", id, len(rot), periods)
		}
		for i, r := range rot {
			if want := start.Add(time.Duration(i+1) * every); !r.Time.Equal(want) {
				t.Errorf("call %s: rotation to version %d at %v, want %v (rotated twice or late)", id, r.Version, r.Time.Sub(start), want.Sub(start))
			}
			if r.Version != uint32(i+2) {
				t.Errorf("call %s: rotation %d made version %d, want %d", id, i+1, r.Version, i+2)
			}
		}
	}
}

// waitFetch fetches uri until its newest version is want.
func waitFetch(ctx context.Context, cl *kms.Client, uri string, want uint32) error {
	var last []media.CallKey
	var err error
	for range 200 {
		last, err = cl.Fetch(ctx, uri)
		if err == nil && len(last) > 0 && last[len(last)-1].Version == want {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("fetch %s: %d keys, %v; want the newest to be version %d", uri, len(last), err, want)
}

// A compaction on one replica vouches for records the other replica
// wrote: a replica started afterwards accepts the store. The replicas'
// clock is fake, moved past the audit retention instead of sleeping.
func TestInteropPostgresCompactAcrossReplicas(t *testing.T) {
	c := pgtest.Start(t)
	clock := fakeclock.New(time.Now().Truncate(time.Millisecond))
	scfg := kmsserver.Config{AuditRetention: time.Millisecond, Clock: clock.Now, WakeAt: clock.WakeAt}
	rs := startReplicas(t, c, 2, scfg)
	rs.clock = clock.Now
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := bob.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := waitFetch(ctx, alice, uri, 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Millisecond) // everything so far is past the retention
	if err := rs.envs[0].Server.CompactAudit(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rs.audit(rs.envs[0].Server), func(e kmsserver.AuditEntry) bool { return e.Action == "compact" }) {
		t.Fatal("the compaction removed nothing")
	}
	if _, err := bob.Rotate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	scfg.BaseURL = rs.envs[0].URL
	rs.add(scfg) // New checks every record against the compacted log
	carol := rs.client("alice", 2)
	if err := waitFetch(ctx, carol, uri, 3); err != nil {
		t.Fatal(err)
	}
	rs.audit(rs.envs[2].Server)
}

// A revocation on one replica holds on every replica: a state change the
// device asks of another replica right after RevokeDevice returned is
// refused in its commit, its fetches there are refused as soon as that
// replica has followed the revocation (before the new versions the
// revocation's rotation made), a replica started afterwards loads it,
// and a restoration on any replica lifts it everywhere.
func TestInteropPostgresRevokeAcrossReplicas(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{})
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFetch(ctx, bob, uri, 1); err != nil {
		t.Fatal(err)
	}
	if err := rs.envs[0].Server.RevokeDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Rotate(ctx, uri); !errors.Is(err, kms.ErrDeviceRevoked) {
		t.Fatalf("rotate on replica B right after the revocation on A: %v, want ErrDeviceRevoked", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, err := bob.Fetch(ctx, uri)
		if errors.Is(err, kms.ErrDeviceRevoked) {
			break
		}
		for _, k := range keys {
			if k.Version > 1 {
				t.Fatalf("replica B delivered version %d, made by the revocation's rotation, to the revoked device", k.Version)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica B still serves the revoked device: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := waitFetch(ctx, alice, uri, 2); err != nil {
		t.Fatalf("the revocation did not rotate the call: %v", err)
	}
	rs.add(kmsserver.Config{BaseURL: rs.envs[0].URL}) // loads the revocation
	late := rs.envs[2]
	cfg, err := late.ClientConfig("bob")
	if err != nil {
		t.Fatal(err)
	}
	cfg.URLs = []string{rs.envs[0].URL} // the key URI's base; requests go to C first
	bobC, err := kms.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bobC.Close()
	if _, err := bobC.Fetch(ctx, uri); !errors.Is(err, kms.ErrDeviceRevoked) {
		t.Fatalf("a replica started after the revocation: %v, want ErrDeviceRevoked", err)
	}
	if err := rs.envs[1].Server.RestoreDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := waitFetch(ctx, bobC, uri, 2); err != nil {
		t.Fatalf("after restoring on B, replica C: %v", err)
	}
	entries := rs.audit(rs.envs[2].Server)
	var got []string
	for _, e := range entries {
		if (e.Action == "revoke" || e.Action == "restore") && e.Detail == "bob" {
			got = append(got, e.Action)
		}
	}
	if !slices.Equal(got, []string{"revoke", "restore"}) {
		t.Fatalf("audited %v, want [revoke restore]", got)
	}
}

// A state change of a device revoked on replica A (here a new call) is
// refused by replica B in its commit even before B has followed the revocation: B's
// listening connection is cut first, so that B hears of nothing until it
// has reconnected and read everything again.
func TestInteropPostgresRevokeRefusedInCommit(t *testing.T) {
	c := pgtest.Start(t)
	rs := startReplicas(t, c, 2, kmsserver.Config{})
	alice, bob := rs.client("alice", 0), rs.client("bob", 1)
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFetch(ctx, bob, uri, 1); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, rs.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var cut int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN securecall_kms'`).Scan(&cut)
	if err != nil || cut == 0 {
		t.Fatalf("cutting the listening connections: %d, %v", cut, err)
	}
	if err := rs.envs[0].Server.RevokeDevice(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	// A new call conflicts with no record A changed (a rotation would,
	// and fail over to A, which refuses it there).
	if _, err := bob.CreateCall(ctx, kms.CallOptions{Participants: []string{"bob"}}); !errors.Is(err, kms.ErrDeviceRevoked) {
		t.Fatalf("create on B, which has not followed the revocation on A: %v, want ErrDeviceRevoked", err)
	}
}
