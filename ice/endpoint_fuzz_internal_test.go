package ice

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"hash/crc32"
	"net"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
)

// stunRig is an Endpoint as a gateway's shared socket is between calls:
// b is a parked Transport's consent session that answers the checks of
// its peer (USERNAME "ufragB:ufragA", signed with pwdB), and a is one that
// awaits the response to its check rigTx (signed by the peer with pwdA).
// Both peers are at peer; stranger is another source. Both are loopback
// sockets of the test, where the Endpoint's answers go.
type stunRig struct {
	e              *Endpoint
	a, b           *consentSession
	peer, stranger *net.UDPConn
}

const rigPwdA, rigPwdB = "the peer of a's password, 22+", "b's own password, 22 or more"

var rigTx = [12]byte{'r', 'i', 'g', ' ', 't', 'r', 'a', 'n', 's', 'a', 'c', 't'}

func newSTUNRig(t testing.TB) *stunRig {
	t.Helper()
	e, ua, ub := endpointWithUses(t)
	socket := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	r := &stunRig{e: e, peer: socket(), stranger: socket()}
	peer := r.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	// Hours apart: the consent goroutine never sends a check of its own,
	// nor finds either session silent, while the fuzzer runs.
	r.a = &consentSession{
		use: ua, localUfrag: "ufragA", localPwd: "a's own password, 22 or more", remoteUfrag: "peerA", remotePwd: rigPwdA,
		remote: peer, controlling: true, tieBreaker: 1, priority: 1,
		interval: time.Hour, disc: time.Hour, fail: time.Hour, report: func(pice.ConnectionState) {},
	}
	r.b = &consentSession{
		use: ub, localUfrag: "ufragB", localPwd: rigPwdB, remoteUfrag: "ufragA", remotePwd: "the peer of b's password, 22+",
		remote: peer, lite: true, tieBreaker: 2, priority: 2,
		interval: time.Hour, disc: time.Hour, fail: time.Hour, report: func(pice.ConnectionState) {},
	}
	e.startConsent(r.b)
	t.Cleanup(func() { e.stopConsent(r.b) })
	return r
}

// resign makes the MESSAGE-INTEGRITY and the FINGERPRINT of m, where it
// has them in their places, match under key, as a peer holding key would
// have signed m: so that the fuzzer's changes to the other attributes
// reach the code behind the HMAC. It is written from RFC 5389 sections
// 15.4 and 15.5, apart from the code under test.
func resign(m []byte, key string) {
	if len(m) < 20 {
		return
	}
	end := min(20+int(binary.BigEndian.Uint16(m[2:4])), len(m))
	for off := 20; off+4 <= end; {
		typ, n := binary.BigEndian.Uint16(m[off:]), int(binary.BigEndian.Uint16(m[off+2:]))
		if off+4+n > end {
			break
		}
		if typ == stun.AttrMessageIntegrity.Value() && n == sha1.Size {
			h := hmac.New(sha1.New, []byte(key))
			hdr := bytes.Clone(m[:20])
			binary.BigEndian.PutUint16(hdr[2:4], uint16(off+4+sha1.Size-20))
			h.Write(hdr)
			h.Write(m[20:off])
			copy(m[off+4:], h.Sum(nil))
			break
		}
		off += 4 + (n+3)&^3
	}
	if at := len(m) - 8; at >= 20 && 20+int(binary.BigEndian.Uint16(m[2:4])) == len(m) &&
		binary.BigEndian.Uint16(m[at:]) == stun.AttrFingerprint.Value() && binary.BigEndian.Uint16(m[at+2:]) == 4 {
		binary.BigEndian.PutUint32(m[at+4:], crc32.ChecksumIEEE(m[:at])^fingerprintXOR)
	}
}

// pionTakes decodes m with pion/stun and reports whether it is a message
// of type typ, signed with key, whose last attribute is a FINGERPRINT that
// matches (as RFC 8445 section 7.1 requires of checks and their answers),
// and exactly as long as its header says. pion reads the type without
// its first two bits, which RFC 5389 section 6 requires to be zero (RFC
// 7983 tells STUN from other packets by them): they must be here.
func pionTakes(m []byte, typ stun.MessageType, key string) (*stun.Message, bool) {
	msg := &stun.Message{Raw: bytes.Clone(m)}
	if len(m) == 0 || m[0]&0xc0 != 0 || msg.Decode() != nil || msg.Type != typ || int(msg.Length)+20 != len(m) ||
		len(msg.Attributes) == 0 || msg.Attributes[len(msg.Attributes)-1].Type != stun.AttrFingerprint ||
		stun.Fingerprint.Check(msg) != nil || stun.NewShortTermIntegrity(key).Check(msg) != nil {
		return nil, false
	}
	return msg, true
}

