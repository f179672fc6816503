package ice

import (
	"container/heap"
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pice "github.com/pion/ice/v3"
)

// consentTick is how often the Endpoint's consent goroutine looks for
// parked Transports with something due: it bounds how late a check is sent
// or a silence is noticed. One timer per Endpoint, not per call, and at
// each tick only the Transports with a check or a silence due (see
// consentQueue).
const consentTick = 100 * time.Millisecond

// consentSession keeps a connected Transport's path alive after its pion
// agent is closed ("parked"): it answers the peer's authenticated binding
// requests and sends its own every KeepaliveInterval (+-20% jitter), on
// the Endpoint's reader and consent goroutines, as RFC 7675 asks. Only
// authenticated STUN (a response to one of its requests, or a request
// from the peer, on the selected 5-tuple) counts as the peer's consent;
// media does not (it is not authenticated at this layer).
type consentSession struct {
	use         *endpointUse
	localUfrag  string
	localPwd    string
	remoteUfrag string
	remotePwd   string
	remote      netip.AddrPort
	controlling bool
	lite        bool // a Lite side answers but sends no checks
	tieBreaker  uint64
	priority    uint32
	interval    time.Duration
	disc, fail  time.Duration
	report      func(pice.ConnectionState) // the Transport's consentState, for its generation
	// localMAC checks the peer's checks and signs the answers (localPwd),
	// remoteMAC signs the checks and checks the answers (remotePwd).
	localMAC, remoteMAC stunMAC

	heard   atomic.Int64 // unix ns of the last consent from the peer
	stopped atomic.Bool  // no more checks or answers
	// reportMu is held while report runs; closed says the Transport
	// stopped the session, after which report is not called.
	reportMu sync.Mutex
	closed   atomic.Bool

	// Only the consent goroutine touches these.
	next time.Time
	wake time.Time // when the session next needs a step (consentQueue)
	down bool
	txID [12]byte
}

func (cs *consentSession) sameTuple(src netip.AddrPort) bool {
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) == cs.remote
}

// onRequest answers an authenticated binding request for the parked
// Transport; runs on the Endpoint's reader (or a writer in the process).
// The Endpoint has verified b's MESSAGE-INTEGRITY with the local password
// (dispatchSTUN), so it is not verified again here.
func (cs *consentSession) onRequest(b []byte, src netip.AddrPort) {
	if cs.stopped.Load() {
		return
	}
	if binary.BigEndian.Uint16(b[0:2]) != stunBindingRequest || !fingerprintOK(b) {
		return
	}
	if un, ok := stunAttr(b, attrUsername); !ok || !usernameIs(un, cs.localUfrag, cs.remoteUfrag) {
		return
	}
	var id [12]byte
	copy(id[:], b[8:20])
	buf := stunBufs.Get().(*stunBuf)
	defer stunBufs.Put(buf)
	resp := cs.appendConsentAnswer(buf[:0], id, src)
	if cs.sameTuple(src) {
		cs.heard.Store(time.Now().UnixNano())
	}
	_ = cs.use.e.write(resp, src, cs.use)
}

// onResponse takes the response to one of the session's requests, whose
// MESSAGE-INTEGRITY (with the peer's password) the Endpoint has verified.
func (cs *consentSession) onResponse(b []byte, src netip.AddrPort) {
	if cs.stopped.Load() || !cs.sameTuple(src) {
		return
	}
	if binary.BigEndian.Uint16(b[0:2]) != stunBindingSuccess || !fingerprintOK(b) {
		return
	}
	cs.heard.Store(time.Now().UnixNano())
}

// newTransactionID returns a random transaction ID for a consent check;
// only the consent goroutine calls it.
func (cs *consentSession) newTransactionID() ([12]byte, error) {
	// In cs rather than on the stack, which crypto/rand.Read makes escape
	// under the race detector.
	_, err := rand.Read(cs.txID[:])
	return cs.txID, err
}

// jitter returns d scaled by a random factor in [0.8, 1.2).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// startConsent makes s the owner of its local ufrag's STUN on e; pion's
// connection for the ufrag, while it exists, keeps precedence.
func (e *Endpoint) startConsent(cs *consentSession) {
	now := time.Now()
	cs.heard.Store(now.UnixNano())
	cs.next = now.Add(jitter(cs.interval))
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		cs.stopped.Store(true)
		return
	}
	e.consent[cs.localUfrag] = cs
	e.consentNew = append(e.consentNew, cs)
	e.mu.Unlock()
}

