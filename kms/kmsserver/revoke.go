package kmsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
)

// ErrTooManyRevoked: [Server.RevokeDevice] found [Config].MaxRevokedDevices
// identities revoked already and changed nothing. Restore some first.
var ErrTooManyRevoked = errors.New("kmsserver: too many revoked devices")

// ErrInvalidIdentity: an operator method was given a string that cannot
// be a device identity (empty, longer than 256 bytes, not UTF-8, or a
// certificate identity with ':'). Nothing changed.
var ErrInvalidIdentity = errors.New("kmsserver: invalid device identity")

// revokedRecord is the stored form of a revocation, in bucket "revoked"
// under the identity; restoring the device deletes it.
type revokedRecord struct {
	Identity  string    `json:"identity"`
	RevokedAt time.Time `json:"revoked_at"`
}

// gates holds one read-write lock per identity with requests in progress.
// A request of a device holds its identity's lock for reading from its
// revocation check to the end of what it decides (its commit, or the
// response that delivers keys); RevokeDevice holds it for writing while
// it commits the revocation. So no request that passed the check before
// the revocation completes anything after RevokeDevice returns, and
// requests of other devices never wait for a revocation. Memory: one
// entry per identity with a request in progress.
type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	rw   sync.RWMutex
	refs int
}

func (g *gates) get(id string) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*gate{}
	}
	e := g.m[id]
	if e == nil {
		e = &gate{}
		g.m[id] = e
	}
	e.refs++
	return e
}

func (g *gates) put(id string, e *gate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(g.m, id)
	}
}

// enter holds id's gate for a request; the function releases it.
func (g *gates) enter(id string) func() {
	e := g.get(id)
	e.rw.RLock()
	return func() {
		e.rw.RUnlock()
		g.put(id, e)
	}
}

// close waits for the requests of id in progress and keeps new ones out
// until the function is called.
func (g *gates) close(id string) func() {
	e := g.get(id)
	e.rw.Lock()
	return func() {
		e.rw.Unlock()
		g.put(id, e)
	}
}

// isRevoked reports whether identity is revoked.
func (s *Server) isRevoked(identity string) bool {
	s.mu.RLock()
	_, ok := s.revoked[identity]
	s.mu.RUnlock()
	return ok
}

// errRevokedDevice is the answer to every request of a revoked device.
func errRevokedDevice() *apiError { return fail(http.StatusForbidden, wire.CodeDeviceRevoked) }

// admit holds identity's gate for a request and refuses it if the device
// is revoked. On success the caller calls leave once what the request
// decides is done (committed, or written to the response).
func (s *Server) admit(identity string) (leave func(), aerr *apiError) {
	leave = s.gates.enter(identity)
	if s.isRevoked(identity) {
		leave()
		return nil, errRevokedDevice()
	}
	if s.admitted != nil {
		s.admitted(identity)
	}
	return leave, nil
}

// errRevokedElsewhere: on a SharedStore, a state change refused in its
// commit because another replica revoked the device that asked for it.
var errRevokedElsewhere = errors.New("kmsserver: device revoked")

// proofDevice returns the device whose request p commits: every state
// change a device asks for carries its proof's nonce, whose stored value
// names the device (see nonceValue). "" for the server's own changes.
func proofDevice(p *pending) string {
	for _, w := range p.writes {
		if w.Bucket == bucketNonces && len(w.Value) > 8 {
			return string(w.Value[8:])
		}
	}
	return ""
}

// RevokeDevice revokes the device identity (a certificate's common name,
// or [TokenIdentityPrefix] and a token's subject): from when it returns,
// every request of that identity is refused (403 "device_revoked",
// kms.ErrDeviceRevoked), whatever its credentials, and its watches end.
// It waits for the device's requests in progress, so none of them
// completes anything after it returns. Then it rotates every running call
// the identity created or participates in, as removing a participant
// does, so that the keys the device holds stop protecting media once the
// new versions activate. Persisted and audited (action "revoke", actor
// "operator", Detail the identity) in one commit.
//
// Revoking a revoked identity changes nothing, writes no audit entry and
// returns nil. A malformed identity fails with [ErrInvalidIdentity], and
// with [Config].MaxRevokedDevices identities revoked it fails with
// [ErrTooManyRevoked]; neither changes anything. An error from the
// rotations says which calls did not rotate; the revocation holds all the
// same, and the next start of the server rotates them.
func (s *Server) RevokeDevice(ctx context.Context, identity string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kmsserver: revoke device: %w", err)
	}
	if !validIdentity(identity) {
		return fmt.Errorf("kmsserver: revoke device: %w", ErrInvalidIdentity)
	}
	reopen := s.gates.close(identity)
	s.revokeMu.Lock()
	changed, err := s.setRevokedLocked(identity, true)
	s.revokeMu.Unlock()
	reopen()
	if err != nil || !changed {
		return err
	}
	s.cfg.Logger.Info("kmsserver: device revoked", "identity", identity)
	if err := s.rotateRevoked(identity, time.Time{}); err != nil {
		return fmt.Errorf("kmsserver: revoke device %q: revoked, but %w", identity, err)
	}
	return nil
}

