package kmsserver

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
)

// Server is the reference KMS: an [http.Handler] serving the protocol the
// [github.com/securecall/securecall/kms.Client] speaks. Serve it over TLS with [Server.TLSConfig] so that devices
// can present certificates. Close stops its rotation scheduler and its store
// writer; the caller shuts its http.Server down first.
type Server struct {
	cfg    Config
	aead   cipher.AEAD
	macKey []byte    // authenticates every store record
	head0  AuditHead // the audit head verified at start, for the writer
	// recordSeqs is the audit sequence number each live record was last
	// written with; the writer's alone once it runs.
	recordSeqs map[recordID]uint64
	mux        *http.ServeMux
	started    time.Time

	mu      sync.RWMutex // guards devices, calls and everything in them, revoked and revokeWake
	devices map[string]*device
	calls   map[string]*call
	// revoked maps each revoked identity to when it was revoked.
	revoked map[string]time.Time
	// revokeWake is closed and replaced on every revocation, ending the
	// revoked device's watches.
	revokeWake chan struct{}

	revokeMu sync.Mutex // serializes revocations: compute, commit, apply
	gates    gates      // per identity: requests in progress against RevokeDevice
	// admitted, if set (by tests), runs after a request of identity
	// passed its revocation check, holding the device's gate.
	admitted func(identity string)

	writeMu sync.Mutex // serializes state changes: compute, commit, apply

	shared *replicas // nil unless cfg.Store is a SharedStore

	auth authCache

	sigMu      sync.RWMutex
	sigCurrent *signingKey // signs every delivery
	sigNext    *signingKey // published, current after RotateSigningKey

	// audiences are the origins of BaseURL and Aliases: what a proof of
	// freshness may name. Without a BaseURL the request's Host is one too.
	audiences []string

	nonceMu   sync.Mutex
	replay    *nonceMemory
	lastSweep time.Time
	nonceGone []string // expired nonces to delete from the store
	// storedEvicted says the store may hold nonces the memory has
	// evicted: the scheduler deletes them from the store once expired.
	storedEvicted bool

	requests     *limiter // per device
	authFailures *limiter // failed authentications per remote address
	rotates      *limiter // per call
	creators     counter  // running calls by creator
	watches      counter  // long-polls by device
	denials      denials

	closeMu sync.RWMutex // held for reading while sending to queue
	closed  bool
	queue   chan *pending
	closing chan struct{}
	wake    chan struct{}
	wg      sync.WaitGroup
}

var _ http.Handler = (*Server)(nil)

type device struct {
	pub *ecdsa.PublicKey
	kid string
}

type deviceRecord struct {
	Identity     string          `json:"identity"`
	Key          json.RawMessage `json:"key"`
	RegisteredAt time.Time       `json:"registered_at"`
}

type versionRecord struct {
	Version    uint32    `json:"version"`
	State      string    `json:"state,omitempty"` // "", "compromised" or "destroyed"
	CreatedAt  time.Time `json:"created_at"`
	ActivateAt time.Time `json:"activate_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	SealedKey  []byte    `json:"sealed_key,omitempty"`
}

type callRecord struct {
	ID            string          `json:"id"`
	Creator       string          `json:"creator"`
	Participants  []string        `json:"participants"`
	RotateEveryMS int64           `json:"rotate_every_ms,omitempty"`
	LifetimeMS    int64           `json:"lifetime_ms,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	MinVersion    uint32          `json:"min_version"`
	Versions      []versionRecord `json:"versions"`
	// EndedAt is when the call ended (by its creator, or at the maximum
	// lifetime); zero while it runs.
	EndedAt time.Time `json:"ended_at,omitzero"`
}

func (r *callRecord) ended() bool { return !r.EndedAt.IsZero() }

// withdrawnCount is what the call has withdrawn (wire.KeysResponse's
// Withdrawn): its minimum version plus its revoked versions. Neither ever
// goes down, so the sum changes exactly when the call withdraws a version.
func (r *callRecord) withdrawnCount() uint64 {
	n := uint64(r.MinVersion)
	for _, vr := range r.Versions {
		if vr.State != "" {
			n++
		}
	}
	return n
}

// revokedListed lists the revoked versions at or above the minimum among
// the newest wire.MaxRevokedListed, ascending (wire.KeysResponse's
// Revoked). An older one is no longer held by a live call: sessions drop
// a version after its successor plus their grace, and the KMS's minimum
// rotation period spaces the versions.
func (r *callRecord) revokedListed() []uint32 {
	var out []uint32
	for _, vr := range r.Versions[max(len(r.Versions)-wire.MaxRevokedListed, 0):] {
		if vr.State != "" && vr.Version >= r.MinVersion {
			out = append(out, vr.Version)
		}
	}
	return out
}

func (r callRecord) clone() callRecord {
	r.Participants = slices.Clone(r.Participants)
	r.Versions = slices.Clone(r.Versions)
	return r
}

type call struct {
	rec          callRecord
	keys         map[uint32][]byte
	changed      chan struct{} // closed and replaced on every change
	nextRotation time.Time     // zero when not scheduled

	// wrapped caches the JWEs delivered to each device key, so that a
	// repeated fetch costs no key agreement. The id and the URI hold
	// everything the JWE binds, so an entry served is never stale. The URI
	// is compared rather than part of the id: without a BaseURL it is the
	// request's Host, and a device that names the KMS otherwise replaces
	// its entry instead of adding one per name.
	wrapMu  sync.Mutex
	wrapped map[wrapID]wrapEntry
}

type wrapID struct {
	kid, signer      string
	version          uint32
	activate, expire int64
}

type wrapEntry struct {
	uri, jwe string
}

// maxWrapCache bounds a call's JWE cache; it is emptied when full.
const maxWrapCache = 4096

func (c *call) wrap(dev *device, sig *signingKey, b wire.Binding, key []byte) (string, error) {
	id := wrapID{kid: dev.kid, signer: sig.kid, version: b.Version, activate: wire.UnixMS(b.ActivateAt), expire: wire.UnixMS(b.ExpiresAt)}
	c.wrapMu.Lock()
	e, ok := c.wrapped[id]
	c.wrapMu.Unlock()
	if ok && e.uri == b.URI {
		return e.jwe, nil
	}
	jwe, err := wire.WrapKey(dev.pub, dev.kid, b, key, sig.signer)
	if err != nil {
		return "", err
	}
	c.wrapMu.Lock()
	if c.wrapped == nil || len(c.wrapped) >= maxWrapCache {
		c.wrapped = map[wrapID]wrapEntry{}
	}
	c.wrapped[id] = wrapEntry{uri: b.URI, jwe: jwe}
	c.wrapMu.Unlock()
	return jwe, nil
}

// pending is one group of writes and audit entries for the store writer.
type pending struct {
	writes  []Write
	entries []AuditEntry
	apply   func() // run by the writer after a successful commit, in queue order
	// compact, if set, removes audit entries older than it (see compact).
	compact time.Time
	done    chan error

	seq      uint64 // the audit seq its records were sealed with
	conflict bool   // left out of a shared commit: see ErrConflict
	revoked  bool   // left out of a shared commit: its device is revoked (see proofDevice)
}

const (
	bucketMeta = "meta"
	metaHead   = "audit-head"
)