// stopConsent ends cs for its Transport's Close: it waits for a report in
// progress, and none runs after it returns, as pion's GracefulClose waits
// for its notifier. So the Transport's callbacks must not call Close, as
// with pion.
func (e *Endpoint) stopConsent(cs *consentSession) {
	if cs == nil {
		return
	}
	e.retireConsent(cs)
	cs.reportMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier, see above
	cs.reportMu.Unlock()
}

// retireConsent ends cs with no report to follow, without waiting for one
// in progress: for Restart, which an application may call from the
// callback that the report runs (OnStateChange on a disconnection).
func (e *Endpoint) retireConsent(cs *consentSession) {
	if cs == nil {
		return
	}
	cs.closed.Store(true)
	e.endConsent(cs)
}

// endConsent stops cs's checks and answers; a report may still follow
// (the failure that ended it).
func (e *Endpoint) endConsent(cs *consentSession) {
	cs.stopped.Store(true)
	e.mu.Lock()
	if e.consent[cs.localUfrag] == cs {
		delete(e.consent, cs.localUfrag)
	}
	e.mu.Unlock()
}

// deliver reports s unless the Transport has stopped cs.
func (cs *consentSession) deliver(s pice.ConnectionState) {
	cs.reportMu.Lock()
	defer cs.reportMu.Unlock()
	if !cs.closed.Load() {
		cs.report(s)
	}
}

// consentLoop is the Endpoint's one timer goroutine: it sends the parked
// Transports' checks when due and reports a path that went silent
// (Disconnected after DisconnectedTimeout, Failed after FailedTimeout
// more) or came back (Connected), as pion's agent does.
func (e *Endpoint) consentLoop() {
	defer close(e.consentDone)
	tk := time.NewTicker(consentTick)
	defer tk.Stop()
	var q consentQueue
	step := e.consentStep
	for {
		select {
		case <-e.stop:
			return
		case <-tk.C:
		}
		e.mu.Lock()
		added := e.consentNew
		e.consentNew = nil
		e.mu.Unlock()
		for _, cs := range added {
			q.add(cs)
		}
		q.run(time.Now(), step)
	}
}

// consentQueue orders the consent sessions by when each next needs a
// step, so that a tick steps only those with a check or a silence due:
// with checks every few seconds, a session is stepped about once per
// check instead of at every tick, and an Endpoint with thousands of
// parked Transports does not look at each of them ten times a second.
// A session is due at its next check (none for a Lite side) or at the
// moment its peer's silence would pass DisconnectedTimeout, whichever
// comes first; consent heard meanwhile only moves that moment later, and
// a step at the earlier one finds the session not silent and puts it
// back. A disconnected session is stepped at every tick, to notice its
// recovery or its failure as before. A session that stopped leaves the
// queue when it comes due. Only the consent goroutine uses it.
type consentQueue struct {
	h   consentHeap
	due []*consentSession
}

// add queues a session that startConsent readied.
func (q *consentQueue) add(cs *consentSession) {
	cs.wake = cs.nextWake(time.Time{})
	heap.Push(&q.h, cs)
}

// run steps each session due at now, once, and queues it again unless it
// stopped; it returns how many it stepped.
func (q *consentQueue) run(now time.Time, step func(*consentSession, time.Time)) int {
	for len(q.h) > 0 && !q.h[0].wake.After(now) {
		q.due = append(q.due, heap.Pop(&q.h).(*consentSession))
	}
	n := 0
	for _, cs := range q.due {
		if cs.stopped.Load() {
			continue
		}
		step(cs, now)
		n++
		if !cs.stopped.Load() {
			cs.wake = cs.nextWake(now)
			heap.Push(&q.h, cs)
		}
	}
	clear(q.due)
	q.due = q.due[:0]
	return n
}

// nextWake returns when cs, just stepped at now (or just started, with
// now zero), next needs a step: after now, so that a tick steps it at
// most once. It is a wall-clock time, as heard is, with no monotonic
// reading, so that the queue compares every pair of sessions the same way.
func (cs *consentSession) nextWake(now time.Time) time.Time {
	if cs.down {
		return now.Add(time.Nanosecond).Round(0) // the next tick
	}
	// The first instant at which the silence exceeds disc.
	w := time.Unix(0, cs.heard.Load()).Add(cs.disc + time.Nanosecond)
	if !cs.lite && cs.next.Before(w) {
		w = cs.next
	}
	if !w.After(now) {
		w = now.Add(time.Nanosecond)
	}
	return w.Round(0)
}

