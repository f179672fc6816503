package media

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"
)

// HeldPacketLimit bounds the packets a session holds while it fetches a
// key version it met in an MKI but does not have (see [KeyFetcher]): 64
// packets, 1.3 s of 20 ms audio, at most 64 × MaxPacketSize bytes. When
// the hold is full the oldest held packet is dropped and counted in
// Stats.UnknownMKIDrops; so are all held packets when the fetch fails,
// those under a version that falls below the newest installed one (no
// fetch asks for it any more) and those still held when the session
// closes. Packets are held only while a fetch runs: after a failed one,
// packets under a missing version are dropped as before until the next
// attempt; after a successful one, those held under a newer version, met
// while it ran, get the next fetch at once. Held packets are decrypted as soon as their version is
// installed, by the fetch, the key watch or InstallKey, before any packet
// read later can use that version.
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
	held     []heldMKIPacket // still protected, under versions not installed
	inFlight bool
	nextTry  time.Time     // no new fetch before
	retry    time.Duration // the wait after the next failure

	// Held packets decrypted when their version was installed
	// (openHeldLocked), in the order they were read, for releaseHeld:
	// queued for the queues, pushed for OnRTP (RTP when the session
	// pushes). pushPending says that pushed is not empty, for the push
	// path's look without recvMu.
	queued, pushed []*packetBuf
	pushPending    atomic.Bool
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
	// closed is read under recvMu, which Close takes once before it
	// waits: a fetch started here is one Close waits for.
	if f.fetcher == nil || s.closed.Load() {
		return false
	}
	end := len(raw) - trailer
	if end < mkiLen+12 {
		return false
	}
	v := binary.BigEndian.Uint32(raw[end-mkiLen : end])
	newest := s.newestHeldLocked()
	if v <= newest || v <= s.removedUpTo || v-newest > fetchAhead || s.withdrawnLocked(v) {
		return false
	}
	if !f.inFlight && !s.startFetchLocked(v) {
		return false
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

// startFetchLocked starts the fetch of version v, unless a failed fetch
// was too recent; it reports whether it started one. recvMu is held, no
// fetch is in flight, and the session was open when the caller looked:
// Close takes recvMu once before it waits for the fetch.
func (s *Session) startFetchLocked(v uint32) bool {
	f := &s.fetch
	if s.cfg.Clock().Before(f.nextTry) {
		return false
	}
	f.inFlight = true
	s.wg.Add(1)
	go s.fetchVersion(v)
	return true
}

// fetchHeldLocked runs when a fetch succeeded and its install opened the
// packets it held (recvMu held). What is still held is under newer
// versions, met while it ran: the oldest of them is fetched next, at once,
// rather than when a further packet under it arrives, which may never
// happen. This adds no fetch a packet would not start: one runs at a time,
// and only a successful one is followed at once. Packets are held only
// while a fetch runs, so if none can start they are dropped and counted.
func (s *Session) fetchHeldLocked() {
	f := &s.fetch
	if len(f.held) == 0 || s.closed.Load() {
		return // Close counts what is held (freeHeld)
	}
	v := f.held[0].version
	for _, h := range f.held[1:] {
		v = min(v, h.version)
	}
	if !s.startFetchLocked(v) {
		s.dropHeldLocked()
	}
}

// fetchVersion fetches version v, installs it (which decrypts the packets
// held for it) and releases them.
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
		s.releaseHeld() // what an install opened meanwhile; the rest is dropped
		s.dropHeld()
		return
	}
	f.retry = 0
	s.stats.keyFetches.Add(1)
	s.fetchHeldLocked()
	s.recvMu.Unlock()
	s.releaseHeld()
}

// openHeldLocked runs when a version is installed for receiving, in the
// critical section that installs it (recvMu held): it decrypts the packets
// held for it, in order, before any packet read later can use the
// version. A live packet decrypted first would move the replay window
// past them, and after enough of them the held ones would be taken for
// replays. It also drops and counts the held packets whose version is now
// below the newest installed one: holdLocked no longer holds such a
// version, so no fetch will ever ask for it. What it decrypts waits for
// releaseHeld.
func (s *Session) openHeldLocked() {
	f := &s.fetch
	if len(f.held) == 0 {
		return
	}
	newest := s.newestHeldLocked()
	keep := f.held[:0]
	for _, h := range f.held {
		switch {
		case s.recvKeys[h.version]:
			s.openLocked(h)
		case h.version <= newest:
			putPacket(h.b)
			s.stats.unknownMKI.Add(1)
		default:
			keep = append(keep, h)
		}
	}
	clear(f.held[len(keep):])
	f.held = keep
}

