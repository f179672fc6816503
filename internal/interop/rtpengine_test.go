package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// rtpengine (Debian rtpengine-daemon), the open SBC media plane, started
// in the foreground on loopback with its own config and driven by its ng
// control protocol: bencoded dictionaries over UDP, each datagram
// "COOKIE SP BENCODE".

// bencode writes v (string, []byte, int, []any, map[string]any) in
// bencode, dictionary keys sorted as the format requires.
func bencode(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case string:
		fmt.Fprintf(b, "%d:%s", len(v), v)
	case []byte:
		fmt.Fprintf(b, "%d:%s", len(v), v)
	case int:
		fmt.Fprintf(b, "i%de", v)
	case []string:
		b.WriteByte('l')
		for _, e := range v {
			bencode(b, e)
		}
		b.WriteByte('e')
	case []any:
		b.WriteByte('l')
		for _, e := range v {
			bencode(b, e)
		}
		b.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('d')
		for _, k := range keys {
			bencode(b, k)
			bencode(b, v[k])
		}
		b.WriteByte('e')
	default:
		panic(fmt.Sprintf("bencode: %T", v))
	}
}

// bdecode reads one bencoded value: strings as string, integers as int64,
// lists as []any, dictionaries as map[string]any.
func bdecode(s []byte) (any, []byte, error) {
	if len(s) == 0 {
		return nil, nil, errors.New("bencode: truncated")
	}
	switch c := s[0]; {
	case c == 'i':
		end := bytes.IndexByte(s, 'e')
		if end < 0 {
			return nil, nil, errors.New("bencode: unterminated integer")
		}
		n, err := strconv.ParseInt(string(s[1:end]), 10, 64)
		return n, s[end+1:], err
	case c == 'l':
		var out []any
		s = s[1:]
		for len(s) > 0 && s[0] != 'e' {
			v, rest, err := bdecode(s)
			if err != nil {
				return nil, nil, err
			}
			out, s = append(out, v), rest
		}
		if len(s) == 0 {
			return nil, nil, errors.New("bencode: unterminated list")
		}
		return out, s[1:], nil
	case c == 'd':
		out := map[string]any{}
		s = s[1:]
		for len(s) > 0 && s[0] != 'e' {
			k, rest, err := bdecode(s)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, errors.New("bencode: dictionary key is not a string")
			}
			v, rest, err := bdecode(rest)
			if err != nil {
				return nil, nil, err
			}
			out[ks], s = v, rest
		}
		if len(s) == 0 {
			return nil, nil, errors.New("bencode: unterminated dictionary")
		}
		return out, s[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(s, ':')
		if colon < 0 {
			return nil, nil, errors.New("bencode: string without length")
		}
		n, err := strconv.Atoi(string(s[:colon]))
		if err != nil || n < 0 || colon+1+n > len(s) {
			return nil, nil, errors.New("bencode: bad string length")
		}
		return string(s[colon+1 : colon+1+n]), s[colon+1+n:], nil
	}
	return nil, nil, fmt.Errorf("bencode: unexpected %q", s[0])
}

// rtpEngine is one rtpengine process of a test.
type rtpEngine struct {
	proc *process
	ng   *net.UDPConn // connected to the ng port
}

// startRTPEngine runs rtpengine on loopback with a config in a temporary
// directory and a port range of its own, and waits until it answers ping.
func startRTPEngine(t *testing.T) *rtpEngine {
	t.Helper()
	path := needTool(t, "rtpengine", "rtpengine-daemon")
	dir := t.TempDir()
	ngPort := freePort(t, "udp")
	n, err := rand.Int(rand.Reader, big.NewInt(200))
	if err != nil {
		t.Fatal(err)
	}
	base := 20000 + int(n.Int64())*200
	conf := fmt.Sprintf(`[rtpengine]
table = -1
interface = 127.0.0.1
listen-ng = 127.0.0.1:%d
port-min = %d
port-max = %d
foreground = true
log-stderr = true
pidfile = %s
num-threads = 2
delete-delay = 0
log-level = 6
`, ngPort, base, base+199, filepath.Join(dir, "rtpengine.pid"))
	confPath := filepath.Join(dir, "rtpengine.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &rtpEngine{proc: startProcess(t, path, "--config-file="+confPath, "--config-section=rtpengine")}
	e.ng, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ngPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ng.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		r, err := e.command(map[string]any{"command": "ping"}, 200*time.Millisecond)
		if err == nil && r["result"] == "pong" {
			return e
		}
		select {
		case <-ctx.Done():
			t.Fatalf("rtpengine did not answer ping: %v", err)
		case <-e.proc.done:
			t.Fatalf("rtpengine exited: %v", e.proc.err)
		default:
		}
	}
}

