package ice_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/goleak"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// stunAnswerer is a STUN server on loopback that answers each request it
// receives with a datagram the test chooses, carrying the request's
// transaction ID: what a STUN server, or an attacker on the path to it,
// can send.
type stunAnswerer struct {
	conn   *net.UDPConn
	answer func(req []byte) [][]byte // the datagrams to send back, in order
	done   chan struct{}
}

func startAnswerer(t testing.TB, answer func(req []byte) [][]byte) *stunAnswerer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &stunAnswerer{conn: c, answer: answer, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *stunAnswerer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if !stun.IsMessage(buf[:n]) {
			continue
		}
		for _, out := range s.answer(buf[:n]) {
			_, _ = s.conn.WriteToUDPAddrPort(out, from)
		}
	}
}

// txIDOf is a stun.Setter that gives a message req's transaction ID.
type txIDOf []byte

func (r txIDOf) AddTo(m *stun.Message) error {
	copy(m.TransactionID[:], r[8:20])
	m.WriteTransactionID()
	return nil
}

func (s *stunAnswerer) server() ice.Server {
	return ice.Server{URL: "stun:" + s.conn.LocalAddr().String()}
}

// withTxID returns a copy of b carrying req's transaction ID, when b is
// long enough to have one.
func withTxID(b, req []byte) []byte {
	b = append([]byte(nil), b...)
	if len(b) >= 20 && len(req) >= 20 {
		copy(b[8:20], req[8:20])
	}
	return b
}

// endingIn builds a STUN message of exactly size bytes (a multiple of 4)
// with the given type whose last attribute is typ with the given value,
// padded before it with an attribute pion never reads: the layout that
// makes pion/stun/v2's XOR address parser read past the end of the buffer
// of the srflx gatherer (1280 bytes) or of the TURN client (the exact
// size of the datagram).
func endingIn(msgType uint16, size int, typ uint16, value []byte) []byte {
	last := 4 + (len(value)+3)&^3
	pad := size - 20 - last - 4
	b := make([]byte, 20, size)
	binary.BigEndian.PutUint16(b[0:2], msgType)
	binary.BigEndian.PutUint16(b[2:4], uint16(size-20))
	binary.BigEndian.PutUint32(b[4:8], 0x2112A442)
	copy(b[8:20], "fuzztxid0000")
	b = binary.BigEndian.AppendUint16(b, 0x8050) // comprehension-optional, unknown to pion
	b = binary.BigEndian.AppendUint16(b, uint16(pad))
	b = append(b, make([]byte, pad)...)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	return append(b, make([]byte, size-len(b))...)
}

// srflxGatherBuffer is the size of the buffer pion/ice reads a STUN
// server's answer into while gathering (internal/stun.GetXORMappedAddr).
const srflxGatherBuffer = 1280

// gatherAgainst gathers with one STUN server that answers with answer,
// and returns the candidates and the number of messages the guard
// dropped. On the original code the process panics inside pion instead.
func gatherAgainst(t *testing.T, answer func(req []byte) []byte) ([]sdp.Candidate, uint64) {
	t.Helper()
	srv := startAnswerer(t, func(req []byte) [][]byte { return [][]byte{answer(req)} })
	cfg := loopback()
	cfg.Servers = []ice.Server{srv.server()}
	s := newSide(t, cfg)
	s.gather(t)
	return s.cands, ice.DroppedSTUN(s.t)
}

// One STUN answer whose last attribute is an empty legacy
// XOR-MAPPED-ADDRESS (0x8020, which pion/stun decodes as 0x0020) crashed
// the process: the guard matched raw attribute types and missed it.
func TestSecurityLegacyXORAddressCrash(t *testing.T) {
	cands, dropped := gatherAgainst(t, func(req []byte) []byte {
		return withTxID(endingIn(0x0101, srflxGatherBuffer, 0x8020, nil), req)
	})
	if dropped == 0 {
		t.Error("the guard dropped nothing")
	}
	for _, c := range cands {
		if c.Type == sdp.CandidateServerReflexive {
			t.Errorf("a srflx candidate was made from a malformed answer: %v", c)
		}
	}
}

// pion decides what is STUN by the magic cookie alone (stun.IsMessage),
// not by the two leading zero bits: a message of type 0x4101 is a binding
// success for pion, and the original guard, which required the zero bits,
// passed it unchecked. Here its empty XOR-MAPPED-ADDRESS crashed the
// gatherer without any legacy type.
func TestSecuritySTUNTestMatchesPion(t *testing.T) {
	_, dropped := gatherAgainst(t, func(req []byte) []byte {
		return withTxID(endingIn(0x4101, srflxGatherBuffer, 0x0020, nil), req)
	})
	if dropped == 0 {
		t.Error("the guard dropped nothing")
	}
}

