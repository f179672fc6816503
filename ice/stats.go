package ice

// Stats is a snapshot of what a Transport refused from the network and
// from the peer's candidates.
type Stats struct {
	// STUNDropped counts the STUN messages and TURN frames the guard
	// dropped before pion parsed them: malformed, unsolicited, or relaying
	// a malformed payload (see the package doc's Security section).
	STUNDropped uint64
	// CandidatesDropped counts the peer's candidates dropped because they
	// exceeded Config.MaxRemoteCandidates or Config.MaxCandidatePairs.
	CandidatesDropped uint64
}

// Stats returns a snapshot of the Transport's counters.
func (t *Transport) Stats() Stats {
	return Stats{STUNDropped: t.dropped.Load(), CandidatesDropped: t.limit.dropped.Load()}
}
