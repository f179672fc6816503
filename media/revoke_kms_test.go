package media_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// staticKeys is a KeySource holding what an attacker holds: copies of
// call key versions, and nothing that follows the KMS.
type staticKeys []media.CallKey

func (s staticKeys) Keys(context.Context, string) ([]media.CallKey, error) { return s, nil }

// capturer keeps what a memConn writes and drops it, so that the test
// decides where it goes.
type capturer struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (c *capturer) tap(p []byte) bool {
	c.mu.Lock()
	c.pkts = append(c.pkts, append([]byte(nil), p...))
	c.mu.Unlock()
	return false
}

func (c *capturer) take(t *testing.T) []byte {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pkts) == 0 {
		t.Fatal("nothing captured")
	}
	p := c.pkts[len(c.pkts)-1]
	c.pkts = nil
	return p
}

// readSSRC reads one RTP packet from s and returns its SSRC.
func readSSRC(t *testing.T, s *media.Session) uint32 {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, _, err := s.ReadRTP(make([]byte, 1500))
	if err != nil {
		t.Fatalf("ReadRTP: %v; stats %+v", err, s.Stats())
	}
	return h.SSRC
}

func writeRTP(t *testing.T, s *media.Session, ssrc uint32, seq uint16) {
	t.Helper()
	if err := s.WriteRTP(media.RTPHeader{SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc}, make([]byte, 160)); err != nil {
		t.Fatalf("WriteRTP: %v", err)
	}
}

// An operator marks the version a live call uses compromised (a leaked
// device backup, say). The call must leave it at once, without waiting
// for a peer to move on or for a rotation grace: the KMS makes a new
// version, both sessions send under it, and a packet an attacker forges
// with the compromised key is refused, not played out. The sessions keep
// replaced versions for an hour here, so that nothing but the revocation
// can take version 1 away.
func TestCompromisedVersionLeavesLiveCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := devkms.StartWith(ctx, t.TempDir(), devkms.Options{}, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	alice, err := env.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := env.Client("bob")
	if err != nil {
		t.Fatal(err)
	}
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	callID := uri[strings.LastIndexByte(uri, '/')+1:]
	config := func(src media.KeySource, local, remote string) media.Config {
		return media.Config{Keying: sdp.KeyingKMS, KeySource: src, KeyURI: uri, LocalID: local, RemoteID: remote, RotationGrace: time.Hour}
	}
	ca, cb := media.MemPair()
	sa, err := media.NewSession(ctx, ca, config(alice, "alice", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := media.NewSession(ctx, cb, config(bob, "bob", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()

	// The attacker holds version 1 as alice's device had it.
	leaked, err := alice.Fetch(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	cm, _ := media.MemPair()
	forged := &capturer{}
	cm.SetTap(forged.tap)
	mallory, err := media.NewSession(ctx, cm, config(staticKeys(leaked), "alice", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer mallory.Close()

	writeRTP(t, sa, 1, 1)
	if got := readSSRC(t, sb); got != 1 {
		t.Fatalf("bob read SSRC %d, want alice's 1", got)
	}
	// Before the revocation the leaked key works: the attack is real.
	writeRTP(t, mallory, 666, 1)
	cb.Inject(forged.take(t))
	if got := readSSRC(t, sb); got != 666 {
		t.Fatalf("bob read SSRC %d, want the forged 666 (the leaked key is still good)", got)
	}

	if err := env.Server.SetKeyState(ctx, callID, 1, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	for give := time.Now().Add(10 * time.Second); media.HasRecvKey(sb, 1) || media.HasRecvKey(sa, 1); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatalf("10 s after version 1 was compromised, alice still receives under it: %v, bob: %v",
				media.HasRecvKey(sa, 1), media.HasRecvKey(sb, 1))
		}
	}
	for _, s := range []*media.Session{sa, sb} {
		for give := time.Now().Add(10 * time.Second); s.Stats().SendKeyVersion == 1; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(give) {
				t.Fatal("10 s after version 1 was compromised, a session still sends under it")
			}
		}
	}
	writeRTP(t, mallory, 666, 2)
	cb.Inject(forged.take(t))
	writeRTP(t, sa, 1, 2)
	if got := readSSRC(t, sb); got != 1 {
		t.Fatalf("bob read SSRC %d after the revocation, want alice's 1: a packet under the compromised key was played out", got)
	}
	if st := sb.Stats(); st.UnknownMKIDrops != 1 {
		t.Fatalf("bob's stats %+v: want the forged packet counted as 1 unknown-MKI drop", st)
	}
	if v := sa.Stats().SendKeyVersion; v != 2 {
		t.Fatalf("alice sends under version %d, want 2, the one the KMS made when 1 was compromised", v)
	}
	// Installing the compromised version by hand is refused.
	var k1 media.CallKey
	for _, k := range leaked {
		if k.Version == 1 {
			k1 = k
		}
	}
	if err := sb.InstallKey(k1); !errors.Is(err, media.ErrKeyRevoked) {
		t.Fatalf("InstallKey of the compromised version: %v, want ErrKeyRevoked", err)
	}
}
