package kmsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
)

// SharedStore is a [Store] that several servers (replicas of one KMS) use
// at once, such as the PostgreSQL store in package pgstore. A server on a
// SharedStore:
//   - commits through Update, which serialises every replica's commits on
//     the audit chain head, so the log stays one hash chain;
//   - refuses a change computed from a record another replica has changed
//     since (the change fails with [ErrConflict] and the record is read
//     again), so a version number is never given out twice and a
//     scheduled rotation due on every replica happens once;
//   - follows Changes to keep its memory, and its watches, up to date with
//     what other replicas commit;
//   - records proof nonces with UseNonce, so a proof used on one replica is
//     refused on every other.
type SharedStore interface {
	Store
	// Update runs fn in one transaction that excludes every other Update
	// on the store (across processes), and commits the writes fn returns
	// atomically with their notifications. get reads the current value
	// within the transaction. If fn or the commit fails, nothing is written.
	Update(ctx context.Context, fn func(get func(bucket, key string) ([]byte, error)) ([]Write, error)) error
	// Snapshot calls fn with a read-only view of one consistent state of
	// the store (its Commit fails).
	Snapshot(ctx context.Context, fn func(view Store) error) error
	// Changes reports the keys that commits (this server's included)
	// change outside the audit bucket, and a Resync after any gap (a lost
	// connection, an overflow), after which the reader reads everything
	// again. The channel is closed by Close.
	Changes() <-chan Change
	// UseNonce records nonce until expires and reports whether it was new.
	UseNonce(ctx context.Context, nonce string, expires time.Time) (bool, error)
}

// Change is one notification of a [SharedStore].
type Change struct {
	// Bucket and Key name the changed record.
	Bucket, Key string
	// Resync says notifications may have been lost: read everything.
	Resync bool
}

// ErrConflict reports a change refused because another replica changed
// the same record first. The server has read the record again; the change
// may be retried.
var ErrConflict = errors.New("kmsserver: record changed by another replica")

// replicas is the server's state for a [SharedStore].
type replicas struct {
	store   SharedStore
	knownMu sync.Mutex
	known   map[recordID]uint64 // audit seq of the record each memory copy is of
}

// isTracked says whether a record of bucket is checked for conflicts and
// followed across replicas.
func isTracked(bucket string) bool {
	return bucket == bucketCalls || bucket == bucketDevices || bucket == bucketMeta || bucket == bucketRevoked
}

func (r *replicas) knownSeq(id recordID) uint64 {
	r.knownMu.Lock()
	defer r.knownMu.Unlock()
	return r.known[id]
}

func (r *replicas) setKnown(id recordID, seq uint64) {
	r.knownMu.Lock()
	defer r.knownMu.Unlock()
	if seq == 0 {
		delete(r.known, id)
	} else {
		r.known[id] = seq
	}
}

// storedSeq is the audit seq a stored record was written with, 0 for none.
func (s *Server) storedSeq(bucket, key string, stored []byte) (uint64, error) {
	if stored == nil {
		return 0, nil
	}
	seq, _, err := s.openRecord(bucket, key, stored)
	return seq, err
}

// commitShared commits a batch of the writer through the SharedStore: the
// chain head is read inside the transaction, and a pending group whose
// records changed since this server read them is left out and fails with
// ErrConflict. It returns the new head.
func (s *Server) commitShared(ctx context.Context, batch []*pending) (AuditHead, []stamped, error) {
	sh := s.shared.store
	var next AuditHead
	var written []stamped
	var conflicts []*pending
	err := sh.Update(ctx, func(get func(bucket, key string) ([]byte, error)) ([]Write, error) {
		conflicts = conflicts[:0]
		head := AuditHead{Hash: genesisHash}
		raw, err := get(bucketMeta, metaHead)
		if err != nil {
			return nil, err
		}
		if raw != nil {
			seq, v, err := s.openRecord(bucketMeta, metaHead, raw)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(v, &head); err != nil || head.Seq != seq {
				return nil, &RecordError{Bucket: bucketMeta, Key: metaHead, Reason: "malformed"}
			}
		}
		var ok []*pending
		for _, p := range batch {
			p.revoked = false
			if dev := proofDevice(p); dev != "" && validIdentity(dev) {
				// A device's state change on one replica and its
				// revocation on another are serialised here: whichever
				// commits second sees the first.
				rv, err := get(bucketRevoked, dev)
				if err != nil {
					return nil, err
				}
				if rv != nil {
					p.revoked = true
					continue
				}
			}
			clash := false
			for _, w := range p.writes {
				if !isTracked(w.Bucket) {
					continue
				}
				cur, err := get(w.Bucket, w.Key)
				if err != nil {
					return nil, err
				}
				seq, err := s.storedSeq(w.Bucket, w.Key, cur)
				if err != nil {
					return nil, err
				}
				if seq != s.shared.knownSeq(recordID{w.Bucket, w.Key}) {
					clash = true
				}
			}
			if clash {
				conflicts = append(conflicts, p)
			} else {
				ok = append(ok, p)
			}
		}
		if slices.ContainsFunc(ok, func(p *pending) bool { return !p.compact.IsZero() }) {
			if s.recordSeqs, err = s.storeSeqs(ctx); err != nil {
				return nil, err
			}
		}
		writes, n, w, err := s.batchWrites(ctx, ok, head)
		next, written = n, w
		return writes, err
	})
	if err != nil {
		return next, nil, err
	}
	for _, p := range batch {
		p.conflict = false
	}
	for _, p := range conflicts {
		p.conflict = true
	}
	return next, written, nil
}