// New loads the server's state from cfg.Store, unsealing every key
// with cfg.KEK (a wrong KEK fails here), and starts its rotation scheduler
// and store writer.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("kmsserver: Config.Store is required")
	}
	if len(cfg.KEK) != 32 {
		return nil, errors.New("kmsserver: Config.KEK must be 32 bytes")
	}
	cfg = cfg.withDefaults()
	block, err := aes.NewCipher(cfg.KEK)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: KEK: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: KEK: %w", err)
	}
	macKey, err := deriveMACKey(cfg.KEK)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: KEK: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		aead:    aead,
		macKey:  macKey,
		started: cfg.Clock(),
		devices: map[string]*device{},
		calls:   map[string]*call{},
		revoked: map[string]time.Time{},
		replay:  newNonceMemory(cfg.MaxNonces),
		queue:   make(chan *pending, 4096),
		closing: make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}
	s.revokeWake = make(chan struct{})
	if s.audiences, err = audiences(cfg); err != nil {
		return nil, err
	}
	s.auth.init()
	s.requests = newLimiter(cfg.RequestRate, cfg.RequestBurst, 100_000)
	s.authFailures = newLimiter(cfg.FailedAuthRate, 5*int(max(1, cfg.FailedAuthRate)), 100_000)
	s.rotates = newLimiter(float64(cfg.RotationsPerMinute)/60, max(1, cfg.RotationsPerMinute/10), 100_000)
	s.denials.maxKeys = 1024
	seqs := map[recordID]uint64{}
	var haveSigner bool
	loadAll := func() error {
		if err := s.load(context.Background(), seqs); err != nil {
			return err
		}
		if err := s.loadRevoked(context.Background(), seqs); err != nil {
			return err
		}
		if haveSigner, err = s.loadSigningKeys(context.Background(), seqs); err != nil {
			return err
		}
		if s.head0, err = s.checkAudit(context.Background(), seqs); err != nil {
			return fmt.Errorf("kmsserver: store: %w", err)
		}
		s.recordSeqs = seqs
		return s.loadNonces(context.Background())
	}
	if err := s.loadShared(loadAll, seqs); err != nil {
		return nil, err
	}
	for _, c := range s.calls {
		if !c.rec.ended() {
			s.creators.add(c.rec.Creator, 1)
		}
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST "+wire.PathDevices, s.handleRegister)
	s.mux.HandleFunc("POST "+wire.PathCalls, s.handleCreate)
	s.mux.HandleFunc("GET "+wire.PathCalls+"/{id}/keys", s.handleKeys)
	s.mux.HandleFunc("POST "+wire.PathCalls+"/{id}/rotate", s.handleRotate)
	s.mux.HandleFunc("DELETE "+wire.PathCalls+"/{id}/participants/{identity}", s.handleRemove)
	s.mux.HandleFunc("POST "+wire.PathCalls+"/{id}/end", s.handleEnd)
	s.wg.Add(2)
	go s.writer()
	go s.scheduler()
	if s.shared != nil {
		s.wg.Add(1)
		go s.follow()
	}
	if !haveSigner {
		err := s.initSigningKeys()
		if errors.Is(err, ErrConflict) {
			// Another replica created them first.
			_, err = s.loadSigningKeys(context.Background(), seqs)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("kmsserver: create signing keys: %w", err)
		}
	}
	s.rotateAfterRevocations()
	return s, nil
}

// load reads every device and call, authenticating each record, and notes
// the audit entry each was written with in seqs.
func (s *Server) load(ctx context.Context, seqs map[recordID]uint64) error {
	err := s.cfg.Store.ForEach(ctx, bucketDevices, func(id string, stored []byte) error {
		seq, v, err := s.openRecord(bucketDevices, id, stored)
		if err != nil {
			return err
		}
		seqs[recordID{bucketDevices, id}] = seq
		var rec deviceRecord
		if err := json.Unmarshal(v, &rec); err != nil || rec.Identity != id {
			return &RecordError{Bucket: bucketDevices, Key: id, Reason: "not a device record"}
		}
		pub, err := wire.ParsePublicJWK(rec.Key)
		if err != nil {
			return err
		}
		kid, err := wire.KeyID(pub)
		if err != nil {
			return err
		}
		s.devices[id] = &device{pub: pub, kid: kid}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kmsserver: load devices: %w", err)
	}
	err = s.cfg.Store.ForEach(ctx, bucketCalls, func(id string, stored []byte) error {
		seq, v, err := s.openRecord(bucketCalls, id, stored)
		if err != nil {
			return err
		}
		seqs[recordID{bucketCalls, id}] = seq
		var rec callRecord
		if err := json.Unmarshal(v, &rec); err != nil || rec.ID != id {
			return &RecordError{Bucket: bucketCalls, Key: id, Reason: "not a call record"}
		}
		c := &call{rec: rec, keys: map[uint32][]byte{}, changed: make(chan struct{})}
		for _, vr := range rec.Versions {
			if vr.SealedKey == nil {
				continue
			}
			k, err := s.unseal(id, vr.Version, vr.SealedKey)
			if err != nil {
				return err
			}
			c.keys[vr.Version] = k
		}
		if rec.RotateEveryMS > 0 && len(rec.Versions) > 0 && !rec.ended() {
			c.nextRotation = rec.Versions[len(rec.Versions)-1].CreatedAt.Add(time.Duration(rec.RotateEveryMS) * time.Millisecond)
		}
		s.calls[id] = c
		return nil
	})
	if err != nil {
		return fmt.Errorf("kmsserver: load calls: %w", err)
	}
	return nil
}

func sealAAD(callID string, version uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte("securecall-kms key\x00"+callID+"\x00"), version)
}

func (s *Server) seal(callID string, version uint32, key []byte) ([]byte, error) {
	return s.sealWith(sealAAD(callID, version), key)
}

// sealWith encrypts plain under the KEK (AES-256-GCM, random nonce first).
func (s *Server) sealWith(aad, plain []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, aad), nil
}

// openWith reverses sealWith.
func (s *Server) openWith(aad, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], aad)
}

func (s *Server) unseal(callID string, version uint32, sealed []byte) ([]byte, error) {
	k, err := s.openWith(sealAAD(callID, version), sealed)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: unseal key %s v%d (wrong KEK?): %w", callID, version, err)
	}
	return k, nil
}

// TLSConfig returns a TLS configuration for serving the KMS with cert: TLS
// 1.3, and client certificates requested (the server verifies them itself
// against ClientCAs, so that it can answer each failure precisely).
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequestClientCert,
	}
}

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Close stops the rotation scheduler, writes what is queued for the store
// and returns once every goroutine of the server has ended. It does not
// close the Store. A second call returns an error wrapping [net.ErrClosed].
func (s *Server) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return errServerClosed
	}
	s.closed = true
	close(s.closing)
	close(s.queue)
	s.closeMu.Unlock()
	s.wg.Wait()
	return nil
}

// submit queues writes and audit entries for the store writer. The returned
// channel reports the commit's outcome.
func (s *Server) submit(writes []Write, entries ...AuditEntry) <-chan error {
	return s.submitApply(writes, nil, entries...)
}

// submitApply is submit with a function the writer runs once the commit
// is durable, before it reports success.
func (s *Server) submitApply(writes []Write, apply func(), entries ...AuditEntry) <-chan error {
	done := make(chan error, 1)
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		done <- errServerClosed
		return done
	}
	s.queue <- &pending{writes: writes, entries: entries, apply: apply, done: done}
	return done
}

// commit submits and waits for durability. On a SharedStore, a change
// refused with ErrConflict has its records read again before commit
// returns.
func (s *Server) commit(writes []Write, entries ...AuditEntry) error {
	err := <-s.submit(writes, entries...)
	if errors.Is(err, ErrConflict) {
		for _, w := range writes {
			if rerr := s.refreshLocked(recordID{w.Bucket, w.Key}); rerr != nil {
				s.cfg.Logger.Warn("kmsserver: read a changed record again", "bucket", w.Bucket, "err", rerr)
			}
		}
	}
	return err
}