// openLocked decrypts one held packet in place and keeps it for
// releaseHeld, or drops and counts it (recvMu held). An RTP packet goes
// into the receive statistics here, accepted or refused as a replay, in
// the order SRTP saw it: a copy of it refused later, held or live, is
// then known for a duplicate.
func (s *Session) openLocked(h heldMKIPacket) {
	var out []byte
	var err error
	kind := classify(h.b.data)
	if kind == kindRTP {
		out, err = s.recv.DecryptRTP(h.b.data, h.b.data, &s.rHdr)
	} else {
		out, err = s.recv.DecryptRTCP(h.b.data, h.b.data, &s.rcHdr)
	}
	if err != nil {
		if kind == kindRTP {
			s.countRTPDrop(h.b.data, err)
		} else {
			s.countDrop(err)
		}
		putPacket(h.b)
		return
	}
	s.noteVersionLocked(h.version)
	s.stats.authOK.Add(1)
	h.b.data = out
	f := &s.fetch
	if kind == kindRTP {
		s.q.noteRTPAt(out, s.q.sinceEpoch())
	}
	if kind == kindRTP && s.pushing() {
		f.pushed = append(f.pushed, h.b)
		f.pushPending.Store(true)
		return
	}
	f.queued = append(f.queued, h.b)
}

// releaseHeld hands the held packets that openHeldLocked decrypted to
// their readers, in order, waiting for room in the queues. releaseMu
// serializes the goroutines that release (the fetch's, the key watch's,
// InstallKey's), so that what one took is delivered before what the next
// takes. No caller holds rtpMu: the push to OnRTP takes it.
func (s *Session) releaseHeld() {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	s.recvMu.Lock()
	ready := s.fetch.queued
	s.fetch.queued = nil
	push := s.fetch.pushPending.Load()
	s.recvMu.Unlock()
	if (len(ready) > 0 || push) && s.dtlsLive.Load() {
		// Outside rtpMu: retiring may wait for pion/dtls's goroutines.
		s.retireOnAuthentic()
	}
	if push {
		s.rtpMu.Lock()
		s.pushOpenedLocked()
		s.rtpMu.Unlock()
	}
	for i, b := range ready {
		if !s.queueOpened(b) {
			for _, r := range ready[i+1:] {
				putPacket(r)
			}
			return
		}
	}
}

// pushOpenedLocked hands the decrypted held RTP packets to OnRTP (rtpMu
// held). pushRTP runs it before it hands over a packet of its own, so
// that no packet decrypted after them reaches OnRTP before them.
func (s *Session) pushOpenedLocked() {
	if !s.fetch.pushPending.Load() {
		return
	}
	s.recvMu.Lock()
	ready := s.fetch.pushed
	s.fetch.pushed = nil
	s.fetch.pushPending.Store(false)
	s.recvMu.Unlock()
	for _, b := range ready {
		if !s.closed.Load() {
			s.reportIfDueAt(s.q.sinceEpoch()) // openLocked noted it
			s.onRTPLocked(b.data)
		}
		putPacket(b)
	}
}

// queueOpened queues one decrypted held packet for its reader, blocking
// until the reader makes room or the session closes. It reports false
// once closed.
func (s *Session) queueOpened(b *packetBuf) bool {
	var q chan *packetBuf
	switch classify(b.data) {
	case kindRTP:
		s.reportIfDueAt(s.q.sinceEpoch()) // openLocked noted it
		q = s.rtpQ
	default:
		s.afterRTCPReceived(b.data)
		if b.data = s.takeAttestations(b.data); len(b.data) == 0 {
			putPacket(b)
			return true // only attestations: nothing for ReadRTCP
		}
		q = s.rtcpQ
	}
	select {
	case q <- b:
		return true
	case <-s.done:
		putPacket(b)
		return false
	}
}

// releaseLater runs releaseHeld on a goroutine of the session's own when
// an install opened held packets: InstallKey's caller may be OnRTP, which
// holds rtpMu, or the only reader of a queue that releaseHeld waits on.
// The check of closed and wg.Add are under recvMu, which Close takes
// before it waits for the session's goroutines.
func (s *Session) releaseLater() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if s.closed.Load() || (len(s.fetch.queued) == 0 && !s.fetch.pushPending.Load()) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.releaseHeld()
	}()
}

// dropHeld drops the held packets and counts them, unless a new fetch
// runs for them.
func (s *Session) dropHeld() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if !s.fetch.inFlight {
		s.dropHeldLocked()
	}
}

// dropHeldLocked drops the held packets and counts them (recvMu held).
func (s *Session) dropHeldLocked() {
	for _, h := range s.fetch.held {
		putPacket(h.b)
		s.stats.unknownMKI.Add(1)
	}
	s.fetch.held = nil
}

// freeHeld returns every held packet to the pool once the session's
// goroutines are gone; Close and abort call it. A packet still protected
// is counted as dropped, as when a fetch fails: its key never came. One
// already decrypted is not, as a packet left in a queue is not.
func (s *Session) freeHeld() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	f := &s.fetch
	s.dropHeldLocked()
	for _, q := range [][]*packetBuf{f.queued, f.pushed} {
		for _, b := range q {
			putPacket(b)
		}
	}
	f.queued, f.pushed = nil, nil
	f.pushPending.Store(false)
}
