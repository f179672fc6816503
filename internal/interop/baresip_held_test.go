package interop

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// TestInteropBaresipHeldByCall: baresip calls a Call, and the Call puts
// baresip on hold and resumes it (Call.Hold and Call.Resume), each offer
// sent in a re-INVITE by the test's user agent and baresip's 200 OK
// answer passed to Call.SetAnswer. On hold baresip answers recvonly, the
// Call's Direction is sendonly and its audio (music on hold) still
// reaches baresip; after the resume both directions flow again. In SDES
// without ICE and in DTLS-SRTP with ICE.
func TestInteropBaresipHeldByCall(t *testing.T) {
	runBaresipShapes(t, "TestInteropBaresipHeldByCall", []baresipShape{baresipShapes[0], baresipShapes[2]}, baresipHeldByCall)
}

func baresipHeldByCall(t *testing.T, sh baresipShape) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	path := needTool(t, "baresip", "baresip")
	ua := newSIPUA(t)
	cfg := securecall.Config{
		Keying: sh.keying,
		NoICE:  sh.noICE,
		Codecs: []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
		ICE: ice.Config{
			InterfaceFilter: func(name string) bool { return name == netnsVethA },
			IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr(netnsAddrA) },
			Networks:        []ice.Network{ice.UDP4},
		},
	}
	call, err := newCallEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	dir := baresipConfig(t, sh)
	self := fmt.Sprintf("sip:uas@%s", ua.addr)
	bs := startProcess(t, path, "-f", dir, "-t", "40", "-e", "/dial "+self)
	ua.mu.Lock() // the pump reads it
	ua.answerer = func(offer string) (string, error) { return call.Answer(ctx, offer) }
	ua.mu.Unlock()

	inv := ua.next(ctx, t, "baresip's INVITE", func(m *sipMsg) bool { return m.method() == "INVITE" })
	answer, err := call.Answer(ctx, inv.body)
	if err != nil {
		t.Fatalf("Answer: %v\nbaresip's offer:\n%s", err, inv.body)
	}
	to := inv.header("to") + ";tag=" + randomToken()
	ua.respond(inv, "200 OK", to, answer)
	ua.next(ctx, t, "baresip's ACK", func(m *sipMsg) bool { return m.method() == "ACK" })
	ua.established(answer, to)
	if err := call.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	r := startReceiver(ctx, call)
	s := startSender(call)
	defer s.close()
	if err := r.wait(ctx, 50); err != nil {
		t.Fatalf("audio from baresip: %v", err)
	}
	if err := waitFor(ctx, "baresip to receive the Call's audio", func() bool { return baresipLastRX(bs) >= 48000 }); err != nil {
		t.Fatalf("%v\n%s", err, lastLines(bs.out.String(), 30))
	}
	if !sh.noICE {
		// With ICE baresip sends a re-INVITE of its own once its checks
		// complete; let it come first, or it crosses the hold (and, as
		// the caller, wins the glare).
		if err := waitFor(ctx, "baresip's re-INVITE after ICE", func() bool {
			ua.mu.Lock()
			defer ua.mu.Unlock()
			return ua.reinvs > 0
		}); err != nil {
			t.Fatal(err)
		}
	}

	// In-dialog requests from this side: From is the To of baresip's
	// INVITE (with this side's tag), To its From.
	baresipSIP := &net.UDPAddr{IP: net.ParseIP(netnsAddrB), Port: 5060}
	target := uriOf(inv.header("contact"))
	cseq := 1
	reinvite := func(offer string) string {
		t.Helper()
		cseq++
		headers := []string{
			"Via: SIP/2.0/UDP " + ua.addr.String() + ";branch=z9hG4bK" + randomToken() + ";rport",
			"Max-Forwards: 70", "From: " + to, "To: " + inv.header("from"), "Call-ID: " + inv.header("call-id"),
			fmt.Sprintf("CSeq: %d INVITE", cseq), "Contact: <" + self + ">",
		}
		ua.send(t, baresipSIP, "INVITE "+target+" SIP/2.0", headers, offer)
		ok := ua.next(ctx, t, "baresip's 200 OK to the re-INVITE", func(m *sipMsg) bool {
			if m.status() >= 300 && strings.HasSuffix(m.header("cseq"), "INVITE") {
				t.Fatalf("baresip refused the re-INVITE: %s\noffer:\n%s", m.first, offer)
			}
			return m.status() == 200 && m.header("cseq") == fmt.Sprintf("%d INVITE", cseq)
		})
		ua.send(t, baresipSIP, "ACK "+target+" SIP/2.0", []string{
			"Via: SIP/2.0/UDP " + ua.addr.String() + ";branch=z9hG4bK" + randomToken() + ";rport",
			"Max-Forwards: 70", "From: " + to, "To: " + ok.header("to"), "Call-ID: " + inv.header("call-id"),
			fmt.Sprintf("CSeq: %d ACK", cseq),
		}, "")
		if err := call.SetAnswer(ctx, ok.body); err != nil {
			t.Fatalf("SetAnswer of baresip's answer: %v\noffer:\n%s\nbaresip's answer:\n%s", err, offer, ok.body)
		}
		return ok.body
	}

	hold, err := call.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans := reinvite(hold)
	if !strings.Contains(ans, "a=recvonly") && !strings.Contains(ans, "a=inactive") {
		t.Errorf("baresip's answer to the hold says neither recvonly nor inactive:\n%s", ans)
	}
	if d := call.Direction(); d != sdp.SendOnly {
		t.Fatalf("Direction on hold: %s, want sendonly\nbaresip's answer:\n%s", d, ans)
	}
	held := call.Stats()
	// Music on hold: the Call sends on, and baresip says it receives.
	if err := waitFor(ctx, "the Call to send on hold", func() bool { return call.Stats().RTPPacketsSent >= held.RTPPacketsSent+50 }); err != nil {
		t.Fatal(err)
	}
	if st := call.Stats(); st.RTPWithheld != held.RTPWithheld {
		t.Errorf("the Call withheld %d packets while it holds (sendonly)", st.RTPWithheld-held.RTPWithheld)
	}
	if rx := baresipLastRX(bs); rx < 48000 {
		t.Errorf("baresip's receive rate on hold: %d bit/s, want PCMU's 64000\n%s", rx, lastLines(bs.out.String(), 20))
	}
	onHold, _ := r.count()

	resume, err := call.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reinvite(resume)
	if d := call.Direction(); d != sdp.SendRecv {
		t.Fatalf("Direction after Resume: %s, want sendrecv", d)
	}
	if err := r.wait(ctx, onHold+50); err != nil {
		t.Fatalf("audio from baresip after the resume: %v", err)
	}
	st := call.Stats()
	if st.AuthFailures != 0 {
		t.Errorf("%d authentication failures", st.AuthFailures)
	}
	t.Logf("the Call sent %d packets and received %d; %d from baresip before the resume", st.RTPPacketsSent, st.RTPPacketsReceived, onHold)
}
