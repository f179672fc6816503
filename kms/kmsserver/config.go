package kmsserver

import (
	"crypto"
	"crypto/x509"
	"log/slog"
	"slices"
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
	// DefaultRequestRate and DefaultRequestBurst are each device's token
	// bucket for requests: beyond it the server answers 429 with
	// Retry-After.
	DefaultRequestRate  = 50.0
	DefaultRequestBurst = 100
	// DefaultFailedAuthRate is the failed authentications per second (burst
	// five times as many) a remote address may cause before the server
	// stops verifying new credentials from it for a while (429).
	DefaultFailedAuthRate = 10.0
	// DefaultMaxCallsPerDevice bounds the running (not ended) calls one
	// device has created.
	DefaultMaxCallsPerDevice = 100
	// DefaultMaxWatchesPerDevice bounds one device's long-polls in
	// progress.
	DefaultMaxWatchesPerDevice = 1024
	// DefaultMinRotateEvery is the shortest rotation schedule a call may
	// ask for.
	DefaultMinRotateEvery = time.Second
	// DefaultRotationsPerMinute bounds on-demand rotations of one call: a
	// bucket of this many per minute, bursts of a tenth. Removals of
	// participants are not counted (the participant list bounds them).
	DefaultRotationsPerMinute = 60
	// DefaultMaxKeysPerResponse bounds the versions one keys response
	// delivers (the newest ones).
	DefaultMaxKeysPerResponse = 64
	// DefaultMaxNonces bounds the proofs of freshness remembered against
	// replay; when full, the device holding the most loses its oldest and
	// its proofs dated at or before it are refused as stale from then on.
	DefaultMaxNonces = 100_000
	// DefaultMaxRevokedDevices bounds the identities revoked at once
	// ([Server.RevokeDevice]).
	DefaultMaxRevokedDevices = 100_000
	// DefaultMaxClockSkew is how far in the future a proof of freshness
	// may be dated.
	DefaultMaxClockSkew = 5 * time.Second
	// DefaultAuditRetention is how long audit entries are kept before a
	// compaction removes them (leaving a checkpoint).
	DefaultAuditRetention = 30 * 24 * time.Hour
	// DefaultReadHeaderTimeout, DefaultReadTimeout, DefaultWriteTimeout
	// and DefaultIdleTimeout are the timeouts of [Server.HTTPServer].
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	// DefaultMaxConns bounds the connections [Server.LimitListener]
	// accepts at once (below a typical limit of 1,024 descriptors).
	DefaultMaxConns = 512
	// DefaultDenialInterval is the period over which refused requests are
	// aggregated into audit entries.
	DefaultDenialInterval = 10 * time.Second
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
	// BaseURL prefixes key URIs, for example "https://kms.example.com": an
	// https URL without path, the name devices reach the KMS by. It is
	// also the audience a proof of freshness must name (see Aliases), so
	// that a proof made for another KMS is refused here. If empty, it is
	// "https://" followed by the request's Host, for key URIs and for the
	// audience; the sender chooses the Host, so without a BaseURL a proof
	// captured on its way to another KMS that registers the same device
	// key is refused only if it is sent with the Host it was made for:
	// set BaseURL wherever devices also talk to another KMS.
	BaseURL string
	// Aliases are other base URLs devices reach this KMS by (each
	// replica's own address, when devices list the replicas in
	// kms.Config.URLs): a proof of freshness naming one of them is
	// accepted as well as one naming BaseURL. Key URIs always use
	// BaseURL. Optional.
	Aliases []string
	// RequireProofAudience refuses proofs of freshness that name no
	// audience, which clients before the audience send. If false, such
	// a proof is accepted (then only its method, path, body, nonce and
	// time bind it, and it can be replayed at another KMS that accepts
	// it within its window); set it once every device runs a client that
	// names the audience.
	RequireProofAudience bool
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
	// RequestRate is each device's sustained requests per second, and
	// RequestBurst its bucket size. If zero, DefaultRequestRate and
	// DefaultRequestBurst.
	RequestRate  float64
	RequestBurst int
	// FailedAuthRate bounds the failed authentications per second from one
	// remote address (burst five times as many); beyond it, new
	// credentials from that address are not verified (429) until its
	// bucket refills; credentials verified before still work. If zero,
	// defaults to DefaultFailedAuthRate.
	FailedAuthRate float64
	// MaxCallsPerDevice bounds the running calls a device has created. If
	// zero, defaults to DefaultMaxCallsPerDevice.
	MaxCallsPerDevice int
	// MaxWatchesPerDevice bounds a device's concurrent long-polls. If
	// zero, defaults to DefaultMaxWatchesPerDevice.
	MaxWatchesPerDevice int
	// MinRotateEvery is the shortest rotation schedule accepted. If zero,
	// defaults to DefaultMinRotateEvery.
	MinRotateEvery time.Duration
	// RotationsPerMinute bounds on-demand rotations of a call. If zero,
	// defaults to DefaultRotationsPerMinute.
	RotationsPerMinute int
	// MaxKeysPerResponse bounds the versions one response delivers. If
	// zero, defaults to DefaultMaxKeysPerResponse.
	MaxKeysPerResponse int
	// MaxNonces bounds the replay memory (see the package documentation:
	// past it, the device holding the most nonces loses its oldest). If
	// zero, defaults to DefaultMaxNonces.
	MaxNonces int
	// MaxRevokedDevices bounds the identities revoked at once: beyond it
	// [Server.RevokeDevice] fails with [ErrTooManyRevoked]. If zero,
	// defaults to DefaultMaxRevokedDevices.
	MaxRevokedDevices int
	// MaxClockSkew bounds how far ahead of the server's clock a proof may
	// be dated. If zero, defaults to DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// DenialInterval is how often aggregated denials are written to the
	// audit log. If zero, defaults to DefaultDenialInterval.
	DenialInterval time.Duration
	// AuditRetention is how long audit entries stay in the store; older
	// ones are compacted away hourly ([Server.CompactAudit]). If zero,
	// defaults to DefaultAuditRetention.
	AuditRetention time.Duration
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// timeouts of [Server.HTTPServer] (a long-poll's write deadline is its
	// wait plus WriteTimeout). If zero, the matching Default.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxConns bounds the connections of [Server.LimitListener]. If zero,
	// defaults to DefaultMaxConns.
	MaxConns int
	// Clock returns the time for every decision (activation, expiry,
	// certificate and token validity, freshness). If nil, time.Now.
	Clock func() time.Time
	// WakeAt arms the scheduler's timer (scheduled rotation, the end of a
	// call at its maximum lifetime, the purge after the retention, denial
	// flushes, audit compaction): the channel it returns must receive once
	// Clock has reached at, and stop releases the timer early. If nil, a
	// real timer that fires after at minus Clock's time. Set it with Clock
	// to run the server on a fake clock (tests); long-poll waits and the
	// HTTP timeouts always use real time.
	WakeAt func(at time.Time) (fired <-chan time.Time, stop func())
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
	if c.RequestRate <= 0 {
		c.RequestRate = DefaultRequestRate
	}
	if c.FailedAuthRate <= 0 {
		c.FailedAuthRate = DefaultFailedAuthRate
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = DefaultRequestBurst
	}
	c.MaxCallsPerDevice = positive(c.MaxCallsPerDevice, DefaultMaxCallsPerDevice)
	c.MaxWatchesPerDevice = positive(c.MaxWatchesPerDevice, DefaultMaxWatchesPerDevice)
	c.RotationsPerMinute = positive(c.RotationsPerMinute, DefaultRotationsPerMinute)
	c.MaxKeysPerResponse = positive(c.MaxKeysPerResponse, DefaultMaxKeysPerResponse)
	c.MaxNonces = positive(c.MaxNonces, DefaultMaxNonces)
	c.MaxRevokedDevices = positive(c.MaxRevokedDevices, DefaultMaxRevokedDevices)
	c.MinRotateEvery = positive(c.MinRotateEvery, DefaultMinRotateEvery)
	c.MaxClockSkew = positive(c.MaxClockSkew, DefaultMaxClockSkew)
	c.DenialInterval = positive(c.DenialInterval, DefaultDenialInterval)
	c.ReadHeaderTimeout = positive(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = positive(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = positive(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = positive(c.IdleTimeout, DefaultIdleTimeout)
	c.MaxConns = positive(c.MaxConns, DefaultMaxConns)
	c.AuditRetention = positive(c.AuditRetention, DefaultAuditRetention)
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.WakeAt == nil {
		clock := c.Clock
		c.WakeAt = func(at time.Time) (<-chan time.Time, func()) {
			t := time.NewTimer(at.Sub(clock()))
			return t.C, func() { t.Stop() }
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.KEK = append([]byte(nil), c.KEK...)
	c.TokenKeys = append([]crypto.PublicKey(nil), c.TokenKeys...)
	c.Aliases = slices.Clone(c.Aliases)
	return c
}

func positive[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
