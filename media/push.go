package media

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Push delivery (Config.OnRTP). The session hands each authenticated RTP
// packet to OnRTP on the goroutine that delivers the datagram, instead of
// queueing it for ReadRTP:
//
//   - On a transport that pushes (datagramPusher: the conns of an
//     ice.Endpoint), that is for datagrams from the network the
//     transport's own reader: the datagram is unprotected in the
//     transport's buffer and handed over with no copy, no queue and no
//     goroutine of the session's. A datagram from another call on the same
//     Endpoint comes on the Endpoint's hand-over goroutine, in a pooled
//     copy; one that arrives while another goroutine delivers to this
//     session is delivered by that goroutine next.
//   - On any other transport, one goroutine of the session reads it
//     (pushLoop).
//   - Media that arrived before the keys: the goroutine calling NewSession
//     (markReady), before the session's owner has it.
//   - A packet held while its key version was fetched: decrypted when the
//     version is installed (openHeldLocked), then pushed by the fetch's
//     goroutine, the key watch's, the one InstallKey starts (releaseLater)
//     or the goroutine delivering the next packet (pushRTP), whichever
//     takes rtpMu first.
//
// RTCP and DTLS go where they go in the pull mode: RTCP to ReadRTCP's queue,
// DTLS to pion/dtls.

// datagramPusher is implemented by transports that can hand each datagram
// to the session on their own reader goroutine, such as the conns of an
// ice.Endpoint. PushDatagrams makes the transport call deliver with every
// datagram from then on, those it had queued first, never concurrently and
// in the order received; b is valid only until deliver returns. When the
// transport stops delivering (its Close, or its path failing) it calls end
// once with the reason. Reads on the transport are not used afterwards.
type datagramPusher interface {
	PushDatagrams(deliver func(b []byte), end func(err error))
}

// pushState is the session's side of push delivery.
type pushState struct {
	pusher  datagramPusher // the conn, if it pushes and OnRTP is set
	endOnce sync.Once
	ended   chan struct{} // closed when the transport stopped delivering
	endErr  error         // why; written before ended is closed

	retiring atomic.Bool // retireLater has run
	retireMu sync.Mutex  // orders retireLater's goroutine before Close's wait
}

// retireOnAuthentic retires the DTLS association once the first packet
// from the peer authenticates (see retireDTLS): on the reading goroutine,
// unless that is a pusher's, which serves other calls too.
func (s *Session) retireOnAuthentic() {
	if s.push.pusher == nil {
		s.retireDTLS()
		return
	}
	s.retireLater()
}

// retireLater runs retireDTLS on a goroutine of its own: pion/dtls's Close
// waits for its goroutines to end, which on a busy machine may take a while
// that an Endpoint's reader must not spend.
func (s *Session) retireLater() {
	if !s.push.retiring.CompareAndSwap(false, true) {
		return
	}
	s.push.retireMu.Lock()
	defer s.push.retireMu.Unlock()
	if s.closed.Load() {
		return // Close retires it
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.retireDTLS()
	}()
}

// pushing reports whether the session delivers RTP to OnRTP.
func (s *Session) pushing() bool { return s.cfg.OnRTP != nil }

// endReads records that the transport delivers nothing more, so that
// ReadRTCP returns err rather than wait for ever.
func (s *Session) endReads(err error) {
	s.push.endOnce.Do(func() {
		if err == nil {
			err = net.ErrClosed
		}
		s.push.endErr = err
		close(s.push.ended)
	})
}

// onDatagram is the pusher's deliver: one datagram off the transport,
// before or after the keys are in.
func (s *Session) onDatagram(raw []byte) {
	if s.closed.Load() {
		return
	}
	if len(raw) > MaxPacketSize {
		// As in readRaw: longer than any packet a session accepts.
		s.stats.malformed.Add(1)
		return
	}
	switch classify(raw) {
	case kindDTLS:
		s.toDTLS(raw)
	case kindRTP, kindRTCP:
		if !s.readyNow.Load() {
			s.earlyMu.Lock()
			if !s.ready {
				s.queueEarlyLocked(raw)
				s.earlyMu.Unlock()
				return
			}
			// markReady has drained the early queue under earlyMu: this
			// packet follows the early ones.
			s.deliverMedia(raw, true)
			s.earlyMu.Unlock()
			return
		}
		s.deliverMedia(raw, true)
	default:
		s.stats.malformed.Add(1)
	}
}

