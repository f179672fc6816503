package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/securecall/securecall/sdp"
)

// Attestation is what one endpoint says, inside SRTCP, about its own end
// of the selected media path: the type and address of its local
// candidate. A peer that relays through TURN, or whose relay a site
// filter cannot see, says so here, authenticated by the call's keys.
type Attestation struct {
	// SSRC is the sender's RTP SSRC (the APP packet's SSRC field).
	SSRC uint32
	// Type is the sender's local candidate type: host, srflx, prflx or
	// relay.
	Type sdp.CandidateType
	// Protocol is "udp" or "tcp".
	Protocol string
	// Address is the sender's local candidate address as the sender sees
	// it (a host address behind a NAT, a relayed address for a relay).
	Address netip.AddrPort
}

// The attestation's wire format: an RTCP APP packet (RFC 3550 section
// 6.7), sent alone as a reduced-size RTCP packet (RFC 5506) and protected
// as SRTCP like any other:
//
//	 0                   1                   2                   3
//	|V=2|P| subtype=0 |   PT=204 APP  |          length               |
//	|                      SSRC of the sender                         |
//	|                 name: "SCPA" (0x53 0x43 0x50 0x41)              |
//	|  version = 1  | candidate type|   protocol    | address family  |
//	|                        sequence number                          |
//	|             port              |         reserved = 0            |
//	|          address: 4 bytes (family 4) or 16 bytes (family 6)     |
//
// Candidate type: 1 host, 2 srflx, 3 prflx, 4 relay. Protocol: 1 udp,
// 2 tcp. The sequence number grows by one with each new attestation (not
// with its retransmissions); a receiver keeps only attestations newer
// than the newest it has. The length field is 6 (IPv4) or 9 (IPv6).
const (
	attestName      = "SCPA"
	attestVersion   = 1
	attestHeaderLen = 24 // up to the address
	rtcpTypeAPP     = 204
)

// attestResends are the times, after Attest, at which the attestation is
// sent again: RTCP may be lost, and the peer may not have its keys yet
// when the first copy arrives. Resends ride on WriteRTP and WriteRTCP, so
// they cost no timer; a session that sends nothing sends only the first.
var attestResends = [...]time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second}

var candidateTypeCodes = map[sdp.CandidateType]byte{
	sdp.CandidateHost: 1, sdp.CandidateServerReflexive: 2, sdp.CandidatePeerReflexive: 3, sdp.CandidateRelay: 4,
}

// attestSend is the sending side's state, owned by sendMu.
type attestSend struct {
	seq    uint32
	pkt    []byte    // the current APP packet
	start  time.Time // when Attest was called
	resent int       // how many of attestResends have been sent
	next   int64     // unix ns of the next resend; 0: none pending
}

// attestRecv is the receiving side's state; mu also serializes
// Config.OnPeerAttestation.
type attestRecv struct {
	mu     sync.Mutex
	newest uint32 // sequence number of the newest attestation taken
}

// marshalAttestation builds the APP packet for a with sequence number seq.
func marshalAttestation(a Attestation, seq uint32) ([]byte, error) {
	code, ok := candidateTypeCodes[a.Type]
	if !ok {
		return nil, fmt.Errorf("media: attest: unknown candidate type %q", a.Type)
	}
	var proto byte
	switch a.Protocol {
	case "udp":
		proto = 1
	case "tcp":
		proto = 2
	default:
		return nil, fmt.Errorf("media: attest: unknown protocol %q", a.Protocol)
	}
	addr := a.Address.Addr().Unmap()
	if !a.Address.IsValid() || addr.IsUnspecified() {
		return nil, errors.New("media: attest: no address")
	}
	family, ip := byte(4), addr.AsSlice()
	if addr.Is6() {
		family = 6
	}
	p := make([]byte, attestHeaderLen, attestHeaderLen+len(ip))
	p[0], p[1] = 0x80, rtcpTypeAPP
	binary.BigEndian.PutUint16(p[2:4], uint16((attestHeaderLen+len(ip))/4-1))
	binary.BigEndian.PutUint32(p[4:8], a.SSRC)
	copy(p[8:12], attestName)
	p[12], p[13], p[14], p[15] = attestVersion, code, proto, family
	binary.BigEndian.PutUint32(p[16:20], seq)
	binary.BigEndian.PutUint16(p[20:22], a.Address.Port())
	return append(p, ip...), nil
}

