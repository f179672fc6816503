package ice

import (
	"log/slog"
	"sync"
	"sync/atomic"

	pice "github.com/pion/ice/v3"
)

// candidateLimit bounds what a peer's candidates make this side do: pion
// pairs every remote candidate with every local candidate of its network
// type and checks every pair, so an offer with a thousand candidates
// would have the Transport send checks to a thousand addresses, an
// amplifier aimed at third parties. A remote candidate is admitted while
// the Transport holds fewer than maxRemote of them and the pairs it adds
// (one per local candidate of its network type gathered so far) keep the
// check list within maxPairs (RFC 8445 section 6.1.2.5); the rest are
// dropped and counted. Duplicates are neither counted nor dropped: pion
// ignores them. The limit starts again with each ICE restart, when pion
// forgets the remote candidates.
type candidateLimit struct {
	maxRemote, maxPairs int
	log                 *slog.Logger

	mu      sync.Mutex
	remote  map[string]pice.NetworkType // admitted candidates, by identity
	perType map[pice.NetworkType]int    // admitted candidates per network type
	dropped atomic.Uint64
}

// admit reports whether the candidate with the given identity and network
// type may be added, given the number of local candidates per network
// type.
func (l *candidateLimit) admit(key string, nt pice.NetworkType, locals map[pice.NetworkType]int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.remote[key]; ok {
		return true
	}
	pairs := 0
	for t, n := range l.perType {
		pairs += n * locals[t]
	}
	if len(l.remote) >= l.maxRemote || pairs+locals[nt] > l.maxPairs {
		n := l.dropped.Add(1)
		if n&(n-1) == 0 { // the first drop, then at each power of two
			l.log.Debug("ice: dropped remote candidates beyond the limits",
				"dropped", n, "max_remote_candidates", l.maxRemote, "max_candidate_pairs", l.maxPairs,
				"pairs", pairs, "remote", len(l.remote))
		}
		return false
	}
	if l.remote == nil {
		l.remote = make(map[string]pice.NetworkType)
		l.perType = make(map[pice.NetworkType]int)
	}
	l.remote[key] = nt
	l.perType[nt]++
	return true
}

// reset forgets the admitted candidates, for an ICE restart.
func (l *candidateLimit) reset() {
	l.mu.Lock()
	l.remote, l.perType = nil, nil
	l.mu.Unlock()
}

// localsByType counts the agent's local candidates per network type.
func (t *Transport) localsByType() map[pice.NetworkType]int {
	locals := make(map[pice.NetworkType]int)
	ag := t.ag()
	if ag == nil {
		return locals
	}
	cands, err := ag.GetLocalCandidates()
	if err != nil {
		return locals
	}
	for _, c := range cands {
		locals[c.NetworkType()]++
	}
	return locals
}