// A TURN client accepts Data indications from any source. One whose
// XOR-PEER-ADDRESS is empty, in a message pion counts as STUN and the
// original guard did not (type 0x4017), crashed the process from anyone
// who knows the client's port; and a relayed payload (DATA, ChannelData)
// is a datagram for the agent, checked like one.
func TestSecurityTURNClientAttributes(t *testing.T) {
	srv := startTURN(t)
	cfg := loopback()
	cfg.Servers = srv.Servers()
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	port := ice.TURNClientPort(a.t)
	if port == 0 {
		t.Fatal("no TURN client socket")
	}
	badInner := endingIn(0x0101, 64, 0x0020, []byte{0, 1, 0})
	dataInd := func(inner []byte) []byte {
		m := stun.New()
		m.Type = stun.NewType(stun.MethodData, stun.ClassIndication)
		m.TransactionID = stun.NewTransactionID()
		m.WriteHeader()
		_ = (&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}).AddToAs(m, stun.AttrXORPeerAddress)
		m.Add(stun.AttrData, inner)
		return m.Raw
	}
	channelData := append([]byte{0x40, 0x00, 0, byte(len(badInner))}, badInner...)
	for _, c := range []struct {
		name string
		msg  []byte
	}{
		{"empty XOR-PEER-ADDRESS, type 0x4017", endingIn(0x4017, 64, 0x0012, nil)},
		{"1-byte XOR-PEER-ADDRESS", endingIn(0x0017, 64, 0x0012, []byte{1})},
		{"Data indication carrying a malformed check response", dataInd(badInner)},
		{"ChannelData carrying a malformed check response", channelData},
		{"LIFETIME of 3 bytes", endingIn(0x0103, 64, 0x000d, []byte{0, 0, 1})},
		{"ERROR-CODE of 2 bytes", endingIn(0x0113, 64, 0x0009, []byte{0, 0})},
	} {
		before := ice.DroppedSTUN(a.t)
		sendUntilDropped(t, a.t, fmt.Sprintf("127.0.0.1:%d", port), c.msg, before)
		if ice.DroppedSTUN(a.t) == before {
			t.Errorf("%s: the guard dropped nothing", c.name)
		}
	}
	exchange(t, a.conn, b.conn)
}

