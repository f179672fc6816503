package kms

import (
	"crypto"
	"crypto/ecdsa"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
	"github.com/securecall/securecall/media"
)

// Test hooks into unexported parts.

// BackoffDelay exposes Backoff.delay.
func BackoffDelay(b Backoff, attempt int) time.Duration {
	return b.withDefaults().delay(attempt)
}

func (b Backoff) withDefaults() Backoff {
	return Config{Backoff: b}.withDefaults().Backoff
}

// FlightJoined reports how many Fetch calls share the fetch of uri in
// progress (0 if none).
func (c *Client) FlightJoined(uri string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[uri]; f != nil {
		return f.joined
	}
	return 0
}

// ParseKeysResponse exposes the client's delivery parser.
func ParseKeysResponse(body []byte, uri, id string, after uint32, priv *ecdsa.PrivateKey, kmsKeys []crypto.PublicKey) ([]media.CallKey, error) {
	kid, err := wire.KeyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	signers, err := pinSigners(kmsKeys)
	if err != nil {
		return nil, err
	}
	_, keys, _, err := parseKeysResponse(body, uri, id, after, priv, kid, signers, nil)
	return keys, err
}

// CachedCalls reports how many calls' keys the client caches.
func (c *Client) CachedCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cache)
}

// OnOpened has fn see the keys of every delivery c opens (the client's own
// slices, not copies), before it hands any on. Call it before any request.
func (c *Client) OnOpened(fn func([]media.CallKey)) { c.opened = fn }

// CachedKeyBytes returns the cache's own key slices for uri (not copies),
// by version.
func (c *Client) CachedKeyBytes(uri string) map[uint32][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint32][]byte{}
	if e := c.cache[uri]; e != nil {
		for v, k := range e.keys {
			out[v] = k.Key
		}
	}
	return out
}