// audit records a decision; it is durable once the store writer's next
// commit returns, which callers do not wait for.
func (s *Server) audit(e AuditEntry) {
	s.submit(nil, e)
}

// Flush returns once every decision made so far is on stable storage.
func (s *Server) Flush(ctx context.Context) error {
	select {
	case err := <-s.submit(nil, s.denials.take(s.cfg.Clock())...):
		return err
	case <-ctx.Done():
		return fmt.Errorf("kmsserver: flush: %w", ctx.Err())
	}
}

// ExportAuditLog flushes pending decisions and writes the audit log to w
// (see [ExportAuditLog]).
func (s *Server) ExportAuditLog(ctx context.Context, w io.Writer) error {
	if err := s.Flush(ctx); err != nil {
		return err
	}
	return ExportAuditLog(ctx, s.cfg.Store, w)
}

// writer is the store's only writer: it groups whatever is queued into one
// commit, chaining audit entries in queue order (group commit).
func (s *Server) writer() {
	defer s.wg.Done()
	ctx := context.Background()
	head := s.head0
	for {
		p, ok := <-s.queue
		if !ok {
			return
		}
		batch := []*pending{p}
	drain:
		for len(batch) < 1024 {
			select {
			case p, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		var err error
		var next AuditHead
		var written []stamped
		if s.shared != nil {
			// The head is the store's, shared with the other replicas.
			next, written, err = s.commitShared(ctx, batch)
		} else {
			var writes []Write
			writes, next, written, err = s.batchWrites(ctx, batch, head)
			if err == nil && len(writes) > 0 {
				err = s.cfg.Store.Commit(ctx, writes)
			}
		}
		if err == nil {
			head = next
			for _, w := range written {
				if w.seq == 0 {
					delete(s.recordSeqs, w.id)
				} else {
					s.recordSeqs[w.id] = w.seq
				}
			}
		} else {
			s.cfg.Logger.Error("kmsserver: store commit failed", "err", err)
		}
		for _, p := range batch {
			perr := err
			if perr == nil && p.conflict {
				perr = ErrConflict
			}
			if perr == nil && p.revoked {
				perr = errRevokedElsewhere
			}
			if perr == nil {
				s.noteCommitted(p)
				if p.apply != nil {
					p.apply()
				}
			}
			p.done <- perr
		}
	}
}

// compactEvery is how often the scheduler compacts the audit log.
const compactEvery = time.Hour

// scheduler rotates calls that asked for a schedule, ends calls at their
// maximum lifetime, purges ended calls after the retention, flushes
// aggregated denials and compacts the audit log.
func (s *Server) scheduler() {
	defer s.wg.Done()
	type job struct {
		id   string
		kind int // jobRotate, jobEnd or jobPurge
	}
	const (
		jobRotate = iota
		jobEnd
		jobPurge
	)
	flushAt := s.cfg.Clock().Add(s.cfg.DenialInterval)
	compactAt := s.cfg.Clock().Add(compactEvery)
	nonceSweepAt := s.cfg.Clock().Add(nonceSweepEvery)
	for {
		now := s.cfg.Clock()
		var due []job
		if !now.Before(flushAt) {
			if es := s.denials.take(now); len(es) > 0 {
				s.submit(nil, es...)
			}
			flushAt = now.Add(s.cfg.DenialInterval)
		}
		if !now.Before(compactAt) {
			s.closeMu.RLock()
			if !s.closed {
				s.queue <- &pending{compact: now.Add(-s.cfg.AuditRetention), done: make(chan error, 1)}
			}
			s.closeMu.RUnlock()
			compactAt = now.Add(compactEvery)
		}
		if !now.Before(nonceSweepAt) {
			s.sweepStoredNonces(context.Background())
			nonceSweepAt = now.Add(nonceSweepEvery)
		}
		next := flushAt
		if compactAt.Before(next) {
			next = compactAt
		}
		if nonceSweepAt.Before(next) {
			next = nonceSweepAt
		}
		at := func(id string, kind int, t time.Time) {
			if !t.After(now) {
				due = append(due, job{id, kind})
			} else if t.Before(next) {
				next = t
			}
		}
		s.mu.RLock()
		for id, c := range s.calls {
			if c.rec.ended() {
				at(id, jobPurge, c.rec.EndedAt.Add(s.cfg.EndedRetention))
				continue
			}
			at(id, jobEnd, c.rec.CreatedAt.Add(s.cfg.MaxCallLifetime))
			if !c.nextRotation.IsZero() {
				at(id, jobRotate, c.nextRotation)
			}
		}
		s.mu.RUnlock()
		for _, j := range due {
			var err error
			switch j.kind {
			case jobRotate:
				_, err = s.rotate(j.id, "scheduler", "scheduled", stillDue(now))
			case jobEnd:
				err = s.endCall(j.id, "scheduler", "maximum lifetime")
			case jobPurge:
				err = s.purge(j.id)
			}
			if errors.Is(err, ErrConflict) || errors.Is(err, errNotDue) {
				// Another replica changed the call first (did this
				// rotation); the call has been read again.
				continue
			}
			if err != nil && !errors.Is(err, ErrNoCall) && !errors.Is(err, errEnded) {
				s.cfg.Logger.Warn("kmsserver: scheduled change failed", "call", j.id, "err", err)
				// Retry in a second rather than at once.
				s.mu.Lock()
				if c := s.calls[j.id]; c != nil && !c.nextRotation.IsZero() {
					c.nextRotation = now.Add(time.Second)
				}
				s.mu.Unlock()
				next = now.Add(time.Second)
				due = nil
				break
			}
		}
		if len(due) > 0 {
			continue
		}
		fired, stop := s.cfg.WakeAt(next)
		select {
		case <-s.closing:
			stop()
			return
		case <-s.wake:
		case <-fired:
		}
		stop()
	}
}

// errEnded: the call has ended; nothing changes it but its purge.
var errEnded = errors.New("kmsserver: call ended")

// EndCall ends call callID: rotation stops, no key of it is delivered
// again, and its keys are destroyed (its record purged from the store)
// after [Config].EndedRetention. Audited. Ending an ended call is a no-op.
func (s *Server) EndCall(ctx context.Context, callID string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kmsserver: end call: %w", err)
	}
	err := s.endCall(callID, "operator", "")
	if errors.Is(err, errEnded) {
		return nil
	}
	return err
}

func (s *Server) endCall(id, actor, detail string, extra ...Write) error {
	err := s.changeCall(id, AuditEntry{Action: "end", Actor: actor, Detail: detail}, func(rec *callRecord) (bool, error) {
		if rec.ended() {
			return false, errEnded
		}
		rec.EndedAt = s.cfg.Clock().UTC()
		return false, nil
	}, func(c *call) {
		c.nextRotation = time.Time{}
		s.creators.add(c.rec.Creator, -1)
	}, extra...)
	if err == nil {
		s.poke()
		s.cfg.Logger.Info("kmsserver: call ended", "call", id, "actor", actor)
	}
	return err
}

// purge removes an ended call from the store and wipes its keys.
func (s *Server) purge(id string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	c, rec := s.callForChange(id)
	if c == nil {
		return ErrNoCall
	}
	if !rec.ended() {
		return fmt.Errorf("kmsserver: purge %q: the call has not ended", id)
	}
	err := s.commit([]Write{{Bucket: bucketCalls, Key: id}},
		AuditEntry{Time: s.cfg.Clock().UTC(), Action: "purge", Actor: "scheduler", Call: id, Outcome: "ok", Detail: "retention over, keys destroyed"})
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.calls, id)
	for _, k := range c.keys {
		clear(k)
	}
	clear(c.keys)
	close(c.changed)
	c.changed = make(chan struct{})
	s.mu.Unlock()
	c.wrapMu.Lock()
	c.wrapped = nil
	c.wrapMu.Unlock()
	return nil
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// callForChange returns call id and a copy of its record to change, or nil
// if there is no such call. The caller holds writeMu, so the record cannot
// change until the caller stores its copy back.
func (s *Server) callForChange(id string) (*call, callRecord) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.calls[id]
	if c == nil {
		return nil, callRecord{}
	}
	return c, c.rec.clone()
}

