package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// TestInteropBaresipHold: baresip calls a Call, then puts the call on hold
// and resumes it (its /hold and /resume commands, sent over its ctrl_tcp
// interface), each a re-INVITE that the test's user agent hands to
// Call.Answer. On hold the Call reports a direction that does not send
// and sends no RTP while its sender goes on writing: the packets are
// counted as withheld. (baresip 1.0 stops its own audio on hold, and its
// receive rate falls to zero whether RTP arrives or not, so only the
// Call's counters tell.) On resume the Call sends again and baresip
// receives it at PCMU's rate. In SDES without ICE and in DTLS-SRTP with
// ICE.
func TestInteropBaresipHold(t *testing.T) {
	runBaresipShapes(t, "TestInteropBaresipHold", []baresipShape{baresipShapes[0], baresipShapes[2]}, baresipHold)
}

// runBaresipShapes runs test's subtest for each shape inside a network
// namespace with baresip (from outside one, the test binary runs itself
// in a namespace it creates, one subtest at a time).
func runBaresipShapes(t *testing.T, test string, shapes []baresipShape, run func(*testing.T, baresipShape)) {
	inNetns := os.Getenv(envInNetns) != ""
	var ns *netns
	if !inNetns {
		needTool(t, "baresip", "baresip")
		ns = newNetns(t)
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			if !inNetns {
				ns.runTestInNetns(t, "^"+test+"$/^"+sh.name+"$", 60*time.Second)
				return
			}
			run(t, sh)
		})
	}
}

// baresipCtrlPort is where baresip's ctrl_tcp module listens, on netnsAddrB.
const baresipCtrlPort = 4444

func baresipHold(t *testing.T, sh baresipShape) {
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
	ctrl := fmt.Sprintf("module ctrl_tcp.so\nctrl_tcp_listen %s:%d\n", netnsAddrB, baresipCtrlPort)
	f, err := os.OpenFile(filepath.Join(dir, "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(ctrl); err != nil {
		t.Fatal(err)
	}
	f.Close()
	self := fmt.Sprintf("sip:uas@%s", ua.addr)
	bs := startProcess(t, path, "-f", dir, "-t", "40", "-e", "/dial "+self)

	// Every re-INVITE goes to Call.Answer; the offers are kept.
	var (
		mu     sync.Mutex
		offers []string
	)
	ua.mu.Lock() // the pump reads it
	ua.answerer = func(offer string) (string, error) {
		mu.Lock()
		offers = append(offers, offer)
		mu.Unlock()
		return call.Answer(ctx, offer)
	}
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

	conn := dialBaresipCtrl(ctx, t)
	baresipCommand(t, conn, "hold")
	if err := waitFor(ctx, "the Call to take baresip's hold", func() bool { return !call.Direction().Sends() }); err != nil {
		mu.Lock()
		t.Fatalf("%v: Direction %s; baresip's re-offers:\n%s", err, call.Direction(), strings.Join(offers, "\n----\n"))
	}
	t.Logf("on hold: Direction %s", call.Direction())
	held := call.Stats()
	if err := waitFor(ctx, "the Call to withhold its audio", func() bool { return call.Stats().RTPWithheld >= held.RTPWithheld+25 }); err != nil {
		t.Fatal(err)
	}
	if st := call.Stats(); st.RTPPacketsSent != held.RTPPacketsSent {
		t.Errorf("the Call sent %d RTP packets on hold", st.RTPPacketsSent-held.RTPPacketsSent)
	}

	baresipCommand(t, conn, "resume")
	if err := waitFor(ctx, "the Call to take baresip's resume", func() bool { return call.Direction() == sdp.SendRecv }); err != nil {
		t.Fatalf("%v: Direction %s", err, call.Direction())
	}
	resumed := call.Stats()
	if err := waitFor(ctx, "the Call to send again", func() bool { return call.Stats().RTPPacketsSent >= resumed.RTPPacketsSent+25 }); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, "baresip to receive again", func() bool { return baresipLastRX(bs) >= 48000 }); err != nil {
		t.Errorf("%v\n%s", err, lastLines(bs.out.String(), 20))
	}
	st := call.Stats()
	if st.AuthFailures != 0 {
		t.Errorf("%d authentication failures", st.AuthFailures)
	}
	mu.Lock()
	t.Logf("baresip sent %d re-INVITEs; the Call withheld %d packets on hold, sent %d, received %d",
		len(offers), st.RTPWithheld, st.RTPPacketsSent, st.RTPPacketsReceived)
	mu.Unlock()
}

// baresipLastRX returns the receive rate of baresip's latest status line.
func baresipLastRX(bs *process) int {
	m := regexp.MustCompile(`audio=(\d+)/(\d+)`).FindAllStringSubmatch(bs.out.String(), -1)
	if len(m) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(m[len(m)-1][2])
	return n
}

// dialBaresipCtrl connects to baresip's ctrl_tcp interface.
func dialBaresipCtrl(ctx context.Context, t *testing.T) net.Conn {
	t.Helper()
	var conn net.Conn
	addr := net.JoinHostPort(netnsAddrB, strconv.Itoa(baresipCtrlPort))
	err := waitFor(ctx, "baresip's ctrl_tcp port", func() bool {
		var err error
		conn, err = net.DialTimeout("tcp", addr, time.Second)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// baresipCommand runs a command through ctrl_tcp (netstring-framed JSON)
// and waits for baresip's response to it, skipping event messages.
func baresipCommand(t *testing.T, conn net.Conn, command string) {
	t.Helper()
	token := randomToken()
	msg, _ := json.Marshal(map[string]string{"command": command, "token": token})
	if _, err := fmt.Fprintf(conn, "%d:%s,", len(msg), msg); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	rd := bufio.NewReader(conn)
	for range 100 {
		head, err := rd.ReadString(':')
		if err != nil {
			t.Fatalf("baresip's response to %s: %v", command, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(head[:len(head)-1]))
		if err != nil || n < 0 || n > 1<<20 {
			t.Fatalf("baresip's ctrl_tcp framing: %q", head)
		}
		body := make([]byte, n+1) // the message and its ','
		if _, err := io.ReadFull(rd, body); err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Response bool   `json:"response"`
			OK       bool   `json:"ok"`
			Data     string `json:"data"`
			Token    string `json:"token"`
		}
		if json.Unmarshal(body[:n], &resp) != nil || !resp.Response || resp.Token != token {
			continue // an event
		}
		if !resp.OK {
			t.Fatalf("baresip refused %s: %s", command, resp.Data)
		}
		return
	}
	t.Fatalf("no response from baresip to %s", command)
}