// stamped is a record a commit wrote (seq, the audit entry it carries) or
// deleted (seq 0).
type stamped struct {
	id  recordID
	seq uint64
}

// batchWrites chains the batch's audit entries after head (running a
// compaction a pending asks for) and seals every record with the sequence
// number of its group's last entry; it records that number in each
// pending and returns the records written.
func (s *Server) batchWrites(ctx context.Context, batch []*pending, head AuditHead) ([]Write, AuditHead, []stamped, error) {
	var writes []Write
	var written []stamped
	next := head
	for _, p := range batch {
		if !p.compact.IsZero() {
			deletes, base, es, err := s.compaction(ctx, p.compact)
			if err != nil {
				return nil, head, nil, err
			}
			writes = append(writes, deletes...)
			p.writes = append(p.writes, base...)
			p.entries = append(p.entries, es...)
			p.compact = time.Time{}
		}
		for i := range p.entries {
			e := &p.entries[i]
			b, err := e.seal(next)
			if err != nil {
				return nil, head, nil, err
			}
			next = AuditHead{Seq: e.Seq, Hash: e.Hash}
			writes = append(writes, Write{Bucket: bucketAudit, Key: auditKey(e.Seq), Value: s.sealRecord(bucketAudit, auditKey(e.Seq), e.Seq, b)})
		}
		// A record carries the sequence number of the audit entry
		// committed with it (every state change has one).
		for _, w := range p.writes {
			if w.Value != nil {
				w.Value = s.sealRecord(w.Bucket, w.Key, next.Seq, w.Value)
			}
			writes = append(writes, w)
			if w.Bucket == bucketNonces || w.Bucket == bucketAudit {
				continue
			}
			seq := next.Seq
			if w.Value == nil {
				seq = 0
			}
			written = append(written, stamped{recordID{w.Bucket, w.Key}, seq})
		}
		p.seq = next.Seq
	}
	if len(writes) > 0 {
		for _, n := range s.takeNonceGone() {
			writes = append(writes, Write{Bucket: bucketNonces, Key: n})
		}
	}
	if next != head {
		hb, _ := json.Marshal(next)
		writes = append(writes, Write{Bucket: bucketMeta, Key: metaHead, Value: s.sealRecord(bucketMeta, metaHead, next.Seq, hb)})
	}
	return writes, next, written, nil
}

