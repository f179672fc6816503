package kmsserver

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Every value the server writes to its Store is a record: a magic, the
// sequence number of the audit entry committed with it, a MAC and the value
//
//	"scr1" | seq (8 bytes, big endian) | HMAC-SHA256 (32 bytes) | value
//
// where the MAC, under a key derived from the KEK, covers the bucket, the
// key, the sequence number and the value. A record changed or moved to
// another key fails its MAC. A record replaced by an older copy of itself,
// or deleted, no longer matches the audit log, whose entries are records
// too: at start the server requires each record's sequence number to be
// that of the last audit entry that changed it, and every record the log
// says exists to be there.

const (
	recordMagic  = "scr1"
	recordHeader = len(recordMagic) + 8 + sha256.Size
)

// ErrRecord reports a store record that fails authentication or does not
// match the audit log. The [RecordError] names it.
var ErrRecord = errors.New("kmsserver: store record refused")

// RecordError names a store record the server refused at start.
type RecordError struct {
	// Bucket and Key name the record.
	Bucket, Key string
	// Reason says what is wrong with it.
	Reason string
}

// Error describes the refusal.
func (e *RecordError) Error() string {
	return fmt.Sprintf("kmsserver: store record %s/%q refused: %s", e.Bucket, e.Key, e.Reason)
}

// Unwrap returns [ErrRecord].
func (e *RecordError) Unwrap() error { return ErrRecord }

func deriveMACKey(kek []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, kek, nil, "securecall-kms record mac v1", 32)
}

func (s *Server) recordMAC(bucket, key string, seq uint64, value []byte) []byte {
	m := hmac.New(sha256.New, s.macKey)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(bucket)))
	m.Write(n[:])
	m.Write([]byte(bucket))
	binary.BigEndian.PutUint64(n[:], uint64(len(key)))
	m.Write(n[:])
	m.Write([]byte(key))
	binary.BigEndian.PutUint64(n[:], seq)
	m.Write(n[:])
	m.Write(value)
	return m.Sum(nil)
}

// sealRecord returns the stored form of value at bucket/key, written with
// the audit entry seq.
func (s *Server) sealRecord(bucket, key string, seq uint64, value []byte) []byte {
	out := make([]byte, 0, recordHeader+len(value))
	out = append(out, recordMagic...)
	out = binary.BigEndian.AppendUint64(out, seq)
	out = append(out, s.recordMAC(bucket, key, seq, value)...)
	return append(out, value...)
}

// openRecord authenticates a stored record and returns its audit sequence
// number and value (a copy).
func (s *Server) openRecord(bucket, key string, stored []byte) (uint64, []byte, error) {
	if len(stored) < recordHeader || string(stored[:len(recordMagic)]) != recordMagic {
		return 0, nil, &RecordError{Bucket: bucket, Key: key, Reason: "not a record of this server"}
	}
	seq := binary.BigEndian.Uint64(stored[len(recordMagic):])
	mac := stored[len(recordMagic)+8 : recordHeader]
	value := stored[recordHeader:]
	if !hmac.Equal(mac, s.recordMAC(bucket, key, seq, value)) {
		return 0, nil, &RecordError{Bucket: bucket, Key: key, Reason: "authentication failed (changed without the KEK, or another KEK)"}
	}
	return seq, bytes.Clone(value), nil
}

// recordValue strips a record's header without authenticating it, for
// exporting the audit log of a store without the KEK.
func recordValue(stored []byte) []byte {
	if len(stored) >= recordHeader && string(stored[:len(recordMagic)]) == recordMagic {
		return stored[recordHeader:]
	}
	return stored
}

type recordID struct{ bucket, key string }