// consentHeap is a min-heap of sessions by wake (container/heap).
type consentHeap []*consentSession

func (h consentHeap) Len() int           { return len(h) }
func (h consentHeap) Less(i, j int) bool { return h[i].wake.Before(h[j].wake) }
func (h consentHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *consentHeap) Push(x any)        { *h = append(*h, x.(*consentSession)) }
func (h *consentHeap) Pop() any {
	old := *h
	cs := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return cs
}

func (e *Endpoint) consentStep(cs *consentSession, now time.Time) {
	if cs.stopped.Load() {
		return
	}
	if !cs.lite && !now.Before(cs.next) {
		cs.next = now.Add(jitter(cs.interval))
		if id, err := cs.newTransactionID(); err == nil {
			buf := stunBufs.Get().(*stunBuf)
			b := cs.appendConsentRequest(buf[:0], id)
			e.mu.Lock()
			e.addPendingLocked(id, pendingTx{cs: cs})
			e.mu.Unlock()
			_ = e.write(b, cs.remote, cs.use)
			stunBufs.Put(buf)
		}
	}
	silent := now.Sub(time.Unix(0, cs.heard.Load()))
	switch {
	case !cs.down && silent > cs.disc:
		cs.down = true
		cs.deliver(pice.ConnectionStateDisconnected)
	case cs.down && silent > cs.disc+cs.fail:
		e.endConsent(cs)
		cs.deliver(pice.ConnectionStateFailed)
	case cs.down && silent <= cs.disc:
		cs.down = false
		cs.deliver(pice.ConnectionStateConnected)
	}
}

// park hands a connected Transport on an Endpoint over to the Endpoint:
// a consent session keeps the path alive and pion's agent is closed, so
// that the call owns no goroutine. Called once Connect has a path.
func (t *Transport) park(controlling bool) error {
	pair, err := t.ag().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil // nothing to keep alive: leave pion in charge
	}
	a, err := netip.ParseAddr(pair.Remote.Address())
	if err != nil {
		return nil
	}
	t.mu.Lock()
	local, remote := t.local, t.remote
	gen := t.gen.Load() // the session reports for this generation only
	t.mu.Unlock()
	var tb [8]byte
	if _, err := rand.Read(tb[:]); err != nil {
		return err
	}
	cs := &consentSession{
		use:         t.ep,
		localUfrag:  local.Ufrag,
		localPwd:    local.Pwd,
		remoteUfrag: remote.Ufrag,
		remotePwd:   remote.Pwd,
		remote:      netip.AddrPortFrom(a.Unmap(), uint16(pair.Remote.Port())),
		controlling: controlling,
		lite:        t.cfg.Lite,
		tieBreaker:  binary.BigEndian.Uint64(tb[:]),
		priority:    pair.Local.Priority(),
		interval:    t.cfg.KeepaliveInterval,
		disc:        t.cfg.DisconnectedTimeout,
		fail:        t.cfg.FailedTimeout,
		report:      func(s pice.ConnectionState) { t.consentState(gen, s) },
	}
	// The session first, so that no check of the peer's goes unanswered
	// between pion's close and the session's start.
	t.ep.e.startConsent(cs)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.ep.e.stopConsent(cs)
		return net.ErrClosed
	}
	t.consent = cs
	t.parked = true
	if t.gatherEnd != nil {
		// The closed agent reports no end of its gathering: a Restart
		// waiting for one goes on (parked) at once.
		close(t.gatherEnd)
		t.gatherEnd = nil
	}
	ag := t.ag()
	t.mu.Unlock()
	// pion reports Closed, which noteConnectivity ignores; its notifier
	// has finished when GracefulClose returns.
	_ = ag.GracefulClose()
	// Drop the closed agent (its candidates, check list and buffers): a
	// restart makes a new one.
	t.agent.CompareAndSwap(ag, nil)
	t.ep.stun.Store(nil)
	if t.rtt != nil {
		t.rtt.forget()
	}
	return nil
}
