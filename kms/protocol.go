package kms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/media"
)

// The wire protocol: HTTPS + JSON, keys as compact JWE, proofs as compact JWS.
//
//	POST   /v1/devices                          register the device key   (proof)
//	POST   /v1/calls                            create a call key         (proof)
//	GET    /v1/calls/{id}/keys[?after=&wait=]   usable versions; long-poll with wait
//	GET    /v1/calls/{id}/keys?version=N        one version
//	POST   /v1/calls/{id}/rotate                new version               (proof)
//	DELETE /v1/calls/{id}/participants/{who}    remove and rotate          (proof)

const (
	pathDevices = "/v1/devices"
	pathCalls   = "/v1/calls"

	// proofHeader carries the proof of freshness of a state-changing request.
	proofHeader = "Securecall-Proof"

	// Protected JWE header parameters binding a delivered key.
	hdrURI      = "sc-uri"
	hdrCallID   = "sc-call"
	hdrVersion  = "sc-ver"
	hdrActivate = "sc-act" // Unix milliseconds
	hdrExpires  = "sc-exp" // Unix milliseconds, 0 for none

	// deliveryType is the typ of the JWS a delivery's JWE carries, and the
	// cty of that JWE: the KMS's signature over the key and its binding.
	deliveryType = "securecall-key+jws"

	// maxBody bounds every request and response body the package reads.
	maxBody = 1 << 20
)

// The allow-lists: nothing else is accepted for wrapped keys or signatures.
var (
	allowedKeyAlgs   = []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}
	allowedContent   = []jose.ContentEncryption{jose.A256GCM}
	allowedProofAlgs = []jose.SignatureAlgorithm{jose.ES256}
	allowedSigAlgs   = []jose.SignatureAlgorithm{jose.ES256}
	allowedTokenAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA}
)

type registerRequest struct {
	Key json.RawMessage `json:"key"` // public JWK
}

type createRequest struct {
	Participants  []string `json:"participants"`
	RotateEveryMS int64    `json:"rotate_every_ms,omitempty"`
	LifetimeMS    int64    `json:"lifetime_ms,omitempty"`
}

type createResponse struct {
	URI     string `json:"uri"`
	CallID  string `json:"call_id"`
	Version uint32 `json:"version"`
}

type rotateResponse struct {
	Version uint32 `json:"version"`
}

type wireKey struct {
	Version uint32 `json:"version"`
	State   string `json:"state"`
	JWE     string `json:"jwe"`
}

type keysResponse struct {
	URI        string    `json:"uri"`
	CallID     string    `json:"call_id"`
	MinVersion uint32    `json:"min_version"`
	Latest     uint32    `json:"latest"`
	Keys       []wireKey `json:"keys"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// proofClaims is the payload of a proof of freshness: it binds the method,
// path and body of one request, a fresh nonce and the time of signing.
type proofClaims struct {
	Method   string `json:"htm"`
	Path     string `json:"htu"`
	BodyHash string `json:"bh"`
	Nonce    string `json:"jti"`
	IssuedMS int64  `json:"iat"`
}

func bodyHash(body []byte) string {
	h := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// keyID is the RFC 7638 thumbprint of a P-256 public key, base64url.
func keyID(pub *ecdsa.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// parsePublicJWK accepts only a public P-256 ECDSA key.
func parsePublicJWK(raw []byte) (*ecdsa.PublicKey, error) {
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

// binding is what a wrapped key's protected header must state.
type binding struct {
	URI        string
	CallID     string
	Version    uint32
	ActivateAt time.Time
	ExpiresAt  time.Time
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// deliveryClaims is what the KMS signs for one delivered key: the key and
// everything it is bound to, including the device it is for. The JWE that
// carries the signature repeats the binding in its header (the envelope);
// the client requires both to agree.
type deliveryClaims struct {
	URI        string `json:"uri"`
	CallID     string `json:"call"`
	Version    uint32 `json:"ver"`
	ActivateMS int64  `json:"act"`
	ExpiresMS  int64  `json:"exp"`
	Recipient  string `json:"rcpt"` // the device key's thumbprint
	Key        []byte `json:"key"`
}

// newDeliverySigner returns a signer of deliveries with priv, naming kid in
// every signature's protected header.
func newDeliverySigner(priv *ecdsa.PrivateKey, kid string) (jose.Signer, error) {
	return jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(deliveryType))
}

// wrapKey signs key and its binding b with sig (sign-then-encrypt: a
// compact JWS, ES256, typ deliveryType) and encrypts the signature to the
// device key pub as a compact JWE whose protected header also binds b.
func wrapKey(pub *ecdsa.PublicKey, kid string, b binding, key []byte, sig jose.Signer) (string, error) {
	payload, err := json.Marshal(deliveryClaims{
		URI: b.URI, CallID: b.CallID, Version: b.Version,
		ActivateMS: unixMS(b.ActivateAt), ExpiresMS: unixMS(b.ExpiresAt),
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
		WithContentType(deliveryType).
		WithHeader(hdrURI, b.URI).
		WithHeader(hdrCallID, b.CallID).
		WithHeader(hdrVersion, b.Version).
		WithHeader(hdrActivate, unixMS(b.ActivateAt)).
		WithHeader(hdrExpires, unixMS(b.ExpiresAt))
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

// jweAlgs reads alg and enc from a compact JWE's protected header without
// trusting anything else in it.
func jweAlgs(compact string) (alg, enc string, err error) {
	head, _, ok := strings.Cut(compact, ".")
	if !ok {
		return "", "", errors.New("not a compact JWE")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", "", err
	}
	var h struct {
		Alg string `json:"alg"`
		Enc string `json:"enc"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", "", err
	}
	return h.Alg, h.Enc, nil
}

