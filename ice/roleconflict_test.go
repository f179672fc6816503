package ice_test

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/securecall/securecall/ice"
)

// check builds a connectivity check from a full agent to the Lite one.
func check(t *testing.T, liteUfrag, peerUfrag, litePwd string, role stun.AttrType, nominate bool) *stun.Message {
	t.Helper()
	tie := make([]byte, 8)
	binary.BigEndian.PutUint64(tie, 0x0123456789abcdef)
	prio := make([]byte, 4)
	binary.BigEndian.PutUint32(prio, 1853824767)
	setters := []stun.Setter{stun.BindingRequest, stun.TransactionID,
		stun.NewUsername(liteUfrag + ":" + peerUfrag),
		stun.RawAttribute{Type: role, Value: tie},
		stun.RawAttribute{Type: stun.AttrPriority, Value: prio},
	}
	if nominate {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrUseCandidate})
	}
	setters = append(setters, stun.NewShortTermIntegrity(litePwd), stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tryReadSTUN returns the next STUN message on c within d, or nil.
func tryReadSTUN(c *net.UDPConn, d time.Duration) *stun.Message {
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
	if m.Decode() != nil {
		return nil
	}
	return m
}

// TestLiteAnswersRoleConflict: a full agent that wrongly stays controlled
// against a Lite Transport gets a 487 (RFC 8445 section 7.3.1.1) instead of
// silence, and once it switches to controlling the call connects.
func TestLiteAnswersRoleConflict(t *testing.T) {
	cfg := loopback()
	cfg.Lite = true
	lite := newSide(t, cfg)
	lite.gather(t)
	creds := lite.t.LocalCredentials()
	const peerUfrag, peerPwd = "full", "fullagentpasswordfull0"
	peer := udpLoopback(t)
	to := &net.UDPAddr{IP: net.ParseIP(lite.cands[0].Address), Port: int(lite.cands[0].Port)}

	connected := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		c, err := lite.t.Connect(ctx, ice.Peer{Ufrag: peerUfrag, Pwd: peerPwd}, false)
		if err == nil {
			c.Close()
		}
		connected <- err
	}()

	// 1. The full agent stays controlled: 487 with integrity and fingerprint.
	// Like a real agent it retransmits until answered: Connect runs on
	// another goroutine and may not have started yet.
	req := check(t, creds.Ufrag, peerUfrag, creds.Pwd, stun.AttrICEControlled, false)
	var resp *stun.Message
	for i := 0; resp == nil && i < 50; i++ {
		peer.WriteToUDP(req.Raw, to)
		resp = tryReadSTUN(peer, 100*time.Millisecond)
	}
	if resp == nil {
		t.Fatal("no answer to a check with ICE-CONTROLLED")
	}
	var code stun.ErrorCodeAttribute
	if resp.Type != stun.NewType(stun.MethodBinding, stun.ClassErrorResponse) || resp.TransactionID != req.TransactionID {
		t.Fatalf("answer %s, want a Binding error response to the check", resp.Type)
	}
	if err := code.GetFrom(resp); err != nil || code.Code != 487 {
		t.Fatalf("error code %v (%v), want 487", code.Code, err)
	}
	if err := stun.NewShortTermIntegrity(creds.Pwd).Check(resp); err != nil {
		t.Errorf("487 without valid MESSAGE-INTEGRITY: %v", err)
	}
	if err := stun.Fingerprint.Check(resp); err != nil {
		t.Errorf("487 without valid FINGERPRINT: %v", err)
	}
	conflicts := lite.t.RoleConflicts()
	if conflicts < 1 {
		t.Errorf("RoleConflicts = %d", conflicts)
	}

	for tryReadSTUN(peer, 100*time.Millisecond) != nil {
		// answers to retransmissions
	}
	conflicts = lite.t.RoleConflicts()

	// 2. A check with a wrong password is not answered at all.
	bad := check(t, creds.Ufrag, peerUfrag, "notthepasswordnotthepass", stun.AttrICEControlled, false)
	peer.WriteToUDP(bad.Raw, to)
	peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := peer.Read(make([]byte, 1500)); err == nil {
		t.Error("an unauthenticated check was answered")
	}
	if lite.t.RoleConflicts() != conflicts {
		t.Errorf("RoleConflicts = %d after a forged check, was %d", lite.t.RoleConflicts(), conflicts)
	}

	// 3. The full agent switches to controlling and nominates: connected.
	// The Lite agent answers and sends its triggered check (RFC 8445
	// section 7.3.1.4), which the full agent answers.
	nom := check(t, creds.Ufrag, peerUfrag, creds.Pwd, stun.AttrICEControlling, true)
	peer.WriteToUDP(nom.Raw, to)
	answered := false
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-connected:
			if err != nil {
				t.Fatalf("Connect after the role switch: %v", err)
			}
			if !answered {
				t.Error("the controlling check was not answered")
			}
			return
		default:
		}
		peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := peer.Read(buf)
		if err != nil {
			continue
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() != nil {
			continue
		}
		switch m.Type {
		case stun.BindingSuccess:
			answered = true
		case stun.BindingRequest:
			ok, err := stun.Build(stun.BindingSuccess, stun.NewTransactionIDSetter(m.TransactionID),
				&stun.XORMappedAddress{IP: to.IP, Port: to.Port}, stun.NewShortTermIntegrity(peerPwd), stun.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			peer.WriteToUDP(ok.Raw, to)
		}
	}
	t.Fatal("the Lite agent did not connect after the full agent switched to controlling")
}
