// Package wire holds what the kms client and the reference server share:
// the paths, headers and JSON bodies of the protocol, the error codes, the
// allow-lists of algorithms, and the signed-then-encrypted form of a
// delivered key. It imports nothing of the media stack, so that the server
// links none of it.
package wire

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The wire protocol: HTTPS + JSON, keys as compact JWE, proofs as compact JWS.
//
//	POST   /v1/devices                          register the device key   (proof)
//	POST   /v1/calls                            create a call key         (proof)
//	GET    /v1/calls/{id}/keys[?after=&wait=]   usable versions; long-poll with wait
//	       [&withdrawn=]                        ... answered too when Withdrawn changes
//	GET    /v1/calls/{id}/keys?version=N        one version
//	POST   /v1/calls/{id}/rotate                new version               (proof)
//	DELETE /v1/calls/{id}/participants/{who}    remove and rotate          (proof)

const (
	PathDevices = "/v1/devices"
	PathCalls   = "/v1/calls"

	// ProofHeader carries the proof of freshness of a state-changing request.
	ProofHeader = "Securecall-Proof"
	// HdrProofAudience is the protected header parameter of a proof of
	// freshness that names the KMS it is for (its origin, see [Origin]).
	// It is a header parameter, not a claim, so that a KMS that predates
	// it (and refuses unknown claims) still accepts the proof; the
	// signature covers it all the same.
	HdrProofAudience = "sc-aud"

	// Protected JWE header parameters binding a delivered key.
	HdrURI      = "sc-uri"
	HdrCallID   = "sc-call"
	HdrVersion  = "sc-ver"
	HdrActivate = "sc-act" // Unix milliseconds
	HdrExpires  = "sc-exp" // Unix milliseconds, 0 for none

	// DeliveryType is the typ of the JWS a delivery's JWE carries, and the
	// cty of that JWE: the KMS's signature over the key and its binding.
	DeliveryType = "securecall-key+jws"

	// MaxBody bounds every request and response body either side reads.
	MaxBody = 1 << 20
)

// The allow-lists: nothing else is accepted for wrapped keys or signatures.
var (
	AllowedKeyAlgs   = []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}
	AllowedContent   = []jose.ContentEncryption{jose.A256GCM}
	AllowedProofAlgs = []jose.SignatureAlgorithm{jose.ES256}
	AllowedSigAlgs   = []jose.SignatureAlgorithm{jose.ES256}
	AllowedTokenAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA}
)

// RegisterRequest is a JSON body of the protocol.
type RegisterRequest struct {
	Key json.RawMessage `json:"key"` // public JWK
}

// CreateRequest is a JSON body of the protocol.
type CreateRequest struct {
	Participants  []string `json:"participants"`
	RotateEveryMS int64    `json:"rotate_every_ms,omitempty"`
	LifetimeMS    int64    `json:"lifetime_ms,omitempty"`
}

// CreateResponse is a JSON body of the protocol.
type CreateResponse struct {
	URI     string `json:"uri"`
	CallID  string `json:"call_id"`
	Version uint32 `json:"version"`
}

// RotateResponse is a JSON body of the protocol.
type RotateResponse struct {
	Version uint32 `json:"version"`
}

// Key is a JSON body of the protocol.
type Key struct {
	Version uint32 `json:"version"`
	State   string `json:"state"`
	JWE     string `json:"jwe"`
}

// KeysResponse is a JSON body of the protocol.
type KeysResponse struct {
	URI        string `json:"uri"`
	CallID     string `json:"call_id"`
	MinVersion uint32 `json:"min_version"`
	Latest     uint32 `json:"latest"`
	Keys       []Key  `json:"keys"`
	// Revoked lists, ascending, the versions at or above MinVersion that
	// are compromised or destroyed, among the newest MaxRevokedListed
	// versions of the call.
	Revoked []uint32 `json:"revoked,omitempty"`
	// Withdrawn counts what the call has withdrawn: its minimum version
	// plus its revoked versions. It only grows. A watch that sends it back
	// (QueryWithdrawn) is answered as soon as it changes, not only when a
	// version is added.
	Withdrawn uint64 `json:"withdrawn"`
}

// QueryWithdrawn is the keys request parameter carrying the Withdrawn
// count a watch has seen.
const QueryWithdrawn = "withdrawn"

// MaxRevokedListed bounds KeysResponse.Revoked.
const MaxRevokedListed = 64

// ErrorResponse is a JSON body of the protocol.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ProofClaims is the payload of a proof of freshness: it binds the method,
// path and body of one request, a fresh nonce and the time of signing.
// The KMS it is for is in the protected header ([HdrProofAudience]): a KMS
// refuses claims it does not know, so none can be added without breaking
// the KMSes deployed before them.
type ProofClaims struct {
	Method   string `json:"htm"`
	Path     string `json:"htu"`
	BodyHash string `json:"bh"`
	Nonce    string `json:"jti"`
	IssuedMS int64  `json:"iat"`
}

// BodyHash is the base64url SHA-256 of a request body, as a proof binds it.
func BodyHash(body []byte) string {
	h := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Origin returns the origin of an https URL that has no path, query or
// user ("https://host" or "https://host:port"), with the host in lower
// case and the default port left out, so that two spellings of one name
// compare equal. It is the audience of a proof of freshness.
func Origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Opaque != "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("not an https origin: %q", raw)
	}
	return "https://" + strings.TrimSuffix(strings.ToLower(u.Host), ":443"), nil
}

