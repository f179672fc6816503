package securecall_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/fakeclock"
	"github.com/securecall/securecall/internal/pgtest"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/kms/kmsserver/pgstore"
	"github.com/securecall/securecall/media"
)

// A call whose key rotates every second on two KMS replicas keeps every
// packet while the replica both devices use goes away and PostgreSQL
// restarts: the devices' watches fail over and the new versions arrive
// before they activate. The replicas, the clients and the calls share one
// fake clock, moved a second (one rotation period, and the activation
// delay) per 50 packets; before each move the test checks that both
// devices' watches delivered the newest version, so every version arrives
// before it activates. Media and the failover run on real time.
func TestInteropPostgresCallSurvivesReplicaLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: a 10 s media test")
	}
	cluster := pgtest.Start(t)
	dsn := cluster.CreateDatabase(t, "callkms")
	dir := t.TempDir()
	var envs []*devkms.Env
	var stores []*pgstore.Store
	clk := fakeclock.New(time.Now())
	scfg := kmsserver.Config{Clock: clk.Now, WakeAt: clk.WakeAt}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := pgstore.Open(ctx, dsn)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		env, err := devkms.StartWith(context.Background(), dir, devkms.Options{Store: st, Server: scfg}, "alice", "bob")
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		if i == 0 {
			scfg.BaseURL = env.URL
		}
		envs, stores = append(envs, env), append(stores, st)
	}
	closed := make([]bool, 2)
	stop := func(i int) {
		if !closed[i] {
			closed[i] = true
			envs[i].Close()
			stores[i].Close()
		}
	}
	client := func(id string) *watchedSource {
		cfg, err := envs[0].ClientConfig(id)
		if err != nil {
			t.Fatal(err)
		}
		cfg.URLs = []string{envs[1].URL}
		cfg.Backoff = kms.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
		cfg.Clock = clk.Now
		c, err := kms.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Register(context.Background()); err != nil {
			t.Fatal(err)
		}
		return watched(c)
	}
	alice, bob := client("alice"), client("bob")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, b := connectPair(t,
		securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri, Media: securecall.MediaConfig{Clock: clk.Now}},
		securecall.Config{ICE: loopbackICE(), KeySource: bob, Media: securecall.MediaConfig{Clock: clk.Now}})
	// Calls first, then the clients, then the replicas.
	defer func() {
		a.Close()
		b.Close()
		alice.Close()
		bob.Close()
		stop(0)
		stop(1)
	}()

	const n = 450 // 9 s at 50 packets/s
	var mu sync.Mutex
	got := map[uint16]bool{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 1500)
		for {
			_, m, err := b.ReadRTP(buf)
			if err != nil {
				return
			}
			if m >= 2 {
				mu.Lock()
				got[binary.BigEndian.Uint16(buf)] = true
				full := len(got) == n
				mu.Unlock()
				if full {
					return
				}
			}
		}
	}()
	pt := a.Codec().PayloadType
	payload := make([]byte, 160)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var events []string
	for i := range n {
		<-tick.C
		switch i {
		case 100: // 2 s in: the replica both devices talk to goes away
			stop(0)
			events = append(events, fmt.Sprintf("replica A stopped at packet %d", i))
		case 200: // 4 s in: PostgreSQL restarts (fast shutdown)
			cluster.Restart(t)
			events = append(events, fmt.Sprintf("PostgreSQL restarted by packet %d", i))
		}
		if i%50 == 25 { // a second of media: the next rotation period
			up := 2
			if closed[0] {
				up = 1
			}
			newest := advanceAndDeliver(t, clk, up, alice, bob, uri)
			events = append(events, fmt.Sprintf("v%d delivered by packet %d", newest, i))
		}
		binary.BigEndian.PutUint16(payload, uint16(i))
		h := media.RTPHeader{PayloadType: pt, SequenceNumber: uint16(1000 + i), Timestamp: uint32(160 * i), SSRC: a.SSRC()}
		if err := a.WriteRTP(h, payload); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	select {
	case <-recvDone:
	case <-time.After(3 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	var missing []int
	for i := range n {
		if !got[uint16(i)] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d packets lost (%v): first missing %v", len(missing), n, events, missing[:min(len(missing), 20)])
	}
	keys, err := bob.Fetch(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packets, none lost; %v; the call's newest version is %d", n, events, keys[len(keys)-1].Version)
	if keys[len(keys)-1].Version < 6 {
		t.Fatalf("only %d versions in 9 s of a 1 s schedule: rotation stopped with the replica", keys[len(keys)-1].Version)
	}
}

// advanceAndDeliver moves the replicas' clock by one second, waits until
// the up replicas' schedulers have done what was due, and then until both
// devices' watches have delivered the call's newest version (at most 15 s
// of real time, for a failover); it returns that version.
func advanceAndDeliver(t *testing.T, clk *fakeclock.Clock, up int, alice, bob *watchedSource, uri string) uint32 {
	t.Helper()
	clk.Advance(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := clk.WaitArmed(ctx, up); err != nil {
		t.Fatalf("the replicas' schedulers did not park again: %v", err)
	}
	var keys []media.CallKey
	var err error
	for {
		if keys, err = alice.Fetch(ctx, uri); err == nil && len(keys) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("fetch the call's keys: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	newest := keys[len(keys)-1].Version
	alice.waitSeen(t, newest, 15*time.Second)
	bob.waitSeen(t, newest, 15*time.Second)
	return newest
}