// changedRecord names the record an audit entry changed, if any.
func changedRecord(e *AuditEntry) (recordID, bool) {
	if e.Outcome != "ok" {
		return recordID{}, false
	}
	switch e.Action {
	case "register":
		return recordID{bucketDevices, e.Actor}, true
	case "create", "rotate", "remove", "state", "min-version", "end", "purge":
		return recordID{bucketCalls, e.Call}, true
	case "revoke", "restore":
		return recordID{bucketRevoked, e.Detail}, true
	case "signing-key":
		return recordID{bucketMeta, metaSigningKeys}, true
	case "compact":
		return recordID{bucketMeta, metaAuditBase}, true
	}
	return recordID{}, false
}

// checkAudit authenticates and verifies the whole audit chain in the store,
// checks that the stored head is its last entry, and checks every loaded
// record (seqs: the audit sequence number each was written with) against
// it. It returns the head.
func (s *Server) checkAudit(ctx context.Context, seqs map[recordID]uint64) (AuditHead, error) {
	head := AuditHead{Hash: genesisHash}
	last := map[recordID]uint64{}
	deleted := map[recordID]bool{}
	// After a compaction the chain starts at its checkpoint, which says
	// which entry last wrote each record older than it.
	base, err := s.readRecord(ctx, bucketMeta, metaAuditBase)
	if err != nil {
		return head, err
	}
	if base.value != nil {
		var b auditBase
		if err := json.Unmarshal(base.value, &b); err != nil {
			return head, &RecordError{Bucket: bucketMeta, Key: metaAuditBase, Reason: "malformed"}
		}
		head = AuditHead{Seq: b.Seq, Hash: b.Hash}
		for _, r := range b.Records {
			last[recordID{r.Bucket, r.Key}] = r.Seq
		}
		seqs[recordID{bucketMeta, metaAuditBase}] = base.seq
	}
	err = s.cfg.Store.ForEach(ctx, bucketAudit, func(k string, v []byte) error {
		seq, val, err := s.openRecord(bucketAudit, k, v)
		if err != nil {
			return err
		}
		var e AuditEntry
		if err := json.Unmarshal(val, &e); err != nil {
			return &RecordError{Bucket: bucketAudit, Key: k, Reason: "not an audit entry"}
		}
		if e.Seq != seq || k != auditKey(e.Seq) || e.Seq != head.Seq+1 || e.Prev != head.Hash {
			return &RecordError{Bucket: bucketAudit, Key: k, Reason: fmt.Sprintf("entry %d does not follow entry %d", e.Seq, head.Seq)}
		}
		if h, err := e.computeHash(); err != nil || h != e.Hash {
			return &RecordError{Bucket: bucketAudit, Key: k, Reason: "hash does not match content"}
		}
		head = AuditHead{Seq: e.Seq, Hash: e.Hash}
		if id, ok := changedRecord(&e); ok {
			last[id] = e.Seq
			deleted[id] = e.Action == "purge" || e.Action == "restore"
		}
		return nil
	})
	if err != nil {
		return head, err
	}
	stored, err := s.readRecord(ctx, bucketMeta, metaHead)
	if err != nil {
		return head, err
	}
	var sh AuditHead
	if stored.value != nil {
		if err := json.Unmarshal(stored.value, &sh); err != nil || stored.seq != sh.Seq {
			return head, &RecordError{Bucket: bucketMeta, Key: metaHead, Reason: "malformed"}
		}
	} else {
		sh = AuditHead{Hash: genesisHash}
	}
	if sh != head {
		return head, &RecordError{Bucket: bucketMeta, Key: metaHead, Reason: fmt.Sprintf("head %d, but the log ends at %d", sh.Seq, head.Seq)}
	}
	for id, seq := range seqs {
		switch want, ok := last[id]; {
		case !ok:
			return head, &RecordError{Bucket: id.bucket, Key: id.key, Reason: "no audit entry wrote it"}
		case deleted[id]:
			return head, &RecordError{Bucket: id.bucket, Key: id.key, Reason: "present after it was purged (or a revocation after it was lifted)"}
		case seq != want:
			return head, &RecordError{Bucket: id.bucket, Key: id.key, Reason: fmt.Sprintf("written with audit entry %d, but its last change is entry %d (an older copy?)", seq, want)}
		}
	}
	for id := range last {
		if _, ok := seqs[id]; !ok && !deleted[id] {
			return head, &RecordError{Bucket: id.bucket, Key: id.key, Reason: "missing (deleted without the KEK?)"}
		}
	}
	return head, nil
}

