package ice

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
)

// Each documented default is what withDefaults applies.
func TestConfigDefaults(t *testing.T) {
	var in Config
	c := in.withDefaults()
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"RelayWait", c.RelayWait, DefaultRelayWait},
		{"PeerReflexiveWait", c.PeerReflexiveWait, DefaultPeerReflexiveWait},
		{"ConnectTimeout", c.ConnectTimeout, DefaultConnectTimeout},
		{"DisconnectedTimeout", c.DisconnectedTimeout, DefaultDisconnectedTimeout},
		{"FailedTimeout", c.FailedTimeout, DefaultFailedTimeout},
		{"KeepaliveInterval", c.KeepaliveInterval, DefaultKeepaliveInterval},
	} {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.name, d.got, d.want)
		}
	}
	if c.MaxRemoteCandidates != DefaultMaxRemoteCandidates || DefaultMaxRemoteCandidates != 50 {
		t.Errorf("MaxRemoteCandidates = %d, want DefaultMaxRemoteCandidates (50, as documented)", c.MaxRemoteCandidates)
	}
	if c.MaxCandidatePairs != DefaultMaxCandidatePairs || DefaultMaxCandidatePairs != 100 {
		t.Errorf("MaxCandidatePairs = %d, want DefaultMaxCandidatePairs (100, as RFC 8445 suggests)", c.MaxCandidatePairs)
	}
	if c.Policy != PreferDirect {
		t.Errorf("Policy = %v, want PreferDirect", c.Policy)
	}
	if len(c.Networks) != 2 || c.Networks[0] != UDP4 || c.Networks[1] != UDP6 {
		t.Errorf("Networks = %v, want [udp4 udp6]", c.Networks)
	}
	if c.Logger == nil {
		t.Error("Logger is nil")
	}
	// The caller's Config is untouched.
	if in.RelayWait != 0 || in.Networks != nil || in.Logger != nil {
		t.Errorf("withDefaults changed its receiver: %+v", in)
	}
	// Explicit values are kept.
	c = Config{RelayWait: time.Second, Networks: []Network{TCP4}}.withDefaults()
	if c.RelayWait != time.Second || len(c.Networks) != 1 || c.Networks[0] != TCP4 {
		t.Errorf("explicit values replaced: %+v", c)
	}
}

// The Transport passes pion's tuning as documented in doc.go.
func TestTuningMatchesDoc(t *testing.T) {
	if checkInterval != 50*time.Millisecond || srflxWait != 20*time.Millisecond ||
		maxBindingRequests != 15 || stunGatherTimeout != 2*time.Second {
		t.Error("internal tuning differs from what doc.go documents; update both")
	}
}

// stunWithAttr builds a STUN message with one attribute of the given type
// and raw value.
func stunWithAttr(typ uint16, cls stun.MessageClass, value []byte) []byte {
	m := stun.New()
	m.Type = stun.NewType(stun.MethodBinding, cls)
	m.TransactionID = stun.NewTransactionID()
	m.WriteHeader()
	m.Add(stun.AttrType(typ), value)
	return append([]byte(nil), m.Raw...)
}