// rotate adds a version to call id, after applying change (if any) to the
// call's record, and commits both with their audit entry.
func (s *Server) rotate(id, actor, detail string, change func(*callRecord) error, extra ...Write) (uint32, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	c, rec := s.callForChange(id)
	if c == nil {
		return 0, ErrNoCall
	}
	if rec.ended() {
		return 0, errEnded
	}
	if change != nil {
		if err := change(&rec); err != nil {
			return 0, err
		}
	}
	now := s.cfg.Clock().UTC()
	key, vr, err := s.newVersion(&rec, now, now.Add(s.cfg.ActivationDelay))
	if err != nil {
		return 0, err
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	err = s.commit(append([]Write{{Bucket: bucketCalls, Key: id, Value: val}}, extra...),
		AuditEntry{Time: now, Action: "rotate", Actor: actor, Call: id, Version: vr.Version, Outcome: "ok", Detail: detail})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	c.rec = rec
	addedLocked(c, vr, key, now)
	close(c.changed)
	c.changed = make(chan struct{})
	s.mu.Unlock()
	s.rotated(id, vr.Version, actor)
	return vr.Version, nil
}

// addedLocked puts a committed new version of c, made at now, in memory
// and moves its next scheduled rotation. Called with s.mu held.
func addedLocked(c *call, vr versionRecord, key []byte, now time.Time) {
	c.keys[vr.Version] = key
	if c.rec.RotateEveryMS > 0 {
		c.nextRotation = now.Add(time.Duration(c.rec.RotateEveryMS) * time.Millisecond)
	}
}

// rotated wakes the scheduler after a rotation of call id to version v,
// and logs it.
func (s *Server) rotated(id string, v uint32, actor string, attrs ...any) {
	s.poke()
	s.cfg.Logger.Info("kmsserver: rotated", append([]any{"call", id, "version", v, "actor", actor}, attrs...)...)
}

func (s *Server) newVersion(rec *callRecord, now, activate time.Time) ([]byte, versionRecord, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, versionRecord{}, err
	}
	lifetime := s.cfg.KeyLifetime
	if rec.LifetimeMS > 0 {
		lifetime = time.Duration(rec.LifetimeMS) * time.Millisecond
	}
	vr := versionRecord{
		Version:    uint32(len(rec.Versions) + 1),
		CreatedAt:  now,
		ActivateAt: activate,
		ExpiresAt:  activate.Add(lifetime),
	}
	sealed, err := s.seal(rec.ID, vr.Version, key)
	if err != nil {
		return nil, versionRecord{}, err
	}
	vr.SealedKey = sealed
	rec.Versions = append(rec.Versions, vr)
	return key, vr, nil
}

// SetKeyState marks a version of call callID compromised or destroyed (the
// only states an operator sets; the others follow from time). Destroying
// erases the key material from the store. Both are final and audited.
// Watches that track withdrawals ([kms.Client.WatchChanges]) hear of it at
// once, and their sessions stop sending and receiving under the version.
// When it is the call's newest version, the one live calls send with, a new
// version replaces it in the same commit (audited as a rotation), active
// after the activation delay; sessions that heard of the withdrawal send
// under it at once.
func (s *Server) SetKeyState(ctx context.Context, callID string, version uint32, state KeyState) error {
	if state != StateCompromised && state != StateDestroyed {
		return fmt.Errorf("kmsserver: set key state: %v cannot be set", state)
	}
	return s.changeCall(callID, AuditEntry{Action: "state", Actor: "operator", Version: version, Detail: state.String()}, func(rec *callRecord) (bool, error) {
		if version == 0 || int(version) > len(rec.Versions) {
			return false, fmt.Errorf("kmsserver: set key state: call %q has no version %d", callID, version)
		}
		vr := &rec.Versions[version-1]
		if vr.State == StateDestroyed.String() {
			return false, fmt.Errorf("kmsserver: set key state: version %d is destroyed", version)
		}
		renew := vr.State == "" && int(version) == len(rec.Versions) && !rec.ended()
		vr.State = state.String()
		if state == StateDestroyed {
			vr.SealedKey = nil
		}
		return renew, nil
	}, func(c *call) {
		if state == StateDestroyed {
			delete(c.keys, version)
		}
	})
}

// SetMinVersion sets the lowest version of call callID that is delivered;
// lower ones are refused from then on. It never lowers the minimum.
func (s *Server) SetMinVersion(ctx context.Context, callID string, version uint32) error {
	return s.changeCall(callID, AuditEntry{Action: "min-version", Actor: "operator", Version: version}, func(rec *callRecord) (bool, error) {
		if int(version) > len(rec.Versions) {
			return false, fmt.Errorf("kmsserver: set min version: call %q has no version %d", callID, version)
		}
		rec.MinVersion = max(rec.MinVersion, version)
		return false, nil
	}, nil)
}

// changeCall applies change to a copy of call id's record and commits it
// with audit entry e, then applies apply to the call under s.mu. When
// change reports renew, a new version is added in the same commit, with
// its own rotation entry.
func (s *Server) changeCall(id string, e AuditEntry, change func(*callRecord) (renew bool, err error), apply func(*call), extra ...Write) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	c, rec := s.callForChange(id)
	if c == nil {
		return fmt.Errorf("kmsserver: call %q: %w", id, ErrNoCall)
	}
	renew, err := change(&rec)
	if err != nil {
		return err
	}
	now := s.cfg.Clock().UTC()
	e.Time, e.Call, e.Outcome = now, id, "ok"
	entries := []AuditEntry{e}
	var key []byte
	var vr versionRecord
	if renew {
		if key, vr, err = s.newVersion(&rec, now, now.Add(s.cfg.ActivationDelay)); err != nil {
			return err
		}
		entries = append(entries, AuditEntry{Time: now, Action: "rotate", Actor: e.Actor, Call: id, Version: vr.Version, Outcome: "ok",
			Detail: fmt.Sprintf("version %d %s", e.Version, e.Detail)})
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.commit(append([]Write{{Bucket: bucketCalls, Key: id, Value: val}}, extra...), entries...); err != nil {
		return err
	}
	s.mu.Lock()
	c.rec = rec
	if apply != nil {
		apply(c)
	}
	if renew {
		addedLocked(c, vr, key, now)
	}
	c.wrapMu.Lock()
	c.wrapped = nil // no wrapped copy of a destroyed key stays around
	c.wrapMu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
	s.mu.Unlock()
	if renew {
		s.rotated(id, vr.Version, e.Actor, "replacing", e.Version)
	}
	return nil
}

// apiError is an error response: status, code, and the audit detail.
type apiError struct {
	status int
	code   string
	retry  time.Duration // Retry-After, for 429
}

func (e *apiError) Error() string { return e.code }