// parseAttestation reads one APP packet of name SCPA; ok is false for a
// version or value it does not know.
func parseAttestation(p []byte) (a Attestation, seq uint32, ok bool) {
	if len(p) < attestHeaderLen || p[12] != attestVersion {
		return a, 0, false
	}
	for t, c := range candidateTypeCodes {
		if c == p[13] {
			a.Type = t
		}
	}
	switch p[14] {
	case 1:
		a.Protocol = "udp"
	case 2:
		a.Protocol = "tcp"
	}
	var addr netip.Addr
	switch ip := p[attestHeaderLen:]; {
	case p[15] == 4 && len(ip) == 4:
		addr = netip.AddrFrom4([4]byte(ip))
	case p[15] == 6 && len(ip) == 16:
		addr = netip.AddrFrom16([16]byte(ip))
	}
	if a.Type == "" || a.Protocol == "" || !addr.IsValid() {
		return Attestation{}, 0, false
	}
	a.SSRC = binary.BigEndian.Uint32(p[4:8])
	a.Address = netip.AddrPortFrom(addr, binary.BigEndian.Uint16(p[20:22]))
	return a, binary.BigEndian.Uint32(p[16:20]), true
}

// Attest tells the peer, inside SRTCP, which local candidate this side
// uses on the selected path; call it when the path is first selected and
// after every change. It sends the attestation at once and again a few
// times over the next seconds (see attestResends) as WriteRTP or WriteRTCP
// are called; a later Attest replaces an earlier one. It works in kms and
// hybrid keying only, where the SRTCP keys come from the call key and so
// prove that the attestation comes from a holder of the call key; in dtls
// and sdes keying those keys are only as trustworthy as the signaling,
// and Attest returns an error.
func (s *Session) Attest(a Attestation) error {
	if !usesKMS(s.cfg.Keying) {
		return fmt.Errorf("media: attest: %s keying cannot authenticate an attestation", s.cfg.Keying)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	st := &s.attestOut
	pkt, err := marshalAttestation(a, st.seq+1)
	if err != nil {
		return err
	}
	st.seq++
	st.pkt, st.start, st.resent = pkt, time.Now(), 0
	st.next = st.start.Add(attestResends[0]).UnixNano()
	return s.writeRTCPLocked(pkt)
}

// resendAttestationLocked sends the attestation again when a resend is
// due; WriteRTP and WriteRTCP call it while one is pending.
func (s *Session) resendAttestationLocked(now time.Time) {
	st := &s.attestOut
	if now.UnixNano() < st.next {
		return
	}
	st.resent++
	if st.resent < len(attestResends) {
		st.next = st.start.Add(attestResends[st.resent]).UnixNano()
	} else {
		st.next = 0
	}
	if err := s.writeRTCPLocked(st.pkt); err != nil {
		s.log.Debug("media: resend attestation", "err", err)
	}
}

// takeAttestations removes the attestations from an authenticated
// compound RTCP packet and reports them to Config.OnPeerAttestation; it
// returns what is left for ReadRTCP, which is empty when the packet held
// nothing else. A packet it cannot walk is returned as it is.
func (s *Session) takeAttestations(pkt []byte) []byte {
	found := false
	off := 0
	for off+4 <= len(pkt) {
		n := 4 * (int(binary.BigEndian.Uint16(pkt[off+2:off+4])) + 1)
		if pkt[off]>>6 != 2 || off+n > len(pkt) {
			return pkt
		}
		found = found || isAttestation(pkt[off:off+n])
		off += n
	}
	if !found || off != len(pkt) {
		return pkt
	}
	w := 0
	for off = 0; off < len(pkt); {
		n := 4 * (int(binary.BigEndian.Uint16(pkt[off+2:off+4])) + 1)
		if p := pkt[off : off+n]; isAttestation(p) {
			s.receiveAttestation(p)
		} else {
			w += copy(pkt[w:], p)
		}
		off += n
	}
	return pkt[:w]
}

func isAttestation(p []byte) bool {
	return len(p) >= 12 && p[1] == rtcpTypeAPP && string(p[8:12]) == attestName
}

// receiveAttestation takes one attestation, if it is newer than the last
// one and the keying authenticates it.
func (s *Session) receiveAttestation(p []byte) {
	if !usesKMS(s.cfg.Keying) {
		s.log.Debug("media: ignored an attestation under a keying that cannot authenticate it")
		return
	}
	a, seq, ok := parseAttestation(p)
	if !ok {
		s.log.Debug("media: ignored an attestation of an unknown version or form")
		return
	}
	r := &s.attestIn
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq <= r.newest {
		return // a resend, or older than the newest
	}
	r.newest = seq
	if s.cfg.OnPeerAttestation != nil && s.startCallback() {
		defer s.wg.Done()
		s.cfg.OnPeerAttestation(a)
	}
}

// awaitSlice is how long one transport read of AwaitPeerAttestation waits
// before it resends this side's attestation and looks at ctx again.
const awaitSlice = 50 * time.Millisecond

// AwaitPeerAttestation reads the transport until the peer's first
// attestation has been taken (and reported to Config.OnPeerAttestation)
// or ctx is done, for a caller that must know the peer's end of the path
// before it sends media. It reports whether an attestation arrived; a
// done ctx is not an error (the peer may be one that never attests).
// Media read meanwhile is queued for ReadRTP and ReadRTCP as usual, up to
// their queue length. This side's own attestation, if any, is resent
// while it waits. It must be called before the application reads: it
// uses the transport's read deadline.
func (s *Session) AwaitPeerAttestation(ctx context.Context) (bool, error) {
	if !usesKMS(s.cfg.Keying) {
		return false, nil
	}
	tick := time.NewTimer(awaitSlice)
	defer tick.Stop()
	for !s.peerAttested() {
		if ctx.Err() != nil || s.closed.Load() {
			break
		}
		s.sendMu.Lock()
		if s.attestOut.next != 0 {
			s.resendAttestationLocked(time.Now())
		}
		s.sendMu.Unlock()
		tick.Reset(awaitSlice)
		// Another reader (the DTLS pump until the first media packet) may
		// hold the token and take the attestation itself: look again at
		// every slice.
		select {
		case s.tok <- struct{}{}:
			err := s.readSliceLocked(ctx)
			s.release()
			if err != nil {
				return false, err
			}
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	return s.peerAttested(), nil
}

// readSliceLocked reads and handles datagrams for up to awaitSlice; the
// caller holds the read token.
func (s *Session) readSliceLocked(ctx context.Context) error {
	dl := time.Now().Add(awaitSlice)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := s.conn.SetReadDeadline(dl); err != nil {
		return fmt.Errorf("media: await attestation: %w", err)
	}
	defer s.conn.SetReadDeadline(time.Time{})
	for failures := 0; !s.peerAttested(); {
		raw, err := s.readRaw()
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return nil
			case s.closed.Load() || errors.Is(err, net.ErrClosed) || failures >= maxReadFailures:
				return fmt.Errorf("media: await attestation: %w", err)
			}
			failures++
			continue
		}
		failures = 0
		s.handle(raw, kindOther)
		s.dropRaw()
	}
	return nil
}

// peerAttested reports whether an attestation has been taken.
func (s *Session) peerAttested() bool {
	s.attestIn.mu.Lock()
	defer s.attestIn.mu.Unlock()
	return s.attestIn.newest > 0
}
