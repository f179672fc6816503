package media

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/securecall/securecall/sdp"
)

// pauseAtLog is a slog.Handler that stops the first goroutine to log msg
// until release is closed: the session logs the peer's BYE after it looked
// at closed and before it calls OnBye, so this holds a datagram in flight
// at the point where a racing Close would overtake it.
type pauseAtLog struct {
	msg     string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newPauseAtLog(msg string) *pauseAtLog {
	return &pauseAtLog{msg: msg, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *pauseAtLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *pauseAtLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() {
			close(h.entered)
			<-h.release
		})
	}
	return nil
}

func (h *pauseAtLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *pauseAtLog) WithGroup(string) slog.Handler      { return h }

// byeWithAttestation is a compound RTCP packet of a BYE from ssrc and an
// attestation: one datagram that calls OnBye, then OnPeerAttestation.
func byeWithAttestation(t *testing.T, ssrc uint32) []byte {
	t.Helper()
	app, err := marshalAttestation(Attestation{SSRC: ssrc, Type: sdp.CandidateHost, Protocol: "udp",
		Address: netip.MustParseAddrPort("192.0.2.1:5000")}, 1)
	if err != nil {
		t.Fatal(err)
	}
	bye := []byte{0x81, rtcpTypeBYE, 0, 1, byte(ssrc >> 24), byte(ssrc >> 16), byte(ssrc >> 8), byte(ssrc)}
	return append(bye, app...)
}

// No callback of a session runs once Close has returned, whichever
// goroutine handles the datagram that calls it: Close waits for OnBye and
// OnPeerAttestation calls in progress, and a datagram still being handled
// when Close returns calls neither. An application may free what its
// callbacks use once Close returns. The datagram is held in flight either
// before OnBye (where the session logs the BYE) or inside it, while Close
// runs on another goroutine; in a synctest bubble, so that "Close has not
// returned" is known once every goroutine is blocked, not guessed after a
// sleep.
func TestSessionCloseWaitsForRTCPCallbacks(t *testing.T) {
	for _, transport := range []string{"transport-pushes", "own-reader", "ReadRTCP"} {
		for _, pause := range []string{"before-OnBye", "in-OnBye"} {
			t.Run(transport+"/"+pause, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					testCloseWaitsForRTCPCallbacks(t, transport, pause == "in-OnBye")
				})
			})
		}
	}
}

func testCloseWaitsForRTCPCallbacks(t *testing.T, transport string, inOnBye bool) {
	ma, mb := memPair()
	a, b := pairConfigs(t, sdp.KeyingKMS, newFakeKeys(t, 1))
	a.RTCP.Disabled = true // the test's compound packet is the only RTCP
	var (
		closeReturned atomic.Bool
		byeAfter      atomic.Bool
		attestAfter   atomic.Bool
		byeEntered    = make(chan struct{})
		byeRelease    = make(chan struct{})
	)
	logGate := newPauseAtLog("media: peer sent RTCP BYE")
	if inOnBye {
		close(logGate.release)
	}
	b.Logger = slog.New(logGate)
	b.RTCP.OnBye = func(string) {
		if closeReturned.Load() {
			byeAfter.Store(true)
		}
		if inOnBye {
			close(byeEntered)
			<-byeRelease
		}
	}
	b.OnPeerAttestation = func(Attestation) {
		if closeReturned.Load() {
			attestAfter.Store(true)
		}
	}
	var conn net.Conn = mb
	var pc *pushingConn
	if transport != "ReadRTCP" {
		b.OnRTP = func(RTPHeader, []byte) {}
	}
	if transport == "transport-pushes" {
		pc = newPushingConn(mb)
		conn = pc
	}
	sa, sb := mustPair(t, ma, conn, a, b)
	readDone := make(chan struct{})
	if transport == "ReadRTCP" {
		go func() {
			defer close(readDone)
			buf := make([]byte, 1500)
			for {
				if _, err := sb.ReadRTCP(buf); err != nil {
					return
				}
			}
		}()
	} else {
		close(readDone)
	}
	if err := sa.WriteRTCP(byeWithAttestation(t, 0x1234)); err != nil {
		t.Fatal(err)
	}
	if inOnBye {
		<-byeEntered
	} else {
		<-logGate.entered
	}
	var closeErr error
	closeDone := make(chan struct{})
	go func() {
		closeErr = sb.Close()
		closeReturned.Store(true)
		close(closeDone)
	}()
	synctest.Wait()
	select {
	case <-closeDone:
		if inOnBye {
			t.Error("Close returned while OnBye ran")
		}
	default:
	}
	close(byeRelease)
	if !inOnBye {
		close(logGate.release)
	}
	<-closeDone
	if closeErr != nil {
		t.Fatal(closeErr)
	}
	<-readDone
	if pc != nil {
		pc.wait() // the datagram in flight is handled by now
	}
	synctest.Wait()
	if byeAfter.Load() {
		t.Error("OnBye was called after Close returned")
	}
	if attestAfter.Load() {
		t.Error("OnPeerAttestation was called after Close returned")
	}
}