// sendUntilDropped sends msg to addr until t's guard has dropped more than
// before, within bounds.
func sendUntilDropped(t *testing.T, tr *ice.Transport, addr string, msg []byte, before uint64) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 50 && ice.DroppedSTUN(tr) == before; i++ {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Every class of attribute pion decodes is checked before pion sees it, on
// the host socket of a connected transport, from a sender the agent does
// not know (requests and indications, which no transaction check stops): addresses (plain and XOR), integers (PRIORITY,
// ICE-CONTROLLED/-CONTROLLING, FINGERPRINT), flags (USE-CANDIDATE), text
// (USERNAME), MESSAGE-INTEGRITY, and the message framing itself.
func TestSecurityMalformedAttributeClasses(t *testing.T) {
	a, b := newSide(t, loopback()), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	host := net.JoinHostPort(a.cands[0].Address, fmt.Sprint(a.cands[0].Port))
	trailing := append(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, 1, 2, 3, 4)
	for _, c := range []struct {
		name string
		msg  []byte
	}{
		{"MAPPED-ADDRESS, IPv6 family with 5 bytes", endingIn(0x0011, 64, 0x0001, []byte{0, 2, 0, 1, 9})},
		{"ALTERNATE-SERVER of 4 bytes", endingIn(0x0011, 64, 0x8023, []byte{0, 1, 0, 1})},
		{"legacy XOR-MAPPED-ADDRESS of 1 byte", endingIn(0x0011, 64, 0x8020, []byte{1})},
		{"XOR-MAPPED-ADDRESS with an IPv4 family and 20 bytes", endingIn(0x0011, 64, 0x0020, make([]byte, 20))},
		{"PRIORITY of 3 bytes", endingIn(0x0001, 64, 0x0024, []byte{1, 2, 3})},
		{"ICE-CONTROLLING of 4 bytes", endingIn(0x0001, 64, 0x802a, []byte{1, 2, 3, 4})},
		{"USE-CANDIDATE with a value", endingIn(0x0001, 64, 0x0025, []byte{1})},
		{"FINGERPRINT of 2 bytes", endingIn(0x0001, 64, 0x8028, []byte{1, 2})},
		{"MESSAGE-INTEGRITY of 4 bytes", endingIn(0x0001, 64, 0x0008, []byte{1, 2, 3, 4})},
		{"USERNAME of 600 bytes", endingIn(0x0001, 700, 0x0006, make([]byte, 600))},
		{"bytes after the message", trailing},
		{"attribute longer than the message", func() []byte {
			m := endingIn(0x0001, 64, 0x0024, []byte{1, 2, 3, 4})
			binary.BigEndian.PutUint16(m[len(m)-6:], 40)
			return m
		}()},
	} {
		before := ice.DroppedSTUN(a.t)
		sendUntilDropped(t, a.t, host, c.msg, before)
		if ice.DroppedSTUN(a.t) == before {
			t.Errorf("%s: the guard dropped nothing", c.name)
		}
	}
	exchange(t, a.conn, b.conn)
}

// fuzzStage is where in a call's life a fuzzed datagram arrives.
type fuzzStage byte

const (
	stageGathering fuzzStage = iota // as the STUN server's answer while gathering
	stageChecking                   // as the answer to a connectivity check, and unsolicited
	stageConnected                  // to the host socket of a connected transport
	stageRelayed                    // to the TURN client socket of a connected transport
	stageActiveTCP                  // from the peer's passive ICE-TCP candidate, which pion dials
	numStages
)

// fuzzTimeout bounds each stage of one fuzz input.
const fuzzTimeout = 3 * time.Second

// FuzzTransportDatagram drives arbitrary datagrams through the sockets
// pion's agent reads, at each stage of a call, from a raw UDP socket on
// loopback: a STUN server's answer during gathering, a reply to a
// connectivity check and an unsolicited datagram while checking, a
// datagram to a connected transport's host socket, and one to its TURN
// client's socket. Every transport and server is closed before the input
// ends (goleak checks the package). A crash in any of pion's goroutines
// fails the input.
func FuzzTransportDatagram(f *testing.F) {
	legacy := endingIn(0x0101, srflxGatherBuffer, 0x8020, nil)
	for st := range numStages {
		f.Add(byte(st), legacy)
	}
	f.Add(byte(stageRelayed), endingIn(0x0017, 64, 0x0012, nil))
	f.Add(byte(stageRelayed), endingIn(0x4017, 64, 0x0012, nil))
	f.Add(byte(stageGathering), endingIn(0x4101, srflxGatherBuffer, 0x0020, nil))
	f.Add(byte(stageChecking), stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}, stun.Fingerprint).Raw)
	f.Add(byte(stageConnected), []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 'r', 't', 'p'})
	f.Add(byte(stageConnected), []byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(byte(stageActiveTCP), endingIn(0x0101, 64, 0x0024, []byte{1, 2, 3}))
	f.Fuzz(func(t *testing.T, stage byte, dgram []byte) {
		if len(dgram) > 1500 {
			dgram = dgram[:1500]
		}
		noLeaks(t)
		switch fuzzStage(stage) % numStages {
		case stageGathering:
			fuzzGathering(t, dgram)
		case stageChecking:
			fuzzChecking(t, dgram)
		case stageConnected:
			fuzzConnected(t, dgram, false)
		case stageRelayed:
			fuzzConnected(t, dgram, true)
		case stageActiveTCP:
			fuzzActiveTCP(t, dgram)
		}
	})
}

// noLeaks checks, after every cleanup of the test has run, that the test
// left no goroutine and no open file (socket) behind.
func noLeaks(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	fds := openFiles(t)
	t.Cleanup(func() {
		goleak.VerifyNone(t, opts)
		if n := openFiles(t); n > fds {
			t.Errorf("%d files open after the input, %d before", n, fds)
		}
	})
}

func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0 // not Linux: goroutines are still checked
	}
	return len(ents)
}

func fuzzGathering(t *testing.T, dgram []byte) {
	answered := false // only the serving goroutine touches it
	srv := startAnswerer(t, func(req []byte) [][]byte {
		if answered {
			return nil
		}
		answered = true
		// The fuzzed answer, then a well-formed one: if the guard
		// dropped the first, pion takes the second instead of waiting
		// for its gathering timeout.
		return [][]byte{withTxID(dgram, req), stun.MustBuild(txIDOf(req), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}).Raw}
	})
	cfg := loopback()
	cfg.Servers = []ice.Server{srv.server()}
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeout)
	defer cancel()
	_ = tr.Gather(ctx, nil)
}

