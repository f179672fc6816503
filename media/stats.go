package media

import (
	"sync/atomic"

	"github.com/securecall/securecall/sdp"
)

// Stats is a snapshot of a session's counters.
type Stats struct {
	// Keying is the session's keying mode and Profile its protection
	// profile.
	Keying  sdp.Keying
	Profile Profile
	// SendKeyVersion is the call key version used for sending in kms and
	// hybrid keying; 0 in dtls and sdes keying, which have no versions.
	SendKeyVersion uint32

	// Packets and payload bytes sent and received; bytes count the
	// plaintext RTP payload and the plaintext compound RTCP packet.
	RTPPacketsSent, RTPBytesSent           uint64
	RTPPacketsReceived, RTPBytesReceived   uint64
	RTCPPacketsSent, RTCPBytesSent         uint64
	RTCPPacketsReceived, RTCPBytesReceived uint64

	// AuthFailures counts SRTP and SRTCP packets whose authentication tag
	// did not verify (tampered, forged, or under a key the session never
	// had); ReplaysDropped those that repeated or fell behind the replay
	// window; UnknownMKIDrops those whose MKI names no installed key
	// version (for example a version removed after its grace period).
	AuthFailures, ReplaysDropped, UnknownMKIDrops uint64
	// Malformed counts datagrams that were neither DTLS nor a well-formed
	// SRTP or SRTCP packet; QueueDrops packets dropped because nobody read
	// them (RTCP while only ReadRTP is called, for example).
	Malformed, QueueDrops uint64

	// PacketsAuthenticated counts SRTP and SRTCP packets that passed
	// authentication, whether or not they were read yet.
	PacketsAuthenticated uint64
	// PacketsHeld counts packets held while the session fetched the key
	// version their MKI names (see KeyFetcher); KeyFetches counts the
	// versions so fetched.
	PacketsHeld, KeyFetches uint64

	// Quality is the receive quality from the session's RTCP: loss,
	// jitter, round trip, the peer's reports and a MOS estimate.
	Quality Quality
}

// counters are the live counterparts of Stats.
type counters struct {
	rtpSent, rtpBytesSent, rtpRecv, rtpBytesRecv     atomic.Uint64
	rtcpSent, rtcpBytesSent, rtcpRecv, rtcpBytesRecv atomic.Uint64
	authFailures, replays, unknownMKI                atomic.Uint64
	malformed, queueDrops                            atomic.Uint64
	authOK, held, keyFetches                         atomic.Uint64
	sendVersion                                      atomic.Uint32
}

// SetCodec changes the encoding name the quality estimate rates
// (RTCPConfig.Codec), for a stream that switched to another codec at the
// same RTP clock rate; the estimate from then on, of the whole session's
// loss, uses the new codec's values. It is safe to call at any time.
func (s *Session) SetCodec(name string) {
	s.q.mu.Lock()
	s.q.codec = name
	s.q.mu.Unlock()
}

// Stats returns a snapshot of the session's counters. It is safe to call at
// any time, also after Close.
func (s *Session) Stats() Stats {
	c := &s.stats
	return Stats{
		Keying:              s.cfg.Keying,
		Profile:             s.profile,
		SendKeyVersion:      c.sendVersion.Load(),
		RTPPacketsSent:      c.rtpSent.Load(),
		RTPBytesSent:        c.rtpBytesSent.Load(),
		RTPPacketsReceived:  c.rtpRecv.Load(),
		RTPBytesReceived:    c.rtpBytesRecv.Load(),
		RTCPPacketsSent:     c.rtcpSent.Load(),
		RTCPBytesSent:       c.rtcpBytesSent.Load(),
		RTCPPacketsReceived: c.rtcpRecv.Load(),
		RTCPBytesReceived:   c.rtcpBytesRecv.Load(),
		AuthFailures:        c.authFailures.Load(),
		ReplaysDropped:      c.replays.Load(),
		UnknownMKIDrops:     c.unknownMKI.Load(),
		Malformed:           c.malformed.Load(),
		QueueDrops:          c.queueDrops.Load(),
		Quality:             s.q.snapshot(),

		PacketsAuthenticated: c.authOK.Load(),
		PacketsHeld:          c.held.Load(),
		KeyFetches:           c.keyFetches.Load(),
	}
}
