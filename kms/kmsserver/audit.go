package kmsserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// AuditEntry is one decision in the KMS's audit log. Entries form a hash
// chain: each one's Hash covers its content and the previous entry's Hash,
// so changing, removing or reordering any entry breaks every later link.
// An entry never holds key material or credentials.
type AuditEntry struct {
	// Seq numbers entries from 1 without gaps.
	Seq uint64 `json:"seq"`
	// Time is the server's clock at the decision, UTC.
	Time time.Time `json:"time"`
	// Action is one of register, create, fetch, watch, rotate, remove,
	// end, purge, state, min-version, revoke, restore, signing-key,
	// compact, or denials (the aggregate of denials beyond the
	// per-interval bound). A granted removal is a rotate entry whose
	// Detail names the removed participant ("removed bob"); remove
	// entries are its denials. A revoke or restore entry's Detail is the
	// device identity; the rotations a revocation makes are rotate
	// entries by the operator with Detail "revoked <identity>".
	Action string `json:"action"`
	// Actor is the authenticated identity, "scheduler", "operator" or
	// "server" (signing keys created at first start, compaction),
	// "(other)" for the denials aggregate, or empty when authentication
	// failed.
	Actor string `json:"actor"`
	// Call is the call id the decision concerns, if any.
	Call string `json:"call,omitempty"`
	// Version is the key version concerned, if any.
	Version uint32 `json:"version,omitempty"`
	// Outcome is "ok" or "denied".
	Outcome string `json:"outcome"`
	// Detail explains a denial or names the subject of a change.
	Detail string `json:"detail,omitempty"`
	// Prev is the previous entry's Hash (hex), 64 zeros for the first.
	Prev string `json:"prev"`
	// Hash is SHA-256 over Prev's bytes and the entry's JSON with Hash
	// empty, in hex.
	Hash string `json:"hash"`
}

var genesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// ErrAuditChain reports an audit log whose hash chain does not verify.
var ErrAuditChain = errors.New("kmsserver: audit chain broken")

// AuditError locates a break in the audit chain.
type AuditError struct {
	// Line is the 1-based line of the exported log where the break is.
	Line int
	// Reason says what is wrong.
	Reason string
}

// Error describes the break.
func (e *AuditError) Error() string {
	return fmt.Sprintf("kmsserver: audit log line %d: %s", e.Line, e.Reason)
}

// Unwrap returns [ErrAuditChain].
func (e *AuditError) Unwrap() error { return ErrAuditChain }

// AuditHead is the last entry of a verified log. Publish or keep it apart
// from the store: comparing it later detects a log truncated at its end,
// which the chain alone cannot.
type AuditHead struct {
	// Seq is the last entry's sequence number, 0 for an empty log.
	Seq uint64
	// Hash is the last entry's hash (hex), 64 zeros for an empty log.
	Hash string
}

func (e *AuditEntry) computeHash() (string, error) {
	c := *e
	c.Hash = ""
	body, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	prev, err := hex.DecodeString(e.Prev)
	if err != nil || len(prev) != sha256.Size {
		return "", errors.New("prev is not a SHA-256 hex digest")
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// seal links e after prev and returns its stored form.
func (e *AuditEntry) seal(prev AuditHead) ([]byte, error) {
	e.Seq = prev.Seq + 1
	e.Prev = prev.Hash
	h, err := e.computeHash()
	if err != nil {
		return nil, err
	}
	e.Hash = h
	return json.Marshal(e)
}

func auditKey(seq uint64) string { return fmt.Sprintf("%016x", seq) }

// maxAuditLine bounds one line of an exported audit log.
const maxAuditLine = 1 << 20

// VerifyAuditLog reads an audit log exported by [ExportAuditLog] (one JSON
// entry per line) and checks the whole hash chain from the first entry.
// A log the server has compacted ([Server.CompactAudit]) starts after its
// checkpoint, at an entry other than 1; its "compact" entries name the
// entries removed and the hash of the last one, and a previously kept
// [AuditHead] at or after that point tells a compaction from a log cut at
// its start. It
// returns the head of the verified chain, or an error wrapping
// [ErrAuditChain] (an [*AuditError]) at the first entry that does not
// verify.
func VerifyAuditLog(r io.Reader) (AuditHead, error) {
	head := AuditHead{Hash: genesisHash}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxAuditLine)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		var e AuditEntry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return head, &AuditError{Line: line, Reason: "not an audit entry: " + err.Error()}
		}
		if dec.More() {
			return head, &AuditError{Line: line, Reason: "trailing data"}
		}
		if line == 1 && e.Seq > 1 {
			// A compacted log starts after its checkpoint.
			head = AuditHead{Seq: e.Seq - 1, Hash: e.Prev}
		}
		if e.Seq != head.Seq+1 {
			return head, &AuditError{Line: line, Reason: fmt.Sprintf("sequence %d after %d", e.Seq, head.Seq)}
		}
		if e.Prev != head.Hash {
			return head, &AuditError{Line: line, Reason: "does not link to the previous entry"}
		}
		h, err := e.computeHash()
		if err != nil {
			return head, &AuditError{Line: line, Reason: err.Error()}
		}
		if h != e.Hash {
			return head, &AuditError{Line: line, Reason: "hash does not match content"}
		}
		head = AuditHead{Seq: e.Seq, Hash: e.Hash}
	}
	if err := sc.Err(); err != nil {
		return head, &AuditError{Line: line + 1, Reason: err.Error()}
	}
	return head, nil
}

// ExportAuditLog writes the audit log kept in store to w, one JSON entry
// per line, oldest first: the input of [VerifyAuditLog]. To include a live
// server's latest fetch decisions, use [Server.ExportAuditLog].
func ExportAuditLog(ctx context.Context, store Store, w io.Writer) error {
	bw := bufio.NewWriter(w)
	err := store.ForEach(ctx, bucketAudit, func(_ string, v []byte) error {
		if _, err := bw.Write(recordValue(v)); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return fmt.Errorf("kmsserver: export audit log: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("kmsserver: export audit log: %w", err)
	}
	return nil
}