func fail(status int, code string) *apiError { return &apiError{status: status, code: code} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// deny answers with an error and audits the denial.
// deny answers with an error and counts the denial for the audit log,
// where denials are aggregated (see denials).
func (s *Server) deny(w http.ResponseWriter, e *apiError, action, actor, callID string) {
	if !validCallID(callID) {
		callID = "(malformed)"
	}
	s.denials.add(denialKey{action: action, actor: actor, call: callID, code: e.code}, s.cfg.Clock())
	if e.status == http.StatusUnauthorized {
		// Do not keep an unauthenticated client's connection alive.
		w.Header().Set("Connection", "close")
	}
	if e.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, (e.retry+time.Second-1)/time.Second))))
	}
	writeJSON(w, e.status, wire.ErrorResponse{Error: e.code})
}

// validCallID reports whether id can be a call id this server made (16
// random bytes, base64url), or is empty.
func validCallID(id string) bool {
	if id == "" {
		return true
	}
	if len(id) != 22 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func readBody(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, wire.MaxBody))
	if err != nil {
		return nil, fail(http.StatusBadRequest, wire.CodeBadRequest)
	}
	return b, nil
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.BaseURL != "" {
		return s.cfg.BaseURL
	}
	return "https://" + r.Host
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		s.deny(w, aerr, "register", "", "")
		return
	}
	leave, aerr := s.admit(p.identity)
	if aerr != nil {
		s.deny(w, aerr, "register", p.identity, "")
		return
	}
	defer leave()
	body, aerr := readBody(r)
	if aerr != nil {
		s.deny(w, aerr, "register", p.identity, "")
		return
	}
	var req wire.RegisterRequest
	if err := decodeStrict(body, &req); err != nil {
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "register", p.identity, "")
		return
	}
	pub, err := wire.ParsePublicJWK(req.Key)
	if err != nil {
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "register", p.identity, "")
		return
	}
	if p.certKey != nil && !p.certKey.Equal(pub) {
		// With mutual TLS the device key is the certificate's key.
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "register", p.identity, "")
		return
	}
	nonce, aerr := s.checkProof(r, body, p.identity, pub)
	if aerr != nil {
		s.deny(w, aerr, "register", p.identity, "")
		return
	}
	kid, err := wire.KeyID(pub)
	if err != nil {
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "register", p.identity, "")
		return
	}
	// Registrations of different devices are independent: they are not
	// serialized with other state changes, only applied in commit order.
	s.mu.RLock()
	old := s.devices[p.identity]
	s.mu.RUnlock()
	if old != nil && old.kid == kid {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	now := s.cfg.Clock().UTC()
	rec, _ := json.Marshal(deviceRecord{Identity: p.identity, Key: req.Key, RegisteredAt: now})
	detail := "registered " + kid
	if old != nil {
		detail = "replaced " + old.kid + " with " + kid
	}
	dev := &device{pub: pub, kid: kid}
	done := s.submitApply([]Write{{Bucket: bucketDevices, Key: p.identity, Value: rec}, nonce}, func() {
		s.mu.Lock()
		s.devices[p.identity] = dev
		s.mu.Unlock()
	}, AuditEntry{Time: now, Action: "register", Actor: p.identity, Outcome: "ok", Detail: detail})
	if err := <-done; err != nil {
		s.commitFailed(w, err, "register", p.identity, "")
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// maxParticipants and maxIdentity bound a call's participant list.
const (
	maxParticipants = 1024
	maxIdentity     = 256
)

func (s *Server) registered(identity string) *device {
	s.mu.RLock()
	d := s.devices[identity]
	s.mu.RUnlock()
	if d == nil && s.readThrough(recordID{bucketDevices, identity}) {
		s.mu.RLock()
		d = s.devices[identity]
		s.mu.RUnlock()
	}
	return d
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		s.deny(w, aerr, "create", "", "")
		return
	}
	leave, aerr := s.admit(p.identity)
	if aerr != nil {
		s.deny(w, aerr, "create", p.identity, "")
		return
	}
	defer leave()
	dev := s.registered(p.identity)
	if dev == nil {
		s.deny(w, fail(http.StatusUnauthorized, wire.CodeNotRegistered), "create", p.identity, "")
		return
	}
	body, aerr := readBody(r)
	if aerr != nil {
		s.deny(w, aerr, "create", p.identity, "")
		return
	}
	nonce, aerr := s.checkProof(r, body, p.identity, dev.pub)
	if aerr != nil {
		s.deny(w, aerr, "create", p.identity, "")
		return
	}
	req, err := parseCreateRequest(body, s.cfg.MinRotateEvery)
	if err != nil {
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "create", p.identity, "")
		return
	}
	if s.creators.add(p.identity, 1) > s.cfg.MaxCallsPerDevice {
		s.creators.add(p.identity, -1)
		s.deny(w, fail(http.StatusTooManyRequests, wire.CodeQuota), "create", p.identity, "")
		return
	}
	idb := make([]byte, 16)
	rand.Read(idb)
	id := base64.RawURLEncoding.EncodeToString(idb)
	now := s.cfg.Clock().UTC()
	rec := callRecord{
		ID:            id,
		Creator:       p.identity,
		Participants:  req.Participants,
		RotateEveryMS: req.RotateEveryMS,
		LifetimeMS:    req.LifetimeMS,
		CreatedAt:     now,
		MinVersion:    1,
	}
	key, vr, err := s.newVersion(&rec, now, now)
	if err != nil {
		s.creators.add(p.identity, -1)
		writeJSON(w, http.StatusInternalServerError, wire.ErrorResponse{Error: wire.CodeInternal})
		return
	}
	val, _ := json.Marshal(rec)
	s.writeMu.Lock()
	err = s.commit([]Write{{Bucket: bucketCalls, Key: id, Value: val}, nonce},
		AuditEntry{Time: now, Action: "create", Actor: p.identity, Call: id, Version: 1, Outcome: "ok",
			Detail: fmt.Sprintf("%d participants", len(rec.Participants))})
	if err == nil {
		c := &call{rec: rec, keys: map[uint32][]byte{vr.Version: key}, changed: make(chan struct{})}
		if rec.RotateEveryMS > 0 {
			c.nextRotation = now.Add(time.Duration(rec.RotateEveryMS) * time.Millisecond)
		}
		s.mu.Lock()
		s.calls[id] = c
		s.mu.Unlock()
	}
	s.writeMu.Unlock()
	if err != nil {
		s.creators.add(p.identity, -1)
		s.commitFailed(w, err, "create", p.identity, "")
		return
	}
	s.poke()
	writeJSON(w, http.StatusCreated, wire.CreateResponse{URI: s.baseURL(r) + wire.PathCalls + "/" + id, CallID: id, Version: 1})
}

// parseCreateRequest decodes and validates a create request body.
func parseCreateRequest(body []byte, minRotate time.Duration) (wire.CreateRequest, error) {
	var req wire.CreateRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, err
	}
	if len(req.Participants) == 0 || len(req.Participants) > maxParticipants {
		return req, errors.New("participants: 1 to 1024 required")
	}
	seen := map[string]bool{}
	for _, p := range req.Participants {
		if !validIdentity(p) || seen[p] {
			return req, errors.New("participants: empty, too long or repeated identity")
		}
		seen[p] = true
	}
	if req.RotateEveryMS < 0 || req.LifetimeMS < 0 || (req.RotateEveryMS > 0 && req.RotateEveryMS < minRotate.Milliseconds()) {
		return req, errors.New("bad rotation period or lifetime")
	}
	return req, nil
}

// validIdentity reports whether id can name a device: a certificate
// identity (no ':') or a token identity (TokenIdentityPrefix and a subject),
// at most maxIdentity bytes of UTF-8.
func validIdentity(id string) bool {
	if id == "" || len(id) > maxIdentity || !utf8.ValidString(id) {
		return false
	}
	if sub, ok := strings.CutPrefix(id, TokenIdentityPrefix); ok {
		return sub != ""
	}
	return !strings.Contains(id, ":")
}

