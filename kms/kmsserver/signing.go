package kmsserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
)

// The KMS signs every delivery with its current signing key and publishes
// two public keys, the current and the next one. Devices pin both
// ([github.com/securecall/securecall/kms.Config].KMSKeys). RotateSigningKey makes the next key current and
// creates a new next key, so a device that pinned the keys published before
// a rotation keeps verifying after it; it must learn the new next key
// before the rotation after that. The overlap is therefore the time between
// two rotations, which the operator chooses.

const metaSigningKeys = "signing-keys"

// signingKeyRecord is one signing key in the store; its private key is
// sealed under the KEK with the key id as associated data.
type signingKeyRecord struct {
	KID       string    `json:"kid"`
	CreatedAt time.Time `json:"created_at"`
	Sealed    []byte    `json:"sealed"`
}

type signingKeysRecord struct {
	Current signingKeyRecord `json:"current"`
	Next    signingKeyRecord `json:"next"`
}

// signingKey is a usable signing key.
type signingKey struct {
	kid    string
	priv   *ecdsa.PrivateKey
	signer jose.Signer
	rec    signingKeyRecord
}

func signingAAD(kid string) []byte { return []byte("securecall-kms signing key\x00" + kid) }

func (s *Server) newSigningKey(now time.Time) (*signingKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kid, err := wire.KeyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	sealed, err := s.sealWith(signingAAD(kid), der)
	if err != nil {
		return nil, err
	}
	return s.openSigningKey(signingKeyRecord{KID: kid, CreatedAt: now, Sealed: sealed})
}

// openSigningKey unseals a stored signing key and checks its key id.
func (s *Server) openSigningKey(rec signingKeyRecord) (*signingKey, error) {
	der, err := s.openWith(signingAAD(rec.KID), rec.Sealed)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: unseal signing key %s (wrong KEK?): %w", rec.KID, err)
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("kmsserver: signing key %s: %w", rec.KID, err)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("kmsserver: signing key %s is not a P-256 key", rec.KID)
	}
	if kid, err := wire.KeyID(&priv.PublicKey); err != nil || kid != rec.KID {
		return nil, fmt.Errorf("kmsserver: signing key %s: key id does not match the key", rec.KID)
	}
	signer, err := wire.NewDeliverySigner(priv, rec.KID)
	if err != nil {
		return nil, err
	}
	return &signingKey{kid: rec.KID, priv: priv, signer: signer, rec: rec}, nil
}

// loadSigningKeys reads the signing keys, or reports that there are none.
func (s *Server) loadSigningKeys(ctx context.Context, seqs map[recordID]uint64) (bool, error) {
	r, err := s.readRecord(ctx, bucketMeta, metaSigningKeys)
	if err != nil || r.value == nil {
		return false, err
	}
	seqs[recordID{bucketMeta, metaSigningKeys}] = r.seq
	var rec signingKeysRecord
	if err := json.Unmarshal(r.value, &rec); err != nil {
		return false, &RecordError{Bucket: bucketMeta, Key: metaSigningKeys, Reason: "not a signing keys record"}
	}
	cur, err := s.openSigningKey(rec.Current)
	if err != nil {
		return false, err
	}
	next, err := s.openSigningKey(rec.Next)
	if err != nil {
		return false, err
	}
	s.sigMu.Lock()
	s.sigCurrent, s.sigNext = cur, next
	s.sigMu.Unlock()
	return true, nil
}

// initSigningKeys creates the first current and next signing keys.
func (s *Server) initSigningKeys() error {
	now := s.cfg.Clock().UTC()
	cur, err := s.newSigningKey(now)
	if err != nil {
		return err
	}
	next, err := s.newSigningKey(now)
	if err != nil {
		return err
	}
	return s.storeSigningKeys(cur, next, AuditEntry{Time: now, Action: "signing-key", Actor: "server", Outcome: "ok",
		Detail: "created current " + cur.kid + " next " + next.kid})
}

func (s *Server) storeSigningKeys(cur, next *signingKey, e AuditEntry) error {
	val, err := json.Marshal(signingKeysRecord{Current: cur.rec, Next: next.rec})
	if err != nil {
		return err
	}
	if err := s.commit([]Write{{Bucket: bucketMeta, Key: metaSigningKeys, Value: val}}, e); err != nil {
		return err
	}
	s.sigMu.Lock()
	s.sigCurrent, s.sigNext = cur, next
	s.sigMu.Unlock()
	return nil
}

// currentSigner returns the key deliveries are signed with now.
func (s *Server) currentSigner() *signingKey {
	s.sigMu.RLock()
	defer s.sigMu.RUnlock()
	return s.sigCurrent
}

// SigningKeys returns the public keys devices pin ([github.com/securecall/securecall/kms.Config].KMSKeys): the
// key deliveries are signed with now, then the one that replaces it at the
// next [Server.RotateSigningKey]. Publish both, for example with [Server.SigningKeysJWKS].
func (s *Server) SigningKeys() []crypto.PublicKey {
	s.sigMu.RLock()
	defer s.sigMu.RUnlock()
	return []crypto.PublicKey{&s.sigCurrent.priv.PublicKey, &s.sigNext.priv.PublicKey}
}

// RotateSigningKey makes the next signing key current and creates a new
// next key; the old current key is destroyed. Devices that pinned the keys
// of [Server.SigningKeys] before the call keep verifying every delivery;
// give them the new SigningKeys before the following rotation. Audited.
func (s *Server) RotateSigningKey(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kmsserver: rotate signing key: %w", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.cfg.Clock().UTC()
	next, err := s.newSigningKey(now)
	if err != nil {
		return fmt.Errorf("kmsserver: rotate signing key: %w", err)
	}
	s.sigMu.RLock()
	old, cur := s.sigCurrent, s.sigNext
	s.sigMu.RUnlock()
	err = s.storeSigningKeys(cur, next, AuditEntry{Time: now, Action: "signing-key", Actor: "operator", Outcome: "ok",
		Detail: "retired " + old.kid + " current " + cur.kid + " next " + next.kid})
	if err != nil {
		return fmt.Errorf("kmsserver: rotate signing key: %w", err)
	}
	// Deliveries signed by the retired key are not served again.
	s.mu.RLock()
	for _, c := range s.calls {
		c.wrapMu.Lock()
		c.wrapped = nil
		c.wrapMu.Unlock()
	}
	s.mu.RUnlock()
	s.cfg.Logger.Info("kmsserver: signing key rotated", "current", cur.kid, "next", next.kid)
	return nil
}

// SigningKeysJWKS is [Server.SigningKeys] as a JWK Set, the form in which
// an operator publishes them to devices (the client reads it with
// [github.com/securecall/securecall/kms.ParseKMSKeys]).
func (s *Server) SigningKeysJWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{}
	for _, k := range s.SigningKeys() {
		pub := k.(*ecdsa.PublicKey)
		kid, err := wire.KeyID(pub)
		if err != nil {
			return nil, fmt.Errorf("kmsserver: signing keys: %w", err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return json.Marshal(set)
}
