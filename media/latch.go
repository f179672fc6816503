package media

// SourceLatcher is an optional ability of the transport given to
// [NewSession], detected by type assertion: a transport for a peer without
// ICE that learns where to send from the packets it receives (symmetric
// RTP). The session calls Authentic right after a datagram it read from the
// transport has authenticated under SRTP or SRTCP, before it reads the next
// one, so the transport knows which datagram, and hence which source
// address, is meant. It is never called for a datagram that failed to
// authenticate, nor for packets that arrived before the keys were in place
// (their source is no longer known then). The ice package's Direct
// transport implements it.
type SourceLatcher interface {
	// Authentic reports that the datagram the last Read returned
	// authenticated.
	Authentic()
}

// noteAuthentic tells a latching transport that the datagram just read
// authenticated.
func (s *Session) noteAuthentic() {
	if s.latch != nil {
		s.latch.Authentic()
	}
}