// RestoreDevice lifts the revocation of identity: its requests are served
// again (its credentials and registered key are checked as before).
// Persisted and audited (action "restore", actor "operator"). Restoring
// an identity that is not revoked changes nothing, writes no audit entry
// and returns nil; a malformed identity fails with [ErrInvalidIdentity].
func (s *Server) RestoreDevice(ctx context.Context, identity string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kmsserver: restore device: %w", err)
	}
	if !validIdentity(identity) {
		return fmt.Errorf("kmsserver: restore device: %w", ErrInvalidIdentity)
	}
	reopen := s.gates.close(identity)
	defer reopen()
	s.revokeMu.Lock()
	defer s.revokeMu.Unlock()
	changed, err := s.setRevokedLocked(identity, false)
	if err == nil && changed {
		s.cfg.Logger.Info("kmsserver: device restored", "identity", identity)
	}
	return err
}

// setRevokedLocked commits and applies the revocation (or restoration) of
// identity, reporting whether anything changed. On a SharedStore a
// conflict (another replica changed the record first) reads the record
// again and tries once more. Called with revokeMu held.
func (s *Server) setRevokedLocked(identity string, revoke bool) (bool, error) {
	op := "restore device"
	if revoke {
		op = "revoke device"
	}
	for attempt := 0; ; attempt++ {
		s.mu.RLock()
		_, was := s.revoked[identity]
		n := len(s.revoked)
		s.mu.RUnlock()
		if was == revoke {
			return false, nil
		}
		if revoke && n >= s.cfg.MaxRevokedDevices {
			return false, fmt.Errorf("kmsserver: revoke device: %d revoked: %w", n, ErrTooManyRevoked)
		}
		now := s.cfg.Clock().UTC()
		w := Write{Bucket: bucketRevoked, Key: identity}
		e := AuditEntry{Time: now, Action: "restore", Actor: "operator", Outcome: "ok", Detail: identity}
		if revoke {
			w.Value, _ = json.Marshal(revokedRecord{Identity: identity, RevokedAt: now})
			e.Action = "revoke"
		}
		err := <-s.submit([]Write{w}, e)
		if errors.Is(err, ErrConflict) && attempt == 0 {
			if rerr := s.refreshRevokedLocked(identity); rerr != nil {
				return false, fmt.Errorf("kmsserver: %s: %w", op, rerr)
			}
			continue
		}
		if err != nil {
			return false, fmt.Errorf("kmsserver: %s: %w", op, err)
		}
		s.applyRevoked(identity, revoke, now)
		return true, nil
	}
}

// applyRevoked sets identity's revocation in memory and, on a revocation,
// wakes every watch so that the device's end.
func (s *Server) applyRevoked(identity string, revoke bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !revoke {
		delete(s.revoked, identity)
		return
	}
	s.revoked[identity] = at
	close(s.revokeWake)
	s.revokeWake = make(chan struct{})
}

