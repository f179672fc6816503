package kmsserver

import (
	"container/heap"
	"time"
)

// nonceMemory is the replay memory: the nonces of accepted proofs of
// freshness still within the window, at most max of them, each with the
// device whose proof it was.
//
// When it is full, the device holding the most nonces loses its oldest
// one, and its floor rises to that nonce's time: from then on the device's
// proofs dated at or before its floor are refused as stale, so the nonce
// it lost can never be replayed. A device that floods the memory pushes
// out its own proofs, not another device's: a device is only ever asked
// to give one up while it holds the most, and then only one it has already
// used. Memory stays bounded: max nonces, and one floor per device that
// lost a nonce within the window.
//
// Guarded by Server.nonceMu.
type nonceMemory struct {
	max  int
	seen map[string]*heldNonce
	devs map[string]*deviceNonces
	// most orders the devices by how many nonces they hold, most first.
	// Nonces loaded from a store written before nonces named their device
	// belong to no device (identity ""), which is never in most: they go
	// within one window of the start.
	most deviceHeap
}

type heldNonce struct {
	nonce  string
	issued time.Time
	dev    *deviceNonces
}

type deviceNonces struct {
	id    string
	held  []*heldNonce // in the order accepted; the oldest go first
	floor time.Time    // its proofs dated at or before are refused
	index int          // in nonceMemory.most, -1 if not there
}

func newNonceMemory(max int) *nonceMemory {
	return &nonceMemory{max: max, seen: map[string]*heldNonce{}, devs: map[string]*deviceNonces{}}
}

func (m *nonceMemory) len() int { return len(m.seen) }

// stale reports whether a proof of device id dated issued is at or below
// the device's floor.
func (m *nonceMemory) stale(id string, issued time.Time) bool {
	d := m.devs[id]
	return d != nil && !d.floor.IsZero() && !issued.After(d.floor)
}

// has reports whether nonce was accepted within the window.
func (m *nonceMemory) has(nonce string) bool {
	_, ok := m.seen[nonce]
	return ok
}

// add remembers the nonce of device id's proof, making room first if the
// memory is full.
func (m *nonceMemory) add(id, nonce string, issued time.Time) {
	if len(m.seen) >= m.max {
		m.evictOne()
	}
	d := m.devs[id]
	if d == nil {
		d = &deviceNonces{id: id, index: -1}
		m.devs[id] = d
	}
	h := &heldNonce{nonce: nonce, issued: issued, dev: d}
	d.held = append(d.held, h)
	m.seen[nonce] = h
	switch {
	case id == "":
	case d.index < 0:
		heap.Push(&m.most, d)
	default:
		heap.Fix(&m.most, d.index)
	}
}

// evictOne drops the oldest nonce of the device holding the most and
// raises that device's floor to it.
func (m *nonceMemory) evictOne() {
	if len(m.most) == 0 {
		return // only nonces of no device: they expire within the window
	}
	d := m.most[0]
	if len(d.held) == 0 {
		return
	}
	h := d.held[0]
	d.held[0] = nil
	d.held = d.held[1:]
	if m.seen[h.nonce] == h {
		delete(m.seen, h.nonce)
	}
	if h.issued.After(d.floor) {
		d.floor = h.issued
	}
	heap.Fix(&m.most, d.index)
}

// sweep forgets the nonces and floors older than win, calling gone with
// each nonce forgotten.
func (m *nonceMemory) sweep(now time.Time, win time.Duration, gone func(string)) {
	for id, d := range m.devs {
		kept := d.held[:0]
		for _, h := range d.held {
			if now.Sub(h.issued) <= win {
				kept = append(kept, h)
				continue
			}
			if m.seen[h.nonce] == h {
				delete(m.seen, h.nonce)
				gone(h.nonce)
			}
		}
		clear(d.held[len(kept):])
		d.held = kept
		if !d.floor.IsZero() && now.Sub(d.floor) > win {
			d.floor = time.Time{}
		}
		if len(d.held) == 0 && d.floor.IsZero() {
			delete(m.devs, id)
		}
	}
	m.most = m.most[:0]
	for _, d := range m.devs {
		if d.id != "" {
			d.index = len(m.most)
			m.most = append(m.most, d)
		} else {
			d.index = -1
		}
	}
	heap.Init(&m.most)
}

// deviceHeap is a max-heap of devices by the nonces they hold.
type deviceHeap []*deviceNonces

func (h deviceHeap) Len() int           { return len(h) }
func (h deviceHeap) Less(i, j int) bool { return len(h[i].held) > len(h[j].held) }
func (h deviceHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deviceHeap) Push(x any) {
	d := x.(*deviceNonces)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *deviceHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	d.index = -1
	*h = old[:len(old)-1]
	return d
}