func fuzzChecking(t *testing.T, dgram []byte) {
	// The peer's only candidate is the raw socket: every check pion sends
	// reaches it and is answered with the datagram, as a response to that
	// check; the datagram is also sent as it is.
	raw := startAnswerer(t, func(req []byte) [][]byte {
		return [][]byte{withTxID(dgram, req)}
	})
	tr, err := ice.NewTransport(withTimeout(loopback(), 150*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeout)
	defer cancel()
	var local []sdp.Candidate
	if err := tr.Gather(ctx, func(c sdp.Candidate) { local = append(local, c) }); err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(raw.conn.LocalAddr().String())
	if err := tr.AddRemoteCandidate(sdp.Candidate{Foundation: "1", Component: 1, Transport: "udp", Priority: 1,
		Address: ap.Addr().String(), Port: ap.Port(), Type: sdp.CandidateHost}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = tr.Connect(ctx, ice.Peer{Ufrag: "fuzzufrag", Pwd: "fuzzpasswordfuzzpassword"}, true)
	}()
	for _, c := range local {
		_, _ = raw.conn.WriteToUDPAddrPort(dgram, netip.AddrPortFrom(netip.MustParseAddr(c.Address), c.Port))
	}
	<-done
}

func withTimeout(cfg ice.Config, d time.Duration) ice.Config {
	cfg.ConnectTimeout = d
	return cfg
}

func fuzzConnected(t *testing.T, dgram []byte, relayed bool) {
	cfg := loopback()
	if relayed {
		srv := startTURN(t)
		cfg.Servers = srv.Servers()
	}
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	dst := net.JoinHostPort(a.cands[0].Address, fmt.Sprint(a.cands[0].Port))
	if relayed {
		dst = fmt.Sprintf("127.0.0.1:%d", ice.TURNClientPort(a.t))
	}
	c, err := net.Dial("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(dgram); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
	// The call still carries packets after the datagram (a crash would
	// have ended the process already).
	exchange(t, a.conn, b.conn)
}

// The ICE-TCP listener's connections are guarded too: pion's TCP mux
// parses the first RFC 4571 frame of every connection as STUN, and later
// ones as the agent parses datagrams. At 7a67b0e they reached pion
// unchecked.
func TestSecurityICETCPFrames(t *testing.T) {
	cfg := loopback()
	cfg.Networks = []ice.Network{ice.TCP4}
	a, b := newSide(t, cfg), newSide(t, cfg)
	connect(t, a, b, false, false, nil)
	var passive sdp.Candidate
	for _, c := range a.cands {
		if c.TCPType == "passive" {
			passive = c
		}
	}
	if passive.Port == 0 {
		t.Fatal("no passive ICE-TCP candidate")
	}
	bad := endingIn(0x0001, 64, 0x0024, []byte{1, 2, 3}) // PRIORITY of 3 bytes
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(bad)))
	frame = append(frame, bad...)
	before := ice.DroppedSTUN(a.t)
	c, err := net.Dial("tcp", net.JoinHostPort(passive.Address, fmt.Sprint(passive.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && ice.DroppedSTUN(a.t) == before; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if ice.DroppedSTUN(a.t) == before {
		t.Error("the guard dropped nothing")
	}
	exchange(t, a.conn, b.conn)
}

// fuzzActiveTCP poses as a peer's passive ICE-TCP candidate: pion dials it
// with its own dialer (active ICE-TCP, which the guard cannot wrap) and
// parses what comes back as the agent parses datagrams. The datagram is
// sent framed (RFC 4571) as the answer to pion's first check.
func fuzzActiveTCP(t *testing.T, dgram []byte) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := withTimeout(loopback(), 150*time.Millisecond)
	cfg.Networks = []ice.Network{ice.TCP4}
	tr, err := ice.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeout)
	defer cancel()
	if err := tr.Gather(ctx, nil); err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	if err := tr.AddRemoteCandidate(sdp.Candidate{Foundation: "1", Component: 1, Transport: "tcp", Priority: 1,
		Address: ap.Addr().String(), Port: ap.Port(), Type: sdp.CandidateHost, TCPType: "passive"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = tr.Connect(ctx, ice.Peer{Ufrag: "fuzzufrag", Pwd: "fuzzpasswordfuzzpassword"}, true)
	}()
	defer func() { <-done }()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second))
	c, err := ln.Accept()
	if err != nil {
		return // pion did not dial within the bound: nothing to answer
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	req := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(c, req); err != nil {
		return
	}
	out := withTxID(dgram, req)
	_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
	<-done
}
