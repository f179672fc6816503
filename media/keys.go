package media

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/securecall/securecall/internal/keyschedule"
	"github.com/securecall/securecall/sdp"
)

// mkiLen is the MKI size in kms and hybrid keying: the key version.
const mkiLen = 4

func versionMKI(v uint32) []byte { return binary.BigEndian.AppendUint32(make([]byte, 0, mkiLen), v) }

// recvOptions are the options of every receiving context: replay
// protection is always on.
func recvOptions(mki []byte, window uint) []srtp.ContextOption {
	opts := []srtp.ContextOption{srtp.SRTPReplayProtection(window), srtp.SRTCPReplayProtection(window)}
	if len(mki) > 0 {
		opts = append(opts, srtp.MasterKeyIndicator(mki))
	}
	return opts
}

func sendOptions(mki []byte) []srtp.ContextOption {
	if len(mki) > 0 {
		return []srtp.ContextOption{srtp.MasterKeyIndicator(mki)}
	}
	return nil
}

// newContexts creates the sending and receiving contexts from master keys
// and salts (each key||salt).
func (s *Session) newContexts(sendKS, sendMKI, recvKS, recvMKI []byte) error {
	kl := s.profile.keyLen()
	send, err := srtp.CreateContext(sendKS[:kl], sendKS[kl:], s.profile.srtp(), sendOptions(sendMKI)...)
	if err != nil {
		return fmt.Errorf("media: create sending SRTP context: %w", err)
	}
	recv, err := srtp.CreateContext(recvKS[:kl], recvKS[kl:], s.profile.srtp(), recvOptions(recvMKI, s.cfg.ReplayWindow)...)
	if err != nil {
		return fmt.Errorf("media: create receiving SRTP context: %w", err)
	}
	s.send, s.recv = send, recv
	s.sendKey = sendKeyState{activated: s.cfg.Clock()}
	s.setBudgets()
	s.scheduleSendChecksLocked()
	return nil
}

// setBudgets sets the packet limits of the key in use for sending.
func (s *Session) setBudgets() {
	s.sendKey.rtpHardStop = maxSRTPPackets
	s.sendKey.rtcpBudget = min(s.cfg.MaxPackets, maxSRTCPPackets/2)
}

// initSDES keys the session with the keys from the signaling.
func (s *Session) initSDES() error {
	d := s.cfg.SDES
	return s.newContexts(d.LocalKey, d.LocalMKI, d.RemoteKey, d.RemoteMKI)
}

// initDTLS keys the session from the DTLS-SRTP exporter output (RFC 5764
// section 4.2: client key, server key, client salt, server salt).
func (s *Session) initDTLS(exported []byte) error {
	kl, sl := s.profile.keyLen(), s.profile.saltLen()
	clientKS := append(append(make([]byte, 0, kl+sl), exported[:kl]...), exported[2*kl:2*kl+sl]...)
	serverKS := append(append(make([]byte, 0, kl+sl), exported[kl:2*kl]...), exported[2*kl+sl:2*kl+2*sl]...)
	defer clear(clientKS)
	defer clear(serverKS)
	if s.cfg.DTLSRole == DTLSClient {
		return s.newContexts(clientKS, nil, serverKS, nil)
	}
	return s.newContexts(serverKS, nil, clientKS, nil)
}

// derive returns key||salt for sender and version k.
func (s *Session) derive(k CallKey, sender string) ([]byte, error) {
	mode := keyschedule.KMS
	if s.cfg.Keying == sdp.KeyingHybrid {
		mode = keyschedule.Hybrid
	}
	key, salt, err := keyschedule.Derive(keyschedule.Input{
		Mode: mode, CallKey: k.Key, Exporter: s.exporter, CallID: k.CallID, Sender: sender,
		Version: k.Version, Profile: uint16(s.profile), KeyLen: s.profile.keyLen(), SaltLen: s.profile.saltLen(),
	})
	if err != nil {
		return nil, fmt.Errorf("media: derive key version %d: %w", k.Version, err)
	}
	return append(key, salt...), nil
}

