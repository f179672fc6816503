package media

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/securecall/securecall/sdp"
)

// hasRecvKey reports whether s can receive under version v.
func hasRecvKey(s *Session, v uint32) bool {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	return s.recvKeys[v]
}

// TestRotationUnderLoad sends 1,000 packets per second each way for three
// seconds while the KMS publishes five new versions, with 5% of the packets
// reordered and the sequence number wrapping in the middle. Every packet must
// arrive exactly once, with no authentication failure and no unknown MKI.
// It runs in a synctest bubble: its tickers and sleeps advance a fake clock,
// so the schedule is exact however loaded the machine is.
func TestRotationUnderLoad(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingKMS, sdp.KeyingHybrid} {
		t.Run(string(mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				keys := newFakeKeys(t, 1)
				ca, cb := memPair()
				ca.reorder, cb.reorder = 0.05, 0.05
				a, b := pairConfigs(t, mode, keys)
				a.RotationGrace, b.RotationGrace = 300*time.Millisecond, 300*time.Millisecond
				sa, sb := mustPair(t, ca, cb, a, b)

				const (
					total    = 3000
					perTick  = 10
					tick     = 10 * time.Millisecond
					startSeq = 65536 - total/2 // wraps half way
				)
				var wg sync.WaitGroup
				errs := make(chan error, 4)
				received := make([]map[uint32]int, 2)
				for i, pair := range [][2]*Session{{sa, sb}, {sb, sa}} {
					src, dst := pair[0], pair[1]
					ssrc := uint32(100 + i)
					received[i] = map[uint32]int{}
					got := received[i]
					wg.Add(2)
					go func() { // sender: 1,000 packets per second
						defer wg.Done()
						ticker := time.NewTicker(tick)
						defer ticker.Stop()
						payload := make([]byte, 160)
						for n := 0; n < total; {
							<-ticker.C
							for range perTick {
								h := RTPHeader{PayloadType: 0, SequenceNumber: uint16(startSeq + n), Timestamp: uint32(160 * n), SSRC: ssrc}
								payload[0], payload[1] = byte(n>>8), byte(n)
								if err := src.WriteRTP(h, payload); err != nil {
									errs <- fmt.Errorf("write %d: %w", n, err)
									return
								}
								n++
							}
						}
					}()
					go func() { // receiver
						defer wg.Done()
						buf := make([]byte, 1500)
						dst.SetReadDeadline(time.Now().Add(20 * time.Second))
						for len(got) < total {
							h, n, err := dst.ReadRTP(buf)
							if err != nil {
								errs <- fmt.Errorf("read after %d packets: %w", len(got), err)
								return
							}
							idx := uint32(buf[0])<<8 | uint32(buf[1])
							if n != 160 || uint16(startSeq+idx) != h.SequenceNumber || h.SSRC != ssrc {
								errs <- fmt.Errorf("packet %d: bad header %+v or length %d", idx, h, n)
								return
							}
							got[idx]++
							if got[idx] > 1 {
								errs <- fmt.Errorf("packet %d delivered twice", idx)
								return
							}
						}
					}()
				}
				// Five rotations, each published 300 ms before it activates.
				for v := uint32(2); v <= 6; v++ {
					time.Sleep(450 * time.Millisecond)
					activate := time.Now().Add(300 * time.Millisecond)
					keys.Publish(t, v, activate)
					for !hasRecvKey(sa, v) || !hasRecvKey(sb, v) {
						if time.Now().After(activate) {
							t.Fatalf("watcher did not install version %d before its activation", v)
						}
						time.Sleep(time.Millisecond)
					}
				}
				// Hold-backs at the very end have no later packet to follow.
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				for finished := false; !finished; {
					select {
					case <-done:
						finished = true
					case err := <-errs:
						t.Fatal(err)
					case <-time.After(50 * time.Millisecond):
						ca.flush()
						cb.flush()
					}
				}
				select {
				case err := <-errs:
					t.Fatal(err)
				default:
				}
				for i, s := range []*Session{sa, sb} {
					st := s.Stats()
					if st.AuthFailures != 0 || st.UnknownMKIDrops != 0 || st.ReplaysDropped != 0 || st.QueueDrops != 0 {
						t.Errorf("session %d: drops in %+v", i, st)
					}
					if st.SendKeyVersion != 6 {
						t.Errorf("session %d sends with version %d, want 6", i, st.SendKeyVersion)
					}
					for v := uint32(1); v <= 4; v++ {
						if hasRecvKey(s, v) {
							t.Errorf("session %d still has version %d installed after its grace period", i, v)
						}
					}
					if len(received[i]) != total {
						t.Errorf("direction %d: %d distinct packets, want %d", i, len(received[i]), total)
					}
				}
			})
		})
	}
}