// queueEarlyLocked keeps a copy of a media datagram that arrived before the
// keys, or drops and counts it when the early queue is full. earlyMu is
// held.
func (s *Session) queueEarlyLocked(raw []byte) {
	b := copyPacket(raw)
	select {
	case s.earlyQ <- b:
	default:
		s.stats.queueDrops.Add(1)
		putPacket(b)
	}
}

// deliverMedia passes on an SRTP or SRTCP datagram that arrived with the
// keys in: RTP to OnRTP when the session pushes, everything else to its
// reader's queue. raw is the caller's to unprotect in place. justRead says
// that raw is the datagram the transport returned last, so that a latching
// transport may be told it authenticated (SourceLatcher).
func (s *Session) deliverMedia(raw []byte, justRead bool) {
	var ok bool
	if s.pushing() && classify(raw) == kindRTP {
		ok = s.pushRTP(raw)
	} else {
		ok = s.routeToQueue(raw)
	}
	if ok && justRead {
		s.noteAuthentic()
	}
}

// pushRTP unprotects an SRTP packet in place and hands it to OnRTP; it
// reports whether the packet authenticated. rtpMu serializes OnRTP
// (ReadRTP, which it guards otherwise, is not used) and lets Close wait
// for a call in progress.
func (s *Session) pushRTP(raw []byte) bool {
	out, ok := s.unprotectRTP(raw, raw)
	if !ok {
		return false
	}
	s.rtpMu.Lock()
	defer s.rtpMu.Unlock()
	if s.closed.Load() {
		return true
	}
	// Held packets decrypted when their version was installed go first:
	// out was decrypted after them.
	s.pushOpenedLocked()
	s.onRTPLocked(out)
	return true
}

// onRTPLocked parses an authenticated RTP packet and hands it to OnRTP
// (rtpMu held, the session open).
func (s *Session) onRTPLocked(out []byte) {
	var h RTPHeader
	body, err := parseRTP(out, &h, &s.lists)
	if err != nil {
		// Authenticated but malformed: the peer's bug, as in ReadRTP.
		s.stats.malformed.Add(1)
		return
	}
	s.stats.rtpRecv.Add(1)
	s.stats.rtpBytesRecv.Add(uint64(len(body)))
	s.cfg.OnRTP(h, body)
}

// pushLoop reads a transport that does not push, for as long as the
// session lives, and delivers what it reads. It holds the read token for
// good, so ReadRTCP only ever waits on its queue.
func (s *Session) pushLoop() {
	defer s.wg.Done()
	select {
	case s.tok <- struct{}{}:
	case <-s.done:
		return
	}
	defer s.release()
	failures := 0
	for {
		raw, err := s.readRaw()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				s.endReads(err)
				return
			}
			// Transient, as in next: the next datagram may be fine. A
			// ReadRTP that meets maxReadFailures in a row returns, and the
			// application's next call reads on; this loop has no caller to
			// return to, so it reads on itself, after a pause, so that a
			// transport that only fails (a dead peer's ICMP errors) does
			// not keep it spinning.
			s.log.Debug("media: transport read", "err", err)
			if failures++; failures >= maxReadFailures {
				failures = 0
				if !s.pause(readFailurePause) {
					s.endReads(err)
					return
				}
			}
			continue
		}
		failures = 0
		switch classify(raw) {
		case kindDTLS:
			s.toDTLS(raw)
		case kindRTP, kindRTCP:
			s.deliverMedia(raw, true)
		default:
			s.stats.malformed.Add(1)
		}
		s.dropRaw()
	}
}

// readFailurePause is how long pushLoop waits after maxReadFailures read
// errors in a row before it reads on.
const readFailurePause = 10 * time.Millisecond

// pause waits for d, or until Close; it reports false when the session
// closed.
func (s *Session) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// queued returns the next packet from q when the session pushes: the
// transport is read by its pusher or pushLoop, never by the caller.
func (s *Session) queued(q chan *packetBuf, op string) ([]byte, *packetBuf, error) {
	for {
		if s.closed.Load() {
			return nil, nil, errClosed(op)
		}
		select {
		case b := <-q:
			return b.data, b, nil
		default:
		}
		select {
		case b := <-q:
			return b.data, b, nil
		case <-s.rdl.wait():
			if s.rdl.exceeded() {
				return nil, nil, fmt.Errorf("media: %s: %w", op, os.ErrDeadlineExceeded)
			}
		case <-s.done:
			return nil, nil, errClosed(op)
		case <-s.push.ended:
			select {
			case b := <-q:
				return b.data, b, nil
			default:
			}
			return nil, nil, fmt.Errorf("media: %s: %w", op, s.push.endErr)
		}
	}
}