// lookup returns call id for a participant, or the error to answer.
func (s *Server) participant(id, identity string) (*call, *apiError) {
	s.mu.RLock()
	c := s.calls[id]
	s.mu.RUnlock()
	if c == nil && s.readThrough(recordID{bucketCalls, id}) {
		s.mu.RLock()
		c = s.calls[id]
		s.mu.RUnlock()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c == nil {
		return nil, fail(http.StatusNotFound, wire.CodeNotFound)
	}
	if !slices.Contains(c.rec.Participants, identity) {
		return nil, fail(http.StatusForbidden, wire.CodeForbidden)
	}
	return c, nil
}

// deliverable is one version to wrap, copied out under the lock.
type deliverable struct {
	version    uint32
	state      KeyState
	key        []byte
	activateAt time.Time
	expiresAt  time.Time
}

// usable lists the versions of c above after that are deliverable at now.
// Called with s.mu held.
func (s *Server) usable(c *call, now time.Time, after uint32) []deliverable {
	var out []deliverable
	vs := c.rec.Versions
	for i, vr := range vs {
		if vr.Version <= after || vr.Version < c.rec.MinVersion || vr.State != "" {
			continue
		}
		exp := vr.ExpiresAt
		state := StateActive
		if now.Before(vr.ActivateAt) {
			state = StatePreActive
		}
		if i+1 < len(vs) {
			retire := vs[i+1].ActivateAt.Add(s.cfg.Grace)
			if exp.IsZero() || retire.Before(exp) {
				exp = retire
			}
			if !now.Before(vs[i+1].ActivateAt) {
				state = StateDeactivated
			}
		}
		if !exp.IsZero() && !now.Before(exp) {
			continue
		}
		k := c.keys[vr.Version]
		if k == nil {
			continue
		}
		out = append(out, deliverable{version: vr.Version, state: state, key: k, activateAt: vr.ActivateAt, expiresAt: exp})
	}
	if n := s.cfg.MaxKeysPerResponse; len(out) > n {
		out = out[len(out)-n:] // the newest: what senders and receivers use now
	}
	return out
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, aerr := s.authenticate(r)
	if aerr != nil {
		s.deny(w, aerr, "fetch", "", id)
		return
	}
	// The gate is held while the request decides (and writes what it
	// delivers), and let go of while a watch waits.
	leave, aerr := s.admit(p.identity)
	if aerr != nil {
		s.deny(w, aerr, "fetch", p.identity, id)
		return
	}
	defer func() {
		if leave != nil {
			leave()
		}
	}()
	q := r.URL.Query()
	after, err1 := parseUint32(q.Get("after"))
	waitMS, err2 := strconv.ParseUint(defaultString(q.Get("wait"), "0"), 10, 32)
	version, err3 := parseUint32(q.Get("version"))
	// A watch that tracks withdrawals sends the count it has seen and is
	// answered when it changes.
	tracking := q.Has(wire.QueryWithdrawn)
	seen, err4 := strconv.ParseUint(defaultString(q.Get(wire.QueryWithdrawn), "0"), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		s.deny(w, fail(http.StatusBadRequest, wire.CodeBadRequest), "fetch", p.identity, id)
		return
	}
	c, aerr := s.participant(id, p.identity)
	if aerr != nil {
		s.deny(w, aerr, "fetch", p.identity, id)
		return
	}
	dev := s.registered(p.identity)
	if dev == nil {
		s.deny(w, fail(http.StatusUnauthorized, wire.CodeNotRegistered), "fetch", p.identity, id)
		return
	}
	wait := min(time.Duration(waitMS)*time.Millisecond, s.cfg.MaxWatchWait)
	if wait > 0 {
		extendWrite(w, wait, s.cfg.WriteTimeout)
		n := s.watches.add(p.identity, 1)
		defer s.watches.add(p.identity, -1)
		if n > s.cfg.MaxWatchesPerDevice {
			s.deny(w, &apiError{status: http.StatusTooManyRequests, code: wire.CodeTooManyWatches, retry: time.Second}, "watch", p.identity, id)
			return
		}
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	action := "fetch"
	if wait > 0 {
		action = "watch"
	}
	for {
		if leave == nil {
			// Re-check revocation on every wake-up: it ends a watch.
			if leave, aerr = s.admit(p.identity); aerr != nil {
				s.deny(w, aerr, action, p.identity, id)
				return
			}
		}
		now := s.cfg.Clock()
		s.mu.RLock()
		// Re-check membership on every wake-up: removal ends a watch.
		member := slices.Contains(c.rec.Participants, p.identity)
		rec := c.rec
		changed := c.changed
		revocation := s.revokeWake
		var ds []deliverable
		var stateErr *apiError
		if version != 0 {
			ds, stateErr = s.oneVersion(c, now, version)
		} else {
			ds = s.usable(c, now, after)
		}
		s.mu.RUnlock()
		if !member {
			s.deny(w, fail(http.StatusForbidden, wire.CodeForbidden), action, p.identity, id)
			return
		}
		if rec.ended() {
			// An ended call's keys are never delivered again; this also
			// ends its watches.
			s.deny(w, fail(http.StatusGone, wire.CodeEnded), action, p.identity, id)
			return
		}
		if stateErr != nil {
			s.deny(w, stateErr, action, p.identity, id)
			return
		}
		if len(ds) > 0 || timeout == nil || (tracking && rec.withdrawnCount() != seen) {
			s.deliver(w, r, c, rec, dev, ds, action, p.identity)
			return
		}
		leave()
		leave = nil
		select {
		case <-changed:
		case <-revocation:
		case <-timeout:
			timeout = nil
		case <-r.Context().Done():
			return
		case <-s.closing:
			timeout = nil
		}
	}
}

// oneVersion returns version v of c, or why it is not deliverable.
// Called with s.mu held.
func (s *Server) oneVersion(c *call, now time.Time, v uint32) ([]deliverable, *apiError) {
	if int(v) > len(c.rec.Versions) {
		return nil, fail(http.StatusNotFound, wire.CodeNotFound)
	}
	switch c.rec.Versions[v-1].State {
	case StateCompromised.String():
		return nil, fail(http.StatusGone, wire.CodeCompromised)
	case StateDestroyed.String():
		return nil, fail(http.StatusGone, wire.CodeDestroyed)
	}
	if v < c.rec.MinVersion {
		return nil, fail(http.StatusGone, wire.CodeBelowMinimum)
	}
	for _, d := range s.usable(c, now, v-1) {
		if d.version == v {
			return []deliverable{d}, nil
		}
	}
	return nil, fail(http.StatusGone, wire.CodeExpired)
}

func (s *Server) deliver(w http.ResponseWriter, r *http.Request, c *call, rec callRecord, dev *device, ds []deliverable, action, identity string) {
	uri := s.baseURL(r) + wire.PathCalls + "/" + rec.ID
	resp := wire.KeysResponse{URI: uri, CallID: rec.ID, MinVersion: rec.MinVersion, Latest: uint32(len(rec.Versions)), Keys: make([]wire.Key, 0, len(ds)),
		Revoked: rec.revokedListed(), Withdrawn: rec.withdrawnCount()}
	var last uint32
	sig := s.currentSigner()
	for _, d := range ds {
		jwe, err := c.wrap(dev, sig, wire.Binding{URI: uri, CallID: rec.ID, Version: d.version, ActivateAt: d.activateAt, ExpiresAt: d.expiresAt}, d.key)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, wire.ErrorResponse{Error: wire.CodeInternal})
			return
		}
		resp.Keys = append(resp.Keys, wire.Key{Version: d.version, State: d.state.String(), JWE: jwe})
		last = d.version
	}
	s.audit(AuditEntry{Time: s.cfg.Clock().UTC(), Action: action, Actor: identity, Call: rec.ID, Version: last, Outcome: "ok",
		Detail: fmt.Sprintf("%d versions", len(ds))})
	writeJSON(w, http.StatusOK, resp)
}