// headerInt reads an integer protected header parameter (JSON numbers
// arrive as float64) and refuses anything that is not an exact integer.
func headerInt(h map[jose.HeaderKey]any, k jose.HeaderKey) (int64, bool) {
	f, ok := h[k].(float64)
	if !ok || f != float64(int64(f)) || f < 0 || f > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// unwrapKey checks and opens one delivered key. want names the URI, call id
// and version the client asked for; activation and expiry come from the
// protected header, which the AEAD authenticates, and must equal what the
// KMS signed. signers are the pinned KMS signing keys by key id.
func unwrapKey(compact string, priv *ecdsa.PrivateKey, kid string, signers map[string]*ecdsa.PublicKey, want binding) (media.CallKey, error) {
	fail := func(reason error, format string, args ...any) (media.CallKey, error) {
		return media.CallKey{}, &DeliveryError{URI: want.URI, Version: want.Version, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	alg, enc, err := jweAlgs(compact)
	if err != nil {
		return fail(ErrMalformed, "protected header: %v", err)
	}
	if alg != string(jose.ECDH_ES_A256KW) || enc != string(jose.A256GCM) {
		return fail(ErrAlgorithm, "alg %q enc %q", alg, enc)
	}
	obj, err := jose.ParseEncryptedCompact(compact, allowedKeyAlgs, allowedContent)
	if err != nil {
		return fail(ErrMalformed, "%v", err)
	}
	if obj.Header.KeyID != kid {
		return fail(ErrWrongRecipient, "kid %q", obj.Header.KeyID)
	}
	plain, err := obj.Decrypt(priv)
	if err != nil {
		return fail(ErrTampered, "%v", err)
	}
	h := obj.Header.ExtraHeaders
	uri, _ := h[hdrURI].(string)
	callID, _ := h[hdrCallID].(string)
	ver, okV := headerInt(h, hdrVersion)
	act, okA := headerInt(h, hdrActivate)
	exp, okE := headerInt(h, hdrExpires)
	switch {
	case uri != want.URI:
		return fail(ErrBinding, "header names key %q", uri)
	case callID != want.CallID:
		return fail(ErrBinding, "header names call %q", callID)
	case !okV || uint32(ver) != want.Version || ver > 1<<32-1:
		return fail(ErrBinding, "header names another version")
	case !okA || !okE || act == 0:
		return fail(ErrBinding, "header lacks activation or expiry")
	}
	claims, detail, reason := verifyDelivery(plain, signers)
	clear(plain)
	if reason != nil {
		return fail(reason, "%s", detail)
	}
	switch {
	case claims.URI != uri:
		return fail(ErrSignedClaims, "signed URI %q, envelope %q", claims.URI, uri)
	case claims.CallID != callID:
		return fail(ErrSignedClaims, "signed call %q, envelope %q", claims.CallID, callID)
	case int64(claims.Version) != ver:
		return fail(ErrSignedClaims, "signed version %d, envelope %d", claims.Version, ver)
	case claims.ActivateMS != act:
		return fail(ErrSignedClaims, "signed activation %d, envelope %d", claims.ActivateMS, act)
	case claims.ExpiresMS != exp:
		return fail(ErrSignedClaims, "signed expiry %d, envelope %d", claims.ExpiresMS, exp)
	case claims.Recipient != kid:
		return fail(ErrSignedClaims, "signed for device key %q, not this device's", claims.Recipient)
	case len(claims.Key) != media.CallKeySize:
		clear(claims.Key)
		return fail(ErrMalformed, "key is %d bytes, want %d", len(claims.Key), media.CallKeySize)
	}
	return media.CallKey{
		URI:        want.URI,
		CallID:     want.CallID,
		Version:    want.Version,
		Key:        claims.Key,
		ActivateAt: fromUnixMS(act),
		ExpiresAt:  fromUnixMS(exp),
	}, nil
}

// verifyDelivery checks that a delivery's plaintext is a JWS of the right
// type by one of signers and returns its claims, or the reason it is not.
func verifyDelivery(plain []byte, signers map[string]*ecdsa.PublicKey) (claims deliveryClaims, detail string, reason error) {
	jws, err := jose.ParseSignedCompact(string(plain), allowedSigAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return claims, "the JWE does not carry a KMS signature", ErrUnsigned
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != deliveryType {
		return claims, fmt.Sprintf("the JWE carries a JWS of type %q, not a key delivery", typ), ErrUnsigned
	}
	pub := signers[hdr.KeyID]
	if pub == nil {
		return claims, fmt.Sprintf("signed by key %q, which is not a pinned KMS key", hdr.KeyID), ErrSigner
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return claims, fmt.Sprintf("signature by key %q does not verify", hdr.KeyID), ErrSigner
	}
	defer clear(payload)
	if err := json.Unmarshal(payload, &claims); err != nil {
		return claims, "signed claims: " + err.Error(), ErrMalformed
	}
	return claims, "", nil
}