type storedRecord struct {
	seq   uint64
	value []byte // nil if there is no record
}

func (s *Server) readRecord(ctx context.Context, bucket, key string) (storedRecord, error) {
	v, err := s.cfg.Store.Get(ctx, bucket, key)
	if err != nil || v == nil {
		return storedRecord{}, err
	}
	seq, val, err := s.openRecord(bucket, key, v)
	if err != nil {
		return storedRecord{}, err
	}
	return storedRecord{seq: seq, value: val}, nil
}

const metaAuditBase = "audit-base"

// auditBase is the checkpoint a compaction leaves: the last entry it
// removed, and the entry that last wrote each record it still vouches for.
type auditBase struct {
	Seq     uint64       `json:"seq"`
	Hash    string       `json:"hash"`
	Records []baseRecord `json:"records"`
}

type baseRecord struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Seq    uint64 `json:"seq"`
}

// maxCompact bounds the entries one compaction removes (one transaction).
const maxCompact = 10_000

var errStop = errors.New("stop")

// compaction computes, in the writer, the removal of the audit entries
// older than before (at most maxCompact of them): the deletes, the new
// checkpoint record (to be stamped with the "compact" entry) and that entry.
func (s *Server) compaction(ctx context.Context, before time.Time) (deletes, base []Write, entries []AuditEntry, err error) {
	var from, last uint64
	var lastHash string
	err = s.cfg.Store.ForEach(ctx, bucketAudit, func(k string, v []byte) error {
		seq, val, err := s.openRecord(bucketAudit, k, v)
		if err != nil {
			return err
		}
		var e AuditEntry
		if err := json.Unmarshal(val, &e); err != nil {
			return err
		}
		if !e.Time.Before(before) || (from != 0 && seq-from >= maxCompact) {
			return errStop
		}
		if from == 0 {
			from = seq
		}
		last, lastHash = seq, e.Hash
		deletes = append(deletes, Write{Bucket: bucketAudit, Key: k})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, nil, nil, err
	}
	if last == 0 {
		return nil, nil, nil, nil
	}
	b := auditBase{Seq: last, Hash: lastHash}
	for id, seq := range s.recordSeqs {
		if seq <= last && id != (recordID{bucketMeta, metaAuditBase}) {
			b.Records = append(b.Records, baseRecord{Bucket: id.bucket, Key: id.key, Seq: seq})
		}
	}
	val, err := json.Marshal(b)
	if err != nil {
		return nil, nil, nil, err
	}
	e := AuditEntry{Time: s.cfg.Clock().UTC(), Action: "compact", Actor: "server", Outcome: "ok",
		Detail: fmt.Sprintf("removed entries %d to %d; entry %d hash %s", from, last, last, lastHash)}
	return deletes, []Write{{Bucket: bucketMeta, Key: metaAuditBase, Value: val}}, []AuditEntry{e}, nil
}

// CompactAudit removes the audit entries older than [Config].AuditRetention
// (at most 10,000 at a time), leaving a checkpoint from which the rest of
// the chain still verifies, and an audited "compact" entry naming what it
// removed and the removed chain's last hash. The scheduler runs it hourly.
func (s *Server) CompactAudit(ctx context.Context) error {
	done := make(chan error, 1)
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return errServerClosed
	}
	s.queue <- &pending{compact: s.cfg.Clock().Add(-s.cfg.AuditRetention), done: done}
	s.closeMu.RUnlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("kmsserver: compact audit: %w", ctx.Err())
	}
}