// command sends one ng command and returns the answer.
func (e *rtpEngine) command(cmd map[string]any, timeout time.Duration) (map[string]any, error) {
	var cookie [8]byte
	rand.Read(cookie[:])
	ck := hex.EncodeToString(cookie[:])
	var b bytes.Buffer
	b.WriteString(ck + " ")
	bencode(&b, cmd)
	if _, err := e.ng.Write(b.Bytes()); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	deadline := time.Now().Add(timeout)
	for {
		e.ng.SetReadDeadline(deadline)
		n, err := e.ng.Read(buf)
		if err != nil {
			return nil, err
		}
		got, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok || string(got) != ck {
			continue // an answer to an earlier, timed-out command
		}
		v, _, err := bdecode(body)
		if err != nil {
			return nil, err
		}
		d, ok := v.(map[string]any)
		if !ok {
			return nil, errors.New("ng: answer is not a dictionary")
		}
		if d["result"] == "error" {
			return d, fmt.Errorf("ng: %v", d["error-reason"])
		}
		return d, nil
	}
}

// rtpengineLeg is one rtpengine call: an offer and an answer through it.
type rtpengineLeg struct {
	e      *rtpEngine
	callID string
}

// bridge runs offerer's offer through rtpengine to answerer and the
// answer back, with the ng flags of each direction, and waits until both
// Calls are connected.
func (l *rtpengineLeg) bridge(ctx context.Context, t *testing.T, offerer, answerer *callEndpoint, offerFlags, answerFlags map[string]any) {
	t.Helper()
	offer, err := offerer.Offer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cmd := map[string]any{"command": "offer", "call-id": l.callID, "from-tag": "caller", "sdp": offer}
	for k, v := range offerFlags {
		cmd[k] = v
	}
	r, err := l.e.command(cmd, 5*time.Second)
	if err != nil {
		t.Fatalf("ng offer: %v\noffer:\n%s", err, offer)
	}
	toCallee, _ := r["sdp"].(string)
	answer, err := answerer.Answer(ctx, toCallee)
	if err != nil {
		t.Fatalf("Answer: %v\nrtpengine's offer:\n%s", err, toCallee)
	}
	cmd = map[string]any{"command": "answer", "call-id": l.callID, "from-tag": "caller", "to-tag": "callee", "sdp": answer}
	for k, v := range answerFlags {
		cmd[k] = v
	}
	if r, err = l.e.command(cmd, 5*time.Second); err != nil {
		t.Fatalf("ng answer: %v\nanswer:\n%s", err, answer)
	}
	toCaller, _ := r["sdp"].(string)
	if err := offerer.SetAnswer(ctx, toCaller); err != nil {
		t.Fatalf("SetAnswer: %v\nrtpengine's answer:\n%s", err, toCaller)
	}
	errs := make(chan error, 2)
	for _, c := range []*callEndpoint{offerer, answerer} {
		go func() { errs <- c.Connect(ctx) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Connect: %v\nrtpengine's offer:\n%s\nrtpengine's answer:\n%s", err, toCallee, toCaller)
		}
	}
}

// packets returns the packets rtpengine received from the leg with tag,
// summed over its streams, from the ng query command.
func (l *rtpengineLeg) packets(t *testing.T, tag string) int64 {
	t.Helper()
	r, err := l.e.command(map[string]any{"command": "query", "call-id": l.callID}, 5*time.Second)
	if err != nil {
		t.Fatalf("ng query: %v", err)
	}
	tags, _ := r["tags"].(map[string]any)
	leg, _ := tags[tag].(map[string]any)
	var sum int64
	medias, _ := leg["medias"].([]any)
	for _, m := range medias {
		streams, _ := m.(map[string]any)["streams"].([]any)
		for _, s := range streams {
			stats, _ := s.(map[string]any)["stats"].(map[string]any)
			if n, ok := stats["packets"].(int64); ok {
				sum += n
			}
		}
	}
	return sum
}

// exchange sends audio both ways for a second and checks that each Call
// decrypted most of what the other sent, with no authentication failure,
// and that rtpengine counted packets from both legs.
func exchange(ctx context.Context, t *testing.T, leg *rtpengineLeg, a, b *callEndpoint) {
	t.Helper()
	ra, rb := startReceiver(ctx, a), startReceiver(ctx, b)
	sa, sb := startSender(a), startSender(b)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	errA, errB := rb.wait(wctx, 50), ra.wait(wctx, 50)
	sentA, _ := sa.close()
	sentB, _ := sb.close()
	if errA != nil || errB != nil {
		t.Fatalf("media through rtpengine: caller->callee %v, callee->caller %v (sent %d and %d)", errA, errB, sentA, sentB)
	}
	for _, c := range []*callEndpoint{a, b} {
		if st := c.Stats(); st.AuthFailures != 0 || st.RTPPacketsReceived < 50 {
			t.Errorf("stats: %d received, %d auth failures", st.RTPPacketsReceived, st.AuthFailures)
		}
	}
	if n := leg.packets(t, "caller"); n < 50 {
		t.Errorf("rtpengine counted %d packets from the caller", n)
	}
	if n := leg.packets(t, "callee"); n < 50 {
		t.Errorf("rtpengine counted %d packets from the callee", n)
	}
}