// rotateRevoked rotates every running call identity created or
// participates in. With a zero since it rotates each of them; otherwise
// only those whose newest version was created before since (what a
// revocation at since did not rotate, for example because the server
// stopped first).
func (s *Server) rotateRevoked(identity string, since time.Time) error {
	var ids []string
	s.mu.RLock()
	for id, c := range s.calls {
		if !c.rec.ended() && involves(&c.rec, identity) {
			ids = append(ids, id)
		}
	}
	s.mu.RUnlock()
	slices.Sort(ids)
	due := func(rec *callRecord) error {
		if !involves(rec, identity) {
			return errNotDue // removed meanwhile, which rotated
		}
		if !since.IsZero() && len(rec.Versions) > 0 && !rec.Versions[len(rec.Versions)-1].CreatedAt.Before(since) {
			return errNotDue
		}
		return nil
	}
	var errs []error
	for _, id := range ids {
		var err error
		for range 3 {
			if _, err = s.rotate(id, "operator", "revoked "+identity, due); !errors.Is(err, ErrConflict) {
				break
			}
		}
		if err != nil && !errors.Is(err, errNotDue) && !errors.Is(err, ErrNoCall) && !errors.Is(err, errEnded) {
			errs = append(errs, fmt.Errorf("rotating call %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// involves reports whether identity created or participates in rec.
func involves(rec *callRecord, identity string) bool {
	return rec.Creator == identity || slices.Contains(rec.Participants, identity)
}

// rotateAfterRevocations rotates, at start, the calls of revoked devices
// whose newest version predates the revocation: a server that stopped
// between committing a revocation and rotating its calls.
func (s *Server) rotateAfterRevocations() {
	s.mu.RLock()
	revoked := make(map[string]time.Time, len(s.revoked))
	for id, at := range s.revoked {
		revoked[id] = at
	}
	s.mu.RUnlock()
	for id, at := range revoked {
		if err := s.rotateRevoked(id, at); err != nil {
			s.cfg.Logger.Warn("kmsserver: rotating the calls of a revoked device", "identity", id, "err", err)
		}
	}
}

// loadRevoked reads every revocation, authenticating each record, and
// notes the audit entry each was written with in seqs.
func (s *Server) loadRevoked(ctx context.Context, seqs map[recordID]uint64) error {
	err := s.cfg.Store.ForEach(ctx, bucketRevoked, func(id string, stored []byte) error {
		seq, v, err := s.openRecord(bucketRevoked, id, stored)
		if err != nil {
			return err
		}
		rec, err := parseRevoked(id, v)
		if err != nil {
			return err
		}
		seqs[recordID{bucketRevoked, id}] = seq
		s.revoked[id] = rec.RevokedAt
		return nil
	})
	if err != nil {
		return fmt.Errorf("kmsserver: load revoked devices: %w", err)
	}
	return nil
}

func parseRevoked(id string, v []byte) (revokedRecord, error) {
	var rec revokedRecord
	if err := json.Unmarshal(v, &rec); err != nil || rec.Identity != id || !validIdentity(id) {
		return rec, &RecordError{Bucket: bucketRevoked, Key: id, Reason: "not a revocation record"}
	}
	return rec, nil
}

// refreshRevoked follows another replica's change of identity's
// revocation.
func (s *Server) refreshRevoked(identity string) error {
	s.revokeMu.Lock()
	defer s.revokeMu.Unlock()
	return s.refreshRevokedLocked(identity)
}

// refreshRevokedLocked reads identity's revocation from the store and, if
// it is not the one in memory, applies it. It does not wait for the
// device's requests in progress on this replica: their state changes are
// refused in their commit (see proofDevice), and what they deliver
// meanwhile this replica could have delivered a moment earlier. Called
// with revokeMu held.
func (s *Server) refreshRevokedLocked(identity string) error {
	if s.shared == nil || !validIdentity(identity) {
		return nil
	}
	id := recordID{bucketRevoked, identity}
	raw, err := s.cfg.Store.Get(context.Background(), bucketRevoked, identity)
	if err != nil {
		return err
	}
	seq, err := s.storedSeq(bucketRevoked, identity, raw)
	if err != nil {
		return err
	}
	if seq == s.shared.knownSeq(id) {
		return nil
	}
	if raw == nil {
		s.applyRevoked(identity, false, time.Time{})
	} else {
		_, v, _ := s.openRecord(bucketRevoked, identity, raw)
		rec, err := parseRevoked(identity, v)
		if err != nil {
			return err
		}
		s.applyRevoked(identity, true, rec.RevokedAt)
	}
	s.shared.setKnown(id, seq)
	return nil
}

// resyncRevoked reads every revocation again (after a gap in another
// replica's notifications), including those this server holds that are
// gone from the store.
func (s *Server) resyncRevoked() error {
	var ids []string
	err := s.cfg.Store.ForEach(context.Background(), bucketRevoked, func(k string, _ []byte) error {
		ids = append(ids, k)
		return nil
	})
	if err != nil {
		return err
	}
	s.revokeMu.Lock()
	defer s.revokeMu.Unlock()
	s.mu.RLock()
	for id := range s.revoked {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.refreshRevokedLocked(id))
	}
	return errors.Join(errs...)
}