// storeSeqs reads the audit sequence number of every live record from
// the store, for a compaction on a shared store: this server's own view
// may lag the other replicas'. Called inside Update, whose lock keeps the
// store still.
func (s *Server) storeSeqs(ctx context.Context) (map[recordID]uint64, error) {
	seqs := map[recordID]uint64{}
	for _, b := range []string{bucketDevices, bucketCalls, bucketRevoked} {
		err := s.cfg.Store.ForEach(ctx, b, func(k string, v []byte) error {
			seq, err := s.storedSeq(b, k, v)
			seqs[recordID{b, k}] = seq
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	for _, k := range []string{metaSigningKeys, metaAuditBase} {
		v, err := s.cfg.Store.Get(ctx, bucketMeta, k)
		if err != nil {
			return nil, err
		}
		if v != nil {
			seq, err := s.storedSeq(bucketMeta, k, v)
			if err != nil {
				return nil, err
			}
			seqs[recordID{bucketMeta, k}] = seq
		}
	}
	return seqs, nil
}

// noteCommitted records, after a successful shared commit, which stored
// version of each record this server's memory now holds.
func (s *Server) noteCommitted(p *pending) {
	if s.shared == nil || p.conflict || p.revoked {
		return
	}
	for _, w := range p.writes {
		if !isTracked(w.Bucket) {
			continue
		}
		if w.Value == nil {
			s.shared.setKnown(recordID{w.Bucket, w.Key}, 0)
		} else {
			s.shared.setKnown(recordID{w.Bucket, w.Key}, p.seq)
		}
	}
}

// follow applies what other replicas commit to this server's memory.
func (s *Server) follow() {
	defer s.wg.Done()
	ch := s.shared.store.Changes()
	for {
		select {
		case <-s.closing:
			return
		case c, ok := <-ch:
			if !ok {
				return
			}
			var err error
			switch {
			case c.Resync:
				err = s.resync()
			case c.Bucket == bucketRevoked:
				err = s.refreshRevoked(c.Key)
			default:
				s.writeMu.Lock()
				err = s.refreshLocked(recordID{c.Bucket, c.Key})
				s.writeMu.Unlock()
			}
			if err != nil {
				s.cfg.Logger.Warn("kmsserver: following other replicas", "err", err)
			}
		}
	}
}

// resync reads every revocation, device and call record again. The
// revocations are read first, so that a call rotated by a revocation is
// never held without the revocation, and once more at the end, for those
// made meanwhile.
func (s *Server) resync() error {
	if err := s.resyncRevoked(); err != nil {
		return err
	}
	defer func() {
		if err := s.resyncRevoked(); err != nil {
			s.cfg.Logger.Warn("kmsserver: read the revocations again", "err", err)
		}
	}()
	ctx := context.Background()
	var ids []recordID
	for _, b := range []string{bucketDevices, bucketCalls} {
		err := s.cfg.Store.ForEach(ctx, b, func(k string, _ []byte) error {
			ids = append(ids, recordID{b, k})
			return nil
		})
		if err != nil {
			return err
		}
	}
	ids = append(ids, recordID{bucketMeta, metaSigningKeys})
	// Records this server holds that are gone from the store (purged).
	s.mu.RLock()
	for id := range s.calls {
		ids = append(ids, recordID{bucketCalls, id})
	}
	s.mu.RUnlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.refreshLocked(id))
	}
	return errors.Join(errs...)
}

// refreshLocked reads record id from the store and, if it is not the one
// in memory, replaces the memory copy. The caller holds writeMu, so no
// change of this server is between compute and apply.
//
// Revocations are followed by refreshRevoked instead, under revokeMu.
func (s *Server) refreshLocked(id recordID) error {
	if !isTracked(id.bucket) || id.bucket == bucketRevoked || id == (recordID{bucketMeta, metaHead}) {
		return nil
	}
	ctx := context.Background()
	raw, err := s.cfg.Store.Get(ctx, id.bucket, id.key)
	if err != nil {
		return err
	}
	seq, err := s.storedSeq(id.bucket, id.key, raw)
	if err != nil {
		return err
	}
	if seq == s.shared.knownSeq(id) {
		return nil
	}
	switch id.bucket {
	case bucketMeta:
		if id.key != metaSigningKeys || raw == nil {
			return nil
		}
		if _, err := s.loadSigningKeys(ctx, map[recordID]uint64{}); err != nil {
			return err
		}
	case bucketDevices:
		if raw == nil {
			s.mu.Lock()
			delete(s.devices, id.key)
			s.mu.Unlock()
			break
		}
		_, v, _ := s.openRecord(id.bucket, id.key, raw)
		dev, err := parseDevice(id.key, v)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.devices[id.key] = dev
		s.mu.Unlock()
	case bucketCalls:
		if raw == nil {
			s.dropCall(id.key)
			break
		}
		_, v, _ := s.openRecord(id.bucket, id.key, raw)
		fresh, err := s.parseCall(id.key, v)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if c := s.calls[id.key]; c != nil {
			c.rec, c.keys, c.nextRotation = fresh.rec, fresh.keys, fresh.nextRotation
			close(c.changed)
			c.changed = make(chan struct{})
			c.wrapMu.Lock()
			c.wrapped = nil
			c.wrapMu.Unlock()
		} else {
			s.calls[id.key] = fresh
		}
		s.mu.Unlock()
		s.poke()
	}
	s.shared.setKnown(id, seq)
	return nil
}

// dropCall forgets a call purged by another replica.
func (s *Server) dropCall(id string) {
	s.mu.Lock()
	c := s.calls[id]
	delete(s.calls, id)
	if c != nil {
		for _, k := range c.keys {
			clear(k)
		}
		close(c.changed)
		c.changed = make(chan struct{})
	}
	s.mu.Unlock()
}

// parseDevice decodes a device record's value.
func parseDevice(id string, v []byte) (*device, error) {
	var rec deviceRecord
	if err := json.Unmarshal(v, &rec); err != nil || rec.Identity != id {
		return nil, &RecordError{Bucket: bucketDevices, Key: id, Reason: "not a device record"}
	}
	pub, err := wire.ParsePublicJWK(rec.Key)
	if err != nil {
		return nil, err
	}
	kid, err := wire.KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &device{pub: pub, kid: kid}, nil
}

// parseCall decodes a call record's value and unseals its keys.
func (s *Server) parseCall(id string, v []byte) (*call, error) {
	var rec callRecord
	if err := json.Unmarshal(v, &rec); err != nil || rec.ID != id {
		return nil, &RecordError{Bucket: bucketCalls, Key: id, Reason: "not a call record"}
	}
	c := &call{rec: rec, keys: map[uint32][]byte{}, changed: make(chan struct{})}
	for _, vr := range rec.Versions {
		if vr.SealedKey == nil {
			continue
		}
		k, err := s.unseal(id, vr.Version, vr.SealedKey)
		if err != nil {
			return nil, err
		}
		c.keys[vr.Version] = k
	}
	if rec.RotateEveryMS > 0 && len(rec.Versions) > 0 && !rec.ended() {
		c.nextRotation = rec.Versions[len(rec.Versions)-1].CreatedAt.Add(time.Duration(rec.RotateEveryMS) * time.Millisecond)
	}
	return c, nil
}

// useNonce records a proof's nonce in the shared store.
func (s *Server) useNonce(nonce string, expires time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fresh, err := s.shared.store.UseNonce(ctx, nonce, expires)
	if err != nil {
		return false, fmt.Errorf("kmsserver: record nonce: %w", err)
	}
	return fresh, nil
}

// loadShared runs loadAll, on a SharedStore from one consistent snapshot
// (other replicas keep writing meanwhile), and remembers what it read.
func (s *Server) loadShared(loadAll func() error, seqs map[recordID]uint64) error {
	sh, ok := s.cfg.Store.(SharedStore)
	if !ok {
		return loadAll()
	}
	s.shared = &replicas{store: sh, known: map[recordID]uint64{}}
	store := s.cfg.Store
	defer func() { s.cfg.Store = store }()
	err := sh.Snapshot(context.Background(), func(view Store) error {
		s.cfg.Store = view
		return loadAll()
	})
	if err != nil {
		return err
	}
	for id, seq := range seqs {
		s.shared.setKnown(id, seq)
	}
	return nil
}

// errNotDue: a scheduled rotation another replica has done meanwhile.
var errNotDue = errors.New("kmsserver: rotation not due")

// stillDue is the scheduler's check, under writeMu on the record about to
// change, that the rotation it decided on is still due: another replica's
// rotation may have been followed since.
func stillDue(now time.Time) func(*callRecord) error {
	return func(rec *callRecord) error {
		if rec.RotateEveryMS <= 0 || len(rec.Versions) == 0 {
			return errNotDue
		}
		last := rec.Versions[len(rec.Versions)-1].CreatedAt
		if last.Add(time.Duration(rec.RotateEveryMS) * time.Millisecond).After(now) {
			return errNotDue
		}
		return nil
	}
}

// readThrough reads a record this server does not hold from a shared
// store (another replica may have just created it) and reports whether
// the server holds it now.
func (s *Server) readThrough(id recordID) bool {
	if s.shared == nil || len(id.key) > maxIdentity {
		return false
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.refreshLocked(id); err != nil {
		s.cfg.Logger.Warn("kmsserver: read a record of another replica", "bucket", id.bucket, "err", err)
		return false
	}
	return true
}
