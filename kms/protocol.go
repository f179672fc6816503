package kms

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
	"github.com/securecall/securecall/media"
)

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
func unwrapKey(compact string, priv *ecdsa.PrivateKey, kid string, signers map[string]*ecdsa.PublicKey, want wire.Binding) (media.CallKey, error) {
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
	obj, err := jose.ParseEncryptedCompact(compact, wire.AllowedKeyAlgs, wire.AllowedContent)
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
	uri, _ := h[wire.HdrURI].(string)
	callID, _ := h[wire.HdrCallID].(string)
	ver, okV := headerInt(h, wire.HdrVersion)
	act, okA := headerInt(h, wire.HdrActivate)
	exp, okE := headerInt(h, wire.HdrExpires)
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
		ActivateAt: wire.FromUnixMS(act),
		ExpiresAt:  wire.FromUnixMS(exp),
	}, nil
}

// verifyDelivery checks that a delivery's plaintext is a JWS of the right
// type by one of signers and returns its claims, or the reason it is not.
func verifyDelivery(plain []byte, signers map[string]*ecdsa.PublicKey) (claims wire.DeliveryClaims, detail string, reason error) {
	jws, err := jose.ParseSignedCompact(string(plain), wire.AllowedSigAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return claims, "the JWE does not carry a KMS signature", ErrUnsigned
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != wire.DeliveryType {
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