// KeyID is the RFC 7638 thumbprint of a P-256 public key, base64url.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// ParsePublicJWK accepts only a public P-256 ECDSA key.
func ParsePublicJWK(raw []byte) (*ecdsa.PublicKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("key must be a public P-256 ECDSA key")
	}
	return pub, nil
}

// Binding is what a wrapped key's protected header must state.
type Binding struct {
	URI        string
	CallID     string
	Version    uint32
	ActivateAt time.Time
	ExpiresAt  time.Time
}

// UnixMS is t in Unix milliseconds, 0 for the zero time.
func UnixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromUnixMS reverses UnixMS.
func FromUnixMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// DeliveryClaims is what the KMS signs for one delivered key: the key and
// everything it is bound to, including the device it is for. The JWE that
// carries the signature repeats the binding in its header (the envelope);
// the client requires both to agree.
type DeliveryClaims struct {
	URI        string `json:"uri"`
	CallID     string `json:"call"`
	Version    uint32 `json:"ver"`
	ActivateMS int64  `json:"act"`
	ExpiresMS  int64  `json:"exp"`
	Recipient  string `json:"rcpt"` // the device key's thumbprint
	Key        []byte `json:"key"`
}

// NewDeliverySigner returns a signer of deliveries with priv, naming kid in
// every signature's protected header.
func NewDeliverySigner(priv *ecdsa.PrivateKey, kid string) (jose.Signer, error) {
	return jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(DeliveryType))
}

// WrapKey signs key and its binding b with sig (sign-then-encrypt: a
// compact JWS, ES256, typ DeliveryType) and encrypts the signature to the
// device key pub as a compact JWE whose protected header also binds b.
func WrapKey(pub *ecdsa.PublicKey, kid string, b Binding, key []byte, sig jose.Signer) (string, error) {
	payload, err := json.Marshal(DeliveryClaims{
		URI: b.URI, CallID: b.CallID, Version: b.Version,
		ActivateMS: UnixMS(b.ActivateAt), ExpiresMS: UnixMS(b.ExpiresAt),
		Recipient: kid, Key: key,
	})
	if err != nil {
		return "", err
	}
	defer clear(payload)
	jws, err := sig.Sign(payload)
	if err != nil {
		return "", err
	}
	signed, err := jws.CompactSerialize()
	if err != nil {
		return "", err
	}
	opts := (&jose.EncrypterOptions{}).
		WithContentType(DeliveryType).
		WithHeader(HdrURI, b.URI).
		WithHeader(HdrCallID, b.CallID).
		WithHeader(HdrVersion, b.Version).
		WithHeader(HdrActivate, UnixMS(b.ActivateAt)).
		WithHeader(HdrExpires, UnixMS(b.ExpiresAt))
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: pub, KeyID: kid}, opts)
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt([]byte(signed))
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// Error codes carried in the KMS's JSON error bodies.
const (
	CodeBadRequest         = "bad_request"
	CodeUnauthenticated    = "unauthenticated"
	CodeUnknownAuthority   = "unknown_authority"
	CodeCertificateExpired = "certificate_expired"
	CodeTokenExpired       = "token_expired"
	CodeBadToken           = "bad_token"
	CodeNotRegistered      = "not_registered"
	CodeForbidden          = "forbidden"
	CodeDeviceRevoked      = "device_revoked" // 403: the operator revoked the device; every request
	CodeNotFound           = "not_found"
	CodeCompromised        = "compromised"
	CodeDestroyed          = "destroyed"
	CodeBelowMinimum       = "below_minimum"
	CodeExpired            = "expired"
	CodeReplayed           = "replayed"
	CodeStaleProof         = "stale_proof"
	CodeBadProof           = "bad_proof"
	CodeUnavailable        = "unavailable"
	CodeEnded              = "ended"
	CodeRateLimited        = "rate_limited"          // the device's request bucket: hold every request
	CodeRotationLimited    = "rotation_rate_limited" // one call's rotation bucket: hold its rotations only
	CodeTooManyProofs      = "too_many_proofs"       // older servers' full replay memory: state changes only
	CodeQuota              = "quota_exceeded"
	CodeTooManyWatches     = "too_many_watches"
	CodeInternal           = "internal"
)

// SignProof signs a proof of freshness for one request with the device key:
// a compact JWS (ES256) over the audience (the origin of the KMS the
// request goes to, see [Origin]; in the protected header, see
// [HdrProofAudience]; none if empty), the method, path, body hash, a
// random nonce and the time.
func SignProof(key *ecdsa.PrivateKey, audience, method, path string, body []byte, now time.Time) (string, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	payload, err := json.Marshal(ProofClaims{
		Method:   method,
		Path:     path,
		BodyHash: BodyHash(body),
		Nonce:    base64.RawURLEncoding.EncodeToString(nonce),
		IssuedMS: now.UnixMilli(),
	})
	if err != nil {
		return "", err
	}
	opts := &jose.SignerOptions{}
	if audience != "" {
		opts.WithHeader(HdrProofAudience, audience)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