func TestSafeDatagram(t *testing.T) {
	good := stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: []byte{10, 0, 0, 1}, Port: 9})
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("a:b"),
		pice.PriorityAttr(1), pice.AttrControlling(2), pice.UseCandidate(), stun.NewShortTermIntegrity("pwd"), stun.Fingerprint)
	topBits := stunWithAttr(attrXORMappedAddress, stun.ClassSuccessResponse, nil)
	topBits[0] |= 0x40
	for _, c := range []struct {
		name string
		b    []byte
		turn bool
		safe bool
	}{
		{"valid xor-mapped", good.Raw, false, true},
		{"valid binding request", req.Raw, false, true},
		{"empty xor-mapped", stunWithAttr(attrXORMappedAddress, stun.ClassSuccessResponse, nil), false, false},
		{"empty legacy xor-mapped", stunWithAttr(0x8020, stun.ClassSuccessResponse, nil), false, false},
		{"1-byte xor-peer", stunWithAttr(0x0012, stun.ClassIndication, []byte{1}), false, false},
		{"4-byte xor-relayed", stunWithAttr(0x0016, stun.ClassSuccessResponse, []byte{0, 1, 2, 3}), false, false},
		{"STUN to pion despite its leading bits", topBits, false, false},
		{"short attribute pion never reads", stunWithAttr(0x8050, stun.ClassSuccessResponse, []byte{1}), false, true},
		{"not stun", []byte("hello, this is not a stun message"), false, true},
		{"rtp", append([]byte{0x80, 0x00}, make([]byte, 30)...), false, true},
		{"ChannelData with bad STUN, TURN socket", append([]byte{0x40, 0, 0, 24}, stunWithAttr(attrXORMappedAddress, stun.ClassSuccessResponse, nil)...), true, false},
		{"ChannelData bytes on a host socket", append([]byte{0x40, 0, 0, 24}, stunWithAttr(attrXORMappedAddress, stun.ClassSuccessResponse, nil)...), false, true},
	} {
		if got := safeDatagram(c.b, c.turn); got != c.safe {
			t.Errorf("%s: safeDatagram = %v, want %v", c.name, got, c.safe)
		}
	}
	// The unguarded parser does panic on what the guard drops when the
	// attribute ends the buffer (pion's TURN client copies each message to
	// a buffer of its exact size), so the guard is needed with this stun
	// version.
	raw := stunWithAttr(0x8020, stun.ClassSuccessResponse, nil)
	m := &stun.Message{Raw: raw[:len(raw):len(raw)]}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		var a stun.XORMappedAddress
		_ = a.GetFrom(m)
		return false
	}()
	if !panicked {
		t.Log("stun's XORMappedAddress.GetFromAs no longer panics on an empty value; the guard is now defence in depth")
	}
}

// pionDecodes runs, on a message that the guard passed, everything pion's
// agent and TURN client do with it, on a buffer of its exact size.
func pionDecodes(t *testing.T, b []byte, turn bool) {
	if !stun.IsMessage(b) {
		if turn && len(b) >= 4 && b[0]&0xc0 == 0x40 {
			n := int(binary.BigEndian.Uint16(b[2:4]))
			if n <= len(b)-4 {
				pionDecodes(t, b[4:4+n], false)
			}
		}
		return
	}
	raw := append([]byte(nil), b...)
	p := &guardProbe{m: stun.Message{Raw: raw[:len(raw):len(raw)]}}
	m := &p.m
	if m.Decode() != nil {
		return
	}
	for _, pa := range pionAttributes {
		_ = pa.decode(p)
	}
	var a stun.XORMappedAddress
	_ = a.GetFromAs(m, 0x8020)
	_ = stun.MessageIntegrity("pwd").Check(m)
	_ = stun.Fingerprint.Check(m)
	if turn {
		if data, err := m.Get(stun.AttrData); err == nil {
			pionDecodes(t, data, false)
		}
	}
}

// Whatever passes the guard, pion's decoders do not panic on.
func FuzzSafeDatagram(f *testing.F) {
	f.Add(stunWithAttr(attrXORMappedAddress, stun.ClassSuccessResponse, []byte{1}), false)
	f.Add(stunWithAttr(0x8020, stun.ClassSuccessResponse, nil), false)
	f.Add(stunWithAttr(0x0012, stun.ClassIndication, []byte{0, 1, 0, 2, 1, 2, 3, 4}), true)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: make([]byte, 16), Port: 1}).Raw, false)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("a:b"), pice.PriorityAttr(1),
		stun.NewShortTermIntegrity("pwd"), stun.Fingerprint).Raw, false)
	f.Fuzz(func(t *testing.T, b []byte, turn bool) {
		unwrapTURN(b)
		stunBinding(b)
		if safeDatagram(b, turn) {
			pionDecodes(t, b, turn)
		}
	})
}