func parseUint32(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// stateChange authenticates a state-changing request on call id: the
// caller must be registered, a participant (or, if creatorOnly, the
// creator) and carry a valid proof of freshness.
//
// On success the caller holds the device's gate (see admit) and calls
// leave once it has committed.
func (s *Server) stateChange(w http.ResponseWriter, r *http.Request, action string, creatorOnly bool) (who string, nonce Write, leave func(), ok bool) {
	id := r.PathValue("id")
	p, aerr := s.authenticate(r)
	if aerr != nil {
		s.deny(w, aerr, action, "", id)
		return "", Write{}, nil, false
	}
	release, aerr := s.admit(p.identity)
	if aerr != nil {
		s.deny(w, aerr, action, p.identity, id)
		return "", Write{}, nil, false
	}
	defer func() {
		if !ok {
			release()
		}
	}()
	if s.shared != nil {
		s.participant(id, p.identity) // reads a call another replica just created
	}
	s.mu.RLock()
	c := s.calls[id]
	allowed := c != nil && (c.rec.Creator == p.identity || (!creatorOnly && slices.Contains(c.rec.Participants, p.identity)))
	s.mu.RUnlock()
	if c == nil {
		s.deny(w, fail(http.StatusNotFound, wire.CodeNotFound), action, p.identity, id)
		return "", Write{}, nil, false
	}
	if !allowed {
		s.deny(w, fail(http.StatusForbidden, wire.CodeForbidden), action, p.identity, id)
		return "", Write{}, nil, false
	}
	dev := s.registered(p.identity)
	if dev == nil {
		s.deny(w, fail(http.StatusUnauthorized, wire.CodeNotRegistered), action, p.identity, id)
		return "", Write{}, nil, false
	}
	body, aerr := readBody(r)
	if aerr == nil {
		nonce, aerr = s.checkProof(r, body, p.identity, dev.pub)
	}
	if aerr == nil && len(body) > 0 {
		aerr = fail(http.StatusBadRequest, wire.CodeBadRequest)
	}
	// Only rotations on demand draw on the call's bucket, which every
	// participant shares. A removal is the creator's alone and bounded by
	// the participant list (each one that rotates removes a participant):
	// counting it too would let the participant being removed keep the
	// bucket empty, and so keep itself in the call.
	if action == "rotate" && aerr == nil {
		if ok, retry := s.rotates.allow(id, s.cfg.Clock()); !ok {
			aerr = &apiError{status: http.StatusTooManyRequests, code: wire.CodeRotationLimited, retry: retry}
		}
	}
	if aerr != nil {
		s.deny(w, aerr, action, p.identity, id)
		return "", Write{}, nil, false
	}
	return p.identity, nonce, release, true
}

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) {
	who, nonce, leave, ok := s.stateChange(w, r, "rotate", false)
	if !ok {
		return
	}
	defer leave()
	v, err := s.rotate(r.PathValue("id"), who, "on demand", nil, nonce)
	if errors.Is(err, errEnded) {
		s.deny(w, fail(http.StatusGone, wire.CodeEnded), "rotate", who, r.PathValue("id"))
		return
	}
	if err != nil {
		s.commitFailed(w, err, "rotate", who, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, wire.RotateResponse{Version: v})
}

func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request) {
	who, nonce, leave, ok := s.stateChange(w, r, "remove", true)
	if !ok {
		return
	}
	defer leave()
	id, gone := r.PathValue("id"), r.PathValue("identity")
	errNotMember := errors.New("not a participant")
	v, err := s.rotate(id, who, "removed "+gone, func(rec *callRecord) error {
		i := slices.Index(rec.Participants, gone)
		if i < 0 {
			return errNotMember
		}
		rec.Participants = slices.Delete(rec.Participants, i, i+1)
		return nil
	}, nonce)
	switch {
	case errors.Is(err, errNotMember):
		s.deny(w, fail(http.StatusNotFound, wire.CodeNotFound), "remove", who, id)
	case errors.Is(err, errEnded):
		s.deny(w, fail(http.StatusGone, wire.CodeEnded), "remove", who, id)
	case err != nil:
		s.commitFailed(w, err, "remove", who, id)
	default:
		writeJSON(w, http.StatusOK, wire.RotateResponse{Version: v})
	}
}