// FuzzEndpointSTUN sends any datagram, from the consent peer's address or
// another, to an Endpoint as its reader would hand it over, and holds the
// Endpoint to what pion/stun makes of it:
//   - it answers exactly the checks that pion decodes as a Binding request
//     for b (USERNAME "ufragB:ufragA", signed with b's password, a
//     FINGERPRINT last) and that the guard lets through, and nothing else;
//   - its answer, to the check's source, is one that pion decodes as a
//     Binding success response to the check's transaction, signed with
//     b's password, with a FINGERPRINT, and with the source as its
//     XOR-MAPPED-ADDRESS;
//   - a session hears its peer (consent) only from the peer's address: b
//     when it answers, a when the datagram is, for pion, a Binding success
//     response to a's transaction signed by a's peer;
//   - each datagram is counted once: routed STUN, unrouted or malformed.
//
// With resign set, the datagram's MESSAGE-INTEGRITY and FINGERPRINT are
// made to match first (under b's password for a request, a's peer's for
// anything else), so that changes to the other attributes are not merely
// refused by the HMAC.
func FuzzEndpointSTUN(f *testing.F) {
	check := func(user, pwd string, attrs ...stun.Setter) []byte {
		s := append([]stun.Setter{stun.NewTransactionIDSetter([12]byte{1, 2, 3}), stun.BindingRequest, stun.NewUsername(user)}, attrs...)
		s = append(s, stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
		return stun.MustBuild(s...).Raw
	}
	answer := func(id [12]byte, typ stun.MessageType, pwd string) []byte {
		return stun.MustBuild(stun.NewTransactionIDSetter(id), typ,
			&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}, stun.NewShortTermIntegrity(pwd), stun.Fingerprint).Raw
	}
	peerCheck := check("ufragB:ufragA", rigPwdB, pice.AttrControlling(7), pice.PriorityAttr(9))
	for _, seed := range [][]byte{
		peerCheck,
		check("ufragB:ufragA", rigPwdB),
		check("ufragB:ufragA", "not b's password, 22 or more"),
		check("ufragB:someone", rigPwdB, pice.UseCandidate()),
		check("ufragA:peerA", rigPwdB),
		answer(rigTx, stun.BindingSuccess, rigPwdA),
		answer(rigTx, stun.BindingError, rigPwdA),
		answer(rigTx, stun.BindingSuccess, rigPwdB),
		answer([12]byte{9}, stun.BindingSuccess, rigPwdA),
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint).Raw,
		peerCheck[:len(peerCheck)-8],
		{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},
	} {
		f.Add(seed, false, false)
		f.Add(seed, true, true)
	}
	r := newSTUNRig(f)
	buf := make([]byte, 1500)
	f.Fuzz(func(t *testing.T, m []byte, fromStranger, resigned bool) {
		if len(m) > 1500 {
			m = m[:1500]
		}
		if resigned {
			key := rigPwdA
			if len(m) >= 2 && binary.BigEndian.Uint16(m[0:2])&0x0110 == 0 {
				key = rigPwdB
			}
			resign(m, key)
		}
		from := r.peer
		if fromStranger {
			from = r.stranger
		}
		src := from.LocalAddr().(*net.UDPAddr).AddrPort()
		before := time.Now().UnixNano() - 1
		r.a.heard.Store(before)
		r.b.heard.Store(before)
		r.e.mu.Lock()
		r.e.addPendingLocked(rigTx, pendingTx{cs: r.a})
		r.e.mu.Unlock()
		st0 := r.e.Stats()
		in := bytes.Clone(m)

		r.e.dispatch(m, src, nil)

		st := r.e.Stats()
		if !bytes.Equal(m, in) {
			t.Fatal("the Endpoint changed the datagram it was handed")
		}
		if n := st.STUN - st0.STUN + st.Unrouted - st0.Unrouted + st.Malformed - st0.Malformed; n != 1 {
			t.Fatalf("the datagram was counted %d times (before %+v, after %+v)", n, st0, st)
		}
		req, wantAnswer := pionTakes(m, stun.BindingRequest, rigPwdB)
		if wantAnswer {
			var u stun.Username
			wantAnswer = u.GetFrom(req) == nil && u.String() == "ufragB:ufragA" && safeDatagram(m, false)
		}
		sent := st.Sent - st0.Sent
		switch {
		case sent > 1 || sent == 1 && !wantAnswer:
			t.Fatalf("the Endpoint sent %d datagrams for one that pion does not take as b's peer's check", sent)
		case sent == 0 && wantAnswer:
			t.Fatalf("no answer to a check that pion takes as b's peer's: %+v", st)
		case sent == 1:
			// Sent before dispatch returned, over loopback: it is there.
			if err := from.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, _, err := from.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("the answer did not reach the check's source: %v", err)
			}
			ans, ok := pionTakes(buf[:n], stun.BindingSuccess, rigPwdB)
			if !ok || ans.TransactionID != req.TransactionID {
				t.Fatalf("pion does not take the answer %x as a success response to %x signed with b's password", buf[:n], req.TransactionID)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(ans); err != nil || !xa.IP.Equal(src.Addr().AsSlice()) || xa.Port != int(src.Port()) {
				t.Fatalf("the answer maps %v (%v), want %v", &xa, err, src)
			}
		}
		if heard := r.b.heard.Load() != before; heard != (wantAnswer && !fromStranger) {
			t.Fatalf("b heard its peer: %v; answered %v, from the peer's address %v", heard, wantAnswer, !fromStranger)
		}
		resp, wantHeard := pionTakes(m, stun.BindingSuccess, rigPwdA)
		wantHeard = wantHeard && resp.TransactionID == rigTx && !fromStranger && safeDatagram(m, false)
		if heard := r.a.heard.Load() != before; heard != wantHeard {
			t.Fatalf("a heard its peer: %v, want %v", heard, wantHeard)
		}
	})
}