func newRTPEngineCall(t *testing.T, cfg securecall.Config) *callEndpoint {
	t.Helper()
	if cfg.ICE.InterfaceFilter == nil {
		lite := cfg.ICE.Lite
		cfg.ICE = loopbackICE()
		cfg.ICE.Lite = lite
	}
	cfg.Codecs = []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}}
	c, err := newCallEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func callID(t *testing.T) string {
	return strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()) + "-" + strconv.Itoa(os.Getpid())
}

// TestInteropRTPEngineLiteSBC: rtpengine as an ICE-Lite SBC between two
// Calls in dtls keying, each Call offering in turn, and a Lite Call
// offering (rtpengine then stays controlled, and the Lite Call's 487
// makes it switch).
func TestInteropRTPEngineLiteSBC(t *testing.T) {
	for _, tc := range []struct {
		name       string
		callerLite bool
		swap       bool
	}{
		{"first offers", false, false},
		{"second offers", false, true},
		{"Lite caller offers", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e := startRTPEngine(t)
			first := newRTPEngineCall(t, securecall.Config{Keying: sdp.KeyingDTLS})
			second := newRTPEngineCall(t, securecall.Config{Keying: sdp.KeyingDTLS})
			caller, callee := first, second
			if tc.swap {
				caller, callee = second, first
			}
			if tc.callerLite {
				caller = newRTPEngineCall(t, securecall.Config{Keying: sdp.KeyingDTLS, ICE: liteLoopback()})
			}
			leg := &rtpengineLeg{e: e, callID: callID(t)}
			// An SBC is ICE-Lite on both legs; against a Lite caller
			// rtpengine runs as a full agent, and stays controlled.
			flags := map[string]any{"ICE": "force", "ICE-lite": "both"}
			if tc.callerLite {
				flags = map[string]any{"ICE": "force"}
			}
			leg.bridge(ctx, t, caller, callee, flags, flags)
			exchange(ctx, t, leg, caller, callee)
			if want := !tc.callerLite; caller.Path().RemoteLite != want || callee.Path().RemoteLite != want {
				t.Errorf("Path().RemoteLite: caller %t, callee %t; want %t", caller.Path().RemoteLite, callee.Path().RemoteLite, want)
			}
		})
	}
}

func liteLoopback() (c ice.Config) {
	c = loopbackICE()
	c.Lite = true
	return c
}

// TestInteropRTPEngineWebRTCToSIP: a WebRTC leg (ICE + DTLS-SRTP) to a SIP
// leg that is a Call with sdes keying and no ICE (RTP/SAVP), and (c) the
// border-element shape on the SIP leg: ICE-Lite + RTP/SAVP + a=crypto.
func TestInteropRTPEngineWebRTCToSIP(t *testing.T) {
	for _, tc := range []struct {
		name string
		ice  string
	}{
		{"SIP leg without ICE", "remove"},
		{"border element: ICE-Lite with SDES", "force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e := startRTPEngine(t)
			webrtc := newRTPEngineCall(t, securecall.Config{Keying: sdp.KeyingDTLS})
			sip := newRTPEngineCall(t, securecall.Config{Keying: sdp.KeyingSDES})
			leg := &rtpengineLeg{e: e, callID: callID(t)}
			toSIP := map[string]any{"ICE": tc.ice, "DTLS": "off", "transport-protocol": "RTP/SAVP", "rtcp-mux": []string{"demux"}}
			toWebRTC := map[string]any{"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "rtcp-mux": []string{"offer"}}
			leg.bridge(ctx, t, webrtc, sip, toSIP, toWebRTC)
			exchange(ctx, t, leg, webrtc, sip)
			if p := sip.Path(); p.NoICE != (tc.ice == "remove") {
				t.Errorf("SIP leg path: %+v", p)
			}
			if sip.Keying() != sdp.KeyingSDES || webrtc.Keying() != sdp.KeyingDTLS {
				t.Errorf("keying: SIP leg %s, WebRTC leg %s", sip.Keying(), webrtc.Keying())
			}
		})
	}
}