// Every attribute that pion/stun, pion/ice and pion/turn decode in the
// pinned versions is in the guard's table: the test reads their sources
// from the module cache and finds each attribute they read with Get or
// GetFromAs.
func TestGuardKnowsEveryDecodedAttribute(t *testing.T) {
	known := make(map[string]bool)
	for _, pa := range pionAttributes {
		known[pa.name] = true
	}
	// Read by pion only to tell messages apart, never decoded.
	known["AttrUseCandidate"] = true
	read := regexp.MustCompile(`(?:\.Get\(|GetFromAs\(m, |CheckSize\()(?:stun\.)?(Attr[A-Za-z]+)`)
	var seen int
	for _, mod := range []string{"github.com/pion/stun/v2", "github.com/pion/ice/v3", "github.com/pion/turn/v3"} {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", mod, err)
		}
		dir := strings.TrimSpace(string(out))
		err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "examples" || d.Name() == "cmd" || d.Name() == "e2e" || d.Name() == "server" && strings.Contains(path, "internal")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
				strings.HasSuffix(path, "server.go") || strings.Contains(path, "stuntest") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range read.FindAllStringSubmatch(string(src), -1) {
				seen++
				if !known[m[1]] {
					t.Errorf("%s reads %s, which the guard does not check", path, m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if seen < 20 {
		t.Errorf("found only %d attribute reads in pion's sources; the pattern no longer matches them", seen)
	}
}

func TestUnwrapTURN(t *testing.T) {
	inner := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	cd := make([]byte, 4+len(inner))
	binary.BigEndian.PutUint16(cd[0:2], 0x4001)
	binary.BigEndian.PutUint16(cd[2:4], uint16(len(inner)))
	copy(cd[4:], inner)
	if !bytes.Equal(unwrapTURN(cd), inner) {
		t.Error("ChannelData payload not found")
	}
	ind := stun.New()
	ind.Type = stun.NewType(stun.MethodData, stun.ClassIndication)
	ind.WriteHeader()
	ind.Add(stun.AttrData, inner)
	if !bytes.Equal(unwrapTURN(ind.Raw), inner) {
		t.Error("Data indication payload not found")
	}
	if !bytes.Equal(unwrapTURN(inner), inner) {
		t.Error("plain STUN changed")
	}
}

// Secrets never print, whichever verb is used.
func TestRedaction(t *testing.T) {
	const secret = "s3cr3t-pa55w0rd-value"
	values := []any{
		Credentials{Ufrag: "u", Pwd: secret},
		Peer{Ufrag: "u", Pwd: secret},
		Server{URL: "turn:example.test", Username: "alice", Credential: secret},
	}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := fmt.Sprintf(verb, v); strings.Contains(s, secret) {
				t.Errorf("%T printed with %s reveals the secret: %s", v, verb, s)
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "v", v)
		if strings.Contains(buf.String(), secret) {
			t.Errorf("%T logged reveals the secret: %s", v, buf.String())
		}
	}
	r := &redactor{}
	r.add(secret)
	if got := r.redact("pwd " + secret + " end"); strings.Contains(got, secret) {
		t.Errorf("redact = %q", got)
	}
}

// readerConn is a net.Conn whose reads come from a byte slice, in chunks
// of a given size, to exercise reframing.
type readerConn struct {
	net.Conn
	b     []byte
	chunk int
}

func (r *readerConn) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.chunk, len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func readAllStream(s *guardStream) []byte {
	var out []byte
	buf := make([]byte, 7)
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out
		}
	}
}

func (r *readerConn) Write(p []byte) (int, error) { return len(p), nil }

func (r *readerConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
}

