package kmsserver

import (
	"crypto"
	"crypto/x509"
	"log/slog"
	"time"
)

// Server defaults, used when the matching [Config] field is zero.
const (
	// DefaultActivationDelay is the lead time between a new version's
	// creation and its activation, so that receivers install it before
	// senders switch to it.
	DefaultActivationDelay = time.Second
	// DefaultGrace is how long a superseded version stays deliverable after
	// its successor activates, for late and reordered packets.
	DefaultGrace = 30 * time.Second
	// DefaultKeyLifetime is a version's lifetime from its activation when
	// the call does not set one.
	DefaultKeyLifetime = 24 * time.Hour
	// DefaultFreshnessWindow is how far a proof of freshness's time may be
	// from the server's clock.
	DefaultFreshnessWindow = time.Minute
	// DefaultMaxWatchWait caps the wait a long-poll may ask for.
	DefaultMaxWatchWait = 30 * time.Second
	// DefaultMaxCallLifetime is how long a call that is never ended lasts:
	// then the server ends it (audited, actor "scheduler").
	DefaultMaxCallLifetime = 24 * time.Hour
	// DefaultEndedRetention is how long an ended call's record and sealed
	// keys stay in the store (undeliverable, for the operator's audit)
	// before they are destroyed.
	DefaultEndedRetention = time.Hour
)

// Config configures a [Server]. Store and KEK are required; every other
// field's zero value is valid.
type Config struct {
	// Store keeps all state. Required; the server does not close it.
	Store Store
	// KEK is the 32-byte key-encryption key that seals key material before
	// it reaches the Store. Keep it apart from the store (another file, an
	// HSM, an environment secret). Required; the server copies it.
	KEK []byte
	// ClientCAs verifies device certificates for mutual TLS; the common
	// name of a verified certificate is the device's identity. If nil,
	// devices can authenticate only with tokens.
	ClientCAs *x509.CertPool
	// TokenKeys verify bearer JWTs (ES256, ES384 or EdDSA); a token's
	// subject is the device's identity and its expiry is required. If nil,
	// bearer tokens are refused.
	TokenKeys []crypto.PublicKey
	// TokenAudience, if set, must appear in a token's audience. If empty,
	// the audience is not checked.
	TokenAudience string
	// BaseURL prefixes key URIs, for example "https://kms.example.com". If
	// empty, it is "https://" followed by the request's Host.
	BaseURL string
	// ActivationDelay is the lead time of a rotated version's activation.
	// If zero, defaults to DefaultActivationDelay; negative means at once.
	ActivationDelay time.Duration
	// Grace is how long a superseded version stays usable. If zero,
	// defaults to DefaultGrace.
	Grace time.Duration
	// KeyLifetime is a version's lifetime after activation when the call
	// does not set one. If zero, defaults to DefaultKeyLifetime.
	KeyLifetime time.Duration
	// FreshnessWindow bounds the age of a proof of freshness. If zero,
	// defaults to DefaultFreshnessWindow.
	FreshnessWindow time.Duration
	// MaxWatchWait caps a long-poll. If zero, defaults to
	// DefaultMaxWatchWait.
	MaxWatchWait time.Duration
	// MaxCallLifetime ends a call this long after its creation if it has
	// not ended before. If zero, defaults to DefaultMaxCallLifetime.
	MaxCallLifetime time.Duration
	// EndedRetention is how long an ended call stays in the store before
	// its record is purged and its keys destroyed. If zero, defaults to
	// DefaultEndedRetention; negative means at once.
	EndedRetention time.Duration
	// Clock returns the time for every decision (activation, expiry,
	// certificate and token validity, freshness). If nil, time.Now.
	Clock func() time.Time
	// Logger receives operational events; never key material or
	// credentials. If nil, the server is silent.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ActivationDelay == 0 {
		c.ActivationDelay = DefaultActivationDelay
	} else if c.ActivationDelay < 0 {
		c.ActivationDelay = 0
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.KeyLifetime == 0 {
		c.KeyLifetime = DefaultKeyLifetime
	}
	if c.FreshnessWindow == 0 {
		c.FreshnessWindow = DefaultFreshnessWindow
	}
	if c.MaxWatchWait == 0 {
		c.MaxWatchWait = DefaultMaxWatchWait
	}
	if c.MaxCallLifetime == 0 {
		c.MaxCallLifetime = DefaultMaxCallLifetime
	}
	if c.EndedRetention == 0 {
		c.EndedRetention = DefaultEndedRetention
	} else if c.EndedRetention < 0 {
		c.EndedRetention = 0
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.KEK = append([]byte(nil), c.KEK...)
	c.TokenKeys = append([]crypto.PublicKey(nil), c.TokenKeys...)
	return c
}