func (s *Server) handleEnd(w http.ResponseWriter, r *http.Request) {
	who, nonce, leave, ok := s.stateChange(w, r, "end", true)
	if !ok {
		return
	}
	defer leave()
	err := s.endCall(r.PathValue("id"), who, "", nonce)
	if err != nil && !errors.Is(err, errEnded) {
		s.commitFailed(w, err, "end", who, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// commitFailed answers a request whose state change did not commit: 403
// device_revoked if another replica revoked the device meanwhile (see
// proofDevice), else 503 (the client may retry, elsewhere too).
func (s *Server) commitFailed(w http.ResponseWriter, err error, action, who, callID string) {
	if errors.Is(err, errRevokedElsewhere) {
		s.deny(w, errRevokedDevice(), action, who, callID)
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, wire.ErrorResponse{Error: wire.CodeUnavailable})
}

// checkProof verifies a request's proof of freshness: a JWS by pub over the
// method, path and body hash, with a nonce never seen within the window,
// dated at most MaxClockSkew ahead. It returns the write that persists the
// nonce, for the state change's commit, so that a proof is refused after a
// restart too.
func (s *Server) checkProof(r *http.Request, body []byte, identity string, pub *ecdsa.PublicKey) (Write, *apiError) {
	raw := r.Header.Get(wire.ProofHeader)
	if raw == "" {
		return Write{}, fail(http.StatusUnauthorized, wire.CodeBadProof)
	}
	claims, aud, err := verifyProof(raw, pub)
	if err != nil {
		return Write{}, fail(http.StatusUnauthorized, wire.CodeBadProof)
	}
	if claims.Method != r.Method || claims.Path != r.URL.Path || claims.BodyHash != wire.BodyHash(body) ||
		len(claims.Nonce) < 16 || len(claims.Nonce) > maxNonce || !s.forUs(r, aud) {
		return Write{}, fail(http.StatusUnauthorized, wire.CodeBadProof)
	}
	now := s.cfg.Clock()
	issued := time.UnixMilli(claims.IssuedMS)
	win := s.cfg.FreshnessWindow
	if issued.Before(now.Add(-win)) || issued.After(now.Add(s.cfg.MaxClockSkew)) {
		return Write{}, fail(http.StatusUnauthorized, wire.CodeStaleProof)
	}
	s.nonceMu.Lock()
	defer s.nonceMu.Unlock()
	if since := now.Sub(s.lastSweep); since > win || (s.replay.len() >= s.cfg.MaxNonces && since > time.Second) {
		s.sweepNonces(now)
	}
	if s.replay.stale(identity, issued) {
		// At or below the device's floor: the replay memory let go of a
		// proof of this device's dated then (see nonceMemory).
		return Write{}, fail(http.StatusUnauthorized, wire.CodeStaleProof)
	}
	if s.replay.has(claims.Nonce) {
		return Write{}, fail(http.StatusUnauthorized, wire.CodeReplayed)
	}
	if s.replay.len() >= s.cfg.MaxNonces {
		// The store keeps the nonce being evicted until it expires; the
		// scheduler deletes it then.
		s.storedEvicted = true
	}
	if s.shared != nil {
		// Replay protection across replicas: the store records it.
		fresh, err := s.useNonce(claims.Nonce, issued.Add(2*win))
		if err != nil {
			return Write{}, fail(http.StatusServiceUnavailable, wire.CodeUnavailable)
		}
		if !fresh {
			return Write{}, fail(http.StatusUnauthorized, wire.CodeReplayed)
		}
	}
	s.replay.add(identity, claims.Nonce, issued)
	return Write{Bucket: bucketNonces, Key: claims.Nonce, Value: nonceValue(claims.IssuedMS, identity)}, nil
}

// nonceValue is the stored form of an accepted proof's nonce: its time
// (Unix ms, 8 bytes) and the device's identity. Stores written before
// the identity hold the time alone.
func nonceValue(issuedMS int64, identity string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(issuedMS)), identity...)
}

// audiences returns the origins of cfg's BaseURL and Aliases.
func audiences(cfg Config) ([]string, error) {
	var out []string
	for i, raw := range append([]string{cfg.BaseURL}, cfg.Aliases...) {
		if i == 0 && raw == "" {
			continue
		}
		o, err := wire.Origin(raw)
		if err != nil {
			field := "Config.BaseURL"
			if i > 0 {
				field = fmt.Sprintf("Config.Aliases[%d]", i-1)
			}
			return nil, fmt.Errorf("kmsserver: %s must be an https URL without path, got %q", field, raw)
		}
		out = append(out, o)
	}
	return out, nil
}

// forUs reports whether a proof's audience names this KMS: its BaseURL
// or an alias or, without a BaseURL, the Host the request was sent to.
// A proof without audience (an older client's) passes unless
// RequireProofAudience.
func (s *Server) forUs(r *http.Request, aud string) bool {
	if aud == "" {
		return !s.cfg.RequireProofAudience
	}
	o, err := wire.Origin(aud)
	if err != nil {
		return false
	}
	if slices.Contains(s.audiences, o) {
		return true
	}
	if s.cfg.BaseURL != "" {
		return false
	}
	host, err := wire.Origin("https://" + r.Host)
	return err == nil && o == host
}

// maxNonce bounds a proof's nonce (the client sends 22 characters).
const maxNonce = 64

// sweepNonces forgets nonces too old to be accepted again. Called with
// nonceMu held.
func (s *Server) sweepNonces(now time.Time) {
	s.replay.sweep(now, s.cfg.FreshnessWindow, s.goneLocked)
	s.lastSweep = now
}

// goneLocked queues the deletion of an expired nonce from the store, with
// the next commit. Past the bound the scheduler finds it in the store
// instead. Called with nonceMu held.
func (s *Server) goneLocked(n string) {
	if len(s.nonceGone) < s.cfg.MaxNonces {
		s.nonceGone = append(s.nonceGone, n)
	} else {
		s.storedEvicted = true
	}
}

// nonceSweepEvery is how often the scheduler looks in the store for
// expired nonces the memory no longer holds (after evictions).
const nonceSweepEvery = 10 * time.Second

// sweepStoredNonces deletes from the store the expired nonces that the
// memory evicted, if it has evicted any, in commits of at most MaxNonces
// deletions. It reads the store without holding nonceMu across the scan.
func (s *Server) sweepStoredNonces(ctx context.Context) {
	s.nonceMu.Lock()
	need := s.storedEvicted
	s.storedEvicted = false
	s.nonceMu.Unlock()
	for need {
		now := s.cfg.Clock()
		var gone []Write
		pending := false
		err := s.cfg.Store.ForEach(ctx, bucketNonces, func(n string, stored []byte) error {
			_, v, err := s.openRecord(bucketNonces, n, stored)
			if err != nil || len(v) < 8 {
				return nil // refused at the next start; nothing to sweep
			}
			s.nonceMu.Lock()
			held := s.replay.has(n)
			s.nonceMu.Unlock()
			switch {
			case held: // the memory's own sweep deletes it
			case now.Sub(time.UnixMilli(int64(binary.BigEndian.Uint64(v)))) <= s.cfg.FreshnessWindow:
				pending = true
			case len(gone) < s.cfg.MaxNonces:
				gone = append(gone, Write{Bucket: bucketNonces, Key: n})
			default:
				pending = true
				return errSweepFull
			}
			return nil
		})
		if err != nil && !errors.Is(err, errSweepFull) {
			pending = true
		} else if len(gone) > 0 {
			if err := <-s.submit(gone); err != nil {
				pending = true
			}
		}
		need = errors.Is(err, errSweepFull)
		if pending && !need {
			s.nonceMu.Lock()
			s.storedEvicted = true
			s.nonceMu.Unlock()
		}
	}
}

func (s *Server) takeNonceGone() []string {
	s.nonceMu.Lock()
	defer s.nonceMu.Unlock()
	out := s.nonceGone
	s.nonceGone = nil
	return out
}

// errSweepFull stops a scan of the store's nonces with a full commit.
var errSweepFull = errors.New("kmsserver: sweep commit full")

// loadNonces reads the persisted nonces of accepted proofs still within
// the window, oldest first, into the bounded replay memory: past its
// bound, devices' floors rise as they would have (see nonceMemory), so no
// stored nonce can be replayed. Older ones are deleted with the next
// commit.
func (s *Server) loadNonces(ctx context.Context) error {
	now := s.cfg.Clock()
	type stored struct {
		nonce, identity string
		issued          time.Time
	}
	var live []stored
	err := s.cfg.Store.ForEach(ctx, bucketNonces, func(n string, rec []byte) error {
		_, v, err := s.openRecord(bucketNonces, n, rec)
		if err != nil {
			return fmt.Errorf("kmsserver: store: %w", err)
		}
		if len(v) < 8 {
			return fmt.Errorf("kmsserver: store: %w", &RecordError{Bucket: bucketNonces, Key: n, Reason: "malformed"})
		}
		issued := time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
		if now.Sub(issued) > s.cfg.FreshnessWindow {
			s.nonceGone = append(s.nonceGone, n)
		} else {
			live = append(live, stored{n, string(v[8:]), issued})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(live, func(a, b stored) int { return a.issued.Compare(b.issued) })
	for _, l := range live {
		if s.replay.len() >= s.cfg.MaxNonces {
			s.storedEvicted = true
		}
		s.replay.add(l.identity, l.nonce, l.issued)
	}
	return nil
}

// verifyProof parses and verifies a compact JWS proof and returns its
// claims and the audience its protected header names ("" if none: an
// older client's proof).
func verifyProof(raw string, pub *ecdsa.PublicKey) (wire.ProofClaims, string, error) {
	var c wire.ProofClaims
	if len(raw) > 4096 {
		return c, "", errors.New("proof too long")
	}
	jws, err := jose.ParseSignedCompact(raw, wire.AllowedProofAlgs)
	if err != nil {
		return c, "", err
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return c, "", err
	}
	if err := decodeStrict(payload, &c); err != nil {
		return c, "", err
	}
	// A compact JWS has one signature, and its protected header is what
	// Verify just checked.
	var aud string
	if v, ok := jws.Signatures[0].Protected.ExtraHeaders[wire.HdrProofAudience]; ok {
		if aud, ok = v.(string); !ok || aud == "" {
			return c, "", errors.New("proof audience is not an origin")
		}
	}
	return c, aud, nil
}