func TestGuardStream(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	good := stun.MustBuild(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: []byte{10, 0, 0, 1}, Port: 9}).Raw
	unsolicited := stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: []byte{10, 0, 0, 2}, Port: 9}).Raw
	bad := stunWithAttr(0x0012, stun.ClassIndication, nil)
	cd := []byte{0x40, 0x01, 0x00, 0x03, 'a', 'b', 'c', 0} // ChannelData, padded
	var in, want []byte
	for _, f := range [][]byte{good, bad, cd, unsolicited, good} {
		in = append(in, f...)
	}
	for _, f := range [][]byte{good, cd, good} {
		want = append(want, f...)
	}
	for _, chunk := range []int{1, 3, 20, 4096} {
		var drops int
		g := &guardNet{rtt: &rttMeter{}, relays: &relayIndex{}, dropped: func() { drops++ }}
		s := newGuardStream(&readerConn{b: append([]byte(nil), in...), chunk: chunk}, g)
		if _, err := s.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		if got := readAllStream(s); !bytes.Equal(got, want) || drops != 2 {
			t.Errorf("chunk %d: got %d bytes and %d drops, want %d bytes and 2 drops", chunk, len(got), drops, len(want))
		}
	}
}

// Responses are matched to the requests a socket sent; requests and
// indications from peers pass.
func TestTxidSet(t *testing.T) {
	var s txidSet
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	resp := stun.MustBuild(req, stun.BindingSuccess)
	errResp := stun.MustBuild(req, stun.NewType(stun.MethodBinding, stun.ClassErrorResponse))
	other := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	peerReq := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if !s.unsolicited(resp.Raw) {
		t.Error("response before its request passed")
	}
	s.sent(req.Raw)
	if s.unsolicited(resp.Raw) || s.unsolicited(errResp.Raw) {
		t.Error("response to a sent request dropped")
	}
	if !s.unsolicited(other.Raw) {
		t.Error("unsolicited response passed")
	}
	if s.unsolicited(peerReq.Raw) || s.unsolicited([]byte("rtp or other data, not stun")) {
		t.Error("a request or non-STUN packet was taken for a response")
	}
	for range maxPendingChecks {
		s.sent(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	}
	if !s.unsolicited(resp.Raw) {
		t.Error("a request older than the window still matched")
	}
}

func FuzzGuardStream(f *testing.F) {
	f.Add(stunWithAttr(0x0012, stun.ClassIndication, nil), 5)
	f.Add([]byte{0x40, 0x01, 0x00, 0x03, 'a', 'b', 'c', 0}, 1)
	f.Fuzz(func(t *testing.T, b []byte, chunk int) {
		if chunk < 1 || chunk > 5000 {
			chunk = 1
		}
		g := &guardNet{rtt: &rttMeter{}, relays: &relayIndex{}, dropped: func() {}}
		got := readAllStream(newGuardStream(&readerConn{b: append([]byte(nil), b...), chunk: chunk}, g))
		if len(got) > len(b) {
			t.Fatalf("stream grew from %d to %d bytes", len(b), len(got))
		}
	})
}

// The guard's cost per datagram: a connectivity check (the common STUN
// message), and media, which is not STUN.
func BenchmarkSafeDatagram(b *testing.B) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("abcdefgh:ijklmnop"),
		pice.PriorityAttr(1), pice.AttrControlling(2), pice.UseCandidate(), stun.NewShortTermIntegrity("pwd"), stun.Fingerprint).Raw
	rtp := append([]byte{0x80, 0x00}, make([]byte, 170)...)
	for _, c := range []struct {
		name string
		b    []byte
	}{{"check", req}, {"rtp", rtp}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !safeDatagram(c.b, false) {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// pion is never given a socket the guard does not read.
func TestGuardRefusesUnguardedSockets(t *testing.T) {
	n := &guardNet{}
	if _, err := n.Dial("udp", "127.0.0.1:9"); err != errUnguardedSocket {
		t.Errorf("Dial = %v", err)
	}
	if _, err := n.DialUDP("udp", nil, &net.UDPAddr{}); err != errUnguardedSocket {
		t.Errorf("DialUDP = %v", err)
	}
	if _, err := n.DialTCP("tcp", nil, &net.TCPAddr{}); err != errUnguardedSocket {
		t.Errorf("DialTCP = %v", err)
	}
	if _, err := n.ListenTCP("tcp", &net.TCPAddr{}); err != errUnguardedSocket {
		t.Errorf("ListenTCP = %v", err)
	}
}
