package kms

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/securecall/securecall/kms/internal/wire"
)

// ParseKMSKeys decodes a JWK Set of KMS signing public keys (P-256 only,
// no private keys), for [Config].KMSKeys.
func ParseKMSKeys(jwks []byte) ([]crypto.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("kms: parse KMS keys: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("kms: parse KMS keys: no keys")
	}
	out := make([]crypto.PublicKey, 0, len(set.Keys))
	for i, raw := range set.Keys {
		pub, err := wire.ParsePublicJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("kms: parse KMS keys: key %d: %w", i, err)
		}
		out = append(out, pub)
	}
	return out, nil
}