// checkKey reports why k cannot be installed.
func (s *Session) checkKey(k CallKey, now time.Time) error {
	switch {
	case k.Version == 0:
		return errors.New("media: call key version 0 (versions start at 1)")
	case len(k.Key) != CallKeySize:
		return fmt.Errorf("media: call key version %d has %d bytes, want %d", k.Version, len(k.Key), CallKeySize)
	case k.URI != "" && k.URI != s.cfg.KeyURI:
		return fmt.Errorf("media: call key version %d is for %.96q, not %.96q", k.Version, k.URI, s.cfg.KeyURI)
	case k.CallID == "":
		return fmt.Errorf("media: call key version %d has no call id", k.Version)
	case s.callID != "" && k.CallID != s.callID:
		return fmt.Errorf("media: call key version %d is for call %q, not %q", k.Version, k.CallID, s.callID)
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return fmt.Errorf("media: call key version %d expired at %s", k.Version, k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// initVersioned keys the session from the call key versions of a key
// source (kms and hybrid keying): it sends with the newest active version
// (or the oldest, if none is active yet) and receives with all of them.
func (s *Session) initVersioned(keys []CallKey) error {
	now := s.cfg.Clock()
	usable := make([]CallKey, 0, len(keys))
	for _, k := range keys {
		if len(usable) == 0 && s.callID == "" {
			s.callID = k.CallID
		}
		if err := s.checkKey(k, now); err != nil {
			s.log.Warn("media: skipping call key version", "version", k.Version, "err", err)
			continue
		}
		usable = append(usable, k)
	}
	if len(usable) == 0 {
		return fmt.Errorf("media: key source has no usable version of %.96q", s.cfg.KeyURI)
	}
	slices.SortFunc(usable, func(a, b CallKey) int { return int(int64(a.Version) - int64(b.Version)) })
	usable = slices.CompactFunc(usable, func(a, b CallKey) bool { return a.Version == b.Version })
	s.callID = usable[0].CallID
	sendIdx := 0
	for i, k := range usable {
		if !k.ActivateAt.After(now) {
			sendIdx = i
		}
	}
	first, sending := usable[0], usable[sendIdx]
	s.versioned = true
	sendKS, err := s.derive(sending, s.cfg.LocalID)
	if err != nil {
		return err
	}
	recvKS, err := s.derive(first, s.cfg.RemoteID)
	if err != nil {
		return err
	}
	err = s.newContexts(sendKS, versionMKI(sending.Version), recvKS, versionMKI(first.Version))
	clear(sendKS)
	clear(recvKS)
	if err != nil {
		return err
	}
	s.sendKey.version, s.sendKey.expiresAt = sending.Version, sending.ExpiresAt
	s.scheduleSendChecksLocked()
	s.stats.sendVersion.Store(sending.Version)
	s.recvKeys[first.Version] = true
	s.recvSelect = first.Version
	for _, k := range usable {
		if err := s.installKey(k, now); err != nil {
			return err
		}
	}
	return nil
}

// InstallKey installs a new version of the call key (kms and hybrid
// keying): at once for receiving, and for sending from its ActivateAt on
// (at once, if the version sending now was revoked). Versions the session
// already has, and versions older than one it already removed, are
// ignored; a revoked version is refused with [ErrKeyRevoked]. When the
// KeySource implements KeyWatcher, the session calls InstallKey itself for
// every version the watcher reports.
// Packets held while the version was fetched (see [HeldPacketLimit]) are
// decrypted at once and delivered on a goroutine of the session's, since
// the caller may be OnRTP or the reader they wait for.
func (s *Session) InstallKey(k CallKey) error {
	if err := s.installOpen(k); err != nil {
		return err
	}
	s.releaseLater()
	return nil
}

// installOpen is InstallKey without the delivery of the held packets it
// decrypts.
func (s *Session) installOpen(k CallKey) error {
	if !usesKMS(s.cfg.Keying) {
		return fmt.Errorf("media: install key in %s keying: %w", s.cfg.Keying, ErrNoRotation)
	}
	if s.closed.Load() {
		return errClosed("install key")
	}
	return s.installKey(k, s.cfg.Clock())
}

func (s *Session) installKey(k CallKey, now time.Time) error {
	if err := s.checkKey(k, now); err != nil {
		return err
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	mki := versionMKI(k.Version)

	s.recvMu.Lock()
	withdrawn := s.withdrawnLocked(k.Version)
	needRecv := !s.recvKeys[k.Version] && k.Version > s.removedUpTo
	s.recvMu.Unlock()
	if withdrawn {
		return fmt.Errorf("media: install key version %d: %w", k.Version, ErrKeyRevoked)
	}
	if needRecv {
		ks, err := s.derive(k, s.cfg.RemoteID)
		if err != nil {
			return err
		}
		kl := s.profile.keyLen()
		s.recvMu.Lock()
		err = s.recv.AddCipherForMKI(mki, ks[:kl], ks[kl:])
		if err == nil {
			s.recvKeys[k.Version] = true
			if s.recvSelect == 0 {
				// Every version was revoked: the real one replaces the
				// placeholder.
				s.selectRecvLocked(func(uint32) bool { return true })
			}
			// In the same critical section: no packet read later uses
			// the version before the ones held for it.
			s.openHeldLocked()
		}
		s.recvMu.Unlock()
		clear(ks)
		if err != nil {
			return fmt.Errorf("media: install key version %d for receiving: %w", k.Version, err)
		}
	}

	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if k.Version <= s.sendKey.version || slices.ContainsFunc(s.pending, func(p pendingKey) bool { return p.version == k.Version }) {
		return nil
	}
	ks, err := s.derive(k, s.cfg.LocalID)
	if err != nil {
		return err
	}
	kl := s.profile.keyLen()
	err = s.send.AddCipherForMKI(mki, ks[:kl], ks[kl:])
	clear(ks)
	if err != nil {
		return fmt.Errorf("media: install key version %d for sending: %w", k.Version, err)
	}
	s.pending = append(s.pending, pendingKey{version: k.Version, activateAt: k.ActivateAt, expireAt: k.ExpiresAt})
	slices.SortFunc(s.pending, func(a, b pendingKey) int { return int(int64(a.version) - int64(b.version)) })
	s.log.Debug("media: key version installed", "version", k.Version, "activate_at", k.ActivateAt)
	s.sendEventsLocked(now)
	return nil
}

// sendEventsLocked applies what is due at now on the sending side: the
// switch to the newest active version, lifetime and expiry.
func (s *Session) sendEventsLocked(now time.Time) {
	next := -1
	for i, p := range s.pending {
		if !p.activateAt.After(now) {
			next = i
		}
	}
	if s.sendKey.revoked && len(s.pending) > 0 {
		// Anything but the revoked version, active yet or not: a peer
		// without it fetches it when it meets its MKI.
		next = len(s.pending) - 1
	}
	if next >= 0 {
		p := s.pending[next]
		if err := s.send.SetSendMKI(versionMKI(p.version)); err != nil {
			// Cannot happen: every pending version was added to the context.
			s.log.Error("media: switch sending key", "version", p.version, "err", err)
		} else {
			old := s.sendKey.version
			for _, q := range s.pending[:next] {
				_ = s.send.RemoveMKI(versionMKI(q.version))
			}
			_ = s.send.RemoveMKI(versionMKI(old))
			s.pending = slices.Delete(s.pending, 0, next+1)
			s.sendKey = sendKeyState{version: p.version, activated: now, expiresAt: p.expireAt}
			s.setBudgets()
			s.stats.sendVersion.Store(p.version)
			s.log.Debug("media: sending with new key version", "version", p.version, "previous", old)
		}
	}
	k := &s.sendKey
	if s.cfg.KeyLifetime > 0 && !k.lifeAsked && !now.Before(k.activated.Add(s.cfg.KeyLifetime)) {
		k.lifeAsked = true
		s.requestRotationLocked(RotationLifetime)
	}
	if !k.expiresAt.IsZero() && !now.Before(k.expiresAt) {
		k.expired = true
	}
	s.scheduleSendChecksLocked()
}

// scheduleSendChecksLocked computes when the sending side next has
// something to do by the clock, so that the packet path reads the clock
// only while something is due.
func (s *Session) scheduleSendChecksLocked() {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	for _, p := range s.pending {
		earliest(p.activateAt)
		if p.activateAt.IsZero() {
			earliest(time.Unix(0, 1))
		}
	}
	k := &s.sendKey
	if s.cfg.KeyLifetime > 0 && !k.lifeAsked {
		earliest(k.activated.Add(s.cfg.KeyLifetime))
	}
	if !k.expired {
		earliest(k.expiresAt)
	}
	s.sendCheckAt = 0
	if !at.IsZero() {
		s.sendCheckAt = at.UnixNano()
	}
}

// requestRotationLocked reports that the sending key nears its end.
func (s *Session) requestRotationLocked(reason RotationReason) {
	k := &s.sendKey
	if reason == RotationPacketBudget {
		if k.requested {
			return
		}
		k.requested = true
	}
	r := RotationRequest{Keying: s.cfg.Keying, Version: k.version, Reason: reason, RTPPackets: k.rtp, RTCPPackets: k.rtcp}
	s.log.Info("media: key rotation needed", "version", r.Version, "reason", r.Reason.String(),
		"rtp_packets", r.RTPPackets, "rtcp_packets", r.RTCPPackets)
	fn := s.cfg.OnRotationNeeded
	rot, _ := s.cfg.KeySource.(KeyRotator)
	if !usesKMS(s.cfg.Keying) {
		rot = nil
	}
	if (fn == nil && rot == nil) || s.closed.Load() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.cbMu.Lock()
		defer s.cbMu.Unlock()
		if rot != nil {
			s.askRotation(rot, r)
		}
		if fn != nil {
			fn(r)
		}
	}()
}

// observeVersionLocked notes the key version of an authenticated packet;
// when the peer moves to a newer version, the older ones are scheduled for
// removal after the grace period.
func (s *Session) observeVersionLocked(raw []byte, trailer int) {
	end := len(raw) - trailer
	if end < mkiLen {
		return
	}
	s.noteVersionLocked(binary.BigEndian.Uint32(raw[end-mkiLen : end]))
}

// noteVersionLocked is observeVersionLocked for an authenticated packet of
// version v.
func (s *Session) noteVersionLocked(v uint32) {
	if v <= s.recvNewest {
		return
	}
	s.recvNewest = v
	for old := range s.recvKeys {
		if old < v {
			s.removeBelow = v
			s.removeAt = s.cfg.Clock().Add(s.cfg.RotationGrace).UnixNano()
			return
		}
	}
}

// removeOldKeysLocked removes, once their grace period is over, the
// versions older than the newest one the peer sends with.
func (s *Session) removeOldKeysLocked(now time.Time) {
	if now.UnixNano() < s.removeAt {
		return
	}
	s.removeAt = 0
	s.selectRecvLocked(func(v uint32) bool { return v >= s.removeBelow })
	for v := range s.recvKeys {
		if v < s.removeBelow {
			if err := s.recv.RemoveMKI(versionMKI(v)); err != nil {
				s.log.Error("media: remove key version", "version", v, "err", err)
				continue
			}
			delete(s.recvKeys, v)
			s.removedUpTo = max(s.removedUpTo, v)
			s.log.Debug("media: key version removed", "version", v)
		}
	}
}

// askRotation asks the key source for a new version because the sending
// key nears its budget; the new version reaches the session as any other
// (through the KeyWatcher, or InstallKey).
func (s *Session) askRotation(rot KeyRotator, r RotationRequest) {
	ctx, cancel := context.WithTimeout(s.life, fetchTimeout)
	defer cancel()
	v, err := rot.Rotate(ctx, s.cfg.KeyURI)
	if err != nil {
		if s.life.Err() == nil {
			s.log.Warn("media: rotation request failed", "version", r.Version, "reason", r.Reason.String(), "err", err)
		}
		return
	}
	s.log.Debug("media: rotation requested", "version", r.Version, "reason", r.Reason.String(), "new_version", v)
}

// maxRevoked bounds the versions a session remembers as revoked one by
// one: as many as a KMS lists ([kms.Client.WatchChanges]).
const maxRevoked = 64

// withdrawnLocked reports whether version v was revoked (recvMu held).
func (s *Session) withdrawnLocked(v uint32) bool {
	return v < s.revokedBelow || s.revoked[v]
}

// selectRecvLocked points the receiving context's selected MKI at the
// newest installed version keep accepts, or, if there is none, at a
// placeholder under MKI 0 with a random key, which no packet authenticates
// under (versions start at 1); the placeholder goes once a version is
// selected again. The context refuses to remove its selected MKI, which on
// a receiving context only selects tag sizes, so a version is removed only
// once another is selected (recvMu held).
func (s *Session) selectRecvLocked(keep func(uint32) bool) {
	var next uint32
	for v := range s.recvKeys {
		if v > next && keep(v) && !s.withdrawnLocked(v) {
			next = v
		}
	}
	if next == s.recvSelect {
		return
	}
	if next == 0 {
		ks := make([]byte, s.profile.keyLen()+s.profile.saltLen())
		if _, err := rand.Read(ks); err != nil {
			s.log.Error("media: placeholder receiving key", "err", err)
			return
		}
		err := s.recv.AddCipherForMKI(versionMKI(0), ks[:s.profile.keyLen()], ks[s.profile.keyLen():])
		clear(ks)
		if err != nil {
			s.log.Error("media: placeholder receiving key", "err", err)
			return
		}
	}
	if err := s.recv.SetSendMKI(versionMKI(next)); err != nil {
		s.log.Error("media: select receiving key", "version", next, "err", err)
		return
	}
	if s.recvSelect == 0 {
		_ = s.recv.RemoveMKI(versionMKI(0))
	}
	s.recvSelect = next
}

// RevokeKey withdraws version of the call key (kms and hybrid keying) at
// once, as a [KeyChangeWatcher] does when its KMS reports the version
// compromised or destroyed: packets under it are no longer accepted
// (counted in Stats.UnknownMKIDrops) and never trigger a fetch, it is
// never installed again, and if the session sends under it, it sends under
// its newest other installed version from now on, active yet or not, or,
// if there is none, refuses to send with [ErrKeyRevoked] until one is
// installed. Revoking a version the session does not hold only keeps it
// from being installed later.
func (s *Session) RevokeKey(version uint32) error {
	if !usesKMS(s.cfg.Keying) {
		return fmt.Errorf("media: revoke key in %s keying: %w", s.cfg.Keying, ErrNoRotation)
	}
	if version == 0 {
		return errors.New("media: revoke key version 0 (versions start at 1)")
	}
	if s.closed.Load() {
		return errClosed("revoke key")
	}
	s.withdraw([]uint32{version}, 0)
	return nil
}

// withdraw revokes the versions in revoked and those below min (if above
// 1).
func (s *Session) withdraw(revoked []uint32, min uint32) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	gone := func(v uint32) bool { return v < min || slices.Contains(revoked, v) }

	s.recvMu.Lock()
	if min > s.revokedBelow {
		s.revokedBelow = min
		maps.DeleteFunc(s.revoked, func(v uint32, _ bool) bool { return v < min })
	}
	for _, v := range revoked {
		if v < s.revokedBelow || s.revoked[v] {
			continue
		}
		if s.revoked == nil {
			s.revoked = map[uint32]bool{}
		}
		if len(s.revoked) >= maxRevoked {
			delete(s.revoked, slices.Min(slices.Collect(maps.Keys(s.revoked))))
		}
		s.revoked[v] = true
	}
	if gone(s.recvSelect) {
		s.selectRecvLocked(func(v uint32) bool { return !gone(v) })
	}
	for v := range s.recvKeys {
		if !gone(v) || v == s.recvSelect {
			continue
		}
		if err := s.recv.RemoveMKI(versionMKI(v)); err != nil {
			s.log.Error("media: remove revoked key version", "version", v, "err", err)
			continue
		}
		delete(s.recvKeys, v)
		s.log.Info("media: revoked key version removed for receiving", "version", v)
	}
	s.recvMu.Unlock()

	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.pending = slices.DeleteFunc(s.pending, func(p pendingKey) bool {
		if gone(p.version) {
			_ = s.send.RemoveMKI(versionMKI(p.version))
			return true
		}
		return false
	})
	if k := &s.sendKey; gone(k.version) && !k.revoked {
		k.revoked, k.expired = true, true
		s.log.Info("media: sending key version revoked", "version", k.version, "replacements", len(s.pending))
		s.sendEventsLocked(s.cfg.Clock())
	}
}
