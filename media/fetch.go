package media

import (
	"context"
	"encoding/binary"
	"errors"
	"time"
)

// HeldPacketLimit bounds the packets a session holds while it fetches a
// key version it met in an MKI but does not have (see [KeyFetcher]): 64
// packets, 1.3 s of 20 ms audio, at most 64 × MaxPacketSize bytes. When
// the hold is full the oldest held packet is dropped and counted in
// Stats.UnknownMKIDrops; so are all held packets when the fetch fails.
// Packets are held only while a fetch runs: after a failed one, packets
// under a missing version are dropped as before until the next attempt.
const HeldPacketLimit = 64

// Pacing of on-demand fetches: an MKI is not authenticated before the
// packet is, so a forged one must not turn into a flood of KMS requests.
// At most one fetch runs at a time, a failed one is retried no sooner
// than fetchRetryInterval, doubling with each further failure up to
// fetchRetryMax, and only versions up to fetchAhead past the newest
// installed one are fetched.
const (
	fetchRetryInterval = time.Second
	fetchRetryMax      = 30 * time.Second
	fetchTimeout       = 5 * time.Second
	fetchAhead         = 16
)

// heldMKIPacket is an SRTP or SRTCP packet under a version being fetched.
type heldMKIPacket struct {
	b       *packetBuf
	version uint32
}

// fetchState is the on-demand fetch bookkeeping; recvMu guards it.
type fetchState struct {
	fetcher  KeyFetcher
	held     []heldMKIPacket
	inFlight bool
	nextTry  time.Time     // no new fetch before
	retry    time.Duration // the wait after the next failure
}

// newestHeldLocked returns the newest version installed for receiving
// (recvMu held).
func (s *Session) newestHeldLocked() uint32 {
	var v uint32
	for k := range s.recvKeys {
		v = max(v, k)
	}
	return v
}

// holdLocked keeps raw, whose MKI names a version the session does not
// have, when that version is newer than every installed one and a
// KeyFetcher can fetch it, and starts the fetch. It reports whether raw
// was held (recvMu held).
func (s *Session) holdLocked(raw []byte, trailer int) bool {
	f := &s.fetch
	if f.fetcher == nil || s.closed.Load() {
		return false
	}
	end := len(raw) - trailer
	if end < mkiLen+12 {
		return false
	}
	v := binary.BigEndian.Uint32(raw[end-mkiLen : end])
	newest := s.newestHeldLocked()
	if v <= newest || v <= s.removedUpTo || v-newest > fetchAhead {
		return false
	}
	now := s.cfg.Clock()
	if !f.inFlight {
		if now.Before(f.nextTry) {
			return false
		}
		f.inFlight = true
		s.wg.Add(1)
		go s.fetchVersion(v)
	}
	if len(f.held) >= HeldPacketLimit {
		putPacket(f.held[0].b)
		f.held = append(f.held[:0], f.held[1:]...)
		s.stats.unknownMKI.Add(1)
	}
	f.held = append(f.held, heldMKIPacket{b: copyPacket(raw), version: v})
	s.stats.held.Add(1)
	return true
}

// fetchVersion fetches version v, installs it and releases the packets
// held for it.
func (s *Session) fetchVersion(v uint32) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.life, fetchTimeout)
	defer cancel()
	s.log.Debug("media: fetching key version met in an MKI", "version", v)
	k, err := s.fetch.fetcher.FetchVersion(ctx, s.cfg.KeyURI, v)
	if err == nil && k.Version != v {
		err = errors.New("media: key source returned another version")
	}
	if err == nil {
		err = s.installKey(k, s.cfg.Clock())
	}
	clear(k.Key)
	s.recvMu.Lock()
	f := &s.fetch
	f.inFlight = false
	if err != nil {
		if f.retry == 0 {
			f.retry = fetchRetryInterval
		}
		f.nextTry = s.cfg.Clock().Add(f.retry)
		f.retry = min(2*f.retry, fetchRetryMax)
		s.recvMu.Unlock()
		if s.closed.Load() {
			return
		}
		s.log.Warn("media: fetch of key version met in an MKI failed", "version", v, "err", err)
		s.releaseHeld() // what another version's key opens; the rest is dropped
		s.dropHeld()
		return
	}
	f.retry = 0
	s.stats.keyFetches.Add(1)
	s.recvMu.Unlock()
	s.releaseHeld()
}

// releaseHeld unprotects the held packets now that a key arrived and hands
// them to their readers, waiting for room in the queues; packets whose
// version is still missing stay held.
func (s *Session) releaseHeld() {
	s.recvMu.Lock()
	var ready, keep []heldMKIPacket
	for _, h := range s.fetch.held {
		if s.recvKeys[h.version] {
			ready = append(ready, h)
		} else {
			keep = append(keep, h)
		}
	}
	s.fetch.held = keep
	s.recvMu.Unlock()
	for i, h := range ready {
		if !s.deliverHeld(h.b) {
			for _, r := range ready[i+1:] {
				putPacket(r.b)
			}
			return
		}
	}
}

// deliverHeld unprotects one held packet and queues it, blocking until its
// reader makes room or the session closes. It reports false once closed.
func (s *Session) deliverHeld(b *packetBuf) bool {
	defer putPacket(b)
	if s.pushing() && classify(b.data) == kindRTP {
		if s.closed.Load() {
			return false
		}
		s.pushRTP(b.data)
		return true
	}
	out := getPacket()
	var ok bool
	var q chan *packetBuf
	switch classify(b.data) {
	case kindRTP:
		out.data, ok = s.unprotectRTP(out.buf[:0], b.data)
		q = s.rtpQ
	case kindRTCP:
		out.data, ok = s.unprotectRTCP(out.buf[:0], b.data)
		q = s.rtcpQ
	}
	if !ok {
		putPacket(out)
		return true
	}
	select {
	case q <- out:
		return true
	case <-s.done:
		putPacket(out)
		return false
	}
}

// dropHeld drops the held packets and counts them, unless a new fetch
// runs for them.
func (s *Session) dropHeld() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if s.fetch.inFlight {
		return
	}
	for _, h := range s.fetch.held {
		putPacket(h.b)
		s.stats.unknownMKI.Add(1)
	}
	s.fetch.held = nil
}

// freeHeld returns every held packet to the pool; Close calls it.
func (s *Session) freeHeld() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	for _, h := range s.fetch.held {
		putPacket(h.b)
	}
	s.fetch.held = nil
}
